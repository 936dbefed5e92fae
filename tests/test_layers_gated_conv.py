"""Gated convolutions and RWKV (base_conv, hyena, h3, rwkv4) against naive references in float64:
the long convolutions against a direct O(L^2) causal sum, h3 against its explicit recurrence,
rwkv4 against the wkv loop (the contract checks of every layer are in test_layer_contract.py)."""

import pytest
import torch
import torch.nn.functional as F

from src.models.sequence.layers.base_conv import BaseConv
from src.models.sequence.layers.h3 import H3
from src.models.sequence.layers.hyena import Hyena
from src.models.sequence.layers.rwkv4 import RWKV4
from src.ops.wkv import reference as wkv_reference
from src.utils.errors import ConfigError

B, L, D = 2, 23, 8


def direct_causal_conv(u, h):
    """y[b, d, t] = sum_{s <= t} h[d, s] u[b, d, t - s], term by term: u (B, D, L), h (D, L)."""
    y = torch.zeros_like(u)
    for t in range(u.shape[-1]):
        for s in range(t + 1):
            y[..., t] += h[:, s] * u[..., t - s]
    return y


def short_conv(u, conv):  # u (B, C, L); conv: nn.Conv1d (C, 1, K) depthwise, causal
    K = conv.weight.shape[-1]
    return F.conv1d(F.pad(u, (K - 1, 0)), conv.weight, conv.bias, groups=u.shape[1])


