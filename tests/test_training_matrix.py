"""`python -m train experiment=E model=M` for every experiment and model config (both by glob).

Default tier: every model builds, or stops at start with one line saying why (a layer with no
bidirectional form in a bidirectional experiment), in the first experiment of each pipeline; every
other experiment builds with its own model; one 2-step fit per pipeline. Slow tier (`-m slow`):
every pair builds and trains 2 steps on tiny data, and every model trains 2 steps on every atomic
task of the DLR experiment, every sequence-to-sequence Chomsky task and every MAD task. (A Hydra
composition costs ~0.1 s; the 35 x 53 pairs would be half the default tier's time.)
"""

import re

import pytest
from omegaconf import OmegaConf

from conftest import (ROOT, TWO_STEPS, compose_config, experiment_sizes, tiny, train_in_process, train_on_data,
                      write_listops_and_pathfinder, write_lra)
from src.dataloaders import mad
from src.dataloaders.sequence1d import TASKS
from src.models.sequence.backbone import bidirectional_layers
from src.module import SequenceLightningModule
from src.utils import registry
from src.utils.errors import ConfigError

def aliased_families():
    """The families (`counting`) whose per-task aliases (`counting-count_mod`: defaults [counting,
    override /dataset: count_mod]) cover each of their tasks, the default one included."""
    families = set()
    for path in (ROOT / "configs" / "experiment").glob("*.yaml"):
        defaults = OmegaConf.load(path).get("defaults", [])
        if any("override /dataset" in d for d in defaults if not isinstance(d, str)):
            families |= {d for d in defaults if isinstance(d, str)}
    return families


EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml")
                     if p.stem not in aliased_families())
MODELS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
PAIRS = [(e, m) for e in EXPERIMENTS for m in MODELS]
FIT = ["trainer.max_epochs=1", "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "loader.batch_size=4",
       "trainer.accelerator=cpu", "trainer.devices=1", "loader.num_workers=0", "trainer.enable_progress_bar=false",
       "callbacks.rich_model_summary=null"]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_lra(write_listops_and_pathfinder(tmp_path_factory.mktemp("data")))


def overrides(experiment, model, d_model=8, n_layers=1):
    return ["wandb=null", f"experiment={experiment}", f"model={model}", *experiment_sizes(experiment),
            *tiny(model, d_model, n_layers)]


def refusal(config):
    """Why this pair cannot run (None if it can)."""
    names = [entry._name_ for entry in config.model.layers] if config.model.layers else [config.model.layer._name_]
    if config.model.bidirectional and any(name not in bidirectional_layers() for name in names):
        return "has no bidirectional form"
    return None


def build_every_model(experiment):
    """{model: None if `experiment=E model=M` builds, else (expected refusal, what was raised)}: all
    models composed in one Hydra context (the compositions are most of the cost)."""
    from hydra import compose, initialize_config_dir

    from src.config import prepare

    outcomes = {}
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        configs = {m: prepare(compose("config", overrides=overrides(experiment, m))) for m in MODELS}
    for model, config in configs.items():
        why = refusal(config)
        try:
            SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
            outcomes[model] = None if why is None else (why, "built")
        except ConfigError as e:
            outcomes[model] = (why, str(e))
    return outcomes


def test_the_bidirectional_experiments_refuse_exactly_the_causal_only_layers():
    refused = [m for m in MODELS if refusal(compose_config(["experiment=dss-pathfinder-segmentation", f"model={m}"]))]
    assert refused == ["base_conv", "based", "based_hybrid", "deltanet", "dsf_ssd", "fox", "gated_deltanet",
                       "gated_deltaproduct", "gla", "griffin", "gru", "h3", "hawk", "hgrn2", "hyena", "kda", "log_linear_gdn", "log_linear_mamba2", "lru", "lstm", "mamba", "mamba2", "mamba3", "mamba_attn_hybrid", "mesanet", "mlstm",
                       "path_attn", "qlstm", "retnet", "rnn", "rwkv4", "rwkv6", "rwkv7", "s6", "slstm", "ssd", "stack_rnn", "tape_rnn", "titans", "ttt_linear", "ttt_mlp", "xlstm"]


def fit_pair(experiment, model, tmp_path, monkeypatch, data_path):
    config = compose_config(overrides(experiment, model))
    if refusal(config):
        pytest.skip(f"{model} {refusal(config)} ({experiment} is bidirectional): refused at start, as tested above")
    train_on_data([*overrides(experiment, model, d_model=16, n_layers=2), *FIT], tmp_path, monkeypatch, data_path)


