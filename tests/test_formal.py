"""The formal-language tasks (src/dataloaders/formal.py) against their per-sample definitions."""

import collections
import itertools
import random
import statistics

import numpy as np
import pytest
import torch
from token_checks import check_eval_sets_unseen, check_labels, check_sample_is_the_datasets_batch, samples

from src.dataloaders import formal_reference as reference
from src.dataloaders import synthetic
from src.dataloaders.formal import Dyck, ModularArithmetic, Parity, dyck_labels, shuffle_suffix, term_products
from src.utils.errors import ConfigError

OPTIONS = [  # (task, params): every option of the spec
    ("parity", {}),
    ("parity", {"L": 40, "L_min": 1}),
    ("parity", {"label_at": "last", "L": 40, "L_min": 1}),
    ("parity", {"num_ones": 5, "L": 24, "L_min": 8}),
    ("parity", {"num_ones": 7, "label_at": "last"}),
    ("majority", {}),
    ("majority", {"L": 41, "L_min": 41}),
    ("even_pairs", {}),
    ("cycle_navigation", {}),
    ("modular_arithmetic", {}),
    ("modular_arithmetic", {"L": 99, "L_min": 41}),
    ("modular_arithmetic", {"modulus": 2}),
    ("modular_arithmetic", {"modulus": 3, "L": 99, "L_min": 41}),
    ("modular_arithmetic", {"modulus": 7}),
    ("modular_arithmetic", {"modulus": 12, "L": 255, "L_min": 1}),
    ("modular_arithmetic", {"equals": True, "L": 38, "L_min": 2}),  # Grazzi et al.'s
    ("modular_arithmetic", {"modulus": 7, "equals": True, "L": 254, "L_min": 38}),
    ("dyck", {}),
    ("dyck", {"types": 1, "depth": 2, "L": 64, "L_min": 2}),
    ("dyck", {"types": 5, "depth": 12, "L": 128}),
]


@pytest.mark.parametrize("task, params", OPTIONS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(OPTIONS)])
def test_every_label_is_recomputed_from_the_tokens(task, params):
    batch = check_labels(task, reference, 128, **params)
    if task in ("parity", "majority", "even_pairs", "cycle_navigation", "modular_arithmetic") and (
            task != "parity" or params.get("label_at") == "last"):
        assert all(labels[:-1] == [-100] * (len(labels) - 1) for _, labels in batch)  # the last position only


def test_token_ids_follow_the_spec():
    assert {t for tokens, _ in samples("parity") for t in tokens} == {0, 1} and Parity().pad_id == 2
    assert {t for tokens, _ in samples("cycle_navigation") for t in tokens} == {0, 1, 2}
    batch = samples("modular_arithmetic", L=21, L_min=21)
    assert {t for tokens, _ in batch for t in tokens[0::2]} == set(range(5)) and ModularArithmetic().pad_id == 8
    assert {t for tokens, _ in batch for t in tokens[1::2]} == {5, 6, 7}
    batch = samples("modular_arithmetic", L=21, L_min=21, modulus=7)
    assert {t for tokens, _ in batch for t in tokens[0::2]} == set(range(7))
    assert ModularArithmetic(modulus=7).pad_id == 10
    assert {t for tokens, _ in batch for t in tokens[1::2]} == {7, 8, 9}
    batch = samples("modular_arithmetic", L=22, L_min=2, modulus=7, equals=True)  # = is 10, <pad> 11
    assert {tokens[-1] for tokens, _ in batch} == {10} and {len(tokens) % 2 for tokens, _ in batch} == {0}
    assert {t for tokens, _ in batch for t in tokens[:-1:2]} == set(range(7))
    assert {t for tokens, _ in batch for t in tokens[1:-1:2]} == {7, 8, 9}
    assert {t for tokens, _ in samples("dyck", types=3) for t in tokens} == set(range(6)) and Dyck().pad_id == 6
    labels = [y for _, labels in samples("cycle_navigation", 256) for y in labels if y != -100]
    assert set(labels) == set(range(5))


def test_parity_one_means_odd():
    x, y = Parity(L=4).tokens(torch.tensor([4]), torch.Generator().manual_seed(0))
    assert (y == x.cumsum(-1) % 2).all()
    assert reference.labels("parity", [0, 0, 1, 0, 1, 0, 0]) == [0, 0, 1, 1, 0, 0, 0]  # modern RNNs' README example
    assert all(sum(tokens) == 5 for tokens, _ in samples("parity", num_ones=5, L=24, L_min=8))


def test_modular_arithmetic_multiplies_first():
    assert reference.modular_value([2, 5, 3, 7, 4]) == (2 + 12) % 5
    assert reference.modular_value([2, 6, 3, 7, 4, 7, 2]) == (2 - 24) % 5
    assert reference.modular_value([2, 8, 3, 9, 4], modulus=7) == (2 - 12) % 7  # + - x = 7 8 9
    assert reference.labels("modular_arithmetic", [2, 8, 3, 9, 4, 10], modulus=7, equals=True)[-1] == 4


