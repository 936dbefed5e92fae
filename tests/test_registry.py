"""The registries and the model configs: every registry entry is the object its path names; every
model config composes and builds, at the default experiment's width as `python -m train model=M`
does and at a tiny one; a misspelt or another layer's option is named. Covers entries added later
automatically (it reads the registry and configs/model/ at collection time). The layer contract is
test_layer_contract.py."""

import pytest
import torch

from conftest import LAYER_CONFIGS, ROOT, compose_config, layer_options, tiny, tiny_layer
from src.models.sequence.backbone import SequenceModel, build_layer
from src.utils import registry
from src.utils.errors import ConfigError

MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
D, L = 8, 32


@pytest.mark.parametrize("table", ["layer", "dataset", "optimizer", "scheduler", "callbacks"])
def test_every_registry_entry_is_the_object_its_path_names(table):
    entries = getattr(registry, table)
    for name, path in entries.items():
        obj = registry.resolve(entries, name)
        assert path.endswith(f".{obj.__name__}"), (name, path, obj)
        if path.startswith("src."):  # the class itself, defined where the registry says
            assert f"{obj.__module__}.{obj.__qualname__}" == path, (name, path)


def build(config):
    model = {k: v for k, v in config.model.items() if k != "_name_"}
    return SequenceModel(**model, max_length=L)


@pytest.mark.parametrize("stem", MODEL_CONFIGS)
def test_every_model_config_builds_at_a_tiny_size(stem):
    config = compose_config(["wandb=null", "experiment=dss-sequence1d", f"model={stem}", f"dataset.L={L}",
                             *tiny(stem, d_model=D)])
    y, states = build(config)(torch.randn(2, L, D))
    assert y.shape == (2, L, D) and len(states) == 2 and torch.isfinite(y).all()


@pytest.mark.parametrize("stem", MODEL_CONFIGS)
def test_the_default_experiment_builds_every_model_at_its_width(stem):
    """`python -m train model=M` with nothing else: layer defaults relative to d_model fit the default
    width (fla's head sizes for d_model 2048 would not)."""
    config = compose_config(["wandb=null", f"model={stem}"])
    y, _ = build(config)(torch.randn(2, 16, config.model.d_model))
    assert torch.isfinite(y).all()


def test_a_misspelt_layer_lists_the_valid_names():
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.layer._name_='lstmm' is not registered; choose one of: .*rnn"):
        build_layer({"_name_": "lstmm"}, D)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stem", LAYER_CONFIGS)
def test_every_layer_config_runs_on_cuda_like_on_cpu(stem):
    """nn.LSTM & co. take cuDNN there; FFT and matmul reorderings: float32 rounding, 1e-3 of max |y|."""
    layer = tiny_layer(stem, d_model=D, max_length=L)
    x = torch.randn(2, L, D)
    y = layer(x)[0]
    y_cuda = layer.cuda()(x.cuda())[0].cpu()
    torch.testing.assert_close(y_cuda, y, rtol=0, atol=1e-3 * y.abs().max().item())


def test_options_of_another_layer_are_named():
    """A layer given another layer's options says so in one line, listing its own."""
    with pytest.raises(ConfigError, match=r"unknown key model.layer.d_state: nothing reads it; the keys of model.layer "
                                          r"\(RNN\) are: cell, d_hidden, dropout, postact"):
        build_layer({"_name_": "rnn", "d_state": 4}, D)
    with pytest.raises(ConfigError, match=r"unknown key model.layer.dt_maxx: nothing reads it; did you mean model.layer.dt_max"):
        build_layer({**layer_options("dlr"), "dt_maxx": 0.1}, D)


def test_the_keys_of_another_layer_are_refused_at_composition():
    """src/config.py: one line naming the foreign key and the layer's own, before anything is built."""
    with pytest.raises(ConfigError, match=r"unknown key model.layer.d_state: nothing reads it; .*\(RNN\)"):
        compose_config(["wandb=null", "model=lstm", "+model.layer.d_state=4"])
