"""MAD's tasks (src/dataloaders/mad.py): every label recomputed from its example's tokens, for
every task, option and form; the per-example reference is MAD's own generator (the same numbers
for the same seed, against mad/data/instances.py when athms/mad-lab is fetched); the batched
generators have the reference's law; the fixes differ from MAD where they should, and only there.

Law bound: for each statistic of an example (a small integer), N examples from each generator,
every value's frequency differs by at most 5 standard errors of a difference of two frequencies,
5 sqrt(2 p (1 - p) / N) + 1 / N (p: the pooled frequency); a value seen in one only is held to the
same bound. The seeds are fixed, so a pass is reproducible; `test_the_bound_separates_the_fixes`
shows the bound fails laws that differ as MAD's bugs do.
"""

import importlib.util
import os
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from src.dataloaders import mad_reference as reference
from src.dataloaders import synthetic
from src.dataloaders.base import batch_seed
from src.dataloaders.mad import GRID, TASKS, InContextRecall, distinct_ids, grid, mad_task
from src.utils.errors import ConfigError

MAD_LAB = Path(os.environ.get("MAD_LAB", "/work/.mirror/athms+mad-lab/repo"))  # a checkout or a bare git dir

# (task, options): every option of every task, at small sizes where the defaults are large
CASES = [
    ("in_context_recall", {}),
    ("in_context_recall", {"multi_query": False, "seq_len": 64}),
    ("noisy_in_context_recall", {}),
    ("noisy_in_context_recall", {"frac_noise": 0.8, "multi_query": False, "seq_len": 64}),
    ("fuzzy_in_context_recall", {}),
    ("fuzzy_in_context_recall", {"original": True}),
    ("fuzzy_in_context_recall", {"multi_query": False, "noise_vocab_size": 4, "frac_noise": 0.3, "vocab_size": 24}),
    ("fuzzy_in_context_recall", {"k_motif_size": 1, "v_motif_size": 2, "vocab_size": 32, "seq_len": 64}),
    ("memorization", {}),
    ("memorization", {"noise_vocab_size": 8, "frac_noise": 0.3, "kv_map_seed": 7}),
    ("memorization", {"noise_vocab_size": 8, "frac_noise": 0.3, "original": True}),
    ("compression", {}),
    ("compression", {"noise_vocab_size": 4, "frac_noise": 0.3}),
    ("compression", {"noise_vocab_size": 4, "frac_noise": 0.3, "original": True}),
    ("selective_copying", {}),
    ("selective_copying", {"original": True, "seq_len": 64, "num_tokens_to_copy": 8}),
]
IDS = [f"{task}-{'-'.join(f'{k}={v}' for k, v in options.items()) or 'baseline'}" for task, options in CASES]


def params(task, options):
    """The task's full parameters (its MAD baseline with `options` over it), as the reference takes them."""
    dataset = mad_task(task, **options)
    keys = ["vocab_size", "seq_len", "multi_query", "noise_vocab_size", "frac_noise", "original", "kv_map_seed"]
    out = {k: getattr(dataset, k) for k in keys if hasattr(dataset, k)}
    out.update({"k_motif_size": dataset.K, "v_motif_size": dataset.V} if hasattr(dataset, "K") else {})
    out.update({"num_tokens_to_copy": dataset.n} if task == "selective_copying" else {})
    return out


def same(labels, expected):
    """Labels equal the recomputed ones; where the tokens determine none (None), a label is there."""
    return len(labels) == len(expected) and all(b == a or (b is None and a != -100) for a, b in zip(labels, expected))


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("task, options", CASES, ids=IDS)
def test_labels_recomputed_from_tokens(task, options, training):
    dataset = mad_task(task, **options)
    x, y = dataset.draw(64, torch.Generator().manual_seed(1), training)
    assert x.shape == y.shape == (64, dataset.L) and x.dtype == y.dtype == torch.int64
    assert ((0 <= x) & (x < dataset.n_tokens)).all() and ((y == -100) | ((0 <= y) & (y < dataset.d_output))).all()
    full = params(task, options)
    for tokens, labels in zip(x.tolist(), y.tolist()):
        assert same(labels, reference.labels(task, tokens, training, **full)), (tokens, labels)
    if not training and task != "compression":
        assert ((y != -100).sum(1) > 0).all()  # every example asks something


@pytest.mark.parametrize("task, options", CASES, ids=IDS)
def test_reference_labels_are_its_own(task, options):
    full = params(task, options)
    for seed in range(8):
        for training in (False, True):
            np.random.seed(seed)
            tokens, labels = reference.instance(task, np.random.default_rng(seed), training, **full)
            assert same(labels, reference.labels(task, tokens, training, **full))


