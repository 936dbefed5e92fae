"""The Chomsky-hierarchy tasks above the regular level (src/dataloaders/chomsky.py) against their
per-sample definitions (src/dataloaders/chomsky_reference.py), their big-integer arithmetic
(src/dataloaders/bigint.py) against Python's integers, and the length metrics they key by
"task_lengths"."""

import collections
import inspect
import math
import os
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from src.dataloaders import bigint, chomsky, synthetic
from src.dataloaders import chomsky_reference as reference
from src.dataloaders.base import batch_seed
from src.dataloaders.chomsky import WORD, BinaryAddition, ComputeSqrt, bracket_expressions
from src.dataloaders.synthetic import dataset_class
from src.module import build_datasets
from src.tasks.metrics import SplitMetrics
from src.utils import registry
from src.utils.errors import ConfigError

TASKS = [name for name, path in registry.dataset.items() if path.startswith("src.dataloaders.chomsky.")]
CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"

OPTIONS = [(task, {}) for task in TASKS] + [  # every option of each task
    ("modular_arithmetic_brackets", {"modulus": 7, "mult": False}),
    ("solve_equation", {"modulus": 3}),
    ("reverse_string", {"vocab_size": 3}),
    ("duplicate_string", {"vocab_size": 4}),
    ("odds_first", {"vocab_size": 3}),
    ("bucket_sort", {"vocab_size": 7}),
]


def examples(task, batch_size, seed=0, **params):
    """[(input tokens, x, labels)] of a batch of `synthetic.sample`, checked for the layout: the
    input (ids below <blank>), one <blank> per output position, <pad> to the end, labels only on
    the output positions."""
    dataset = dataset_class(task)(**params)
    x, y = synthetic.sample(task, batch_size, torch.Generator().manual_seed(seed), **params)
    assert x.shape == y.shape == (batch_size, dataset.L_input) and x.dtype == y.dtype == torch.int64
    assert dataset.L_input == dataset.L + reference.output_length(task, dataset.L)
    options = {k: v for k, v in params.items() if k not in ("L", "L_min")}
    assert dataset.n_tokens == dataset.blank_id + 2 == reference.input_size(task, **options) + 2
    assert ((0 <= x) & (x < dataset.n_tokens)).all() and ((y == -100) | ((0 <= y) & (y < dataset.d_output))).all()
    out = []
    for row, labels in zip(x.tolist(), y.tolist()):
        n = next(t for t, token in enumerate(row + [dataset.blank_id]) if token >= dataset.blank_id)
        end = n + reference.output_length(task, n)
        assert dataset.L_min <= n <= dataset.L and row[n:end] == [dataset.blank_id] * (end - n), (task, row)
        assert row[end:] == [dataset.pad_id] * (len(row) - end) and labels[end:] == [-100] * (len(row) - end)
        assert labels[:n] == [-100] * n and labels[n] != -100, "the first output is always scored"
        out.append((row[:n], row[:end], labels[:end]))
    return out


@pytest.mark.parametrize("task, params", OPTIONS, ids=[f"{t}-{i}" for i, (t, _) in enumerate(OPTIONS)])
def test_every_label_is_recomputed_from_the_tokens(task, params):
    batch = examples(task, 48, L=40, L_min=1, **params)
    for _, x, labels in batch:
        assert labels == reference.labels(task, x, **params), (task, x)
    assert len({len(tokens) for tokens, _, _ in batch}) > 10  # lengths vary


@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("length, batch_size", [(1, 16), (2, 16), (40, 16), (63, 8), (500, 3)])
def test_input_and_output_lengths_follow_the_original(task, length, batch_size):
    """At the hierarchy's length n: n input tokens, output_length(n) output positions (n <= 2 the
    original's special cases; 63: past the int64 numbers; 500 bits with limbs), every label the
    definition's, and the output scored up to the end token where the task has one."""
    for tokens, x, labels in examples(task, batch_size, L=length, L_min=length):
        assert len(tokens) == length and labels == reference.labels(task, x)
        scored = [y for y in labels if y != -100]
        if task in reference.ENDED:
            assert scored[-1] == 2 and 2 not in scored[:-1]  # the end token, after the bits / the stack
        else:
            assert len(scored) == reference.output_length(task, length)


