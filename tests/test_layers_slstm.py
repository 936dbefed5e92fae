"""The sLSTM layer (src/models/sequence/layers/slstm.py) against xlstm's own sLSTMLayer with the
same parameters on its vanilla (pure torch) backend (when xlstm is installed), forward, gradients
and step; its initialisation against xlstm's; and model=xlstm's 7:1 pattern (the contract checks of
every layer are in test_layer_contract.py)."""

import importlib.util

import pytest
import torch

from conftest import XLSTM_INSTALL, compose_config, run_steps, same_outputs_and_input_gradients, tiny_layer
from src.models.sequence.backbone import SequenceModel, build_layer
from src.models.sequence.layers.mlstm import MLSTM
from src.models.sequence.layers.slstm import SLSTM, forget_bias
from src.utils.errors import ConfigError

D, H = 12, 3  # heads of 4


def xlstm_layer(block_idx=0, num_blocks=1, perturb=True):
    """xlstm's sLSTMLayer at (D, H) on its vanilla backend in float64, initialised as its block
    stack does (reset_parameters), its parameters moved off their initial values (zero R) where
    `perturb`; skips where xlstm is not installed."""
    if importlib.util.find_spec("xlstm") is None:
        pytest.skip(f"xlstm is not installed ({XLSTM_INSTALL}): no oracle from xlstm's sLSTMLayer")
    from xlstm.blocks.slstm.layer import sLSTMLayer, sLSTMLayerConfig

    torch.manual_seed(0)
    theirs = sLSTMLayer(sLSTMLayerConfig(embedding_dim=D, num_heads=H, backend="vanilla", _block_idx=block_idx,
                                         _num_blocks=num_blocks))
    theirs.reset_parameters()
    theirs = theirs.double()
    if perturb:
        with torch.no_grad():
            for p in theirs.parameters():
                p.add_(0.3 * torch.randn_like(p))
    return theirs


def kernel_and_bias(theirs):
    """xlstm's recurrent kernel (H, d, 4, d) and bias (4, H, d), from its backend's layout."""
    cell = theirs.slstm_cell
    return (cell._recurrent_kernel_int2ext(cell._recurrent_kernel), cell._bias_int2ext(cell._bias).transpose(0, 1))


def copy_into(ours, theirs):
    """xlstm's sLSTMLayer parameters into an SLSTM layer. xlstm feeds its `fgate` projection to the
    cell's i slot and `igate` to the f slot (layer.py); ours are named for the slots."""
    pairs = [(ours.conv.conv, theirs.conv1d.conv), (ours.igate, theirs.fgate), (ours.fgate, theirs.igate),
             (ours.zgate, theirs.zgate), (ours.ogate, theirs.ogate)]
    R, b = kernel_and_bias(theirs)
    with torch.no_grad():
        for mine, its in pairs:
            for name, p in mine.named_parameters():
                p.copy_(getattr(its, name))
        ours.R.copy_(R)
        ours.bias.copy_(b)
        ours.norm_weight.copy_(theirs.group_norm.weight.view(H, -1))


def ours(backend="auto", **options):
    return build_layer(dict(_name_="slstm", n_heads=H, backend=backend, **options), D).double()


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_slstm_is_xlstms_slstm_layer(backend):
    """Outputs and every gradient, float64, at an odd length."""
    theirs, layer = xlstm_layer(), ours(backend)
    copy_into(layer, theirs)
    x = torch.randn(3, 37, D, dtype=torch.float64)
    same_outputs_and_input_gradients(theirs, layer, x)
    cell = theirs.slstm_cell
    got = {"conv": layer.conv.conv.weight.grad, "i": layer.igate.weight.grad, "f": layer.fgate.weight.grad,
           "z": layer.zgate.weight.grad, "o": layer.ogate.weight.grad, "R": layer.R.grad,
           "bias": layer.bias.grad.transpose(0, 1), "norm": layer.norm_weight.grad.flatten()}
    want = {"conv": theirs.conv1d.conv.weight.grad, "i": theirs.fgate.weight.grad, "f": theirs.igate.weight.grad,
            "z": theirs.zgate.weight.grad, "o": theirs.ogate.weight.grad,
            "R": cell._recurrent_kernel_int2ext(cell._recurrent_kernel.grad),
            "bias": cell._bias_int2ext(cell._bias.grad), "norm": theirs.group_norm.weight.grad}
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10, msg=name)


