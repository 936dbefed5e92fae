"""The counting tasks (src/dataloaders/counting.py) against their per-sample definitions."""

import pytest
from token_checks import check_eval_sets_unseen, check_labels, check_sample_is_the_datasets_batch, samples

from src.dataloaders import counting_reference as reference
from src.dataloaders.counting import CountMod, CountSame, CountSelective, CountShifted
from src.utils.errors import ConfigError

OPTIONS = [  # (task, params): every option of the spec
    ("count_same", {}),
    ("count_same", {"symbols": 26}),
    ("count_same", {"bos": True, "L": 30, "L_min": 2}),
    ("count_same", {"symbols": 26, "bos": True, "max_count": 40, "L": 41, "L_min": 41}),
    ("count_mod", {}),
    ("count_mod", {"modulus": 3, "bos": True, "L": 60, "L_min": 2}),
    ("count_mod", {"modulus": 12, "symbols": 26, "L": 100}),
    ("count_shifted", {}),
    ("count_shifted", {"L": 100, "L_min": 52, "shift_min": 1}),
    ("count_selective", {}),
    ("count_selective", {"items": 3, "cap": 20, "L": 40, "L_min": 5, "bos": True}),
    ("count_selective", {"items": 4, "cap": None, "modulus": 4, "L": 64}),
    ("count_selective", {"items": 4, "cap": 40, "modulus": 4, "L": 128, "bos": True}),
]


@pytest.mark.parametrize("task, params", OPTIONS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(OPTIONS)])
def test_every_label_is_recomputed_from_the_tokens(task, params):
    check_labels(task, reference, **params)


def test_token_ids_follow_the_spec():
    data = CountSame(symbols=26, bos=True, max_count=100, L=51, L_min=2)
    assert (data.symbol_id, data.bos_id, data.pad_id, data.n_tokens) == (101, 127, 128, 129)  # 0..100, a..z, bos, pad
    for tokens, labels in samples("count_same", symbols=26, bos=True, L=40, L_min=2):
        assert tokens[0] == 127 and labels[0] == -100 and all(101 <= t <= 126 for t in tokens[1:])
    assert set(t for tokens, _ in samples("count_same", symbols=26) for t in tokens) == set(range(101, 127))
    assert {t for tokens, _ in samples("count_mod") for t in tokens} == {101}  # the one symbol a
    selective = CountSelective(items=4, cap=None, modulus=4, L=64, bos=True)
    assert (selective.bos_id, selective.pad_id) == (4, 5)  # ids 0..max(items, cap)-1, then bos, pad
    assert CountSelective().n_tokens == 12


def test_count_shifted_starts_in_range():
    for params, low in (({}, 0), ({"L": 100, "L_min": 52, "shift_min": 1}, 1)):
        batch = samples("count_shifted", 256, **params)
        starts = [tokens[0] for tokens, _ in batch]
        assert all(low <= s <= 100 - (len(tokens) - 1) for s, (tokens, _) in zip(starts, batch))
        assert all(tokens[1:] == [101] * (len(tokens) - 1) for tokens, _ in batch)
    assert min(t[0] for t, _ in samples("count_shifted", 512)) == 0
    assert max(t[0] for t, _ in samples("count_shifted", 512)) == 50


def test_count_selective_respects_the_cap():
    for tokens, labels in samples("count_selective", 128, items=3, cap=20, L=60):
        assert max(tokens.count(i) for i in range(3)) <= 20 and max(labels) <= 19
    # 60 tokens of 3 items capped at 20: each item exactly 20 times (a permutation of the multiset)
    assert all(sorted(tokens) == [0] * 20 + [1] * 20 + [2] * 20 for tokens, _ in samples("count_selective", 16,
                                                                                           items=3, cap=20, L=60))


def test_variable_lengths_cover_the_range():
    lengths = {len(tokens) for tokens, _ in samples("count_mod", 1024)}
    assert lengths == set(range(1, 51))


@pytest.mark.parametrize("task", ["count_same", "count_mod", "count_shifted", "count_selective"])
def test_eval_sets_are_unseen_lengths_and_sample_is_the_datasets_batch(task):
    check_eval_sets_unseen(task)
    check_sample_is_the_datasets_batch(task)


@pytest.mark.parametrize("make, message", [
    (lambda: CountSame(L=102), "dataset.L=102 counts past dataset.max_count=100"),
    (lambda: CountSame(symbols=5), "dataset.symbols=5 is not valid; choose one of: 1, 26"),
    (lambda: CountMod(modulus=0), "dataset.modulus=0 must be a positive integer"),
    (lambda: CountMod(bos=True), "with dataset.bos=true a sample needs <bos> and a symbol"),
    (lambda: CountShifted(L=102, L_min=52), r"shift_min \+ L - 1 <= max_count"),
    (lambda: CountSelective(L=101), "101 tokens cannot hold 10 items at most dataset.cap=10 times each"),
    (lambda: CountSelective(cap=None), "dataset.cap=null needs dataset.modulus in 1..items=10"),
    (lambda: CountSelective(items=4, cap=None, modulus=5), "dataset.cap=null needs dataset.modulus in 1..items=4"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