def one_per_pipeline():
    """(experiment, model): the first experiment of each pipeline, with a model that runs it,
    rotating through the models."""
    pairs, pipelines, i = [], set(), 0
    for experiment in EXPERIMENTS:
        defaults = OmegaConf.load(ROOT / "configs" / "experiment" / f"{experiment}.yaml").get("defaults", [])
        pipeline = next((d["/pipeline"] for d in defaults if "/pipeline" in d), None)
        if pipeline is None or pipeline in pipelines:  # an alias (its experiment names the pipeline), or seen
            continue
        pipelines.add(pipeline)
        while refusal(compose_config([f"experiment={experiment}", f"model={MODELS[i % len(MODELS)]}"])):
            i += 1
        pairs.append((experiment, MODELS[i % len(MODELS)]))
        i += 7
    return pairs


PER_PIPELINE = one_per_pipeline()


@pytest.mark.parametrize("experiment, model", PER_PIPELINE, ids=[f"{e}-{m}" for e, m in PER_PIPELINE])
def test_one_fit_per_pipeline(experiment, model, tmp_path, monkeypatch, data_path):
    fit_pair(experiment, model, tmp_path, monkeypatch, data_path)


@pytest.mark.parametrize("experiment", [e if e in dict(PER_PIPELINE) else pytest.param(e, marks=pytest.mark.slow)
                                        for e in EXPERIMENTS])
def test_every_model_builds_or_says_why_not(experiment, monkeypatch, data_path):
    monkeypatch.setenv("DATA_PATH", str(data_path))  # the text datasets read their vocabulary at construction
    for model, outcome in build_every_model(experiment).items():
        if outcome is None:
            continue
        why, raised = outcome
        assert why is not None and re.search(why, raised) and "\n" not in raised, (model, raised)


@pytest.mark.parametrize("experiment", [e for e in EXPERIMENTS if e not in dict(PER_PIPELINE)])
def test_every_experiment_builds_with_its_own_model(experiment, monkeypatch, data_path):
    """`python -m train experiment=E` at tiny sizes: the experiments sharing a pipeline with one
    built above by every model (the whole product is the slow tier's)."""
    monkeypatch.setenv("DATA_PATH", str(data_path))
    config = compose_config(["wandb=null", f"experiment={experiment}", *experiment_sizes(experiment)])
    SequenceLightningModule(OmegaConf.to_container(config, resolve=True))


@pytest.mark.slow
@pytest.mark.parametrize("experiment, model", PAIRS, ids=[f"{e}-{m}" for e, m in PAIRS])
def test_every_pair_trains_two_steps(experiment, model, tmp_path, monkeypatch, data_path):
    fit_pair(experiment, model, tmp_path, monkeypatch, data_path)


SEQ2SEQ = sorted(n for n, path in registry.dataset.items() if path.startswith("src.dataloaders.chomsky."))


@pytest.mark.slow
@pytest.mark.parametrize("task", SEQ2SEQ)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_every_sequence_to_sequence_chomsky_task(model, task, tmp_path, monkeypatch, data_path):
    """`experiment=chomsky dataset=<task>` (the input, then the outputs' blanks) for every model."""
    overrides = ["wandb=null", "experiment=chomsky", f"dataset={task}", f"model={model}", *experiment_sizes("chomsky"),
                 *tiny(model, 8, 1)]
    train_on_data([*overrides, *FIT], tmp_path, monkeypatch, data_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", mad.TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_every_mad_task(model, task, tmp_path, monkeypatch, data_path):
    """`experiment=mad dataset.task=<task>` at the task's MAD baseline lengths (compression through
    model.compress), or a one-line refusal at start (a non-causal layer on a causal task)."""
    overrides = ["wandb=null", "experiment=mad", f"dataset.task={task}", f"model={model}", *experiment_sizes("mad"),
                 *tiny(model, 8, 1)]
    config = compose_config([*overrides, *FIT])
    if task != "compression" and refusal(config):
        with pytest.raises(ConfigError, match="non-causal"):
            SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
        return
    train_on_data([*overrides, *FIT], tmp_path, monkeypatch, data_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains_on_every_atomic_task(model, task, tmp_path):
    metrics = train_in_process([*TWO_STEPS, f"model={model}", f"dataset.task={task}", *tiny(model)], tmp_path / "run")
    assert {"val/loss", "val/mse", "val/r2"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.slow
@pytest.mark.parametrize("model", MODELS)
def test_the_default_experiment_trains_every_model_at_its_width(model, tmp_path):
    """`python -m train model=M`, as a new user types it, shortened to 4 steps of one epoch."""
    metrics = train_in_process(["wandb=null", f"model={model}", "trainer.max_epochs=1", "trainer.limit_train_batches=4",
                                "trainer.limit_val_batches=2", "trainer.enable_progress_bar=false",
                                "callbacks.rich_model_summary=null"], tmp_path / "run")
    assert all(v == v for v in metrics.values())  # no NaN
