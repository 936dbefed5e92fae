"""DLR, DSS, SGConv and the DLR repo's attention: values against their formulas (the shapes,
gradients, causality, step and state checks of every layer are in test_layer_contract.py)."""

import pytest
import torch

from conftest import tiny_layer
from src.models.sequence.layers.attention import AttentionBlock
from src.models.sequence.layers.dlr import DLR, DSS, DLRKernel, DSSKernel
from src.models.sequence.layers.sgconv import SGConv
from src.utils.errors import ConfigError

D = 8


def test_optimizer_hooks_and_lambda_re_lr():
    layer = DLR(D, d_state=4, lr={"Lambda": 1e-3, "Lambda_re": 5e-5, "W": 2e-3}, wd=0.1)
    hp = {n: getattr(p, "_optim", None) for n, p in layer.named_parameters()}
    assert hp["kernel.Lambda_im"] == {"lr": 1e-3, "weight_decay": 0.0}
    assert hp["kernel.Lambda_re_sqrt"] == {"lr": 5e-5, "weight_decay": 0.0}
    assert hp["kernel.W"] == {"lr": 2e-3, "weight_decay": 0.1}
    assert hp["D"] is None
    default = DLR(D, d_state=4, lr={"Lambda": 1e-3, "Lambda_re": None, "W": 2e-3})
    assert default.kernel.Lambda_re_sqrt._optim["lr"] == 1e-3  # Lambda_re defaults to Lambda
    dss = DSS(D, d_state=4, lr={"log_dt": 1e-2, "Lambda": 1e-3, "W": 1e-4},
                   trainable={"log_dt": False})
    assert "kernel.log_dt" in dict(dss.named_buffers()) and dss.kernel.W._optim["lr"] == 1e-4


@pytest.mark.parametrize("kernel", ["dlr", "dss"])
def test_kernel_is_the_impulse_response_of_its_recurrence(kernel):
    """K[:, :, l] == sum_n W exp(x)^l, by repeated multiplication (no Vandermonde op)."""
    torch.manual_seed(0)
    k = (DLRKernel if kernel == "dlr" else DSSKernel)(3, 5, channels=2).double()
    W, x = k.vandermonde_params()
    power, rows = torch.ones_like(W), []
    for _ in range(9):
        rows.append((W * power).sum(-1).real)
        power = power * torch.exp(x)
    torch.testing.assert_close(k(9), torch.stack(rows, -1), rtol=1e-10, atol=1e-12)


def test_dss_softmax_with_growing_modes_is_stable():
    """Re Lambda > 0: the DLR repo's value W' exp(x l - x (L-1)), and finite at L=4096 in float32
    (where exp(x l) alone overflows: Re x L = 0.025 * 4096 > 88)."""
    torch.manual_seed(0)
    k = DSSKernel(2, 4, channels=2, version="softmax", dt_min=0.05, dt_max=0.05).double()
    with torch.no_grad():
        k.Lambda[:, 0] = torch.tensor([0.5, -0.5, 0.01, -0.1], dtype=torch.float64)
    L = 40
    W, x = k.vandermonde_params(L)
    p_max = x * (x.real > 0) * (L - 1)
    expected = (W[..., None] * torch.exp(x[..., None] * torch.arange(L) - p_max[..., None])).sum(-2).real
    torch.testing.assert_close(k(L), expected, rtol=1e-12, atol=1e-12)
    k = k.float()
    K = k(4096)
    K.sum().backward()
    assert torch.isfinite(K).all() and all(torch.isfinite(p.grad).all() for p in k.parameters())


