"""Every registered layer resolves and builds from its config; every model config builds; every
layer answers state_size. Covers entries added later automatically (it reads the registry and
configs/model/ at collection time)."""

import functools

import pytest
import torch

from conftest import ROOT, compose_config
from src.models.sequence.backbone import SequenceModel, build_layer
from src.utils import registry

LAYER_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "model" / "layer").glob("*.yaml"))
MODEL_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))
D, L = 8, 32
# Options that must shrink with d_model = D (the defaults are sized for d_model >= 64).
SMALL = {"mamba2": ["model.layer.headdim=8"], "gated_deltanet": ["model.layer.head_dim=8", "model.layer.n_heads=2"],
         "retnet": ["model.layer.n_heads=2"], "hgrn2": ["model.layer.expand_ratio=4"], "rwkv7": ["model.layer.head_dim=4"]}


@functools.cache
def layer_config(stem):
    """configs/model/layer/<stem>.yaml as composed by `python -m train model/layer=<stem>` (dataset.L=32)."""
    config = compose_config(["wandb=null", "experiment=dss-sequence1d", f"model/layer={stem}", f"dataset.L={L}",
                             *SMALL.get(stem, [])])
    return config.model.layer


@pytest.mark.parametrize("table", ["layer", "kernel", "dataset", "optimizer", "scheduler", "callbacks"])
def test_every_registry_entry_resolves(table):
    entries = getattr(registry, table)
    for name in entries:
        assert callable(registry.resolve(entries, name)), name


def test_every_layer_name_has_a_config():
    names = {str(layer_config(stem)["_name_"]) for stem in LAYER_CONFIGS}
    assert set(registry.layer) <= names, sorted(set(registry.layer) - names)


@pytest.mark.parametrize("stem", LAYER_CONFIGS)
def test_every_layer_config_builds_runs_and_reports_its_state_size(stem):
    config = layer_config(stem)
    assert config["_name_"] in registry.layer
    torch.manual_seed(0)
    layer = build_layer(config, D, notice=lambda line: None, max_length=L)
    y, _ = layer(torch.randn(2, L, D))
    assert y.shape == (2, L, D) and torch.isfinite(y).all()
    size = layer.state_size(L)
    assert isinstance(size, int) and size > 0


@pytest.mark.parametrize("stem", MODEL_CONFIGS)
def test_every_model_config_builds(stem):
    config = compose_config(["wandb=null", "experiment=dss-sequence1d", f"model={stem}", f"dataset.L={L}",
                             f"model.d_model={D}", "model.n_layers=2", *SMALL.get(stem, [])])
    model = {k: v for k, v in config.model.items() if k != "_name_"}
    y, states = SequenceModel(**model, max_length=L, notice=lambda line: None)(torch.randn(2, L, D))
    assert y.shape == (2, L, D) and len(states) == 2


def test_a_misspelt_layer_lists_the_valid_names():
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.layer._name_='lstmm' is not registered; choose one of: .*rnn"):
        build_layer({"_name_": "lstmm"}, D)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("stem", LAYER_CONFIGS)
def test_every_layer_config_runs_on_cuda_like_on_cpu(stem):
    """nn.LSTM & co. take cuDNN there; FFT and matmul reorderings: float32 rounding, 1e-3 of max |y|."""
    torch.manual_seed(0)
    layer = build_layer(layer_config(stem), D, notice=lambda line: None, max_length=L)
    x = torch.randn(2, L, D)
    y = layer(x)[0]
    y_cuda = layer.cuda()(x.cuda())[0].cpu()
    torch.testing.assert_close(y_cuda, y, rtol=0, atol=1e-3 * y.abs().max().item())


def test_options_of_another_layer_are_named():
    """A layer given another layer's options says so in one line, listing its own."""
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"model.layer \(RNN\) does not take d_state, dt_min; its options are: d_model, cell|model"):
        build_layer({"_name_": "rnn", "d_state": 4, "dt_min": 0.1}, D)
    with pytest.raises(ConfigError, match=r"model.layer.kernel_type=sgconv \(SGConvKernel\) does not take dt_max"):
        build_layer({"_name_": "sgconv", "kernel_type": "sgconv", "dt_max": 0.1, "l_max": 8}, D)


def test_the_default_experiment_runs_with_every_model():
    """`python -m train model=M`: the default experiment's DLR settings live in configs/preset/base/dlr.yaml."""
    for stem in MODEL_CONFIGS:
        config = compose_config(["wandb=null", f"model={stem}", f"model.d_model={D}", *SMALL.get(stem, [])])
        model = {k: v for k, v in config.model.items() if k != "_name_"}
        SequenceModel(**model, max_length=128, notice=lambda line: None)


def test_the_keys_of_another_layer_are_refused_at_composition():
    """src/utils/validate.py: one line naming the foreign key and the layer's own, before anything is built."""
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown key model.layer.d_state: nothing reads it; .*\(RNN\)"):
        compose_config(["wandb=null", "model=lstm", "+model.layer.d_state=4"])