def x_input(seed=0):
    return torch.randn(B, L, D, dtype=torch.float64, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("implicit", [True, False])
def test_base_conv_long_filter_is_the_direct_convolution(implicit):
    torch.manual_seed(0)
    layer = BaseConv(D, l_max=31, kernel_size=-1, implicit_long_conv=implicit).double()
    x = x_input()
    u = x.transpose(1, 2)
    conv = direct_causal_conv(u, layer.long_filter(L)) + u
    want = conv.transpose(1, 2) * layer.projection(x) + x
    torch.testing.assert_close(layer(x)[0], want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("use_act", [False, True])
def test_base_conv_short_filter(use_act):
    torch.manual_seed(0)
    layer = BaseConv(D, kernel_size=4, use_act=use_act).double()
    x = x_input()
    conv, proj = short_conv(x.transpose(1, 2), layer.conv.conv).transpose(1, 2), layer.projection(x)
    if use_act:
        conv, proj = F.silu(conv), F.silu(proj)
    torch.testing.assert_close(layer(x)[0], conv * proj + x, rtol=1e-10, atol=1e-10)


def test_hyena_is_its_formula_with_a_direct_long_convolution():
    torch.manual_seed(0)
    layer = Hyena(D, l_max=40, filter_order=16).double()
    x = x_input()
    u = short_conv(layer.in_proj(x).transpose(1, 2), layer.short_filter.conv)
    x1, x2, v = u.split(D, dim=1)
    h = layer.filter(L)
    f = layer.filter
    t = torch.linspace(0, 1, 40, dtype=torch.float64)[:L, None]
    torch.testing.assert_close(h, (f.mlp(f.z[:L]) * torch.exp(-t * f.deltas.abs())).T)  # the modulated MLP
    z = direct_causal_conv(x1 * v, h) + layer.bias[:, None] * x1 * v
    want = layer.out_proj((x2 * z).transpose(1, 2))
    torch.testing.assert_close(layer(x)[0], want, rtol=1e-10, atol=1e-10)


def test_hyena_filter_decays_from_the_fastest_to_the_slowest_channel():
    f = Hyena(D, l_max=100).filter
    decay = torch.exp(-f.t[-1] * f.deltas.abs())  # at t = 1
    assert torch.isclose(decay[0], torch.tensor(0.01 ** (1 / 1.5))) and torch.isclose(decay[-1], torch.tensor(0.01 ** (1 / 0.3)))


@pytest.mark.parametrize("head_dim", [1, 2])
def test_h3_is_its_explicit_recurrence(head_dim):
    """Shift register x_t = shift(x_{t-1}) + B k_t read by C; the diagonal SSM
    s_t = exp(dt A) s_{t-1} + kv_t read by W = 2 C dB (N/2 complex modes and conjugates)."""
    torch.manual_seed(0)
    N = 6
    layer = H3(D, d_state=N, head_dim=head_dim).double()
    with torch.no_grad():
        layer.shift.B.normal_()  # beyond the e_0 init: every tap counts
    x = x_input()
    q, k, v = layer.q_proj(x), layer.k_proj(x), layer.v_proj(x)  # (B, L, D)
    W, logA = layer.ssm.vandermonde_params()  # (1, H, N/2), (H, N/2)
    H, d = D // head_dim, head_dim
    reg = torch.zeros(B, D, N, dtype=torch.float64)
    s = torch.zeros(B, d, d, H, N // 2, dtype=torch.complex128)
    out = []
    for t in range(L):
        reg = torch.cat((torch.zeros(B, D, 1, dtype=torch.float64), reg[..., :-1]), -1) + layer.shift.B * k[:, t, :, None]
        kt = (layer.shift.C * reg).sum(-1) + layer.shift_D * k[:, t]  # (B, D)
        kv = kt.reshape(B, H, d)[:, :, :, None] * v[:, t].reshape(B, H, d)[:, :, None, :]  # (B, H, i, j)
        kv = kv.permute(0, 2, 3, 1)  # (B, i, j, H)
        s = torch.exp(logA) * s + kv[..., None]
        y = (W[0] * s).sum(-1).real + layer.D * kv  # (B, i, j, H)
        o = (q[:, t].reshape(B, H, d).permute(0, 2, 1)[:, :, None, :] * y).sum(1)  # (B, j, H)
        out.append(layer.output_linear(o.reshape(B, D)))
    torch.testing.assert_close(layer(x)[0], torch.stack(out, 1), rtol=1e-9, atol=1e-9)


def test_h3_shift_kernel_at_init_is_c():
    layer = H3(D, d_state=6)
    torch.testing.assert_close(layer.shift.kernel(L), layer.shift.C)
    torch.testing.assert_close(layer.shift.kernel(3), layer.shift.C[:, :3])


@pytest.mark.parametrize("channel_mix", [False, True])
def test_rwkv4_is_its_formula_with_the_wkv_loop(channel_mix):
    torch.manual_seed(0)
    layer = RWKV4(D, channel_mix=channel_mix, layer_idx=1, n_layers=3).double()
    x = x_input()
    prev = F.pad(x, (0, 0, 1, -1))  # x_{t-1}, 0 at t = 0
    m = lambda mu: x * mu + prev * (1 - mu)  # noqa: E731
    k, v, r = layer.key(m(layer.mu_k)), layer.value(m(layer.mu_v)), torch.sigmoid(layer.receptance(m(layer.mu_r)))
    want = layer.output(r * wkv_reference.wkv(-torch.exp(layer.time_decay), layer.time_first, k, v))
    if channel_mix:
        cm = layer.channel_mix
        h = layer.norm(x + want)
        hp = F.pad(h, (0, 0, 1, -1))
        hk, hr = h * cm.mu_k + hp * (1 - cm.mu_k), h * cm.mu_r + hp * (1 - cm.mu_r)
        want = want + torch.sigmoid(cm.receptance(hr)) * cm.value(torch.relu(cm.key(hk)) ** 2)
    for backend in ("cpu", "torch"):
        layer.backend = backend
        torch.testing.assert_close(layer(x)[0], want, rtol=1e-10, atol=1e-10)


def test_rwkv4_init_follows_the_depth():
    first, last = RWKV4(16, layer_idx=0, n_layers=4), RWKV4(16, layer_idx=3, n_layers=4)
    assert first.time_decay[0] == -5 and first.time_decay[-1] == 3  # -5 + 8 (c / (D-1))^(0.7 + 1.3 r)
    assert torch.isclose(last.mu_v[0], torch.tensor(0.3)) and first.mu_v[0] == 0


def test_bad_options_and_too_long_inputs_fail_in_one_line():
    with pytest.raises(ConfigError, match="kernel_size=0 must be a positive width or -1"):
        BaseConv(D, kernel_size=0)
    with pytest.raises(ConfigError, match="input length 24 exceeds model.layer.l_max=23"):
        Hyena(D, l_max=L)(torch.randn(1, 24, D))
    with pytest.raises(ConfigError, match="head_dim=3 must divide d_model=8"):
        H3(D, head_dim=3)