def test_step_is_xlstms_step():
    """xlstm's layer step from its zero state, token by token, gives our forward (and so our steps)."""
    L = 9
    theirs, layer = xlstm_layer(), ours()
    copy_into(layer, theirs)
    x = torch.randn(2, L, D, dtype=torch.float64)
    state, steps = {"conv_state": None, "slstm_state": None}, []
    for t in range(L):
        y, state = theirs.step(x[:, t : t + 1], **state)
        steps.append(y[:, 0])
    torch.testing.assert_close(torch.stack(steps, 1), layer(x)[0], rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("block_idx, num_blocks", [(0, 1), (1, 3), (2, 3)])
def test_xlstms_initialisation(block_idx, num_blocks):
    """The powerlaw_blockdependent forget-gate bias of block `block_idx` of `num_blocks`, zero R and
    other biases, the norm's weight 1 + 0, small-init gate projections."""
    theirs = xlstm_layer(block_idx, num_blocks, perturb=False)
    layer = build_layer(dict(_name_="slstm", n_heads=H), D, layer_idx=block_idx, n_layers=num_blocks).double()
    R, b = kernel_and_bias(theirs)
    torch.testing.assert_close(layer.bias, b, rtol=1e-7, atol=1e-7)  # xlstm computes it in float32
    assert not layer.R.any() and not R.any() and not layer.norm_weight.any()
    wide = tiny_layer("slstm", d_model=64, n_heads=4)
    for gate in (wide.igate, wide.fgate, wide.zgate, wide.ogate):
        assert gate.weight.shape == (4, 16, 16) and abs(gate.weight.std().item() - (2 / (5 * 64)) ** 0.5) < 0.015


@pytest.mark.parametrize("options, message", [
    (dict(n_heads=3), r"d_model=16 does not split into model.layer.n_heads=3 heads"),
    (dict(bias_init="powerlaw"), r"model.layer.bias_init='powerlaw' is not valid; choose one of: "
                                 r"'powerlaw_blockdependent', 'small_init', 'standard'"),
    (dict(recurrent_init="ones"), r"model.layer.recurrent_init='ones' is not valid; choose one of: 'zeros', 'standard'"),
    (dict(conv_size=0), r"model.layer.conv_size=0 must be >= 1"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        tiny_layer("slstm", **options)


def test_xlstm_7_1_cycles_mlstm_and_slstm_blocks_and_steps_like_its_forward():
    """configs/model/xlstm.yaml at 8 blocks: the sLSTM second, with the forget-gate bias of block 1
    of 8; the whole model one token at a time equals its forward (float64)."""
    config = compose_config(["wandb=null", "experiment=modern-rnns-parity", "model=xlstm"])
    assert [entry._name_ for entry in config.model.layers] == ["mlstm", "slstm"] + ["mlstm"] * 6
    torch.manual_seed(0)
    model = SequenceModel(D, 8, config.model.layer, layers=config.model.layers, prenorm=True, encoder="embedding",
                          decoder={"_name_": "sequence", "mode": "last"}, n_tokens=5, d_output=5, max_length=9)
    model = model.double().eval()
    kinds = [type(block.layer) for block in model.blocks]
    assert kinds == [MLSTM, SLSTM] + [MLSTM] * 6
    torch.testing.assert_close(model.blocks[1].layer.bias[1, 0], forget_bias(D // 4, "powerlaw_blockdependent", 1, 8)
                               .double())
    x = torch.randint(0, 5, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(run_steps(model, x)[0], model(x)[0], rtol=1e-9, atol=1e-9)