def test_modular_arithmetic_at_modulus_5_is_the_batch_drawn_before_the_modulus_option():
    """Recorded from the discrete-log generator (commit 5292816): the same tokens and labels."""
    x, y = ModularArithmetic(L=13, L_min=5).generate(4, torch.Generator().manual_seed(1))
    assert x.tolist() == [[3, 5, 3, 5, 1, 8, 8, 8, 8, 8, 8, 8, 8], [4, 7, 1, 7, 3, 5, 3, 7, 0, 7, 2, 7, 1],
                          [2, 5, 1, 5, 0, 5, 3, 5, 1, 7, 4, 6, 3], [1, 5, 4, 5, 2, 6, 4, 5, 4, 5, 3, 8, 8]]
    assert [[(t, v) for t, v in enumerate(row) if v != -100] for row in y.tolist()] == [
        [(4, 2)], [(12, 2)], [(12, 2)], [(10, 0)]]


def test_term_products_of_long_terms():
    """One term of 300 numbers (every stride of the doubling), and terms of every length 1..22."""
    n = torch.randint(1, 11, (3, 300), generator=torch.Generator().manual_seed(0))
    starts = torch.zeros(3, 300, dtype=torch.bool)
    starts[:, 0] = True
    starts[2, torch.arange(23).cumsum(0) + 1] = True  # row 2: terms of lengths 1, 1, 2, 3, .., 22, then 46
    v = term_products(n, starts, 11)
    for b in range(3):
        product = 1
        for j in range(300):
            product = (1 if starts[b, j] else product) * n[b, j].item() % 11
            assert v[b, j] == product, (b, j)


def test_dyck_labels_by_hand():
    # ( [ ] ) ( ]   with types 2: ( = 0, [ = 1, ) = 2, ] = 3
    x = torch.tensor([[0, 1, 3, 2, 0, 3, 2, 2]])
    assert dyck_labels(x, torch.tensor([8]), 2).tolist() == [[0, 0, 0, 1, 0, 0, 0, 0]]
    assert reference.labels("dyck", [0, 1, 3, 2, 0, 3, 2, 2], types=2) == [0, 0, 0, 1, 0, 0, 0, 0]
    assert dyck_labels(torch.tensor([[2, 0, 2, 6]]), torch.tensor([3]), 2).tolist() == [[0, 0, 0, -100]]


def dyck_statistics(batch, types):
    """Fraction of valid samples, mean positive labels, mean maximum depth of the valid ones."""
    valid = [tokens for tokens, labels in batch if labels[-1] == 1]
    depth = [max(torch.tensor([1 if t < types else -1 for t in tokens]).cumsum(0).tolist()) for tokens in valid]
    return len(valid) / len(batch), statistics.mean(sum(labels) for _, labels in batch), statistics.mean(depth)


def test_dyck_sampler_matches_the_spec_sampler():
    """The vectorised sampler draws from the spec's stack sampler's distribution: the same
    statistics within sampling error (4000 samples each), valid samples never deeper than `depth`."""
    batch = samples("dyck", 4000, L=32, L_min=4, depth=4)
    rng = random.Random(0)
    spec = []
    for _ in range(4000):
        tokens, labels = reference.sample("dyck", rng, 2 * rng.randint(2, 16), depth=4)
        spec.append((tokens, labels))
    fast, slow = dyck_statistics(batch, 3), dyck_statistics(spec, 3)
    for a, b, tolerance in zip(fast, slow, (0.035, 0.12, 0.08)):  # ~4 standard errors at 4000 samples
        assert a == pytest.approx(b, abs=tolerance), (fast, slow)
    assert 0.5 < fast[0] < 0.7  # half are never corrupted; a shuffle stays valid sometimes
    assert all(max(torch.tensor([1 if t < 3 else -1 for t in tokens]).cumsum(0).tolist()) <= 4
               for tokens, labels in batch if labels[-1] == 1)


@pytest.mark.parametrize("task", ["parity", "majority", "dyck", "even_pairs", "cycle_navigation", "modular_arithmetic"])
def test_eval_sets_are_unseen_lengths_and_sample_is_the_datasets_batch(task):
    check_eval_sets_unseen(task)
    check_sample_is_the_datasets_batch(task)


