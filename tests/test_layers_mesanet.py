"""The MesaNet layer (src/models/sequence/layers/mesanet.py) against its formula written out token
by token with the exact solve, its initialisation and its config errors (the contract checks of
every layer, step == forward included, are in test_layer_contract.py). fla's own MesaNet module
is no oracle on CPU (its convolutions and norms are Triton); its naive.py checks the op in
tests/test_mesa_net.py."""

import pytest
import torch
import torch.nn.functional as F

from src.models.sequence.layers.mesanet import MesaNet
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)


def layer(**kw):
    torch.manual_seed(0)
    ours = MesaNet(12, **{**dict(n_heads=2, head_dim=3), **kw}).double()
    with torch.no_grad():
        for p in ours.parameters():
            p.add_(0.3 * torch.randn_like(p))
    return ours


def formula(m, x):
    """x (B, L, d_model) -> (B, L, d_model), one token at a time, every conv and solve written out."""
    Bsz, L, _ = x.shape
    H, K = m.n_heads, m.d_k

    def conv(c, u):  # the depthwise causal conv + SiLU of a ShortConv on (B, L, C)
        w = c.conv.weight[:, 0]  # (C, width)
        u = F.pad(u, (0, 0, w.shape[1] - 1, 0))
        return F.silu(sum(u[:, i : i + L] * w[:, i] for i in range(w.shape[1])))

    q = F.normalize(conv(m.convs.convs[0], m.q_proj(x)).unflatten(-1, (H, K)), dim=-1)
    k = F.normalize(conv(m.convs.convs[1], m.k_proj(x)).unflatten(-1, (H, K)), dim=-1)
    v = m.v_proj(x).unflatten(-1, (H, K))
    gamma, beta = torch.sigmoid(m.a_proj(x)), torch.sigmoid(m.b_proj(x))
    lam = (F.softplus(m.lambda_params) + m.lambda_lower_bound).view(H, K)
    Hkk, G, out = x.new_zeros(Bsz, H, K, K), x.new_zeros(Bsz, H, K, K), []
    for t in range(L):
        kb = beta[:, t, :, None, None] * k[:, t, :, :, None]
        Hkk = gamma[:, t, :, None, None] * Hkk + kb * k[:, t, :, None, :]
        G = gamma[:, t, :, None, None] * G + kb * v[:, t, :, None, :]
        qs = torch.linalg.solve(Hkk + torch.diag_embed(lam), q[:, t])
        o = (G.transpose(-1, -2) @ qs[..., None])[..., 0]  # (B, H, K)
        gate = F.silu(m.g_proj(x[:, t]).unflatten(-1, (H, K))) if m.use_output_gate else 1
        out.append(m.o_proj((F.rms_norm(o, (K,), m.o_norm.weight, 1e-5) * gate).flatten(-2)))
    return torch.stack(out, dim=1)


@pytest.mark.parametrize("gate", [False, True])
def test_forward_is_the_formula_with_the_exact_solve(gate):
    m = layer(cg_steps=None, use_output_gate=gate)
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    torch.testing.assert_close(m(x)[0], formula(m, x), **F64)


def test_fla_cg_steps_stay_near_the_exact_solve():
    m = layer()
    x = torch.randn(2, 11, 12, dtype=torch.float64)
    assert m.cg_steps == 30
    torch.testing.assert_close(m(x)[0], formula(m, x), rtol=1e-2, atol=1e-2)


def test_lambda_is_one_at_init():
    m = MesaNet(8)
    lam = F.softplus(m.lambda_params) + m.lambda_lower_bound
    torch.testing.assert_close(lam, torch.ones(8))
    assert m.lambda_params._optim == {"weight_decay": 0.0}


@pytest.mark.parametrize("options, match", [(dict(lambda_lower_bound=0.0), "lambda_lower_bound=0.0"),
                                            (dict(cg_steps=0), "cg_steps=0"),
                                            (dict(n_heads=3), "does not split"),
                                            (dict(backend="cuda"), "model.layer.backend")])
def test_config_errors_name_the_key(options, match):
    with pytest.raises(ConfigError, match=match):
        MesaNet(8, **options)
