"""The wkv op of RWKV-4 (src/ops/wkv): the loop against the definition, the C loop against the
loop, forward and backward, including decays and keys where the running max is what keeps the
sums finite."""

import pytest
import torch

from src.ops.wkv import DISPATCH, wkv
from src.ops.wkv import reference
from src.utils.errors import ConfigError


def inputs(batch, L, D, dtype=torch.float64, w_scale=1.0, k_scale=1.0, seed=0):
    g = torch.Generator().manual_seed(seed)
    w = -torch.exp(torch.randn(D, generator=g, dtype=dtype)) * w_scale
    u = torch.randn(D, generator=g, dtype=dtype)
    k = torch.randn(batch, L, D, generator=g, dtype=dtype) * k_scale
    v = torch.randn(batch, L, D, generator=g, dtype=dtype)
    return w, u, k, v


def definition(w, u, k, v):
    """wkv_t straight from its formula, O(L^2), no running max."""
    L = k.shape[1]
    t = torch.arange(L, dtype=k.dtype)
    lag = (t[:, None] - 1 - t[None, :])  # (t, i): t - 1 - i
    past = (lag >= 0).to(k.dtype)
    weights = torch.exp(lag.clamp(min=0)[..., None] * w + k[:, None, :, :]) * past[..., None]  # (batch, t, i, D)
    now = torch.exp(u + k)  # (batch, t, D)
    num = (weights * v[:, None]).sum(2) + now * v
    return num / (weights.sum(2) + now)


@pytest.mark.parametrize("L", [1, 2, 7, 33])
def test_loop_is_the_definition(L):
    w, u, k, v = inputs(2, L, 5)
    torch.testing.assert_close(reference.wkv(w, u, k, v), definition(w, u, k, v), rtol=1e-12, atol=1e-12)


def grads(fn, w, u, k, v, gy):
    leaves = [x.detach().clone().requires_grad_() for x in (w, u, k, v)]
    y = fn(*leaves)
    grads = torch.autograd.grad(y, leaves, gy, allow_unused=True)  # at L = 1 the loop never reads w
    return (y, *(torch.zeros_like(x) if g is None else g for x, g in zip(leaves, grads)))


@pytest.mark.parametrize("batch, L, D", [(1, 1, 1), (2, 7, 3), (3, 40, 17), (4, 300, 64)])  # the last is threaded
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_cpu_matches_loop_forward_and_backward(batch, L, D, dtype):
    w, u, k, v = inputs(batch, L, D, dtype)
    gy = torch.randn(batch, L, D, dtype=dtype)
    got = grads(lambda *x: wkv(*x, backend="cpu"), w, u, k, v, gy)
    want = grads(reference.wkv, *(x.double() for x in (w, u, k, v)), gy.double())
    tol = 1e-10 if dtype == torch.float64 else 2e-4  # float32: rounding of L-term sums, against float64
    for a, b in zip(got, want):
        torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol)


@pytest.mark.parametrize("w_scale, k_scale", [(3000.0, 1.0), (1.0, 60.0), (3000.0, 60.0)])
def test_very_negative_decays_and_large_keys(w_scale, k_scale):
    """w ~ -3000 (e^w underflows to 0) and |k| ~ 60 (e^k overflows float32 at 88 within a few
    positions' sums): the loop and the C loop stay finite and agree, float32 with float64."""
    w, u, k, v = inputs(2, 50, 8, w_scale=w_scale, k_scale=k_scale)
    gy = torch.randn(2, 50, 8, dtype=torch.float64)
    want = grads(reference.wkv, w, u, k, v, gy)
    for dtype, tol in ((torch.float64, 1e-9), (torch.float32, 1e-3)):  # float32: e^{k} ratios rounded
        got = grads(lambda *x: wkv(*x, backend="cpu"), *(x.to(dtype) for x in (w, u, k, v)), gy.to(dtype))
        for a, b in zip(got, want):
            assert torch.isfinite(a).all()
            torch.testing.assert_close(a.double(), b, rtol=tol, atol=tol * max(1.0, b.abs().max().item()))


def test_long_sequence_with_slow_decay_stays_finite_in_float32():
    """L = 4000, w ~ -1e-3 and k up to ~ 30: the sums of e^{k} over thousands of positions exceed
    float32 without the running max."""
    w, u, k, v = inputs(1, 4000, 4, w_scale=1e-3, k_scale=10.0)
    want = reference.wkv(w, u, k, v)
    got = wkv(*(x.float() for x in (w, u, k, v)), backend="cpu")
    assert torch.isfinite(got).all()
    torch.testing.assert_close(got.double(), want, rtol=1e-3, atol=1e-3)


def test_cpu_gradcheck():
    w, u, k, v = (x.requires_grad_() for x in inputs(2, 6, 3))
    assert torch.autograd.gradcheck(lambda *x: wkv(*x, backend="cpu"), (w, u, k, v))


def test_dispatch_takes_the_c_loop_on_cpu_and_refuses_unknown_names():
    w, u, k, v = inputs(1, 4, 2, torch.float32)
    assert DISPATCH.resolve("auto", k.device, (w, u, k, v)) == "cpu"
    assert DISPATCH.resolve("auto", k.device, (w.half(), u.half(), k.half(), v.half())) == "torch"
    with pytest.raises(ConfigError, match="model.layer.backend='cuda'.*choose one of: 'auto', 'cpu', 'torch'"):
        wkv(w, u, k, v, backend="cuda")