def test_special_cases_at_lengths_1_and_2():
    one = {task: examples(task, 32, L=1, L_min=1) for task in TASKS}
    assert {tuple(x) for _, x, _ in one["missing_duplicate_string"]} == {(1, 4)}  # x = 1, then <blank>
    assert {tuple(y[1:]) for _, _, y in one["missing_duplicate_string"]} == {(1,)}
    assert {tuple(t) for t, _, _ in one["binary_addition"]} == {(0,)}  # U{0..2^1 - 2}
    assert {tuple(y[1:]) for _, _, y in one["binary_addition"]} == {(0, 2)}
    assert {tuple(y[1:]) for _, _, y in one["binary_multiplication"]} == {(2,)}  # no product: the end token
    assert {tuple(t) for t, _, _ in one["compute_sqrt"]} == {(1,)}  # N = 1
    assert {tuple(y) for _, _, y in one["stack_manipulation"]} == {(-100, 0, 2), (-100, 1, 2)}
    two = {task: examples(task, 64, L=2, L_min=2) for task in ("solve_equation", "binary_addition",
                                                               "binary_multiplication")}
    assert {tuple(t) for t, _, _ in two["solve_equation"]} == {(0, 0)}
    assert {tuple(y[2:]) for _, _, y in two["solve_equation"]} == {(0,)}
    assert {tuple(t) for t, _, _ in two["binary_addition"]} == {(0, 0), (1, 0), (0, 1)}  # 0, 1, 2; never 3
    assert {tuple(y[2:]) for _, _, y in two["binary_multiplication"]} == {(0, 2)}


def test_the_originals_examples():
    """The examples of the original's docstrings (its code's order for odds_first)."""
    def outputs(task, tokens, **params):
        return [y for y in reference.labels(task, tokens + [reference.input_size(task, **params)]
                                            * reference.output_length(task, len(tokens)), **params) if y != -100]

    assert outputs("stack_manipulation", [0, 1, 1, 0, 4, 2, 2]) == [1, 1, 0, 2]
    assert outputs("stack_manipulation", [1, 1, 0, 2, 2, 2]) == [2]
    assert outputs("binary_addition", [0, 0, 1, 2, 0, 1, 1, 0, 1]) == [0, 1, 0, 1, 1, 2]  # 4 + 22 = 26
    assert outputs("binary_addition", [1, 0, 0, 1, 2, 0, 0, 0, 0, 0, 1]) == [1, 0, 0, 1, 0, 1, 2]  # 9 + 32
    assert outputs("binary_multiplication", [0, 0, 1, 2, 0, 1, 1, 0, 1]) == [0, 0, 0, 1, 1, 0, 1, 2]  # 88
    assert outputs("compute_sqrt", [1, 0, 0, 1, 0, 1]) == [1, 1, 0] and outputs("compute_sqrt", [1, 1, 1]) == [1, 0]
    assert outputs("missing_duplicate_string", [0, 1, 1, 0, 0, 2, 1, 0]) == [1]
    assert outputs("missing_duplicate_string", [1, 0, 1, 1, 2, 1, 3]) == [0]
    assert outputs("odds_first", [0, 0, 1, 1, 0, 1, 0, 1]) == [0, 1, 1, 1, 0, 1, 0, 0]
    assert outputs("bucket_sort", [1, 0, 2, 0, 4, 1, 1, 2]) == [0, 0, 1, 1, 1, 2, 2, 4]
    assert outputs("duplicate_string", [1, 0, 1]) == [1, 0, 1, 1, 0, 1]
    assert outputs("reverse_string", [0, 1, 1, 0, 1, 0]) == [0, 1, 0, 1, 1, 0]
    ids = {c: i + 5 for i, c in enumerate("+-*()")}
    expression = [ids[c] if c in ids else int(c) for c in "((3*4)-(-2))"]
    assert outputs("modular_arithmetic_brackets", expression) == [(12 + 2) % 5]
    ids = {c: i + 5 for i, c in enumerate("+-()x=")}
    assert outputs("solve_equation", [ids[c] if c in ids else int(c) for c in "(x+2)=4"]) == [2]
    assert outputs("solve_equation", [ids[c] if c in ids else int(c) for c in "-x=3"]) == [2]


LOOPED = [task for task in TASKS if dataset_class(task).LOOP]


