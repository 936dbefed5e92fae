"""`python -m train experiment=E model=M` for every experiment and model config (both found by
glob): each pair builds, or stops at start with one line saying why (a layer with no
bidirectional form in a bidirectional experiment). The default run builds every pair and trains a
rotating subset 2 steps on tiny data; `-m slow` trains every pair."""

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_config, write_listops_and_pathfinder, write_lra
from test_experiment_configs import FAMILIES
from test_experiments import EXPERIMENTS as FILE_SIZES
from test_experiments import TINY, _train
from test_lra_experiments import TEXT_TINY
from test_mqar_experiments import SIZES as MQAR_SIZES
from test_registry import SMALL

from src.models.sequence.backbone import bidirectional_layers
from src.module import SequenceLightningModule
from src.utils.errors import ConfigError

# A family (`counting`) is its default task's alias (`counting-count_mod`), which is here: every
# task once (tests/test_experiment_configs.py shows each alias resolves as its family with dataset=).
EXPERIMENTS = sorted(p.stem for p in (ROOT / "configs" / "experiment").glob("*.yaml") if p.stem not in FAMILIES)
MODELS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
PAIRS = [(e, m) for e in EXPERIMENTS for m in MODELS]
BUILD = ["wandb=null", "model.d_model=8", "model.n_layers=1"]


SIZES = {e: sizes for e, (sizes, _) in FILE_SIZES.items()} | {"s4-lra-imdb": TEXT_TINY, "s4-lra-aan": TEXT_TINY,
                                                              "s4-lra-cifar": []} | MQAR_SIZES
SYNTHETIC = ["dataset.L=32", "dataset.samples_per_epoch=8", "dataset.val_split=0.5"]
TOKENS = ["dataset.samples_per_epoch=8", "dataset.val_split=0.5"]  # the token tasks keep their own lengths
SIZES |= {e: TOKENS for e in EXPERIMENTS if e.startswith(("counting-", "modern-rnns-"))}
SIZES |= {e: [*TOKENS, f"dataset.eval_sets.ood.L={99 if 'modular' in e else 100}"]  # 41..100: the quick variant
          for e in EXPERIMENTS if e.startswith("chomsky-")}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_lra(write_listops_and_pathfinder(tmp_path_factory.mktemp("data")))


def overrides(experiment, model):
    return [f"experiment={experiment}", f"model={model}", *SIZES.get(experiment, SYNTHETIC), *SMALL.get(model, [])]


def refusal(config):
    """Why this pair cannot run (None if it can)."""
    names = [entry._name_ for entry in config.model.layers] if config.model.layers else [config.model.layer._name_]
    if config.model.bidirectional and any(name not in bidirectional_layers() for name in names):
        return "has no bidirectional form"
    return None


@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_model_builds_or_says_why_not(experiment, monkeypatch, data_path):
    """All models with one experiment, composed in one Hydra context (compositions are the slow part)."""
    monkeypatch.setenv("DATA_PATH", str(data_path))  # the text datasets read their vocabulary at construction
    from hydra import compose, initialize_config_dir

    from src.utils.config import prepare

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        configs = {m: prepare(compose("config", overrides=[*overrides(experiment, m), *BUILD])) for m in MODELS}
    for model, config in configs.items():
        why = refusal(config)
        config = OmegaConf.to_container(config, resolve=True)
        if why is None:
            SequenceLightningModule(config)
            continue
        with pytest.raises(ConfigError, match=why) as error:
            SequenceLightningModule(config)
        assert "\n" not in str(error.value), model


def test_the_bidirectional_experiments_refuse_exactly_the_causal_only_layers():
    refused = [m for m in MODELS if refusal(compose_config(["experiment=dss-pathfinder-segmentation", f"model={m}"]))]
    assert refused == ["base_conv", "based", "based_hybrid", "deltanet", "gated_deltanet", "gla", "gru", "h3", "hgrn2", "hyena", "lru",
                       "lstm", "mamba", "mamba2", "mamba_attn_hybrid", "qlstm", "retnet", "rnn", "rwkv4", "rwkv6", "rwkv7",
                       "s6", "ssd"]


def _train_pair(experiment, model, tmp_path, monkeypatch, data_path):
    config = compose_config(overrides(experiment, model))
    if refusal(config):
        pytest.skip(f"{model} {refusal(config)} ({experiment} is bidirectional): refused at start, as tested above")
    tiny = [o for o in TINY if not o.startswith("model.layer.")]  # layer keys differ between models
    _train([*overrides(experiment, model), "wandb=null", *tiny], tmp_path, monkeypatch, data_path)


def rotation():
    """Each experiment with a model that runs it, rotating through the models."""
    pairs, i = [], 0
    for experiment in EXPERIMENTS:
        while refusal(compose_config(overrides(experiment, MODELS[i % len(MODELS)]))):
            i += 1
        pairs.append((experiment, MODELS[i % len(MODELS)]))
        i += 7
    return pairs


ROTATION = rotation()


@pytest.mark.parametrize("experiment, model", ROTATION, ids=[f"{e}-{m}" for e, m in ROTATION])
def test_a_rotating_subset_trains(experiment, model, tmp_path, monkeypatch, data_path):
    _train_pair(experiment, model, tmp_path, monkeypatch, data_path)


@pytest.mark.slow
@pytest.mark.parametrize("experiment, model", PAIRS, ids=[f"{e}-{m}" for e, m in PAIRS])
def test_every_pair_trains_two_steps(experiment, model, tmp_path, monkeypatch, data_path):
    _train_pair(experiment, model, tmp_path, monkeypatch, data_path)
