"""Selective SSMs and gated RNNs (mamba, mamba2, s6, dsf_ssd, qlstm, lru): inits, optimizer groups,
options, the C loops against the torch path, mamba-ssm's defaults (the contract checks of every
layer are in test_layer_contract.py)."""

import pytest
import torch
import torch.nn.functional as F

from conftest import need_c_loop, tiny_layer
from src.models.sequence.backbone import build_layer
from src.utils.errors import ConfigError

D = 8


def make(name, **options):
    return tiny_layer(name, d_model=D, **options)


@pytest.mark.parametrize("name, no_decay", [
    ("mamba", {"ssm.A_log", "ssm.D"}),
    ("s6", {"ssm.A_log", "ssm.D"}),
    ("dsf_ssd", {"ssm.A_log", "ssm.D"}),
    ("mamba2", {"A_log", "D", "dt_bias"}),
    ("lru", {"nu_log", "theta_log", "gamma_log"}),
    ("qlstm", set()),
])
def test_optimizer_groups(name, no_decay):
    hp = {n: getattr(p, "_optim", None) for n, p in make(name).named_parameters()}
    assert {n for n, o in hp.items() if o is not None} == no_decay
    assert all(hp[n] == {"weight_decay": 0.0} for n in no_decay)


def test_lru_learning_rate_and_ring_init():
    torch.manual_seed(0)
    layer = build_layer(dict(_name_="lru", d_state=500, r_min=0.5, r_max=0.9, max_phase=0.1, lr=1e-3), D)
    assert layer.nu_log._optim == {"lr": 1e-3, "weight_decay": 0.0}
    Lambda, _, _ = layer._params()
    assert Lambda.abs().min() >= 0.5 - 1e-6 and Lambda.abs().max() <= 0.9 + 1e-6
    assert Lambda.angle().min() >= 0 and Lambda.angle().max() <= 0.1 + 1e-6
    gamma = torch.exp(layer.gamma_log)
    torch.testing.assert_close(gamma, torch.sqrt(1 - Lambda.abs() ** 2))


def test_mamba_init():
    layer = make("mamba")
    torch.testing.assert_close(-torch.exp(layer.ssm.A_log[3]), -torch.arange(1.0, 6.0))  # S4D-real
    dt = torch.nn.functional.softplus(layer.ssm.dt_proj.bias)
    assert dt.min() >= 1e-3 * (1 - 1e-5) and dt.max() <= 0.1 * (1 + 1e-5)
    assert layer.ssm.dt_rank == 1 and layer.d_inner == 16  # ceil(8 / 16), expand 2


@pytest.mark.parametrize("config, message", [
    (dict(_name_="mamba2", headdim=5), "model.layer.headdim=5 must divide expand \\* d_model = 16"),
    (dict(_name_="mamba2", headdim=4, ngroups=3), "model.layer.ngroups=3 must divide the number of heads 4"),
    (dict(_name_="mamba2", headdim=4, dt_limit=(0.1, 0.01)), r"model.layer.dt_limit=\[0.1, 0.01\]: need 0 <= low"),
    (dict(_name_="qlstm", forget_gate="tanh"), "model.layer.forget_gate='tanh' is not valid; choose one of: "
                                               "'sigmoid', 'reversed_sigmoid'"),
    (dict(_name_="lru", r_min=0.9, r_max=0.5), "need 0 <= r_min < r_max <= 1"),
    (dict(_name_="mamba", backend="keops"), "model.layer.backend='keops' is not valid"),
    (dict(_name_="mamba", dt_rank="full"), "model.layer.dt_rank='full' is not valid; choose 'auto' or a positive"),
])
def test_bad_config_values(config, message):
    with pytest.raises(ConfigError, match=message):
        build_layer(config, D)


@pytest.mark.parametrize("name", ["mamba", "mamba-neg-eigval", "s6", "dsf_ssd", "qlstm", "lru"])
@pytest.mark.parametrize("backend", ["auto", "cpu"])
def test_the_c_loops_train_like_the_torch_path(name, backend):
    """On CPU, `auto` and `cpu` run these layers' scans in C (a convolution in front runs in
    torch: it has no C loop): same output, same gradient for every parameter as `torch`
    (float64, to rounding), with a loss whose gradient reaches the scan as a transposed view."""
    need_c_loop("linear_scan" if name in ("qlstm", "lru") else "selective_scan")
    layers = []
    for b in ("torch", backend):
        layers.append(make(name, backend=b).double())
    x = torch.randn(3, 33, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    results = []
    for layer in layers:
        y, _ = layer(x)
        results.append((y, torch.autograd.grad(y.square().sum(), list(layer.parameters()))))
    (y_torch, g_torch), (y_c, g_c) = results
    torch.testing.assert_close(y_c, y_torch, rtol=1e-10, atol=1e-10)
    for (pname, _), a, b in zip(layers[0].named_parameters(), g_c, g_torch):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=pname)


