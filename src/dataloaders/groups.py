"""Finite groups as Cayley tables, for the word problems (state_tracking.py).

`group(name)` -> Group(name, elements, table): element id i is `elements[i]`, and `table[a, b]`
(int64, |G| x |G|) is the id of the product a b. Id 0 is always the identity.

Names: a factor is `Z<m>` (m >= 2), `S<n>` (n >= 2) or `A<n>` (n >= 3), optionally with an
underscore (`Z_5`); factors are joined by `x` for the direct product (`Z2xZ3`, `S3xZ2`;
jopetty/word-problem's `A4_x_Z5` is accepted too). The canonical spelling (`Group.name`) is
without underscores: `Z5`, `A4xZ5`. At most MAX_ORDER elements: the group is the vocabulary.

Element order and product: those jopetty/word-problem gets from abstract_algebra (its fork
jopetty/abstract_algebra: generate_cyclic_group, generate_symmetric_group, commutator_subalgebra,
Magma.__mul__), rebuilt here without that library:

    Z_m    id k is a^k; a^i a^j = a^((i + j) mod m)
    S_n    the permutations p of {0, .., n-1} in one-line notation (p(0), .., p(n-1)), in the
           lexicographic order of itertools.permutations (abstract_algebra uses 1..n: the same
           order); the product composes right to left, (p q)(i) = p(q(i)): q acts first
           (abstract_algebra's Perm.__mul__)
    A_n    the even permutations, in their order within S_n (abstract_algebra builds A_n as the
           commutator subgroup of S_n, whose elements it sorts by their index in the parent)
    G x H  the pairs (g, h) in itertools.product order: id(g, h) = id(g) |H| + id(h); the product
           is componentwise. G x H x K = (G x H) x K, abstract_algebra's left fold: ids in
           mixed radix, the first factor most significant
"""

import itertools
import math
import re
from dataclasses import dataclass
from functools import lru_cache

import torch

from src.utils.errors import ConfigError

MAX_ORDER = 1024
FORMS = "Z<m> (m >= 2), S<n> (n >= 2), A<n> (n >= 3), or a direct product of these joined by x, e.g. Z2xZ3, S3xZ2"
FACTOR = re.compile(r"([ZSA])_?([1-9][0-9]*)")


@dataclass(frozen=True)
class Group:
    name: str
    elements: tuple  # elements[i]: element id i (an int for Z_m, a permutation tuple, a tuple of factors)
    table: torch.Tensor  # (n, n) int64: table[a, b] = id of a b (shared by every user of the name: read only)

    @property
    def order(self):
        return len(self.elements)


def from_product(name, elements, multiply):
    """The Group of `elements` (id = position) under `multiply(a, b)` (elements to element)."""
    index = {e: i for i, e in enumerate(elements)}
    table = [[index[multiply(a, b)] for b in elements] for a in elements]
    return Group(name, tuple(elements), torch.tensor(table, dtype=torch.long))


def compose(p, q):  # (p q)(i) = p(q(i))
    return tuple(p[i] for i in q)


def is_even(p):
    return sum(p[i] > p[j] for i, j in itertools.combinations(range(len(p)), 2)) % 2 == 0


def cyclic(m):
    return from_product(f"Z{m}", list(range(m)), lambda a, b: (a + b) % m)


def symmetric(n):
    return from_product(f"S{n}", list(itertools.permutations(range(n))), compose)


def alternating(n):
    return from_product(f"A{n}", [p for p in itertools.permutations(range(n)) if is_even(p)], compose)


def direct_product(g, h):
    """G x H: ids id_G |H| + id_H, componentwise product (from the factors' tables)."""
    table = (g.table[:, None, :, None] * h.order + h.table[None, :, None, :]).reshape(g.order * h.order, -1)
    return Group(f"{g.name}x{h.name}", tuple(itertools.product(g.elements, h.elements)), table)


def order(kind, k):  # k, k! or k!/2; k! capped at 8! (> MAX_ORDER already), so a large k costs nothing
    return k if kind == "Z" else math.factorial(min(k, 8)) // (2 if kind == "A" else 1)


def parse(name):
    """[(kind, k)] of a group name; ConfigError naming the value and the valid forms."""
    parts = re.split(r"_x_|x", name) if isinstance(name, str) else [None]
    matches = [FACTOR.fullmatch(part or "") for part in parts]
    factors = [(m.group(1), int(m.group(2))) for m in matches if m]
    if len(factors) < len(parts) or any(k < {"Z": 2, "S": 2, "A": 3}[kind] for kind, k in factors):
        raise ConfigError(f"dataset.group={name!r} is not a group name; valid forms: {FORMS}")
    size = 1
    for kind, k in factors:
        size *= order(kind, k)
        if size > MAX_ORDER:
            raise ConfigError(f"dataset.group={name!r} has more than {MAX_ORDER} elements (the vocabulary)")
    return factors


def group(name):
    """The Group named `name` (see the module docstring for the forms and the element order)."""
    return build(tuple(parse(name)))


@lru_cache(maxsize=16)
def build(factors):
    make = {"Z": cyclic, "S": symmetric, "A": alternating}
    result, *rest = [make[kind](k) for kind, k in factors]
    for factor in rest:
        result = direct_product(result, factor)
    return result
