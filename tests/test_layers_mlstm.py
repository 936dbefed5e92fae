"""The mLSTM layer (src/models/sequence/layers/mlstm.py) against xlstm's own mLSTMLayer with the
same parameters (when xlstm is installed), forward, gradients and step; and its initialisation
(the contract checks of every layer are in test_layer_contract.py)."""

import importlib.util

import pytest
import torch

from conftest import XLSTM_INSTALL, same_outputs_and_input_gradients, tiny_layer
from src.models.sequence.backbone import build_layer
from src.utils.errors import ConfigError

D, H, MULTIPLE = 12, 2, 8  # inner width 24 (2 D rounded up to a multiple of 8), heads of 12


def xlstm_layer(context_length):
    """xlstm's mLSTMLayer at (D, H, MULTIPLE) in float64, its parameters moved off their initial
    values (zero gate weights); skips where xlstm is not installed."""
    if importlib.util.find_spec("xlstm") is None:
        pytest.skip(f"xlstm is not installed ({XLSTM_INSTALL}): no oracle from xlstm's mLSTMLayer")
    from xlstm.blocks.mlstm.layer import mLSTMLayer, mLSTMLayerConfig

    torch.manual_seed(0)
    theirs = mLSTMLayer(mLSTMLayerConfig(embedding_dim=D, num_heads=H, context_length=context_length,
                                         round_proj_up_to_multiple_of=MULTIPLE)).double()
    with torch.no_grad():
        for p in theirs.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return theirs


def copy_into(ours, theirs):
    """xlstm's mLSTMLayer parameters into an MLSTM layer."""
    cell = theirs.mlstm_cell
    pairs = [(ours.proj_up, theirs.proj_up), (ours.proj_down, theirs.proj_down), (ours.conv.conv, theirs.conv1d.conv),
             (ours.q_proj, theirs.q_proj), (ours.k_proj, theirs.k_proj), (ours.v_proj, theirs.v_proj),
             (ours.igate, cell.igate), (ours.fgate, cell.fgate)]
    with torch.no_grad():
        for mine, its in pairs:
            for name, p in mine.named_parameters():
                p.copy_(getattr(its, name))
        ours.norm_weight.copy_(cell.outnorm.weight.view(H, -1))
        ours.skip.copy_(theirs.learnable_skip)


def ours(backend="auto"):
    layer = build_layer(dict(_name_="mlstm", proj_multiple_of=MULTIPLE, n_heads=H, backend=backend), D).double()
    return layer


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_mlstm_is_xlstms_mlstm_layer(backend):
    """Outputs and every gradient, float64, at an odd length (xlstm's forward: its parallel form)."""
    L = 37
    theirs = xlstm_layer(L)
    layer = ours(backend)
    copy_into(layer, theirs)
    x = torch.randn(3, L, D, dtype=torch.float64)
    same_outputs_and_input_gradients(theirs, layer, x)
    cell = theirs.mlstm_cell
    got = {"proj_up": layer.proj_up.weight.grad, "conv": layer.conv.conv.weight.grad, "q_proj": layer.q_proj.weight.grad,
           "v_proj": layer.v_proj.weight.grad, "igate": layer.igate.weight.grad, "fgate": layer.fgate.bias.grad,
           "norm": layer.norm_weight.grad.flatten(), "skip": layer.skip.grad}
    want = {"proj_up": theirs.proj_up.weight.grad, "conv": theirs.conv1d.conv.weight.grad,
            "q_proj": theirs.q_proj.weight.grad, "v_proj": theirs.v_proj.weight.grad, "igate": cell.igate.weight.grad,
            "fgate": cell.fgate.bias.grad, "norm": cell.outnorm.weight.grad, "skip": theirs.learnable_skip.grad}
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10, msg=name)


def test_step_is_xlstms_step_from_our_start():
    """xlstm's step (its recurrent form) from our default state (m = -inf, zeros elsewhere) gives
    our steps, and so our forward."""
    L = 9
    theirs = xlstm_layer(L)
    layer = ours()
    copy_into(layer, theirs)
    x = torch.randn(2, L, D, dtype=torch.float64)
    _, (C, n, m) = layer.default_state(2)
    state = {"mlstm_state": (C, n[..., None], m[..., None, None]), "conv_state": None}
    steps = []
    for t in range(L):
        y, state = theirs.step(x[:, t : t + 1], **state)
        steps.append(y[:, 0])
    torch.testing.assert_close(torch.stack(steps, 1), layer(x)[0], rtol=1e-10, atol=1e-10)


def test_xlstms_initialisation():
    layer = tiny_layer("mlstm", d_model=64, dtype=torch.float64, proj_multiple_of=64, n_heads=4)
    assert layer.inner == 128 and layer.d_head == 32
    torch.testing.assert_close(layer.fgate.bias, torch.linspace(3.0, 6.0, 4, dtype=torch.float64))
    assert not layer.fgate.weight.any() and not layer.igate.weight.any() and not layer.norm_weight.any()
    assert layer.skip.eq(1).all() and layer.q_proj.weight.shape == (32, 4, 4)
    assert abs(layer.proj_up.weight.std().item() - (2 / (5 * 64)) ** 0.5) < 0.01
    assert abs(layer.proj_down.weight.std().item() - 2 / 2 / 64**0.5) < 0.02  # block 1 of 2: n_layers = 2


@pytest.mark.parametrize("options, message", [
    (dict(n_heads=3), r"the inner width=32 does not split into model.layer.n_heads=3 heads"),
    (dict(qkv_blocksize=5), r"model.layer.qkv_blocksize=5 does not divide the inner width 32"),
    (dict(proj_factor=-1.0), r"model.layer.proj_factor=-1.0, model.layer.proj_multiple_of=8: both must be positive"),
])
def test_bad_options_are_refused_in_one_line(options, message):
    with pytest.raises(ConfigError, match=message):
        tiny_layer("mlstm", **options)