@pytest.mark.parametrize("n", [2, 8, 64])
def test_hippo_skew_imag_matches_a_general_eigensolver(n):
    from src.models.sequence.layers.dlr import hippo_skew_imag

    r = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    lower = (r[:, None] * r[None, :]).tril(diagonal=-1)
    evals = torch.linalg.eigvals((lower - lower.T) / 2)
    expected = evals.imag.sort(descending=True).values[: n // 2]
    # squaring costs precision on the smallest parts: ~eps * max^2 / min
    torch.testing.assert_close(hippo_skew_imag(n), expected, rtol=1e-8, atol=1e-10)


def test_dlr_omega_init_and_versions():
    k = DLRKernel(2, 8, dt_min=1e-3, dt_max=1e-3, Lambda_init="omega")
    _, Lambda = k.vandermonde_params()
    torch.testing.assert_close(Lambda.imag, 2 * torch.pi * torch.arange(8) / 8)
    torch.testing.assert_close(Lambda.real, torch.full((8,), -5e-4))
    _, Lambda = DLRKernel(2, 8, version="Lambda_imag").vandermonde_params()
    assert torch.all(Lambda.real == 0)
    W, Lambda = DLRKernel(2, 8, version="Lambda_real_W_real").vandermonde_params()
    assert torch.all(Lambda.imag == 0) and torch.all(W.imag == 0)


def test_local_attention_sees_only_the_previous_window():
    layer = tiny_layer("attn-local", d_model=D, dtype=torch.float64)  # windows of 4
    x = torch.randn(1, 16, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, :4] += 1.0  # window 0
    y, y2 = layer(x)[0], layer(x2)[0]
    assert not torch.allclose(y[:, 4:8], y2[:, 4:8])  # window 1 sees window 0
    torch.testing.assert_close(y[:, 8:], y2[:, 8:])  # windows 2, 3 do not


def test_local_attention_with_one_window_is_full_attention():
    torch.manual_seed(0)
    full = AttentionBlock(D, n_heads=2).double()
    local = AttentionBlock(D, n_heads=2, chunk_size=32).double()
    local.load_state_dict(full.state_dict())
    x = torch.randn(2, 10, D, dtype=torch.float64)
    torch.testing.assert_close(local(x)[0], full(x)[0])


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (DLR, dict(version="v2"), r"model.layer.version='v2' is not valid; choose one of: '', 'Lambda_imag'"),
        (DSS, dict(version="v2"), r"model.layer.version='v2' is not valid; choose one of: 'exp'"),
        (DLR, dict(Lambda_init="zeros"), r"model.layer.Lambda_init='zeros' is not valid; choose one of: 'omega', 'randn'"),
        (DSS, dict(Lambda_init="zeros"), r"model.layer.Lambda_init='zeros' is not valid; choose one of: 'hippo_skew_pos_imag'"),
        (DLR, dict(kernel_to_real="abs"), r"model.layer.kernel_to_real='abs' is not valid"),
        (DLR, dict(activation="swishy"), r"model.layer.activation='swishy' is not valid"),
        (SGConv, dict(), r"SGConv needs model.layer.l_max"),
        (DLR, dict(version="Lambda_real_W_real", kernel_to_real="imag"), r"would make it zero"),
        (DSS, dict(version="exp-re-im", Lambda_init="lin"), r"needs Im\(Lambda\) > 0"),
        (DLR, dict(backend="triton"), r"model.layer.backend='triton' is not valid; choose one of: 'auto', 'torch', 'dense'"),
    ],
)
def test_bad_options_raise_one_clear_error(cls, options, message):
    with pytest.raises(ConfigError, match=message):
        cls(D, **options)


@pytest.mark.parametrize("N, l_max", [(8, 24), (8, 17), (8, 8), (8, 3), (4, 64)])
def test_sgconv_kernel_covers_l_max(N, l_max):
    from src.models.sequence.layers.sgconv import SGConvKernel

    length = SGConvKernel(2, N, l_max=l_max).multiscale().shape[-1]
    assert length >= l_max and (length == N or length < 2 * l_max)  # fewest scales that cover l_max


def test_sgconv_kernel_too_short_for_the_input():
    with pytest.raises(ConfigError, match=r"set model.layer.l_max=64"):
        SGConv(D, d_state=4, l_max=16)(torch.randn(1, 64, D))
