"""The in-context tasks (src/dataloaders/icl.py, dfa.py): every label recomputed from the tokens by
src/dataloaders/icl_reference.py, the automata checked by a simulator, the law of a draw against
the originals' generators one example at a time (benchmarks/icl_original.py), and the metrics
dfa_accuracy and dfa_tv against a per-position computation.

Law bound: a statistic's mean over n draws of ours and n of the original's differs by less than 5
standard errors of the difference (a false alarm ~6e-7 per statistic)."""

import math

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from benchmarks import icl_original
from src.dataloaders import icl_reference, synthetic
from src.dataloaders.base import batch_seed
from src.dataloaders.synthetic import dataset_class
from src.module import build_datasets
from src.tasks.metrics import DFAAccuracy, DFATotalVariation
from token_checks import CONFIGS

CASES = [
    ("induction_head", dict(vocab_size=8, L=12)),
    ("induction_head", dict(vocab_size=16, L=40, num_triggers=4)),
    ("induction_head", dict(vocab_size=6, L=20, induction_len=3, num_triggers=5)),
    ("induction_head", dict(vocab_size=16, L=30, induction_len=2, loss_on="answer")),
    ("associative_recall", dict(vocab_size=20, L=40)),
    ("associative_recall", dict(vocab_size=10, L=9, allow_dot=True)),
    ("associative_recall", dict(vocab_size=8, L=31, num_keys=2, allow_dot=True)),
    ("associative_recall", dict(vocab_size=40, L=60, num_keys=3, loss_on="answer")),
    ("copying", dict(vocab_size=16, L=20, M=6)),
    ("copying", dict(vocab_size=5, L=7, M=3, variable=False)),
]


def _ids(case):
    return f"{case[0]}-" + "-".join(f"{k}{v}" for k, v in case[1].items())


@pytest.mark.parametrize("task, params", CASES, ids=[_ids(c) for c in CASES])
def test_every_label_is_recomputed_from_the_tokens(task, params):
    dataset = dataset_class(task)(**params)
    x, y = synthetic.sample(task, 200, torch.Generator().manual_seed(1), **params)
    assert x.shape == y.shape == (200, dataset.L_input) and x.dtype == y.dtype == torch.int64
    assert ((0 <= x) & (x < dataset.n_tokens)).all()
    for tokens, labels in zip(x.tolist(), y.tolist()):
        assert labels == icl_reference.labels(task, tokens, **params), (tokens, labels)
        if task == "induction_head":  # every `=>` of the context is followed by the copy
            L, k = params["L"], params.get("induction_len", 1)
            assert tokens[L] == params["vocab_size"] - 2 and tokens[:L].count(tokens[L]) >= 1
            p = tokens.index(tokens[L])
            for q in (i for i, t in enumerate(tokens[:L]) if t == tokens[L]):
                assert tokens[q + 1 : q + 1 + k] == tokens[p + 1 : p + 1 + k]
        if task == "copying" and not params.get("variable", True):
            assert all(t != 0 for t in tokens[: params["M"]])


@pytest.mark.parametrize("task", ["induction_head", "associative_recall"])
def test_evaluation_scores_the_answer_only(task):
    dataset = dataset_class(task)(vocab_size=12, L=24, induction_len=2) if task == "induction_head" else \
        dataset_class(task)(vocab_size=12, L=24)
    k = 2 if task == "induction_head" else 1
    x, y = dataset.batch("train", 0, 0, range(16))
    assert (y != -100).all()  # the original's language-model loss
    for split in ("val", "test"):
        x, y = dataset.batch(split, 0, 0, range(16))
        assert (y[:, :-k] == -100).all() and (y[:, -k:] != -100).all()
        full = icl_reference.labels(task, x[0].tolist(), vocab_size=12, induction_len=k)
        assert y[0, -k:].tolist() == full[-k:]


@pytest.mark.parametrize("task", ["induction_head", "associative_recall", "copying", "icl_dfa"])
def test_sample_is_the_datasets_batch(task):
    params = dict(max_len_per_example=6) if task == "icl_dfa" else {}
    seed = batch_seed(3, "train", 0, 0)
    ours = synthetic.sample(task, 4, torch.Generator().manual_seed(seed), **params)
    theirs = dataset_class(task)(seed=3, num_train_examples=None, **params).batch("train", 0, 0, range(4))
    for a, b in zip(ours, theirs):
        for key in (a if isinstance(a, dict) else [None]):
            assert torch.equal(a[key], b[key]) if key else torch.equal(a, b)


