"""The MQAR experiments (configs/experiment/zoology-mqar*.yaml, dsf-mqar, based-mqar): their resolved
protocol, two training steps each, early stopping at a threshold, the per-epoch cosine, and the
figure-2 grid as a CPU-sized Hydra multirun."""

import csv
import math
import os
import subprocess
import sys

import pytest

from conftest import ROOT, compose_config, train_in_process

MQAR_TINY = ["dataset.vocab_size=64", "dataset.L=32", "dataset.num_kv_pairs=2", "dataset.num_train_examples=16",
             "dataset.num_eval_examples=8", "loader.batch_size=4"]
BASED_TINY = ["dataset.segments=[{L:16,num_kv_pairs:2,num_examples:8},{L:32,num_kv_pairs:4,num_examples:8}]",
              "dataset.eval_sets=null", "dataset.eval_sets={L64_N8:{L:64,num_kv_pairs:8,num_eval_examples:4}}", "dataset.num_eval_examples=4"]
SIZES = {"zoology-mqar": MQAR_TINY, "zoology-mqar-fig2": MQAR_TINY, "dsf-mqar": MQAR_TINY,
         "based-mqar": [*MQAR_TINY, *BASED_TINY]}
RUN = ["wandb=null", "model.d_model=16", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
       "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null", "loader.num_workers=0"]


def test_zoology_mqar_is_the_figure_2_protocol():
    c = compose_config(["experiment=zoology-mqar"])
    assert (c.dataset._name_, c.dataset.vocab_size, c.dataset.L, c.dataset.num_kv_pairs) == ("mqar", 8192, 64, 4)
    assert (c.dataset.num_train_examples, c.dataset.num_eval_examples, c.dataset.random_non_queries) == (100000, 3000, False)
    m = c.model
    assert (m.n_layers, m.state_mixer, m.tie_embeddings, m.embedding_dropout, m.init, m.prenorm) == (
        2, "identity", True, 0.1, "gpt2", True)
    assert c.decoder.bias is False
    assert (m.layer._name_, m.layer.n_heads, m.layer.attn_dropout, m.pos_emb) == ("mha", 1, 0.1, "learned")
    assert (c.optimizer._name_, c.optimizer.weight_decay) == ("adamw", 0.1)
    assert (c.scheduler._name_, c.scheduler.T_max, c.scheduler.eta_min, c.train.interval) == ("cosine", 64, 0.0, "epoch")
    assert c.trainer.max_epochs == 64 and c.callbacks.early_stopping.stopping_threshold == 0.99
    assert c.train.monitor == "val/accuracy" and c.encoder == "embedding"
    sizes = {L: compose_config(["experiment=zoology-mqar", f"recall=L{L}_N{N}"]).loader.batch_size
             for L, N in ((128, 8), (256, 16), (512, 64))}
    assert sizes == {128: 512, 256: 256, 512: 128} and c.loader.batch_size == 512
    for model in ("mamba", "lstm"):  # learned positions for attention only
        assert compose_config(["experiment=zoology-mqar", f"model={model}"]).model.pos_emb == "none"
    # zoology's MambaBlock has no state-mixer sub-block; its TransformerBlock (every other mixer) has one
    assert compose_config(["experiment=zoology-mqar", "model=mamba"]).model.state_mixer == "none"
    assert compose_config(["experiment=zoology-mqar", "model=hyena"]).model.state_mixer == "identity"
    # figure 2's mixers (iclr24_zoology_figure2/configs.py): BaseConv short then long by layer index,
    # H3 with d_state = L and head_dim 2, Based as BaseConv then one-head Taylor attention of feature_dim 8
    layers = compose_config(["experiment=zoology-mqar", "model=base_conv"]).model.layers
    assert [(e._name_, e.kernel_size) for e in layers] == [("base_conv", 3), ("base_conv", -1)]
    h3 = compose_config(["experiment=zoology-mqar", "model=h3", "recall=L128_N8"]).model.layer
    assert (h3.d_state, h3.head_dim) == (128, 2)
    based = compose_config(["experiment=zoology-mqar", "model=based_hybrid"]).model.layers
    assert [e._name_ for e in based] == ["base_conv", "based"] and (based[1].n_heads, based[1].feature_dim) == (1, 8)


ZOOLOGY = os.environ.get("ZOOLOGY_REPO")


@pytest.mark.skipif(not ZOOLOGY, reason="needs a zoology checkout: git clone https://github.com/HazyResearch/zoology "
                    "&& git -C zoology checkout 8700f46, pip install einops pydantic, and ZOOLOGY_REPO=zoology")
@pytest.mark.parametrize("mixer, tolerance", [("attention", 1e-12),
                                              ("base_conv", 1e-10)])  # two FFT convolutions round differently: 3.5e-12 measured