@pytest.mark.parametrize("name", ["mamba", "mamba2"])
@pytest.mark.parametrize("backend", ["auto", "torch"])
@pytest.mark.parametrize("allow_neg_eigval", [False, True])
def test_long_steps_flip_or_forget_the_state(name, backend, allow_neg_eigval):
    """No input (in_proj and the conv bias 0: u = B = C = 0) and long steps (dt ~ 50, |A| >= 1,
    so exp(dt A) ~ 1e-22): the transition 2 exp(dt A) - 1 of allow_neg_eigval is -1 (to float64
    rounding), so the SSM state alternates, h_L = (-1)^L h_0; exp(dt A) alone forgets h_0. The
    same through forward (auto: mamba's C loop; mamba2's chunked scan over 3 chunks) and step."""
    layer = make(name, backend=backend, allow_neg_eigval=allow_neg_eigval).double()  # mamba2: chunks of 4
    with torch.no_grad():
        layer.in_proj.weight.zero_()
        layer.conv1d.conv.bias.zero_()
        (layer.ssm.dt_proj.bias if name == "mamba" else layer.dt_bias).fill_(50.0)
    conv0, h0 = layer.default_state(2)
    h0 = torch.randn(h0.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = torch.randn(2, 11, D, dtype=torch.float64)
    want = -h0 if allow_neg_eigval else torch.zeros_like(h0)  # L = 11: odd
    _, (_, h) = layer(x, (conv0, h0))
    torch.testing.assert_close(h, want, rtol=0, atol=1e-15)
    state = (conv0, h0)
    for t in range(x.shape[1]):
        _, state = layer.step(x[:, t], state)
    torch.testing.assert_close(state[1], want, rtol=0, atol=1e-15)


@pytest.mark.parametrize("name, backend, ops", [
    ("mamba", "cpu", {"selective_scan": "cpu", "causal_conv1d": "torch"}),
    ("mamba", "triton", {"selective_scan": "cuda", "causal_conv1d": "cuda"}),
    ("mamba2", "cuda", {"ssd_scan": "triton", "causal_conv1d": "cuda"}),
    ("mamba2", "cpu", {"ssd_scan": "torch", "causal_conv1d": "torch"}),
    ("qlstm", "triton", {"linear_scan": "triton", "causal_conv1d": "cuda"}),
])
def test_one_backend_key_serves_the_scan_and_the_convolution(name, backend, ops):
    """model.layer.backend names a kernel family; each op takes its own kernel of that family."""
    layer = make(name, backend=backend)
    conv = layer.conv1d if hasattr(layer, "conv1d") else layer.conv
    scan_backend = layer.backend if name != "mamba" else layer.ssm.backend
    assert {op: (conv.backend if op == "causal_conv1d" else scan_backend) for op in ops} == ops


@pytest.mark.parametrize("rmsnorm, norm_before_gate", [(True, False), (True, True), (False, False)])
def test_mamba2_gate_variants(rmsnorm, norm_before_gate):
    """mamba-ssm's Mamba2 output gate: RMSNorm(y silu(z)) per group of d_inner / ngroups channels,
    RMSNorm(y) silu(z) with norm_before_gate, y silu(z) without rmsnorm."""
    layer = build_layer(dict(_name_="mamba2", headdim=4, ngroups=2, rmsnorm=rmsnorm,
                             norm_before_gate=norm_before_gate), D)
    g = torch.Generator().manual_seed(0)
    y, z = torch.randn(3, 16, generator=g), torch.randn(3, 16, generator=g)

    def rms(v):  # over groups of 8 channels
        v = v.unflatten(-1, (2, 8))
        return (v / (v.pow(2).mean(-1, keepdim=True) + layer.norm_eps).sqrt()).flatten(-2)

    if not rmsnorm:
        want = y * F.silu(z)
        assert layer.norm_weight is None
    else:
        with torch.no_grad():
            layer.norm_weight.copy_(torch.linspace(0.5, 2.0, 16))
        want = (rms(y) * F.silu(z) if norm_before_gate else rms(y * F.silu(z))) * layer.norm_weight
    torch.testing.assert_close(layer._gate(y, z), want)


def test_mamba2_dt_limit_and_per_channel_D():
    layer = build_layer(dict(_name_="mamba2", headdim=4, D_has_hdim=True, dt_limit=(0.02, 0.05)), D)
    assert layer.D.shape == (16,)
    dt = torch.linspace(-20, 20, 41)[:, None].expand(41, layer.nheads)
    clamped = layer._dt(dt)
    assert clamped.min() == 0.02 and clamped.max() == 0.05
    free = build_layer(dict(_name_="mamba2", headdim=4), D)
    free.load_state_dict({k: v for k, v in layer.state_dict().items() if k != "D"}, strict=False)
    torch.testing.assert_close(free._dt(dt), F.softplus(dt + layer.dt_bias))


# mamba-ssm's Mamba2.__init__ defaults (mamba_ssm/modules/mamba2.py; rmsnorm eps 1e-5 in its RMSNormGated)
MAMBA_SSM_MAMBA2 = dict(d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, A_init_range=(1, 16),
                        D_has_hdim=False, rmsnorm=True, norm_before_gate=False, dt_min=0.001, dt_max=0.1,
                        dt_init_floor=1e-4, dt_limit=(0.0, float("inf")), bias=False, conv_bias=True,
                        chunk_size=256, norm_eps=1e-5)


def test_mamba2_defaults_are_mamba_ssms():
    """`model=mamba2` (its config and the class) starts from mamba-ssm's Mamba2 defaults."""
    import inspect

    from omegaconf import OmegaConf

    from src.models.sequence.layers.mamba import Mamba2

    config = OmegaConf.to_container(OmegaConf.load("configs/model/layer/mamba2.yaml"))
    signature = inspect.signature(Mamba2).parameters
    for key, value in MAMBA_SSM_MAMBA2.items():
        assert tuple(config[key]) == value if isinstance(value, tuple) else config[key] == value, key
        assert signature[key].default == value, key
    layer = build_layer(dict(_name_="mamba2"), 128)
    assert (layer.nheads, layer.d_state, layer.conv_dim) == (4, 128, 256 + 2 * 128)