@pytest.mark.parametrize("task", ["induction_head", "associative_recall", "copying"])
def test_default_eval_sets_reach_16x_the_training_length(task):
    config = OmegaConf.load(CONFIGS / f"{task}.yaml")
    config.seed = 0
    train, eval_sets = build_datasets(config)
    assert max(d.L for d in eval_sets.values()) >= 16 * train.L


def dfa_dict(table):
    return {s: {a: int(t) for a, t in enumerate(row) if t >= 0} for s, row in enumerate(table.tolist())}


DFA_CASES = [dict(), dict(max_len_per_example=6, min_num_in_context_examples=2, max_num_in_context_examples=5),
             dict(vocab_size=8, max_num_nodes=5, max_outgoing_edges=3, L=100),  # prompts cut at 100
             dict(vocab_size=64, max_num_nodes=127, max_outgoing_edges=9, max_len_per_example=8)]


@pytest.mark.parametrize("params", DFA_CASES, ids=["seq_icl", "short", "cut", "largest"])
def test_icl_dfa_prompts_walk_their_automaton(params):
    dataset = dataset_class("icl_dfa")(**params)
    sep, pad = dataset.sep_id, dataset.pad_id
    x, y, extra = synthetic.sample("icl_dfa", 24, torch.Generator().manual_seed(2), **params)
    assert x.shape == y.shape == extra["valid_next"].shape == (24, dataset.L)
    for b in range(24):
        dfa, tokens = dfa_dict(extra["dfa"][b]), x[b].tolist()
        assert len(dfa[0]) >= 1 and all(s not in out.values() for s, out in dfa.items())  # no self-loops
        assert all(1 <= len(out) < dataset.edges for s, out in dfa.items() if out)
        allowed = icl_reference.walk(dfa, tokens, sep, pad)
        assert [sum(1 << a for a in s) for s in allowed] == extra["valid_next"][b].tolist()
        expected = icl_reference.dfa_labels(tokens, allowed, sep, pad)
        n = len([t for t in tokens if t != pad])
        cut = n == dataset.L
        for t, (want, got) in enumerate(zip(expected, y[b].tolist())):
            if want is None:  # the prompt's last letter (or, when cut, whatever followed)
                assert got in allowed[t] or (cut and got == -100), (t, got)
            else:
                assert got == want, (t, got, want)
        strings = " ".join(map(str, tokens[:n])).split(f" {sep} ")
        assert len(strings) < dataset.max_examples and (cut or len(strings) + 1 >= dataset.min_examples)


def mean_gap(ours, theirs):
    """(difference of the means) / (its standard error)."""
    ours, theirs = np.asarray(ours, dtype=float), np.asarray(theirs, dtype=float)
    se = math.sqrt(ours.var() / len(ours) + theirs.var() / len(theirs))
    return abs(ours.mean() - theirs.mean()) / max(se, 1e-12)


def statistics(task, x, y, params):
    """Per-example statistics whose law must match the original's."""
    V, out = params["vocab_size"], []
    for tokens, labels in zip(x.tolist(), y.tolist()):
        if task == "induction_head":
            L = params["L"]
            triggers = [i for i, t in enumerate(tokens[:L]) if t == V - 2]
            out.append((triggers[0], len(triggers), labels[-1], tokens[0]))
        else:
            context = tokens[: -(params.get("num_keys", 1) + 1)]
            keys = {tuple(context[i : i + 1]) for i in range(0, len(context), 2)}
            out.append((labels[-1] == V - 1, len(keys), labels[-1], tokens[-1]))
    return np.array(out)


LAW = [("induction_head", dict(vocab_size=8, L=16)), ("induction_head", dict(vocab_size=6, L=20, num_triggers=4)),
       ("associative_recall", dict(vocab_size=12, L=12)), ("associative_recall", dict(vocab_size=14, L=8, allow_dot=True))]


@pytest.mark.parametrize("task, params", LAW, ids=[_ids(c) for c in LAW])
def test_the_law_of_a_draw_is_the_originals(task, params):
    n = 3000
    x, y = synthetic.sample(task, n, torch.Generator().manual_seed(0), **params)
    rng = np.random.default_rng(0)
    pairs = [getattr(icl_original, task)(rng, **params) for _ in range(n)]
    theirs = statistics(task, torch.stack([p[0] for p in pairs]), torch.stack([p[1] for p in pairs]), params)
    ours = statistics(task, x, y, params)
    for j in range(ours.shape[1]):
        assert mean_gap(ours[:, j], theirs[:, j]) < 5, (j, ours[:, j].mean(), theirs[:, j].mean())


