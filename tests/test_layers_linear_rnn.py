"""Matrix-state layers (deltanet, gated_deltanet, gated_deltaproduct, kda, gla, retnet, hgrn2, rwkv6, rwkv7,
based): what each
layer computes, against its formula (the contract checks of every layer are in
test_layer_contract.py)."""

import math

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_layer
from src.models.sequence.backbone import build_layer
from src.ops.delta_rule import reference as delta_reference
from src.utils.errors import ConfigError

D = 16


def make(name):
    return tiny_layer(name, dtype=torch.float64)


def test_based_is_normalised_taylor_attention():
    """o_i = sum_j w_ij v_j / sum_j w_ij with w_ij = 1 + s + s^2/2, s = q_i . k_j / sqrt(d'), j <= i."""
    layer = make("based")
    x = torch.randn(2, 19, D, dtype=torch.float64)
    q, k, v = (p(x).unflatten(-1, (4, -1)) for p in (layer.q_proj, layer.k_proj, layer.v_proj))
    s = torch.einsum("blhd,bmhd->bhlm", q, k) / 2
    w = (1 + s + s**2 / 2).tril()
    o = torch.einsum("bhlm,bmhd->blhd", w, v) / w.sum(-1).transpose(1, 2)[..., None]
    torch.testing.assert_close(layer(x)[0], layer.o_proj(o.flatten(-2)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_based_parallel_mode_is_the_chunked_op_forward_and_backward(backend):
    """mode=parallel (the (L, L) weights) and mode=chunk (the gla op on the Taylor features): the same
    outputs, final state and gradients, from a zero state and from a given one."""
    def run(mode, state):
        layer = tiny_layer("based", dtype=torch.float64, mode=mode, backend="auto" if mode == "parallel" else backend)
        x = torch.randn(3, 21, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1), requires_grad=True)
        S0 = None if state is None else state.clone().requires_grad_()
        y, S = layer(x, S0)
        loss = (y * torch.linspace(-1, 1, y.numel(), dtype=y.dtype).view_as(y)).sum() + S.pow(2).sum()  # through S too
        loss.backward()
        return [y, S, x.grad, *(p.grad for p in layer.parameters())] + ([S0.grad] if S0 is not None else [])

    state = 0.1 * torch.randn(3, 4, 1 + 4 + 16, D // 4 + 1, dtype=torch.float64)  # n_heads 4, feature_dim 4
    for initial in (None, state):
        for got, want in zip(run("parallel", initial), run("chunk", initial)):
            torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-9)


def test_based_auto_mode_is_parallel_up_to_its_length_and_chunk_with_a_backend(monkeypatch):
    import src.models.sequence.layers.based as module

    calls, run = [], module.gla
    monkeypatch.setattr(module, "gla", lambda *a, **k: calls.append(a[0].shape[1]) or run(*a, **k))
    x = torch.randn(1, module.PARALLEL_MAX_L + 1, D)
    tiny_layer("based")(x[:, :-1])
    assert calls == []
    tiny_layer("based")(x)
    tiny_layer("based", backend="torch")(x[:, :3])
    assert calls == [module.PARALLEL_MAX_L + 1, 3]
    with pytest.raises(ConfigError, match=r"model.layer.backend='cpu' chooses the gla op of model.layer.mode='chunk'"):
        tiny_layer("based", mode="parallel", backend="cpu")
    with pytest.raises(ConfigError, match=r"model.layer.mode='flash' is not valid; choose one of: 'auto', 'parallel', 'chunk'"):
        tiny_layer("based", mode="flash")


def test_retnet_decays_are_its_gammas():
    layer = build_layer(dict(_name_="retnet", n_heads=4), D)
    torch.testing.assert_close(layer.log_gamma.exp(), 1 - 2.0 ** (-5 - torch.arange(4.0)))


def test_retnet_rotates_by_the_absolute_position():
    """The state carries the position: a chunk started from a state is rotated as if unsplit (above),
    and a fresh call on the same chunk (position 0) differs."""
    layer = make("retnet")
    x = torch.randn(1, 12, D, dtype=torch.float64)
    _, state = layer(x[:, :5])
    assert state[-1].tolist() == [5]
    fresh, _ = layer(x[:, 5:], (state[0], state[1], torch.zeros(1, dtype=torch.long)))
    assert not torch.allclose(fresh, layer(x[:, 5:], state)[0])


def test_deltanet_beta_range(monkeypatch):
    """sigmoid beta in (0, 1); allow_neg_eigval doubles it to (0, 2)."""
    import src.models.sequence.layers.deltanet as module

    seen, run = [], module.delta_product
    monkeypatch.setattr(module, "delta_product", lambda q, k, v, beta, g, **kw: seen.append(beta) or run(q, k, v, beta, g, **kw))
    for neg in (False, True):
        torch.manual_seed(0)
        build_layer(dict(_name_="deltanet", allow_neg_eigval=neg), D).double()(torch.randn(4, 50, D, dtype=torch.float64))
    assert 0 < seen[0].min() and seen[0].max() < 1 and 1 < seen[1].max() < 2
    torch.testing.assert_close(seen[1], 2 * seen[0])


def test_hgrn2_ties_its_input_gate_to_the_forget_gate():
    """k = 1 - exp(g): with W_f = 0 the forget gate is sigmoid(0) = 1/2, and so is the input gate."""
    layer = build_layer(dict(_name_="hgrn2", expand_ratio=4), D).double()
    with torch.no_grad():
        layer.k_proj.weight.zero_()  # the forget-gate logits
    x = torch.randn(1, 6, D, dtype=torch.float64)
    q, i = F.silu(layer.q_proj(x)).unflatten(-1, (4, 4)), layer.v_proj(x).unflatten(-1, (4, 4))
    S, outs = torch.zeros(1, 4, 4, 4, dtype=torch.float64), []
    for t in range(6):
        S = 0.5 * S + 0.5 * q.new_ones(1, 4, 4)[..., None] * i[:, t, :, None, :]
        outs.append((S * q[:, t, :, :, None]).sum(-2) / 2)  # scale 4^-1/2
    o = torch.stack(outs, 1)
    torch.testing.assert_close(layer(x)[0], layer.o_proj(layer.norm(o.flatten(-2))), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["gla", "hgrn2"])
def test_allow_neg_eigval_maps_each_decay_to_2_exp_g_minus_1(monkeypatch, name):
    """The op gets log|a| and a < 0 for a = 2 exp(g) - 1 (Grazzi et al.), g the decay the layer
    has without the switch; the other inputs (hgrn2's input gate 1 - exp(g) included) stay.
    (gla at gate_logit_normalizer 1: at 16, a < 0 needs gate logits below -11, none here.)"""
    import src.models.sequence.layers.gla as module

    seen, run = [], module.gla
    monkeypatch.setattr(module, "gla", lambda *a, **kw: seen.append((a, kw.get("negative"))) or run(*a, **kw))
    x = torch.randn(2, 30, D, dtype=torch.float64)
    for neg in (False, True):
        torch.manual_seed(0)
        build_layer(dict(_name_=name, allow_neg_eigval=neg, **({"gate_logit_normalizer": 1} if name == "gla" else {})),
                    D).double()(x)
    (plain, none), (signed, negative) = seen
    assert none is None and negative.any() and not negative.all()
    for a, b in zip(plain[:3], signed[:3]):
        assert torch.equal(a, b)
    decay = torch.where(negative, -signed[3].exp(), signed[3].exp())
    torch.testing.assert_close(decay, 2 * plain[3].exp() - 1, rtol=1e-12, atol=1e-15)


def test_a_gla_gate_of_one_half_is_a_zero_decay_with_finite_gradients():
    """sigmoid(b)^(1/16) = 1/2 gives a = 2 exp(g) - 1 = 0 exactly in float32: log|a| is floored at
    eps (the rounding of a itself), so the output and every gradient stay finite."""
    layer = build_layer(dict(_name_="gla", allow_neg_eigval=True), D)
    with torch.no_grad():
        layer.gk_proj[1].weight.zero_()
        layer.gk_proj[1].bias.fill_(math.log(2.0**-16 / (1 - 2.0**-16)))  # logsigmoid(b) / 16 = log(1/2)
    g = F.logsigmoid(layer.gk_proj[1].bias) / 16
    assert (2 * g.exp() - 1 == 0).all()
    y, (_, S) = layer(torch.randn(2, 20, D))
    (y.sum() + S.sum()).backward()
    assert torch.isfinite(y).all() and all(torch.isfinite(p.grad).all() for p in layer.parameters())


@pytest.mark.parametrize("config, message", [
    (dict(_name_="deltanet", n_heads=3), r"key width=16 does not split into model.layer.n_heads=3 heads"),
    (dict(_name_="deltanet", qk_activation="tanh"), r"model.layer.qk_activation='tanh' is not valid; choose one of: 'silu'"),
    (dict(_name_="hgrn2", expand_ratio=128), r"model.layer.expand_ratio=128 is wider than model.d_model=16"),
    (dict(_name_="rwkv7"), r"model.layer.head_dim=64 does not divide model.d_model=16"),
    (dict(_name_="gla", backend="cuda"), r"model.layer.backend='cuda' is not valid; choose one of: 'auto', 'torch', 'cpu', 'triton'"),
    (dict(_name_="gla", expand_k=0.3), r"model.layer.expand_k=0.3 times d_model=16 is not a positive integer"),
    (dict(_name_="gla", allow_neg_eigval=True, backend="triton"),
     r"model.layer.allow_neg_eigval=true needs signed decays, which fla's kernels \(model.layer.backend=triton\)"),
    (dict(_name_="retnet", n_heads=16), r"key width per head 1 must be even"),
    (dict(_name_="gated_deltaproduct", num_householder=0), r"model.layer.num_householder=0 is not a positive integer"),
    (dict(_name_="kda", lower_bound=1.0), r"model.layer.lower_bound=1.0 is not a negative log decay"),
])
def test_bad_options_are_named(config, message):
    with pytest.raises(ConfigError, match=message):
        build_layer(config, D)


def test_gated_deltanet_parameters_without_weight_decay():
    layer = make("gated_deltanet")
    assert {n for n, p in layer.named_parameters() if getattr(p, "_optim", None)} == {"A_log", "dt_bias"}
    assert math.isclose(F.softplus(layer.dt_bias).min().item(), 1e-3, rel_tol=1) and F.softplus(layer.dt_bias).max() <= 0.1


@pytest.mark.parametrize("gate", [True, False])
def test_gated_deltaproduct_takes_n_householder_steps_per_token(gate):
    """Without the convs: token t's step j uses the j-th block of W_k x_t, W_v x_t (fla's (n h d)
    layout) and of W_b x_t ((n h)), beta = 2 sigmoid, the decay once per token, then the read."""
    n, H = 3, 2
    layer = tiny_layer("gated_deltaproduct", dtype=torch.float64, num_householder=n, use_short_conv=False,
                       use_forget_gate=gate)
    x = torch.randn(2, 9, D, dtype=torch.float64)
    dk, dv = D // H, 2 * D // H
    q = F.normalize(F.silu(layer.q_proj(x)).unflatten(-1, (H, dk)), dim=-1)
    k = F.normalize(F.silu(layer.k_proj(x)).unflatten(-1, (n, H, dk)), dim=-1)  # (B, L, n, H, dk)
    v = F.silu(layer.v_proj(x)).unflatten(-1, (n, H, dv))
    beta = 2 * torch.sigmoid(layer.b_proj(x)).unflatten(-1, (n, H))
    g = -layer.A_log.exp() * F.softplus(layer.a_proj(x) + layer.dt_bias) if gate else None
    S, outs = torch.zeros(2, H, dk, dv, dtype=torch.float64), []
    for t in range(9):
        if gate:
            S = S * g[:, t, :, None, None].exp()
        for j in range(n):
            kj = k[:, t, j, :, :, None]
            S = S + beta[:, t, j, :, None, None] * kj * (v[:, t, j, :, None, :] - (S * kj).sum(-2, keepdim=True))
        outs.append((S * q[:, t, :, :, None]).sum(-2) / dk**0.5)
    o = layer.o_norm(torch.stack(outs, 1), layer.g_proj(x).unflatten(-1, (H, dv)))
    torch.testing.assert_close(layer(x)[0], layer.o_proj(o.flatten(-2)), rtol=1e-10, atol=1e-10)


def test_gated_deltaproduct_with_one_step_is_gated_deltanet():
    x = torch.randn(2, 11, D, dtype=torch.float64)
    one = tiny_layer("gated_deltaproduct", dtype=torch.float64, num_householder=1, allow_neg_eigval=False)
    gdn = tiny_layer("gated_deltanet", dtype=torch.float64)
    gdn.load_state_dict(one.state_dict())
    torch.testing.assert_close(one(x), gdn(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("lower_bound", [None, -5.0])
def test_kda_decays_each_key_with_its_own_gate(lower_bound):
    """g = -exp(A_log) softplus(W_f2 W_f1 x + dt_bias) per head and key (or b sigmoid(exp(A_log) (...))),
    the gated delta rule with that per-key decay, RMSNorm times sigmoid(W_g2 W_g1 x + bias)."""
    H = 2
    layer = tiny_layer("kda", dtype=torch.float64, lower_bound=lower_bound, use_short_conv=False)
    with torch.no_grad():
        layer.A_log.normal_()
    x = torch.randn(2, 13, D, dtype=torch.float64)
    f = (layer.f_proj[1](layer.f_proj[0](x)) + layer.dt_bias).unflatten(-1, (H, D // H))
    A = layer.A_log.exp()[:, None]
    g = -A * F.softplus(f) if lower_bound is None else lower_bound * torch.sigmoid(A * f)
    assert g.shape == (2, 13, H, D // H) and (g < 0).all() and (lower_bound is None or (g > lower_bound).all())
    q, k = (F.normalize(F.silu(p(x)).unflatten(-1, (H, -1)), dim=-1) for p in (layer.q_proj, layer.k_proj))
    v = F.silu(layer.v_proj(x)).unflatten(-1, (H, -1))
    o, _ = delta_reference.delta_rule(q, k, v, torch.sigmoid(layer.b_proj(x)), g)
    gate = layer.g_proj[1](layer.g_proj[0](x)).unflatten(-1, (H, -1))
    o = F.rms_norm(o, o.shape[-1:], layer.o_norm.weight, 1e-5) * torch.sigmoid(gate)
    torch.testing.assert_close(layer(x)[0], layer.o_proj(o.flatten(-2)), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("name", ["gated_deltaproduct", "kda"])
def test_the_decay_parameters_carry_no_weight_decay(name):
    layer = make(name)
    assert {n for n, p in layer.named_parameters() if getattr(p, "_optim", None)} == {"A_log", "dt_bias"}