@pytest.mark.parametrize("task", LOOPED)
def test_the_c_loops_make_the_torch_paths_batches(task, monkeypatch):
    """chomsky.c against the torch path, id for id, from the same draws: lengths 1-3, mixed and
    fixed, past the int64 numbers, and vocabularies of b-bit fields, base-V digits and torch.randint."""
    if chomsky.c_loops() is None:
        cc = os.environ.get("CC", "cc")
        (pytest.fail if shutil.which(cc) else pytest.skip)(f"chomsky.c is not usable here ({cc})")
    sizes = (1, 3, 4, 7) if task == "bucket_sort" else (1, 3, 4, 7, 2**23)  # its torch path holds (B, V, L)
    vocabularies = [{}, *({"vocab_size": V} for V in sizes)] if "vocab_size" in inspect.signature(
        dataset_class(task)).parameters else [{}]
    cases = [(L, L_min, params, seed) for L, L_min in [(1, 1), (2, 2), (3, 3), (2, 1), (40, 1), (63, 63), (130, 1)]
             for params in vocabularies for seed in range(2)]
    looped = [synthetic.sample(task, 9, torch.Generator().manual_seed(seed), L=L, L_min=L_min, **params)
              for L, L_min, params, seed in cases]
    monkeypatch.setattr(chomsky, "c_loops", lambda: None)
    for (L, L_min, params, seed), (x, y) in zip(cases, looped):
        x_torch, y_torch = synthetic.sample(task, 9, torch.Generator().manual_seed(seed), L=L, L_min=L_min, **params)
        assert torch.equal(x, x_torch) and torch.equal(y, y_torch), (L, L_min, params, seed)


def test_c_loop_arguments_pass_data_pointers_and_refuse_strided_arrays():
    """src/ops/_cpu's `arguments`, which the Chomsky loops call with tensors, numpy arrays and ints."""
    from src.ops import _cpu

    t, a = torch.arange(6), np.arange(6, dtype=np.int64)
    p, q, n = _cpu.arguments(t, a, 7)
    assert (p.value, q.value, n.value) == (t.data_ptr(), a.ctypes.data, 7)
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpu.arguments(a.reshape(2, 3)[:, ::2])


def test_the_reference_sampler_is_the_reference_definition():
    rng = random.Random(0)
    for task in TASKS:
        for length in (1, 2, 3, 4, 5, 6, 9, 17, 40, 130):
            x, y = reference.sample(task, rng, length)
            assert y == reference.labels(task, x) and len(x) == length + reference.output_length(task, length)


def frequencies(values):
    counts = collections.Counter(values)
    return {k: v / len(values) for k, v in counts.items()}


def assert_law(values, law, sigmas=5):
    """The empirical frequencies of `values` match `law` {value: probability} within `sigmas`
    standard errors (and nothing outside the law occurs)."""
    seen = frequencies(values)
    assert set(seen) <= set(law), set(seen) - set(law)
    for value, p in law.items():
        assert abs(seen.get(value, 0) - p) <= sigmas * math.sqrt(p * (1 - p) / len(values)), (value, seen.get(value), p)


def dataset_rows(cls, n, batch_size, L, seed=0, **params):
    """(inputs, outputs) lists of `inputs_outputs` at the lengths n (a batch of one length)."""
    dataset = cls(L=L, L_min=1, **params)
    lengths = torch.full((batch_size,), n)
    inputs, outputs = (torch.as_tensor(v) for v in dataset.inputs_outputs(lengths, torch.Generator().manual_seed(seed)))
    return [(i[:n].tolist(), o.tolist()) for i, o in zip(inputs, outputs)]