def test_the_law_of_selective_copying_is_s4s():
    n, L, M = 3000, 12, 4
    x, _ = synthetic.sample("copying", n, torch.Generator().manual_seed(0), vocab_size=6, L=L, M=M)
    torch.manual_seed(0)
    theirs = torch.stack([icl_original.copying(6, L, M)[0] for _ in range(n)])
    for stat in (lambda x: (x[:, : L + M] != 0).float().argmax(1), lambda x: x[:, : L + M].sum(1)):
        assert mean_gap(stat(x).numpy(), stat(theirs).numpy()) < 5


def test_the_law_of_icl_dfa_is_seq_icls():
    n, params = 600, dict(max_len_per_example=12, min_num_in_context_examples=3, max_num_in_context_examples=8)
    dataset = dataset_class("icl_dfa")(**params)
    x, y, extra = synthetic.sample("icl_dfa", n, torch.Generator().manual_seed(0), **params)
    rng = np.random.default_rng(0)
    theirs = [icl_original.icl_dfa(rng, dataset.L, **params) for _ in range(n)]

    def stats(x, dfas):  # prompt length, strings, distinct letters, letters of state 0, states with edges
        out = []
        for tokens, dfa in zip(x.tolist(), dfas):
            n_ = len([t for t in tokens if t != dataset.pad_id])
            out.append((n_, tokens[:n_].count(dataset.sep_id), len({t for t in tokens[:n_] if t < dataset.sep_id}),
                        len(dfa[0]), len([s for s in dfa if dfa[s]])))
        return np.array(out)

    ours = stats(x, [dfa_dict(t) for t in extra["dfa"]])
    them = stats(torch.stack([t[0] for t in theirs]), [t[2] for t in theirs])
    for j in range(ours.shape[1]):
        assert mean_gap(ours[:, j], them[:, j]) < 5, (j, ours[:, j].mean(), them[:, j].mean())


def test_a_fixed_training_set_keeps_each_prompts_automaton():
    params = dict(max_len_per_example=6, min_num_in_context_examples=2, max_num_in_context_examples=4)
    dataset = dataset_class("icl_dfa")(num_train_examples=40, **params)
    dataset.setup()
    x, y, extra = dataset.batch("train", 1, 0, range(8, 16))
    for b in range(8):
        allowed = icl_reference.walk(dfa_dict(extra["dfa"][b]), x[b].tolist(), dataset.sep_id, dataset.pad_id)
        assert [sum(1 << a for a in s) for s in allowed] == extra["valid_next"][b].tolist()


def test_dfa_metrics_are_the_per_position_definitions():
    params = dict(max_len_per_example=8, min_num_in_context_examples=2, max_num_in_context_examples=6)
    x, y, extra = synthetic.sample("icl_dfa", 16, torch.Generator().manual_seed(4), **params)
    valid = extra["valid_next"]
    logits = torch.randn(*x.shape, 20, generator=torch.Generator().manual_seed(5)) * 3
    accuracy, tv = DFAAccuracy(), DFATotalVariation()
    for part in (slice(0, 7), slice(7, 16)):  # accumulated over batches
        accuracy.update(logits[part], y[part], valid_next=valid[part])
        tv.update(logits[part], y[part], valid_next=valid[part])
    hits, scored, total, positions = 0, 0, 0.0, 0
    for b in range(16):
        for t in range(x.shape[1]):
            letters = [v for v in range(20) if valid[b, t] >> v & 1]
            if y[b, t] != -100:
                scored += 1
                hits += int(logits[b, t].argmax()) in letters
            if letters:
                p = logits[b, t].double().softmax(-1).tolist()
                total += sum(abs(p[v] - (1 / len(letters) if v in letters else 0)) for v in range(20)) / 2
                positions += 1
    assert accuracy.compute().item() == pytest.approx(hits / scored)
    assert tv.compute().item() == pytest.approx(total / positions, rel=1e-6)
    with pytest.raises(Exception, match="valid_next"):
        DFAAccuracy().update(logits, y)
