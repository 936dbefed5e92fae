"""The log-linear Mamba-2 and Gated DeltaNet layers (src/models/sequence/layers/log_linear.py)
against their formulas with the inner attention written out (fla's naive_log_linear_attn, loaded
by path, for Mamba-2; the delta rule's attention matrix and the level weights for Gated DeltaNet),
their initialisation, state sizes and config errors (the contract checks of every layer, step ==
forward included, are in test_layer_contract.py)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive
from src.models.sequence.layers.log_linear import LogLinearGatedDeltaNet, LogLinearMamba2
from src.ops.delta_rule import reference as delta_reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)


def moved(layer):
    torch.manual_seed(0)
    layer = layer.double()
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return layer


def mamba2_formula(m, x):
    """The layer with fla's naive_log_linear_attn as its scan (the conv by torch's Conv1d)."""
    naive = fla_naive("log_linear_attn/naive.py")
    H = m.nheads
    z, xBC, dt, dl = m.in_proj(x).split([m.d_inner, m.conv_dim, H, H * m.num_levels], dim=-1)
    conv = F.conv1d(F.pad(xBC.transpose(1, 2), (m.d_conv - 1, 0)), m.conv1d.conv.weight, m.conv1d.conv.bias,
                    groups=m.conv_dim)
    xs, B, C = m._x_B_C(F.silu(conv).transpose(1, 2))
    B, C = (t.repeat_interleave(H // m.ngroups, dim=2) for t in (B, C))
    delta = F.softplus(dt + m.dt_bias)
    lam = F.softplus(m.L * dl.unflatten(-1, (H, m.num_levels)))
    y = naive.naive_log_linear_attn(C, B, xs * delta[..., None], -torch.exp(m.A_log) * delta, lam)
    y = y + m.D.view(H, -1) * xs
    return m.out_proj(m._gate(y.flatten(-2), z))


@pytest.mark.parametrize("options", [dict(), dict(ngroups=2, D_has_hdim=True)])
def test_log_linear_mamba2_is_its_formula(options):
    m = moved(LogLinearMamba2(8, d_state=5, headdim=4, num_levels=6, **options))
    x = torch.randn(2, 21, 8, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], mamba2_formula(m, x), **F64)


def test_log_linear_gdn_is_its_formula():
    """o_t = sum_s lambda_t[l(t, s)] A_ts v_s with the delta rule's A (its loop on one-hot values)."""
    m = moved(LogLinearGatedDeltaNet(8, n_heads=2, num_levels=6, use_short_conv=False))
    x = torch.randn(2, 13, 8, dtype=torch.float64)
    Bsz, T = x.shape[:2]
    q, k = (F.normalize(F.silu(p(x)).unflatten(-1, (2, -1)), dim=-1) for p in (m.q_proj, m.k_proj))
    v = F.silu(m.v_proj(x)).unflatten(-1, (2, -1))
    beta, g = torch.sigmoid(m.b_proj(x)), -torch.exp(m.A_log) * F.softplus(m.a_proj(x) + m.dt_bias)
    lam = F.softplus(m.L * m.l_proj(x).unflatten(-1, (2, -1)))
    eye = torch.eye(T, dtype=torch.float64)[None, :, None, :].expand(Bsz, T, 2, T)
    A = delta_reference.delta_rule(q, k, eye, beta, g, scale=1.0)[0]  # (B, t, H, s)
    level = torch.tensor([[0 if s == t else (t ^ s).bit_length() for s in range(T)] for t in range(T)])
    weights = lam.gather(-1, level[None, :, None, :].expand(Bsz, T, 2, T)) * torch.ones(T, T).tril()[:, None, :]
    o = torch.einsum("bths,bshv->bthv", A * weights, v)
    o = F.rms_norm(o, o.shape[-1:], m.o_norm.weight, 1e-5) * F.silu(m.g_proj(x).unflatten(-1, (2, -1)))
    torch.testing.assert_close(m(x)[0], m.o_proj(o.flatten(-2)), **F64)


def test_initialisation_follows_the_originals():
    m = LogLinearMamba2(64, d_state=8, headdim=16)  # 8 heads
    torch.testing.assert_close(-torch.exp(m.A_log), -torch.arange(1.0, 9.0))  # fla: A = -(1, ..., H)
    assert m.L.shape == (8, 15) and bool((m.L == 1).all()) and m.L._optim == {"weight_decay": 0.0}
    assert m.in_proj.bias is not None and m.conv1d.conv.bias is None  # fla's use_bias, use_conv_bias
    g = LogLinearGatedDeltaNet(16, n_heads=2)
    assert g.L.shape == (2, 15) and g.l_proj.bias is None


def test_state_grows_by_one_level_per_doubling():
    m = LogLinearGatedDeltaNet(16, n_heads=2)
    level = 2 * 8 * 16  # n_heads d_k d_v
    assert [m.state_size(L) - m.state_size(1) for L in (1, 2, 3, 4, 1000, 1024, 1025)] == \
        [0, level, level, 2 * level, 9 * level, 10 * level, 10 * level]


def test_errors():
    with pytest.raises(ConfigError, match="model.layer.num_levels=0"):
        LogLinearMamba2(64, num_levels=0)
    m = LogLinearGatedDeltaNet(8, n_heads=2, num_levels=3)
    with pytest.raises(ValueError, match="position 5 needs 4 levels; level_scales has 3"):
        m(torch.randn(1, 5, 8))
