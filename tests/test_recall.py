"""The recall tasks (src/dataloaders/recall.py, docs/tasks.md "Recall"): every label recomputed
from its example's tokens, the query-slot law, disjoint splits, and mixtures of segments."""

import numpy as np
import pytest
import torch

from src.dataloaders import synthetic
from src.dataloaders.mixture import build as build_mixture
from src.dataloaders.recall import MQAR, MQARCompositional, MQARForgetting, distinct, power_law_slots
from src.utils.labels import IGNORE_INDEX
from src.utils.errors import ConfigError


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def mqar_reference(x, N, passes):
    """Labels of one mqar example from its tokens alone: the context's bindings (the latest for a
    key bound twice), answered at every query key after the context."""
    x = x.tolist()
    C = 2 * N * passes
    binding = {}
    for i in range(0, C, 2):
        binding[x[i]] = x[i + 1]
    y = [IGNORE_INDEX] * len(x)
    for t in range(C, len(x)):
        if x[t] != 0:
            assert (t - C) % 2 == 0, "a query key stands at an even offset after the context"
            y[t] = binding[x[t]]
    return y, [x[i] for i in range(0, 2 * N, 2)]


OPTIONS = [dict(), dict(num_passes=2), dict(unique_keys=False, vocab_size=16), dict(query_order="end"),
           dict(power_a=1.0), dict(num_kv_pairs=8, L=64)]


