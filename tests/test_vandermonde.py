"""src/ops/vandermonde: every backend against reference.py, forward and backward."""

import math

import pytest
import torch
from op_backends import backend_params, device_for

from src.ops.vandermonde import DISPATCH, blocked, reference, vandermonde
from src.utils.errors import ConfigError

SHAPES = [  # (v shape, x shape, L): shared x, per-feature x, x broadcast in the middle, awkward sizes
    ((2, 3, 5), (5,), 7),
    ((1, 4, 3), (4, 3), 1),
    ((3, 1, 6), (1, 6), 33),
    ((1, 1, 1), (1,), 4),
    ((2, 3, 5), (2, 1, 5), 100),
    ((7,), (7,), 301),
]
ALL = backend_params(DISPATCH.loaders)


def inputs(v_shape, x_shape, dtype=torch.complex128, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(v_shape, dtype=torch.complex128, generator=g)
    x = torch.complex(-0.1 * torch.rand(x_shape, generator=g).double(), 3 * torch.randn(x_shape, generator=g).double())
    return v.to(device, dtype), x.to(device, dtype)


def grads(out, inputs, grad):
    return torch.autograd.grad(out, inputs, grad)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("v_shape, x_shape, L", SHAPES)
def test_float64_forward_and_backward_match_reference(backend, v_shape, x_shape, L):
    v, x = inputs(v_shape, x_shape, device=device_for(backend))
    v.requires_grad_(), x.requires_grad_()
    out, ref = vandermonde(v, x, L, backend), reference.vandermonde(v, x, L)
    # float64 throughout; the paths differ only in summation order and in splitting exp(x l)
    # into exp(x a c) exp(x b): a few ulps of terms of size ~1, times sqrt(N L)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(grads(out, (v, x), grad), grads(ref, (v, x), grad)):
        # grad_x sums l * terms: values up to ~L^2 / 2, so a relative tolerance
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * (1 + L * L))


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("v_shape, x_shape, L", SHAPES)
def test_float32_matches_float64_reference(backend, v_shape, x_shape, L):
    v, x = inputs(v_shape, x_shape, dtype=torch.complex64, device=device_for(backend))
    v.requires_grad_(), x.requires_grad_()
    out = vandermonde(v, x, L, backend)
    v64, x64 = (t.detach().to(torch.complex128).requires_grad_() for t in (v, x))
    ref = reference.vandermonde(v64, x64, L)
    # float32 terms of size ~1 (|exp(x l)| <= 1), N <= 7 of them: ~1e-6 absolute; the phase is
    # reduced in float64 so it does not grow with l
    torch.testing.assert_close(out.to(torch.complex128), ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    got = grads(out, (v, x), grad.to(torch.complex64))
    for a, b in zip(got, grads(ref, (v64, x64), grad)):
        # sums of L float32 terms (times l for grad_x): ~1e-6 * sqrt(L) relative to their scale
        scale = b.abs().max().item() + 1
        torch.testing.assert_close(a.to(torch.complex128), b, rtol=1e-5, atol=2e-6 * math.sqrt(L) * scale)


@pytest.mark.parametrize("budget", [1, 40, 1 << 21])
def test_blocked_path_at_every_block_size(budget):
    """budget 1: one a = one row of c positions per block; 40: a few rows; 2^21: one block."""
    v, x = inputs((2, 3, 5), (3, 5))
    v.requires_grad_(), x.requires_grad_()
    L = 1000  # c = 32, 32 rows, the last one partial
    out, ref = blocked.vandermonde(v, x, L, budget=budget), reference.vandermonde(v, x, L)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # float64: see above
    grad = torch.randn_like(ref)
    for a, b in zip(grads(out, (v, x), grad), grads(ref, (v, x), grad)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10 * L * L)


def test_gradient_of_one_input_only():
    """Layers with frozen Lambda (or W) ask for one gradient; the other stays None."""
    v, x = inputs((2, 4), (4,))
    v.requires_grad_()
    (gv,) = torch.autograd.grad(vandermonde(v, x, 9, "torch").abs().sum(), v)
    (want,) = torch.autograd.grad(reference.vandermonde(v, x, 9).abs().sum(), v)
    torch.testing.assert_close(gv, want, rtol=1e-10, atol=1e-10)  # float64


@pytest.mark.parametrize("backend", ALL)
def test_float32_phase_stays_accurate_at_long_lengths(backend):
    """At l ~ 1.3e5 a float32 phase Im(x) l has lost ~1e-2 rad; the phase is reduced in float64."""
    L, N = 2**17, 16
    v, x = inputs((2, N), (N,))
    x = torch.complex(-1e-6 * torch.rand(N, dtype=torch.float64), x.imag)
    device = device_for(backend)
    out = vandermonde(v.to(device, torch.complex64), x.to(device, torch.complex64), L, backend).cpu()
    positions = torch.tensor([0, 1, 1000, L // 2 + 3, L - 2, L - 1])
    # reference in float64 from the float32-rounded inputs, at the sampled positions only
    v32, x32 = v.to(torch.complex64).to(torch.complex128), x.to(torch.complex64).to(torch.complex128)
    ref = (v32[..., None] * torch.exp(x32[:, None] * positions.double())).sum(-2)
    # float32 accumulation over N=16 terms of magnitude ~1: a few 1e-6 relative
    torch.testing.assert_close(out[..., positions].to(torch.complex128), ref, rtol=2e-5, atol=2e-5 * math.sqrt(N))


def test_unknown_backend_lists_the_valid_ones():
    v, x = inputs((1, 2), (2,))
    with pytest.raises(ConfigError, match=r"model.layer.backend='triton' is not valid; choose one of: 'auto', 'torch'"):
        vandermonde(v, x, 3, backend="triton")


def test_auto_is_the_blocked_path_on_cpu():
    assert DISPATCH.resolve("auto", torch.device("cpu")) == "torch"