def test_the_zoology_mqar_model_is_zoologys(mixer, tolerance):
    """experiment=zoology-mqar's model with zoology's figure-2 weights copied in (its attention, or its
    BaseConv with a short then a long filter) gives its logits (float64; benchmarks/zoology_protocol.py
    --check, in its own process for the shims)."""
    out = subprocess.run([sys.executable, "-m", "benchmarks.zoology_protocol", "--zoology", ZOOLOGY, "--check",
                          "--mixer", mixer], cwd=ROOT, capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stdout + out.stderr
    diff = float(out.stdout.split("max |logit difference| ")[1].split()[0])
    assert diff < tolerance


@pytest.mark.parametrize("model, key", [("mha", "d_qk"), ("linear_attn", "d_qk"), ("norm_attn", "d_qk"),
                                        ("s6", "d_state"), ("ssd", "d_state"), ("qlstm", "d_state")])
def test_dsf_mqar_sweeps_each_models_state_expansion(model, key):
    c = compose_config(["experiment=dsf-mqar", f"model={model}", "vars.state_expansion=128", "recall=L256_N16"])
    assert c.model.layer[key] == 128
    assert c.model.pos_emb == ("learned" if key == "d_qk" else "none")
    assert (c.dataset.L, c.dataset.num_kv_pairs, c.loader.batch_size) == (256, 16, 128)  # half of zoology's 256


def test_an_unread_experiment_variable_gets_a_notice(monkeypatch):
    lines = []
    monkeypatch.setattr("src.config.notice", lines.append)
    compose_config(["experiment=dsf-mqar", "model=lstm"])
    assert lines == ["notice: vars.state_expansion=64 is read by nothing with model.layer._name_=rnn"]
    compose_config(["experiment=dsf-mqar", "model=s6"])
    assert len(lines) == 1


def test_based_mqar_is_a_mixture_reported_per_segment():
    c = compose_config(["experiment=based-mqar"])
    assert [(s.L, s.num_kv_pairs, s.num_examples) for s in c.dataset.segments] == [
        (64, 4, 100000), (128, 8, 20000), (256, 16, 20000), (256, 32, 20000), (256, 64, 20000)]
    assert list(c.dataset.eval_sets) == ["L64_N4", "L64_N8", "L64_N16", "L128_N32", "L256_N64", "L512_N128", "L1024_N256"]
    assert (c.model.pos_emb, c.loader.batch_size, c.loader.batch_size_eval, c.trainer.max_epochs) == ("none", 256, 32, 32)


@pytest.mark.parametrize("experiment", sorted(SIZES))
def test_mqar_experiment_trains_and_logs_its_sizes(experiment, tmp_path):
    metrics = train_in_process([f"experiment={experiment}", *SIZES[experiment], *RUN], tmp_path / "run")
    assert {"val/accuracy", "val/example_accuracy", "num_parameters", "state_size"} <= set(metrics)
    if experiment == "based-mqar":
        assert "val/L64_N8/accuracy" in metrics


def read_rows(run):
    with open(run / "metrics.csv") as f:
        return list(csv.DictReader(f))


def test_early_stopping_at_a_threshold_and_a_cosine_stepped_per_epoch(tmp_path):
    """Threshold -1: every accuracy passes it, so the run stops after its first validation; the
    learning rate of epoch e is lr (1 + cos(pi e / T)) / 2, logged at each epoch's start."""
    run = tmp_path / "run"
    train_in_process(["experiment=zoology-mqar", *MQAR_TINY, *RUN, "trainer.max_epochs=4",
                      "callbacks.early_stopping.stopping_threshold=-1.0", "optimizer.lr=0.01"], run)
    epochs = {r["epoch"] for r in read_rows(run) if r.get("val/accuracy")}
    assert epochs == {"0"}
    run2 = tmp_path / "run2"
    train_in_process(["experiment=zoology-mqar", *MQAR_TINY, *RUN, "trainer.max_epochs=4", "optimizer.lr=0.01",
                      "callbacks.early_stopping=null"], run2)
    lrs = [float(r["lr-AdamW"]) for r in read_rows(run2) if r.get("lr-AdamW")]
    assert lrs == pytest.approx([0.01 * (1 + math.cos(math.pi * e / 4)) / 2 for e in range(4)])


@pytest.mark.slow  # a multirun of 4 fits; the default tier composes the grid's commands (test_docs)
def test_the_figure_2_grid_runs_to_completion_at_cpu_size(tmp_path):
    """2 models x 2 widths x 1 lr at (L 64, N 4), through Hydra's multirun."""
    command = [sys.executable, "-m", "train", "-m", "experiment=zoology-mqar-fig2", "model=mha,lstm",
               "model.d_model=16,32", "optimizer.lr=0.01", "recall=L64_N4", *[o for o in MQAR_TINY if "dataset.L=" not in o
                                                                             and "num_kv" not in o],
               *[o for o in RUN if "d_model" not in o], f"hydra.sweep.dir={tmp_path}/sweep"]
    env = {**os.environ, "WANDB_MODE": "offline", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    runs = sorted((tmp_path / "sweep").glob("*/metrics.csv"))
    assert len(runs) == 4
    for path in runs:
        assert any(r.get("val/accuracy") for r in read_rows(path.parent))


def readme_recall_commands():
    """The `python -m train` lines of the recall section of docs/experiments.md, its shell variables
    substituted."""
    import re
    import shlex

    from conftest import doc_section

    section = doc_section("docs/experiments.md", "Associative recall: zoology, DSF, Based")
    variables = dict(re.findall(r'^([A-Z]+)="(.*)"$', section, re.M))
    lines = [line.split("  #")[0] for line in section.splitlines() if line.startswith("python -m train")]
    for name, value in variables.items():
        lines = [line.replace(f"${name}", value) for line in lines]
    return [shlex.split(line)[3:] for line in lines]


def test_the_readme_recall_commands_compose():
    """Each command's config (every job of a multirun: its grid's first values) passes the checks."""
    from hydra import compose, initialize_config_dir

    from src.config import prepare

    commands = readme_recall_commands()
    assert len(commands) == 9
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        for words in commands:
            words = [w for w in words if w != "-m"]
            prepare(compose("config", overrides=[w.split(",")[0] if "=" in w and not w.startswith("dataset.") else w
                                                 for w in words]))