@pytest.mark.parametrize("L", [40, WORD + 1], ids=["int64", "limbs"])
@pytest.mark.parametrize("n", [1, 3, 4, 5])
def test_compute_sqrt_draws_every_number_equally_often(L, n):
    """N ~ U{1..2^n - 1}, whichever way it is drawn (int64 with the root computed, or (s, r) pairs)."""
    rows = dataset_rows(ComputeSqrt, n, 300 * (2**n - 1), L)
    numbers = [int("".join(map(str, x)), 2) for x, _ in rows]
    assert_law(numbers, {N: 1 / (2**n - 1) for N in range(1, 2**n)})
    assert all(int("".join(map(str, s[: (n + 1) // 2])), 2) == math.isqrt(N) for N, (_, s) in zip(numbers, rows))


@pytest.mark.parametrize("L", [40, WORD + 1], ids=["int64", "limbs"])
def test_binary_operands_follow_the_original_law(L):
    """n = 5: len(a) ~ U{1, 2, 3}, then a and m uniform among the nonzero numbers of their lengths."""
    law = {}
    for a_length in (1, 2, 3):
        m_length = 4 - a_length
        for a in range(1, 2**a_length):
            for m in range(1, 2**m_length):
                law[(a_length, a, m)] = 1 / 3 / (2**a_length - 1) / (2**m_length - 1)
    rows = dataset_rows(BinaryAddition, 5, 6000, L)
    drawn = [(x.index(2), reference.number(x[: x.index(2)]), reference.number(x[x.index(2) + 1:])) for x, _ in rows]
    assert_law(drawn, law)
    small = [tuple(x) for x, _ in dataset_rows(BinaryAddition, 2, 3000, L)]  # U{0, 1, 2} in 2 bits
    assert_law(small, {(0, 0): 1 / 3, (1, 0): 1 / 3, (0, 1): 1 / 3})


@pytest.mark.parametrize("V", [2, 4, 8, 5])
def test_symbols_are_uniform_and_independent(V):
    """Power-of-2 vocabularies draw b-bit fields of 62-bit words: each id, and each pair of
    neighbours (within a word and across words, 70 > 62 // b), uniform."""
    x = torch.tensor([tokens for tokens, _, _ in examples("reverse_string", 600, L=70, L_min=70, vocab_size=V)])
    assert_law(x.flatten().tolist(), {v: 1 / V for v in range(V)})
    assert_law((x[:, :-1] * V + x[:, 1:]).flatten().tolist(), {v: 1 / V**2 for v in range(V * V)})


def test_stack_and_missing_string_positions_are_uniform():
    stacks = [x for x, _, _ in examples("stack_manipulation", 4000, L=5, L_min=5)]
    assert_law([next((t for t, a in enumerate(x) if a >= 2), 5) for x in stacks], {k: 1 / 4 for k in (1, 2, 3, 4)})
    assert_law([a for x in stacks for a in x if a >= 2], {a: 1 / 3 for a in (2, 3, 4)})
    strings = [x for x, _, _ in examples("missing_duplicate_string", 3000, L=7, L_min=7)]
    assert_law([x.index(2) for x in strings], {i: 1 / 6 for i in range(6)})
    assert all(x[6] == 3 for x in strings)  # odd: the filler


def test_bracket_expressions_follow_the_original_law():
    """n = 7: (d op (d)), (-d op -d) or ((d) op d), each op: 9 shapes equally likely, digits
    uniform; n = 12: the root's left size ~ U{1..8}; n = 5..6 of solve_equation's x: the next
    digit from a uniform position, cyclically ((d+d)=v: 3/5 the first digit)."""
    batch = examples("modular_arithmetic_brackets", 9000, L=7, L_min=7)
    shapes = ["".join("d" if t < 5 else "+-*()"[t - 5] for t in x) for x, _, _ in batch]
    assert_law(shapes, {f"(d{op}(d))": 1 / 9 for op in "+-*"} | {f"(-d{op}-d)": 1 / 9 for op in "+-*"}
               | {f"((d){op}d)": 1 / 9 for op in "+-*"})
    assert_law([t for x, _, _ in batch for t in x if t < 5], {d: 1 / 5 for d in range(5)})
    tokens, _, _ = bracket_expressions(np.full(4000, 12), 5, True, np.random.default_rng(0), 12, (5, 6, 7, 8, 9))
    roots = []
    for row in tokens.tolist():
        level = 0
        for t, token in enumerate(row):
            level += (token == 8) - (token == 9)
            if level == 1 and token in (5, 6, 7) and row[t - 1] not in (5, 6, 7, 8):  # a binary op, not a sign
                roots.append(t - 1)  # the left size
                break
    assert_law(roots, {size: 1 / 8 for size in range(1, 9)})
    solved = examples("solve_equation", 4000, L=7, L_min=7)
    assert_law([x.index(9) for x, _, _ in solved], {1: 3 / 5, 3: 2 / 5})


def test_sample_is_the_datasets_batch_and_carries_the_task_lengths():
    for task in TASKS:
        seed = batch_seed(3, "train", 0, 0)
        x, y = synthetic.sample(task, 4, torch.Generator().manual_seed(seed), L=40, L_min=1)
        x2, y2, extra = dataset_class(task)(seed=3).batch("train", 0, 0, range(4))
        assert torch.equal(x, x2) and torch.equal(y, y2), task
        assert extra["task_lengths"].tolist() == [len(t) for t, _, _ in examples(task, 4, seed, L=40, L_min=1)]
    fixed = dataset_class("reverse_string")(num_train_examples=20)
    fixed.setup()
    x, _, extra = fixed.batch("train", 0, 0, range(3))
    assert extra["task_lengths"].tolist() == (x < fixed.blank_id).sum(-1).tolist()


@pytest.mark.parametrize("task", TASKS)
def test_the_eval_set_is_unseen_lengths(task):
    config = OmegaConf.load(CONFIGS / f"{task}.yaml")
    config.seed = 0
    train, eval_sets = build_datasets(config)
    assert config._name_ == task and train.L == 40 and train.L_min == 1
    x, _, extra = eval_sets["ood"].batch("val", 0, 0, range(2))
    assert (extra["task_lengths"] > 40).all() and eval_sets["ood"].L == 500


def test_length_metrics_key_an_example_by_its_task_length():
    """accuracy_by_length and chomsky_score key an example by the hierarchy's length (the input),
    not by its last labelled position + 1 (the total)."""
    dataset = dataset_class("duplicate_string")(L=6, L_min=2)
    x, y, extra = dataset.batch("val", 0, 0, range(32))
    wrong = y.clone()
    wrong[extra["task_lengths"] == 3] = 1 - wrong[extra["task_lengths"] == 3].clamp(min=0)  # all wrong at n = 3
    logits = torch.nn.functional.one_hot(wrong.clamp(min=0), dataset.d_output).float()
    metrics = SplitMetrics(["chomsky_score", "accuracy_by_length"], dataset.d_output, "val/", length=dataset.L_input)
    metrics.update(logits, y, torch.tensor(0.0), extra)
    accuracy, count = metrics.curve_values()["accuracy_by_length"]
    lengths = extra["task_lengths"].tolist()
    assert count.tolist() == [2 * n * lengths.count(n) for n in range(1, dataset.L_input + 1)]  # 2n labels each
    present = sorted(set(lengths))
    assert accuracy[[n - 1 for n in present]].tolist() == [0.0 if n == 3 else 1.0 for n in present]
    score = metrics.scalars.compute()["val/chomsky_score"].item()
    assert score == pytest.approx(1 - 1 / len(present)) and 3 in present


@pytest.mark.parametrize("make, message", [
    (lambda: dataset_class("modular_arithmetic_brackets")(modulus=11),
     "dataset.modulus=11 must be an integer in 1..10"),
    (lambda: dataset_class("solve_equation")(modulus=0), "dataset.modulus=0 must be an integer in 1..10"),
    (lambda: dataset_class("modular_arithmetic_brackets")(mult="yes"), "dataset.mult='yes' must be true or false"),
    (lambda: dataset_class("reverse_string")(vocab_size=0), "dataset.vocab_size=0 must be an integer >= 1"),
    (lambda: dataset_class("bucket_sort")(vocab_size=2.5), "dataset.vocab_size=2.5 must be an integer >= 1"),
    (lambda: dataset_class("compute_sqrt")(L=0), "dataset.L=0 must be a positive integer"),
    (lambda: dataset_class("binary_addition")(L=40, L_min=41),
     "dataset.L_min=41 must be an integer in 1..dataset.L=40"),
])
def test_bad_parameters_are_named(make, message):
    with pytest.raises(ConfigError, match=message) as error:
        make()
    assert "\n" not in str(error.value)


def test_big_integers_match_pythons():
    rng = random.Random(0)
    for _ in range(100):
        ka, kb = rng.randint(1, 8), rng.randint(1, 8)
        special = [0, 1, 2**(16 * ka) - 1, 2**(16 * ka) - 2**16, rng.getrandbits(16 * ka)]  # carry chains of 0xFFFF
        a = [rng.choice(special) for _ in range(6)]
        b = [rng.choice([0, 1, 2**(16 * kb) - 1, rng.getrandbits(16 * kb)]) for _ in range(6)]
        A, Bk = torch.stack([bigint.from_int(v, ka) for v in a]), torch.stack([bigint.from_int(v, kb) for v in b])
        assert [bigint.to_int(r) for r in bigint.multiply(A, Bk)] == [u * v for u, v in zip(a, b)]
        B2 = torch.stack([bigint.from_int(v % 2**(16 * ka), ka) for v in b])
        assert [bigint.to_int(r) for r in bigint.add(A, B2)] == [u + v % 2**(16 * ka) for u, v in zip(a, b)]
        assert bigint.compare(A, B2).tolist() == [(u > v % 2**(16 * ka)) - (u < v % 2**(16 * ka)) for u, v in zip(a, b)]
        bits = bigint.unpack(A)
        assert torch.equal(bigint.pack(bits, ka), A) and bigint.bit_length(bits).tolist() == [v.bit_length() for v in a]
    wide = torch.tensor([[2**40 + 5, 2**33, 0xFFFF, 0xFFFF, 0]])  # limbs beyond 16 bits: the value is kept
    value = sum(v << (16 * j) for j, v in enumerate(wide[0].tolist()))
    assert bigint.to_int(bigint.normalize(wide)[0]) == value % 2**80
