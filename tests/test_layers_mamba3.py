"""The Mamba-3 layer (src/models/sequence/layers/mamba3.py) against its formula written out token
by token (mamba-ssm's Mamba3 SISO forward, with the rotations as complex products), step against
forward, its initialisation and its config errors (the contract checks of every layer are in
test_layer_contract.py). mamba-ssm's own Mamba3 module is no oracle here: its SISO path is the
Triton kernel mamba3_siso_combined (CUDA only); its pure-torch references check the op in
tests/test_mamba3.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from src.models.sequence.layers.mamba3 import Mamba3
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered


def layer(**kw):
    """A float64 layer at d_model 6 (d_inner 12, 3 heads of 4) with every parameter moved off its
    initial value."""
    torch.manual_seed(0)
    ours = Mamba3(6, **{**dict(d_state=6, headdim=4, chunk_size=4), **kw}).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return ours


def formula(m, u):
    """Mamba3 SISO, one token at a time: u (B, L, d_model) -> (B, L, d_model)."""
    Bsz, L, _ = u.shape
    H, P, N, G, S = m.nheads, m.headdim, m.d_state, m.ngroups, m.n_angles
    z, x, B, C, dd_dt, dd_A, trap, ang = m.in_proj(u).split(m.splits, dim=-1)

    def rms(v, w):
        return v / torch.sqrt(v.pow(2).mean(-1, keepdim=True) + 1e-5) * w

    B, C = rms(B.unflatten(-1, (G, N)), m.B_norm_weight), rms(C.unflatten(-1, (G, N)), m.C_norm_weight)
    B, C = (t.repeat_interleave(H // G, dim=2) + bias for t, bias in ((B, m.B_bias), (C, m.C_bias)))  # (B, L, H, N)
    dt = F.softplus(dd_dt + m.dt_bias)
    A = torch.where(dd_A >= 0, -(1 + dd_A), -1 / (1 - dd_A)).clamp_max(-m.A_floor)
    lam = torch.sigmoid(trap)
    theta = math.pi * torch.tanh(ang)  # (B, L, S)

    def turn(v, phi):  # v (B, H, N), phi (B, H, S): the pairs as complex numbers times e^{i phi}
        c = torch.view_as_complex(v.unflatten(-1, (N // 2, 2)).contiguous())
        c = torch.cat((c[..., :S] * torch.exp(1j * phi), c[..., S:]), dim=-1)
        return torch.view_as_real(c).flatten(-2)

    x, z = x.unflatten(-1, (H, P)), z.unflatten(-1, (H, P))
    h, phi = u.new_zeros(Bsz, H, P, N), u.new_zeros(Bsz, H, S)
    prev = u.new_zeros(Bsz, H, P, N)  # x_{t-1} B~_{t-1}^T
    ys = []
    for t in range(L):
        phi = phi + dt[:, t, :, None] * theta[:, t, None, :]
        Bt, Ct = turn(B[:, t], phi), turn(C[:, t], phi)
        a = torch.exp(A[:, t] * dt[:, t])[..., None, None]
        cur = x[:, t, :, :, None] * Bt[:, :, None, :]
        beta, gamma = ((1 - lam[:, t]) * dt[:, t])[..., None, None], (lam[:, t] * dt[:, t])[..., None, None]
        h = a * h + beta * a * prev + gamma * cur
        prev = cur
        y = torch.einsum("bhpn,bhn->bhp", h, Ct) + m.D[:, None] * x[:, t]
        if m.is_outproj_norm:
            y = rms(y, m.norm_weight)
        ys.append((y * F.silu(z[:, t])).flatten(-2))
    return m.out_proj(torch.stack(ys, dim=1))


@pytest.mark.parametrize("kw", [dict(), dict(ngroups=3, rope_fraction=1.0, is_outproj_norm=True), dict(d_state=10)])
def test_forward_is_the_formula(kw):
    m = layer(**kw)
    u = torch.randn(2, 11, 6, dtype=torch.float64)
    torch.testing.assert_close(m(u)[0], formula(m, u), **F64)


def test_steps_are_forward_and_forward_continues_from_a_state():
    m = layer()
    u = torch.randn(2, 9, 6, dtype=torch.float64)
    y, final = m(u)
    state, ys = m.default_state(2), []
    for t in range(9):
        y_t, state = m.step(u[:, t], state)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, **F64)
    y1, s1 = m(u[:, :4])
    y2, s2 = m(u[:, 4:], s1)
    torch.testing.assert_close(torch.cat((y1, y2), dim=1), y, **F64)
    for a, b, c in zip(state, s2, final):
        torch.testing.assert_close(a, c, **F64)
        torch.testing.assert_close(b, c, **F64)


def test_initialisation_and_state_size():
    m = Mamba3(16, d_state=8, headdim=4, dt_min=0.01, dt_max=0.05)
    assert (m.B_bias == 1).all() and (m.C_bias == 1).all() and (m.D == 1).all()
    dt = F.softplus(m.dt_bias)
    assert ((dt >= 0.01 - 1e-6) & (dt <= 0.05 + 1e-6)).all()
    assert m.n_angles == 2 and m.in_proj.bias is None and m.out_proj.bias is None
    assert m.state_size() == m.nheads * (2 + 4 * 8 + 8 + 4)


@pytest.mark.parametrize("kw, match", [(dict(headdim=5), "headdim=5"), (dict(ngroups=3), "ngroups=3"),
                                       (dict(rope_fraction=0.25), "rope_fraction=0.25"),
                                       (dict(d_state=2), "d_state=2"), (dict(backend="triton"), "backend")])
def test_bad_options_are_one_line_config_errors(kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        Mamba3(16, **{**dict(d_state=8, headdim=4), **kw})
    assert "\n" not in str(e.value)
