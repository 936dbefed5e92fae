"""Hawk's recurrent block (src/models/sequence/layers/hawk.py): against recurrentgemma's torch
RecurrentBlock with the same parameters (when recurrentgemma is installed), its RG-LRU's formula,
initialisation and bounded sqrt gradient (the contract checks of every layer are in
test_layer_contract.py)."""

import functools

import pytest
import torch
import torch.nn.functional as F

from benchmarks.rg_lru import copy_into
from conftest import recurrentgemma_torch, tiny_layer
from src.models.sequence.backbone import build_layer
from src.models.sequence.layers.hawk import BoundedSqrt

D = 12


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_hawk_is_recurrentgemmas_recurrent_block(monkeypatch, backend):
    """Outputs, final state and every gradient, float64, at a length that is not a multiple of a
    block, with 2 gate blocks and an RG-LRU wider than d_model. recurrentgemma's positions start at
    1 (no document starts inside: the departure in hawk.py's docstring)."""
    layers, modules = recurrentgemma_torch()
    monkeypatch.setattr(layers, "rnn_scan", functools.partial(layers.rnn_scan, acc_dtype=torch.float64))  # its float32 sums
    torch.manual_seed(0)
    theirs = modules.RecurrentBlock(width=D, num_heads=2, lru_width=16, conv1d_temporal_width=4, dtype=torch.float64)
    with torch.no_grad():
        for p in theirs.parameters():  # away from the zero biases of its initialisation
            p.add_(0.1 * torch.randn_like(p))
    ours = build_layer(dict(_name_="hawk", expand=16 / D, n_heads=2, backend=backend), D).double()
    copy_into(ours, theirs)
    x = torch.randn(3, 37, D, dtype=torch.float64)
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_theirs, cache = theirs(x_theirs, torch.arange(1, 38).expand(3, 37), return_cache=True)
    y_ours, (conv_state, h) = ours(x_ours)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(h, cache.rg_lru_state, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(conv_state, cache.conv1d_state.transpose(1, 2), rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(y_ours)
    (y_theirs * weights).sum().backward()
    (y_ours * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-10, atol=1e-10)
    got = {"linear_y": ours.linear_y.weight.grad, "linear_out": ours.linear_out.bias.grad,
           "conv": ours.conv.conv.weight.grad[:, 0].T, "a_gate": ours.a_gate.weight.grad,
           "input_gate": ours.input_gate.bias.grad, "a_param": ours.a_param.grad}
    want = {"linear_y": theirs.linear_y.weight.grad, "linear_out": theirs.linear_out.bias.grad,
            "conv": theirs.conv_1d.w.grad, "a_gate": theirs.rg_lru.a_gate.w.grad,
            "input_gate": theirs.rg_lru.input_gate.b.grad, "a_param": theirs.rg_lru.a_param.grad}
    for name in got:
        torch.testing.assert_close(got[name], want[name], rtol=1e-10, atol=1e-10, msg=name)


def test_rg_lru_formula():
    """h_t = a_t h_{t-1} + sqrt(1 - a_t^2) i_t u_t with a_t = exp(-8 r_t softplus(lambda)), by a loop."""
    layer = tiny_layer("hawk", d_model=D, dtype=torch.float64)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    u = layer.conv(layer.linear_x(x).transpose(1, 2))[0].transpose(1, 2)
    r, i = torch.sigmoid(layer.a_gate(u)), torch.sigmoid(layer.input_gate(u))
    a = torch.exp(-8 * r * F.softplus(layer.a_param))
    h, hs = torch.zeros(2, layer.width, dtype=torch.float64), []
    for t in range(9):
        h = a[:, t] * h + torch.sqrt(1 - a[:, t] ** 2) * i[:, t] * u[:, t]
        hs.append(h)
    want = layer.linear_out(torch.stack(hs, 1) * F.gelu(layer.linear_y(x), approximate="tanh"))
    torch.testing.assert_close(layer(x)[0], want, rtol=1e-12, atol=1e-12)


def test_decays_start_on_recurrentgemmas_ring():
    """a = exp(-softplus(lambda)) in [0.9, 0.999], spread over the ring (a_t = a^(8 r_t))."""
    layer = build_layer(dict(_name_="hawk"), 256)
    decay = torch.exp(-F.softplus(layer.a_param.detach()))
    assert 0.9 - 1e-6 <= decay.min() and decay.max() <= 0.999 + 1e-6
    assert decay.max() - decay.min() > 0.09


def test_sqrt_gradient_is_bounded_by_1000_and_exact_elsewhere():
    x = torch.tensor([0.0, 1e-9, 0.25, 1.0], dtype=torch.float64, requires_grad=True)
    BoundedSqrt.apply(x).sum().backward()
    torch.testing.assert_close(x.grad, torch.tensor([1000.0, 1000.0, 1.0, 0.5], dtype=torch.float64))