@pytest.fixture(scope="module")
def mad(tmp_path_factory):
    """MAD's mad/data/instances.py (numpy only), loaded by path from the fetched repository."""
    if (MAD_LAB / "mad/data/instances.py").is_file():
        path = MAD_LAB / "mad/data/instances.py"
    elif MAD_LAB.is_dir():
        path = tmp_path_factory.mktemp("mad") / "instances.py"
        path.write_text(subprocess.run(["git", f"--git-dir={MAD_LAB}", "show", "HEAD:mad/data/instances.py"],
                                       capture_output=True, text=True, check=True).stdout)
    else:
        pytest.skip(f"athms/mad-lab is not fetched at MAD_LAB={MAD_LAB} (a checkout or its bare git dir)")
    spec = importlib.util.spec_from_file_location("mad_instances", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def mad_call(mad, task, full, rng, training):
    """MAD's instance function for `task` with MAD's own keyword names (the original behaviour)."""
    kwargs = {k: v for k, v in full.items() if k not in ("original", "kv_map_seed")}
    if task == "memorization":
        n = full["vocab_size"] - 1 - (0 if full["original"] else full["noise_vocab_size"])
        kwargs["kv_map"] = mad.generate_kv_map(n, 1, 1, seed=full["kv_map_seed"])
    fn = getattr(mad, f"generate_{task}_instance")
    return fn(rng=rng, is_training=training, **kwargs)


@pytest.mark.parametrize("task, options", CASES, ids=IDS)
def test_reference_is_mads_generator(mad, task, options):
    """With original=true (where MAD has a bug) the reference draws MAD's numbers: same seed, same
    example, in both forms (selective copying: also the same legacy global numpy seed)."""
    full = params(task, options)
    if task != "memorization" and "original" in full:  # (memorization: the map is the fix; MAD's call takes it)
        full["original"] = True
    for seed in range(12):
        for training in (False, True):
            np.random.seed(seed)
            x, y = mad_call(mad, task, full, np.random.default_rng(seed), training)
            np.random.seed(seed)
            assert (list(map(int, x)), list(map(int, y))) == reference.instance(
                task, np.random.default_rng(seed), training, **full), (seed, training)


@pytest.mark.parametrize("vocab_size, noise, seed", [(256, 0, 12345), (8192, 0, 12345), (33, 4, 0), (7, 0, 3)])
def test_memorization_map_is_mads_for_the_seed(mad, vocab_size, noise, seed):
    """Exact: the map of mad.py (numpy's default_rng(kv_map_seed)) is MAD's generate_kv_map."""
    ours = mad_task("memorization", vocab_size=vocab_size, noise_vocab_size=noise, kv_map_seed=seed).table
    theirs = mad.generate_kv_map(vocab_size - 1 - noise, 1, 1, seed=seed)
    assert {k: ours[k].item() for k in range(len(ours))} == {k[0]: v[0] for k, v in theirs.items()}
    assert reference.kv_map(vocab_size, noise, seed) == {k: ours[k].item() for k in range(len(ours))}


def test_memorization_map_original_ignores_the_noise_ids():
    """MAD's benchmark builds its map over vocab_size - 1 ids even with noise (original=true)."""
    table = mad_task("memorization", vocab_size=40, noise_vocab_size=8, original=True).table
    assert len(table) == 39 // 2 and int(table.max()) >= 39 - 8  # values reach the noise ids
    fixed = mad_task("memorization", vocab_size=40, noise_vocab_size=8).table
    assert len(fixed) == 31 // 2 and int(fixed.max()) < 31


# --- laws ------------------------------------------------------------------------------------


def key_runs(task, x, full):
    keys, values, _ = reference.vocabularies(task, full["vocab_size"], full.get("multi_query", True),
                                             full.get("noise_vocab_size", 0))
    runs = reference._runs(x, lambda t: "key" if t in keys else "value" if t in values else t)
    return [tuple(x[a:b]) for kind, a, b in runs if kind == "key"]


def statistics(task, x, y, full):
    """Small integers that describe an example (test form)."""
    labelled = [t for t, v in enumerate(y) if v != -100]
    stats = {"labels": len(labelled), "first_label": labelled[0] if labelled else -1, "first": x[0], "last": x[-1]}
    if task in ("in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall"):
        keys = key_runs(task, x, full)
        stats |= {"distinct_keys": len(set(keys)), "final_key_seen": int(keys[-1] in keys[:-1]),
                  "final_key_count": keys.count(keys[-1]), "answer": y[-1], "pairs": len(keys)}
    if task == "fuzzy_in_context_recall":
        pad = full["vocab_size"] - (1 if full.get("multi_query", True) else 2)
        keys = key_runs(task, x, full)
        stats |= {"pad": sum(t == pad for t in x), "final_key_size": len(keys[-1]),
                  "key_sizes": sum(len(k) for k in keys)}
    if full.get("frac_noise"):
        if task in ("memorization", "compression"):
            noise = range(full["vocab_size"] - 1 - full["noise_vocab_size"], full["vocab_size"] - 1)
        else:
            noise = reference.vocabularies(task, full["vocab_size"], full["multi_query"], full["noise_vocab_size"])[2]
        stats["noise"] = sum(t in noise for t in x)
    if task == "selective_copying":
        blank, n = full["vocab_size"] - 2, full["num_tokens_to_copy"]
        data = [t for t, v in enumerate(x[: len(x) - n - 1]) if v != blank]
        stats |= {"first_data": data[0], "after_last": len(x) - n - 1 - data[-1], "gap": data[1] - data[0]}
    return stats


def assert_same_law(a, b):
    """Two lists of {statistic: value} (N each) have every value's frequency within the bound."""
    N = len(a)
    for name in a[0]:
        ca, cb = Counter(s[name] for s in a), Counter(s[name] for s in b)
        for value in set(ca) | set(cb):
            pa, pb = ca[value] / N, cb[value] / N
            p = (pa + pb) / 2
            assert abs(pa - pb) <= 5 * (2 * p * (1 - p) / N) ** 0.5 + 1 / N, (name, value, pa, pb)


def batched_stats(task, options, N):
    full = params(task, options)
    x, y = mad_task(task, **options).draw(N, torch.Generator().manual_seed(2), False)
    return [statistics(task, xb, yb, full) for xb, yb in zip(x.tolist(), y.tolist())]


def reference_stats(task, options, N):
    full, rng = params(task, options), np.random.default_rng(3)
    np.random.seed(3)
    return [statistics(task, *reference.instance(task, rng, False, **full), full) for _ in range(N)]


LAW_CASES = [
    ("in_context_recall", {}, 1500),
    ("noisy_in_context_recall", {"frac_noise": 0.8, "seq_len": 64}, 2000),
    ("fuzzy_in_context_recall", {}, 1200),
    ("fuzzy_in_context_recall", {"original": True}, 1200),
    ("fuzzy_in_context_recall", {"k_motif_size": 2, "v_motif_size": 1, "vocab_size": 12, "seq_len": 48,
                                 "noise_vocab_size": 2, "frac_noise": 0.3, "multi_query": False}, 1500),
    ("memorization", {"noise_vocab_size": 8, "frac_noise": 0.5, "vocab_size": 40}, 3000),
    ("compression", {"noise_vocab_size": 4, "frac_noise": 0.3}, 3000),
    ("selective_copying", {"seq_len": 64, "num_tokens_to_copy": 8}, 3000),
    ("selective_copying", {"seq_len": 64, "num_tokens_to_copy": 8, "original": True}, 3000),
]


@pytest.mark.parametrize("task, options, N", LAW_CASES, ids=[f"{t}-{o.get('original', False)}" for t, o, _ in LAW_CASES])
def test_the_batched_law_is_the_references(task, options, N):
    assert_same_law(batched_stats(task, options, N), reference_stats(task, options, N))


def test_the_bound_separates_the_fixes():
    """MAD's bugs change these laws by more than the bound: the selective-copying blanks never
    after the last id, and fuzzy recall's final key sometimes absent from the context."""
    options = {"seq_len": 64, "num_tokens_to_copy": 8}
    with pytest.raises(AssertionError):  # first_data, after_last: the blanks move
        assert_same_law(batched_stats("selective_copying", options, 3000),
                        batched_stats("selective_copying", {**options, "original": True}, 3000))
    fixed = batched_stats("fuzzy_in_context_recall", {}, 4000)
    original = batched_stats("fuzzy_in_context_recall", {"original": True}, 4000)
    assert all(s["final_key_seen"] for s in fixed)
    missing = 1 - sum(s["final_key_seen"] for s in original) / len(original)
    assert 0.01 < missing < 0.05, missing  # MAD: 2.3% of its baseline test examples
    with pytest.raises(AssertionError, match="final_key_seen"):
        assert_same_law(fixed, original)


def test_selective_copying_original_keeps_the_last_id_next_to_copy():
    x, _ = mad_task("selective_copying", original=True).draw(256, torch.Generator().manual_seed(0), False)
    assert (x[:, 256 - 16 - 2] != 14).all()  # the id before <copy> is never a blank
    x, _ = mad_task("selective_copying").draw(256, torch.Generator().manual_seed(0), False)
    assert (x[:, 256 - 16 - 2] == 14).any()


def test_compression_noise_is_unlabelled_unless_original():
    x, y = mad_task("compression", noise_vocab_size=4, frac_noise=0.5).draw(64, torch.Generator().manual_seed(0), False)
    noise = (x >= 11) & (x < 15)
    assert noise.any() and (y[noise] == -100).all() and torch.equal(y[~noise], x[~noise])
    x, y = mad_task("compression", noise_vocab_size=4, frac_noise=0.5, original=True).draw(
        64, torch.Generator().manual_seed(0), False)
    assert torch.equal(x, y)


def test_distinct_ids_are_a_uniform_ordered_sample():
    x = distinct_ids((60000,), 3, 5, torch.Generator().manual_seed(0))
    triples = Counter(map(tuple, x.tolist()))
    assert len(triples) == 60 and all(len(set(t)) == 3 for t in triples)  # 5 * 4 * 3 ordered triples
    assert max(abs(c - 1000) for c in triples.values()) < 5 * 1000**0.5


# --- the dataset -----------------------------------------------------------------------------


def test_the_training_split_draws_the_training_form():
    """Training batches (and the fixed training set) label the next token everywhere; validation and
    test batches label the answers only; form=test forces the test form on every split."""
    dataset = mad_task("in_context_recall", num_train_examples=64, num_eval_examples=32)
    dataset.setup()
    x, y = dataset.batch("train", 0, 0, range(16))
    assert torch.equal(y[:, :-1], x[:, 1:])
    x, y = dataset.batch("val", 0, 0, range(16))
    assert (y == -100).float().mean() > 0.5
    forced = InContextRecall(form="test", num_train_examples=None, samples_per_epoch=64)
    x, y = forced.batch("train", 0, 0, range(16))
    assert (y == -100).float().mean() > 0.5


def test_sample_is_the_datasets_batch():
    for task in TASKS:
        x, y = synthetic.sample(task, 4, torch.Generator().manual_seed(batch_seed(3, "val", 0, 0)), seed=3)
        x2, y2 = mad_task(task, seed=3).batch("val", 0, 0, range(4))
        assert torch.equal(x, x2) and torch.equal(y, y2), task


def test_the_grid_is_mads():
    """66 settings: the baselines of configs/tasks/*.yml and one change at a time (and, with the
    repository fetched, exactly its yml files)."""
    settings = grid()
    assert len(settings) == 66 and sum(s == {"task": t} for s in settings for t in TASKS) == 6
    for setting in settings:
        mad_task(**setting)  # every setting builds
    names = {"in_context_recall": "in-context-recall", "noisy_in_context_recall": "noisy-in-context-recall",
             "fuzzy_in_context_recall": "fuzzy-in-context-recall", "memorization": "memorization",
             "compression": "compression", "selective_copying": "selective-copying"}
    if not MAD_LAB.is_dir():
        return
    for task, name in names.items():
        text = subprocess.run(["git", f"--git-dir={MAD_LAB}", "show", f"HEAD:configs/tasks/{name}.yml"],
                              capture_output=True, text=True).stdout
        mad = yaml.safe_load(text)
        assert GRID[task] == mad["changes"], task
        baseline = mad_task(task)
        for key, value in mad["baseline"].items():
            assert getattr(baseline, {"multi_query": "multi_query", "k_motif_size": "K", "v_motif_size": "V",
                                      "num_tokens_to_copy": "n"}.get(key, key)) == value, (task, key)


def test_a_key_the_task_does_not_take_is_refused():
    with pytest.raises(ConfigError, match="dataset.num_tokens_to_copy=4 does not apply to dataset.task=compression"):
        mad_task("compression", num_tokens_to_copy=4)
    with pytest.raises(ConfigError, match="dataset.task='copy' is not valid"):
        mad_task("copy")
    with pytest.raises(ConfigError, match="cannot hold motifs"):
        mad_task("fuzzy_in_context_recall", vocab_size=6)
    with pytest.raises(ConfigError, match="seq_len=7 must be even"):
        mad_task("in_context_recall", seq_len=7)


def test_mad_grid_sweeps_mads_settings_times_its_optimiser_grid():
    """configs/experiment/mad-grid.yaml: `dataset` over grid() (each a dict merged into dataset=mad),
    times lr {1e-4, 5e-4, 1e-3} x weight decay {0, 0.1}: 396 jobs."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    params = OmegaConf.load(Path(__file__).resolve().parents[1] / "configs/experiment/mad-grid.yaml").hydra.sweeper.params
    sweeps = {key: OverridesParser.create().parse_override(f"{key}={value}").sweep_iterator()
              for key, value in params.items()}
    settings = [dict(s) for s in sweeps["dataset"]]
    assert settings == grid()
    assert [float(v) for v in sweeps["optimizer.lr"]] == [1e-4, 5e-4, 1e-3]
    assert [float(v) for v in sweeps["optimizer.weight_decay"]] == [0.0, 0.1]
