"""The per-sample baselines of `benchmarks.datagen`: benchmarks/dlr_loader.py (--families dlr),
benchmarks/chomsky_original.py (--families chomsky), benchmarks/icl_original.py (--families icl) and
mad_reference (--families mad) make our generators' shapes and the labels docs/tasks.md and the
references' labels define."""

import random

import numpy as np
import pytest
import torch

from benchmarks import chomsky_original, datagen, dlr_loader, icl_original
from src.dataloaders import chomsky_reference, icl_reference, mad_reference
from src.dataloaders.sequence1d import TASKS, Sequence1D
from src.dataloaders.synthetic import sample

L, B = 64, 3


@pytest.mark.parametrize("task", TASKS)
def test_baseline_batch_has_our_shapes_and_labels(task):
    ours = Sequence1D(task=task, L=L, M=8).generate(B, torch.Generator().manual_seed(0))
    x, y = dlr_loader.batch(task, B, torch.Generator().manual_seed(0), L, M=8)
    assert [t.shape for t in ours] == [x.shape, y.shape] and x.dtype == y.dtype == torch.float32
    torch.testing.assert_close(x[..., -2:], ours[0][..., -2:])  # the pos channels
    x, y = x.double(), y.double()
    for seq, target, marker in zip(x[..., 0], y, x[..., 1]):
        if task == "shift":
            for j, s in enumerate(np.linspace(0, L - L / 8, 8).astype(int)):
                torch.testing.assert_close(target[:, j], torch.cat((seq.new_zeros(s), seq[: L - s])), atol=1e-6, rtol=0)
        elif task == "sort":
            order = sorted(range(L), key=lambda i: (abs(seq[i] - seq[0]), i))
            torch.testing.assert_close(target[:, 0], seq[order], atol=1e-7, rtol=0)
        elif "masked_select" in task:
            assert marker.sum() == 8 and torch.equal(target[:, 0], seq[marker == 1])
        elif "solve" in task:
            N = 7  # 7^2 + 14 <= 64
            AB = seq[: N * N + N].reshape(N, N + 1)
            torch.testing.assert_close(AB[:, :N] @ AB[:, :N].T, torch.eye(N, dtype=AB.dtype), atol=1e-5, rtol=0)
            torch.testing.assert_close(AB[:, :N] @ target[:, 0], AB[:, N], atol=1e-5, rtol=0)


@pytest.mark.parametrize("task", list(chomsky_original.TASKS))
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5, 6, 7, 40])
def test_chomsky_baseline_has_our_layout_and_the_reference_labels(task, length):
    x, y = chomsky_original.batch(task, 8, np.random.RandomState(length), random.Random(length), length)
    ours = sample(task, 8, torch.Generator().manual_seed(0), L=length, L_min=length)
    assert x.shape == y.shape == ours[0].shape and x.dtype == y.dtype == torch.int64
    assert bool((x[:, :length] < chomsky_reference.input_size(task)).all())  # no <blank> in the input
    for row, labels in zip(x.tolist(), y.tolist()):
        assert labels == chomsky_reference.labels(task, row)


@pytest.mark.parametrize("task, params", [("induction_head", dict(vocab_size=16, L=40, num_triggers=3)),
                                          ("associative_recall", dict(vocab_size=12, L=21, num_keys=2, allow_dot=True)),
                                          ("copying", dict(vocab_size=6, L=20, M=5))])
def test_icl_baselines_have_our_layout_and_the_reference_labels(task, params):
    """benchmarks/icl_original.py (--families icl) makes our shapes and icl_reference's labels."""
    ours = sample(task, 4, torch.Generator().manual_seed(0), **params)
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = icl_original.copying(**params) if task == "copying" else getattr(icl_original, task)(rng, **params)
        assert x.shape == y.shape == ours[0].shape[1:] and x.dtype == y.dtype == torch.int64
        assert y.tolist() == icl_reference.labels(task, x.tolist(), **params)


def test_icl_dfa_baseline_walks_its_automaton():
    params = dict(max_len_per_example=8, min_num_in_context_examples=3, max_num_in_context_examples=6)
    rng, L = np.random.default_rng(0), 60
    for _ in range(20):
        x, y, dfa = icl_original.icl_dfa(rng, L, **params)
        automaton = {s: {ord(a) - 97: int(t) for a, t in out.items()} for s, out in dfa.items()}
        allowed = icl_reference.walk(automaton, x.tolist(), sep=18, pad=19)
        for t, (want, got) in enumerate(zip(icl_reference.dfa_labels(x.tolist(), allowed, 18, 19), y.tolist())):
            assert got == want or (want is None and (got in allowed[t] or (int((x != 19).sum()) == L and got == -100)))



@pytest.mark.parametrize("row", list(datagen.MAD))
def test_mad_baseline_has_our_shapes_and_the_reference_labels(row, monkeypatch):
    """benchmarks.datagen's MAD rows: MAD's per-example generator and ours make batches of one shape
    and layout, in the same form, whose labels are the reference's from the tokens."""
    from src.dataloaders.mad import mad_task

    task, settings, form = datagen.MAD[row]
    settings = {**settings, "seq_len": min(settings.get("seq_len", 256), 256)} if "seq_len" in settings else settings
    monkeypatch.setitem(datagen.MAD, row, (task, settings, form))
    batched, per_sample = datagen.mad_rows(None, 4)[row]
    ours, theirs = batched(0), per_sample(0)
    assert [t.shape for t in ours] == [t.shape for t in theirs] and theirs[0].dtype == torch.int64
    data = mad_task(task, **settings)
    full = {k: getattr(data, k) for k in ("vocab_size", "multi_query", "noise_vocab_size", "kv_map_seed")
            if hasattr(data, k)} | ({"num_tokens_to_copy": data.n} if task == "selective_copying" else {})
    for x, y in zip(*(t.tolist() for t in theirs)):
        expected = mad_reference.labels(task, x, form == "train", **full)
        assert all(b == a or (b is None and a != -100) for a, b in zip(y, expected)), row