@pytest.mark.parametrize("make, message", [
    (lambda: Parity(label_at="first"), "dataset.label_at='first' is not valid; choose one of: 'all', 'last'"),
    (lambda: Parity(num_ones=40), "dataset.num_ones=40 must be null or an integer in 0..L_min=32"),
    (lambda: Dyck(L=33), "dataset.L=33: dyck needs an even length"),
    (lambda: Dyck(L=32, L_min=3), "must differ by a multiple of 2"),
    (lambda: Dyck(types=0), "dataset.types=0 must be a positive integer"),
    (lambda: ModularArithmetic(L=40), "modular_arithmetic with equals=False needs odd lengths"),
    (lambda: ModularArithmetic(L=39, equals=True), r"equals=True needs even lengths \(an odd expression, then =\)"),
    (lambda: ModularArithmetic(modulus=1), "dataset.modulus=1 must be an integer in 2..1024"),
    (lambda: ModularArithmetic(modulus="7"), "dataset.modulus='7' must be an integer in 2..1024"),
    (lambda: ModularArithmetic(equals="yes"), "dataset.equals='yes' must be true or false"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()


def spec_dyck_law(length, types, depth):
    """{sequence: probability} of the spec's sampler (formal_reference.dyck_sample), exactly: the
    stack walk, then with probability 1/2 a uniform shuffle of the suffix after a uniform balanced
    prefix end."""
    valid = collections.Counter()

    def walk(x, stack, p):
        if len(x) == length:
            valid[tuple(x)] += p
        elif length - len(x) == len(stack) or len(stack) == depth:
            walk(x + [types + stack[-1]], stack[:-1], p)
        else:
            if stack:
                walk(x + [types + stack[-1]], stack[:-1], p / 2)
            for kind in range(types):
                walk(x + [kind], stack + [kind], p / (2 if stack else 1) / types)

    walk([], [], 1.0)
    law = collections.Counter()
    for x, p in valid.items():
        law[x] += p / 2
        heights = itertools.accumulate((1 if t < types else -1 for t in x[:-1]), initial=0)
        ends = [t for t, h in enumerate(heights) if h == 0]
        for e in ends:
            orders = list(itertools.permutations(x[e:]))
            for order in orders:
                law[x[:e] + order] += p / 2 / len(ends) / len(orders)
    return law


@pytest.mark.parametrize("types, depth, L", [(2, 2, 6), (1, 3, 8)])
def test_dyck_sampler_draws_the_spec_samplers_law(types, depth, L):
    """Every sequence of the vectorised sampler is as frequent as under the spec's sampler, computed
    exactly: total variation < 0.025 over 160,000 samples (400 sequences at (2, 2, 6): ~0.015
    expected, as the spec sampler's own draws give; 0.009 at 400,000)."""
    law, n = spec_dyck_law(L, types, depth), 160000
    x, _ = synthetic.sample("dyck", n, torch.Generator().manual_seed(0), L=L, types=types, depth=depth)
    counts = collections.Counter(map(tuple, x.tolist()))
    assert set(counts) <= set(law)
    assert sum(abs(counts[x] / n - p) for x, p in law.items()) / 2 < 0.025


def test_dyck_suffix_shuffle_is_uniform():
    """The only balanced prefix end of ( [ ] ) is 0: all 4! orders of the tokens come out equally
    often (total variation < 0.03 over 24,000 rows; ~0.012 expected)."""
    x = np.tile([0, 1, 4, 3], (24000, 1))
    height = np.tile([0, 1, 2, 1], (24000, 1))
    out = shuffle_suffix(x.copy(), height, np.full(24000, 4), 3, np.random.default_rng(0))
    counts = collections.Counter(map(tuple, out.tolist()))
    assert set(counts) == set(itertools.permutations([0, 1, 4, 3]))
    assert sum(abs(c / 24000 - 1 / 24) for c in counts.values()) / 2 < 0.03


class TiedOnce:
    """A numpy generator whose first 2-D draw is all zeros: every suffix key ties."""

    def __init__(self, rng):
        self.rng, self.tied = rng, False

    def integers(self, low, high, size=None, dtype=np.int64):
        if isinstance(size, tuple) and len(size) == 2 and not self.tied:
            self.tied = True
            return np.zeros(size, dtype)
        return self.rng.integers(low, high, size, dtype)


def test_dyck_suffix_shuffle_draws_the_end_then_the_order_and_redraws_ties():
    """( ) [ ] ( ) <pad> <pad> (types 3, <pad> = 6) has balanced prefix ends 0, 2, 4: the rows
    follow the exact law (an end uniformly, then a uniform order of its suffix), total variation
    < 0.05 over 30,000 rows (~0.03 expected), although the first draw of keys ties everywhere."""
    row, n = [0, 3, 1, 4, 0, 3, 6, 6], 30000
    law = collections.Counter()
    for e in (0, 2, 4):
        orders = list(itertools.permutations(row[e:6]))
        for order in orders:
            law[tuple(row[:e]) + order + (6, 6)] += 1 / 3 / len(orders)
    rng = TiedOnce(np.random.default_rng(0))
    out = shuffle_suffix(np.tile(row, (n, 1)), np.tile([0, 1, 0, 1, 0, 1, 0, 0], (n, 1)), np.full(n, 6), 3, rng)
    counts = collections.Counter(map(tuple, out.tolist()))
    assert rng.tied and set(counts) <= set(law)
    assert sum(abs(counts[k] / n - p) for k, p in law.items()) / 2 < 0.05


@pytest.mark.parametrize("L", [2048, 20000])  # the int64 packed codes of shuffle_suffix, then of dyck_labels
def test_long_dyck_labels_against_the_definition(L):
    check_labels("dyck", reference, 4, L=L, depth=L // 4)
