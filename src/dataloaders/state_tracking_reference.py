"""Per-sample pure-Python definition of the word problems (state_tracking.py): the oracle of
tests/test_state_tracking.py and the baseline of benchmarks/datagen.py.

`labels(task, x, group, label_at)` recomputes a sample's labels (a list, -100 unscored) from its
tokens x (a list, unpadded) by multiplying the elements themselves, left to right from the
identity; `sample(task, rng, length, ...)` draws one sample of that length with a
`random.Random`, one token at a time, and labels it with `labels`. The groups are rebuilt here
from their definitions (groups.py's docstring), not from its tables: an element is an int mod m,
a permutation tuple in one-line notation, or a tuple with one entry per factor.
"""

import itertools
import re
from functools import lru_cache

from src.utils.labels import IGNORE_INDEX


def factor(name):
    """(elements in id order, multiply, identity) of Z<m>, S<n> or A<n>."""
    kind, k = name[0], int(name.lstrip("ZSA_"))
    if kind == "Z":
        return list(range(k)), lambda a, b: (a + b) % k, 0
    perms = list(itertools.permutations(range(k)))
    if kind == "A":
        perms = [p for p in perms if sum(p[i] > p[j] for i in range(k) for j in range(i + 1, k)) % 2 == 0]
    return perms, lambda p, q: tuple(p[q[i]] for i in range(k)), tuple(range(k))  # (p q)(i) = p(q(i))


@lru_cache(maxsize=None)
def elements(group):
    """(elements in id order, multiply, identity, {element: id}) of a group name: the factors'
    elements in itertools.product order (the first factor's id most significant), multiplied
    componentwise."""
    factors = [factor(name) for name in re.split(r"_x_|x", group)]
    elems = list(itertools.product(*(f[0] for f in factors)))

    def multiply(a, b):
        return tuple(f[1](u, v) for f, u, v in zip(factors, a, b))

    return elems, multiply, tuple(f[2] for f in factors), {e: i for i, e in enumerate(elems)}


def labels(task, x, group="S5", label_at="all"):
    assert task == "word_problem"
    elems, multiply, product, index = elements(group)
    out = []
    for token in x:
        product = multiply(product, elems[token])
        out.append(index[product])
    return out if label_at == "all" else [IGNORE_INDEX] * (len(x) - 1) + [out[-1]]


def sample(task, rng, length, group="S5", label_at="all"):
    x = [rng.randrange(len(elements(group)[0])) for _ in range(length)]
    return x, labels(task, x, group=group, label_at=label_at)