@pytest.mark.parametrize("options", OPTIONS)
def test_mqar_labels_recomputed_from_tokens(options):
    params = {**dict(vocab_size=64, L=40, num_kv_pairs=4), **options}
    x, y = MQAR(**params).generate(300, gen())
    N, P = params["num_kv_pairs"], params.get("num_passes", 1)
    saw_repeat = False
    for xb, yb in zip(x, y):
        expected, keys = mqar_reference(xb, N, P)
        assert yb.tolist() == expected
        V = params["vocab_size"]
        assert ((1 <= xb[: 2 * N : 2]) & (xb[: 2 * N : 2] < V // 2)).all()  # keys, then values
        assert ((V // 2 <= xb[1 : 2 * N : 2]) & (xb[1 : 2 * N : 2] < V)).all()
        assert (yb != IGNORE_INDEX).sum() == N  # every key queried exactly once
        queries = sorted(xb[yb != IGNORE_INDEX].tolist())
        assert queries == sorted(keys)
        if P == 2:
            assert xb[: 2 * N].tolist() == xb[2 * N : 4 * N].tolist()
        if params.get("unique_keys", True):
            assert len(set(keys)) == N
        saw_repeat |= len(set(keys)) < N
        if options.get("query_order") == "end":
            assert set(torch.nonzero(yb != IGNORE_INDEX).flatten().tolist()) == {2 * N + 2 * i for i in range(N)}
    assert saw_repeat == (not params.get("unique_keys", True))  # the option is exercised


def test_the_specs_example():
    """V=12, L=16, N=2: `k1 v1 k2 v2`, then each key at an even offset, labelled with its value."""
    x, y = MQAR(vocab_size=12, L=16, num_kv_pairs=2).generate(50, gen())
    for xb, yb in zip(x, y):
        assert all(1 <= k < 6 <= v < 12 for k, v in (xb[0:2].tolist(), xb[2:4].tolist()))
        expected, _ = mqar_reference(xb, 2, 1)
        assert yb.tolist() == expected and (xb[4:] != 0).sum() == 2


def test_random_fillers_replace_only_the_zeros():
    plain = MQAR(vocab_size=64, L=40, num_kv_pairs=4).generate(200, gen(3))
    noisy = MQAR(vocab_size=64, L=40, num_kv_pairs=4, random_non_queries=True).generate(200, gen(3))
    assert torch.equal(plain[1], noisy[1])
    kept = plain[0] != 0
    assert torch.equal(noisy[0][kept], plain[0][kept])
    fill = noisy[0][~kept]
    assert fill.min() >= 0 and fill.max() < 64 and (fill == 0).float().mean() < 0.05  # uniform over 64 ids
    counts = torch.bincount(fill, minlength=64).double()
    assert (counts / counts.sum() - 1 / 64).abs().sum() / 2 < 0.05  # total variation from uniform


def test_forgetting_answers_the_latest_value_and_rebinds_to_a_new_one():
    N, U, V = 6, 3, 40
    x, y = MQARForgetting(vocab_size=V, L=48, num_kv_pairs=N, num_updates=U).generate(400, gen())
    for xb, yb in zip(x.tolist(), y.tolist()):
        binding, old = {}, {}
        for i in range(0, 2 * N, 2):
            binding[xb[i]] = xb[i + 1]
        assert len(binding) == N
        rebound = [xb[i] for i in range(2 * N, 2 * (N + U), 2)]
        assert len(set(rebound)) == U and set(rebound) <= set(binding)
        for i in range(2 * N, 2 * (N + U), 2):
            assert xb[i + 1] != binding[xb[i]] and V // 2 <= xb[i + 1] < V  # a new value, never the old one
            binding[xb[i]] = xb[i + 1]
        labelled = [(xb[t], yb[t]) for t in range(len(xb)) if yb[t] != IGNORE_INDEX]
        assert sorted(k for k, _ in labelled) == sorted(binding)
        assert all(binding[k] == v for k, v in labelled)


def test_forgetting_new_values_are_uniform_over_the_other_values():
    """Zoology draws the new value against another key's old one; here each of the V/2 - 1 others is
    equally likely (total variation below 0.02 over 60,000 updates)."""
    V = 16
    x, _ = MQARForgetting(vocab_size=V, L=16, num_kv_pairs=2, num_updates=2).generate(30000, gen())
    old = {}
    offsets = []
    for xb in x[:, :8].tolist():
        old = {xb[0]: xb[1], xb[2]: xb[3]}
        for i in (4, 6):
            offsets.append((xb[i + 1] - old[xb[i]]) % (V // 2))  # 1..V/2-1 uniformly, never 0
    counts = np.bincount(offsets, minlength=V // 2)
    assert counts[0] == 0
    freq = counts[1:] / counts.sum()
    assert np.abs(freq - 1 / (V // 2 - 1)).sum() / 2 < 0.02


def test_compositional_labels_from_the_grid():
    N, g, V = 9, 3, 90
    x, y = MQARCompositional(vocab_size=V, L=60, num_kv_pairs=N).generate(300, gen())
    third = V // 3
    for xb, yb in zip(x.tolist(), y.tolist()):
        triples = [tuple(xb[i : i + 3]) for i in range(0, 3 * N, 3)]
        firsts, seconds = {a for a, _, _ in triples}, {b for _, b, _ in triples}
        assert len(firsts) == g and len(seconds) == g and {(a, b) for a, b, _ in triples} == {
            (a, b) for a in firsts for b in seconds}  # the whole g x g grid, each once
        assert all(1 <= a < third <= b < 2 * third <= v < V for a, b, v in triples)
        binding = {(a, b): v for a, b, v in triples}
        assert len(set(binding.values())) == N
        labelled = [t for t in range(len(yb)) if yb[t] != IGNORE_INDEX]
        assert len(labelled) == N
        for t in labelled:
            assert (t - 3 * N) % 2 == 1 and yb[t] == binding[(xb[t - 1], xb[t])]  # at b, the query's second part
        assert sorted((xb[t - 1], xb[t]) for t in labelled) == sorted(binding)


def test_distinct_is_a_uniform_ordered_sample():
    """All 5 * 4 * 3 = 60 ordered triples of distinct ids from 0..4 equally likely (total variation
    below 0.02 at 60,000 draws; a sampler that kept the sorted order would score 0.9)."""
    x = distinct(60000, 3, 0, 5, gen())
    assert (x[:, 0] != x[:, 1]).all() and (x[:, 1] != x[:, 2]).all() and (x[:, 0] != x[:, 2]).all()
    codes = (x[:, 0] * 25 + x[:, 1] * 5 + x[:, 2]).numpy()
    counts = np.bincount(codes, minlength=125)
    counts = counts[counts > 0]
    assert len(counts) == 60
    assert np.abs(counts / counts.sum() - 1 / 60).sum() / 2 < 0.02


def numpy_slots(rng, n, S, power_a):
    """Zoology's draw: numpy's choice without replacement, weights (g + 1)^(power_a - 1)."""
    p = power_a * np.arange(1, S + 1) ** (power_a - 1)
    return rng.choice(S, size=n, replace=False, p=p / p.sum())


def test_query_slots_follow_the_power_law():
    """The first slot drawn has exactly P(g) proportional to (g + 1)^(power_a - 1); the set of N
    slots has the law of numpy's successive draws (zoology's). Bound: total variation below 0.01
    with 200,000 draws of S = 30 slots (an exact sampler's expected distance is about 0.005), while
    uniform slots would be 0.41 away."""
    S, n, a = 30, 200000, 0.01
    slots = power_law_slots(n, 2, S, a, gen()).numpy()
    p = (np.arange(1, S + 1) ** (a - 1.0))
    p /= p.sum()
    first = np.bincount(slots[:, 0], minlength=S) / n
    assert np.abs(first - p).sum() / 2 < 0.01
    assert np.abs(np.full(S, 1 / S) - p).sum() / 2 > 0.4  # the bound separates the laws
    rng = np.random.default_rng(0)
    reference = np.stack([numpy_slots(rng, 2, S, a) for _ in range(50000)])
    ours = np.bincount(slots.ravel(), minlength=S) / slots.size
    theirs = np.bincount(reference.ravel(), minlength=S) / reference.size
    assert np.abs(ours - theirs).sum() / 2 < 0.015  # two samples: the numpy side has 100,000 slots


def test_training_validation_and_test_sets_are_disjoint():
    data = MQAR(vocab_size=8192, L=64, num_kv_pairs=4, num_train_examples=20000, num_eval_examples=3000)
    data.setup()
    rows = lambda x: {tuple(r) for r in x.tolist()}  # noqa: E731
    train = rows(data.examples[0])
    val = rows(data.batch("val", 0, 0, range(3000))[0])
    test = rows(data.batch("test", 0, 0, range(3000))[0])
    assert len(train) == 20000 and len(val) == 3000 and len(test) == 3000
    assert not train & val and not train & test and not val & test


def test_sample_is_the_public_generator():
    x, y = synthetic.sample("mqar", 8, gen(5), vocab_size=128, L=32, num_kv_pairs=3)
    x2, y2 = MQAR(vocab_size=128, L=32, num_kv_pairs=3).generate(8, gen(5))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    for task in ("mqar_forgetting", "mqar_compositional"):
        assert synthetic.sample(task, 2, gen(), vocab_size=64, L=32)[0].shape == (2, 32)


@pytest.mark.parametrize("cls, params, match", [
    (MQAR, dict(L=63), "L must be even"),
    (MQAR, dict(L=14, num_kv_pairs=4), r"2 N num_passes \+ 2 N = 16 must be <= L"),
    (MQAR, dict(vocab_size=8, num_kv_pairs=4), "must hold N distinct ids"),
    (MQAR, dict(query_order="random"), "query_order"),
    (MQAR, dict(power_a=0), "power_a"),
    (MQARForgetting, dict(num_kv_pairs=4, num_updates=5), "num_updates=5"),
    (MQARCompositional, dict(num_kv_pairs=8), "must be a square"),
])
def test_bad_parameters_are_refused_in_one_line(cls, params, match):
    with pytest.raises(ConfigError, match=match) as error:
        cls(**params)
    assert "\n" not in str(error.value)


def mixture(world_size=1, rank=0, batch_size=8):
    segments = [dict(L=16, num_kv_pairs=2, num_examples=40), dict(L=32, num_kv_pairs=4, num_examples=27),
                dict(L=32, num_kv_pairs=6, num_examples=16)]
    config = dict(vocab_size=64, L=32, num_kv_pairs=2, num_eval_examples=10, seed=0)
    data = build_mixture(MQAR, config, segments)
    data.setup()
    return data, data.train_dataloader(batch_size, rank=rank, world_size=world_size)


def test_a_mixture_never_mixes_segments_in_a_batch():
    data, loader = mixture()
    # floor(40/8) + floor(27/8) + floor(16/8) = 5 + 3 + 2 batches
    assert len(loader) == 10 and data.L_input == 32
    for epoch in range(2):
        loader.sampler.set_epoch(epoch)
        seen, kinds = set(), []
        for x, y in loader:
            n_labels = (y != IGNORE_INDEX).sum(1)
            assert len(set(n_labels.tolist())) == 1  # one segment: one N per batch
            kinds.append((x.shape[1], int(n_labels[0])))
            seen |= {tuple(r) for r in x.tolist()}
        assert sorted(set(kinds)) == [(16, 2), (32, 4), (32, 6)]
        assert [kinds.count(k) for k in [(16, 2), (32, 4), (32, 6)]] == [5, 3, 2]
        assert len(seen) == 80  # no example twice in an epoch
        if epoch == 0:
            first = kinds
    assert kinds != first  # the batch order is reshuffled per epoch


def test_a_mixture_splits_batches_across_ranks_and_evaluates_segment_by_segment():
    data, _ = mixture()
    keys = {r: [tuple(x.flatten().tolist()) for x, _ in mixture(2, r)[1]] for r in (0, 1)}
    assert len(keys[0]) == len(keys[1]) == 5 and not set(keys[0]) & set(keys[1])
    val = list(data.val_dataloader(4))
    assert sum(len(x) for x, _ in val) == 30  # 10 per segment
    assert [x.shape[1] for x, _ in val] == [16] * 3 + [32] * 6  # batches of 4, 4, 2 per segment
    assert [int((y != IGNORE_INDEX).sum(1)[0]) for _, y in val] == [2] * 3 + [4] * 3 + [6] * 3


def test_a_mixture_refuses_bad_segments():
    with pytest.raises(ConfigError, match="num_examples"):
        build_mixture(MQAR, {}, [dict(L=16)])
    with pytest.raises(ConfigError, match=r"segments\[0\] \(MQAR\) does not take num_kv"):
        build_mixture(MQAR, {}, [dict(num_kv=2, num_examples=4)])
