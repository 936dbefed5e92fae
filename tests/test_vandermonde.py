"""src/ops/vandermonde: every backend against reference.py, forward and backward."""

import math

import pytest
import torch

from src.ops.vandermonde import BACKENDS, reference, vandermonde
from src.utils.errors import ConfigError

SHAPES = [  # (v shape, x shape, L): shared x, per-feature x, awkward sizes
    ((2, 3, 5), (5,), 7),
    ((1, 4, 3), (4, 3), 1),
    ((3, 1, 6), (1, 6), 33),
    ((1, 1, 1), (1,), 4),
]


def inputs(v_shape, x_shape, dtype=torch.complex128, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(v_shape, dtype=dtype, generator=g)
    x = torch.complex(-0.1 * torch.rand(x_shape, generator=g).double(), 3 * torch.randn(x_shape, generator=g).double())
    return v, x.to(dtype)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
@pytest.mark.parametrize("v_shape, x_shape, L", SHAPES)
def test_forward_and_backward_match_reference(backend, v_shape, x_shape, L):
    v, x = inputs(v_shape, x_shape)
    v.requires_grad_(), x.requires_grad_()
    out = vandermonde(v, x, L, backend)
    ref = reference.vandermonde(v, x, L)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (v, x), grad)
    want = torch.autograd.grad(ref, (v, x), grad)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", sorted(BACKENDS))
def test_float32_phase_stays_accurate_at_long_lengths(backend):
    """At l ~ 1.3e5 a float32 phase Im(x) l has lost ~1e-2 rad; the phase is reduced in float64."""
    L, N = 2**17, 16
    v, x = inputs((2, N), (N,))
    x = torch.complex(-1e-6 * torch.rand(N, dtype=torch.float64), x.imag)
    out = vandermonde(v.to(torch.complex64), x.to(torch.complex64), L, backend)
    positions = torch.tensor([0, 1, 1000, L // 2 + 3, L - 2, L - 1])
    # reference in float64 from the float32-rounded inputs, at the sampled positions only
    v32, x32 = v.to(torch.complex64).to(torch.complex128), x.to(torch.complex64).to(torch.complex128)
    ref = (v32[..., None] * torch.exp(x32[:, None] * positions.double())).sum(-2)
    # float32 accumulation over N=16 terms of magnitude ~1: a few 1e-6 relative
    torch.testing.assert_close(out[..., positions].to(torch.complex128), ref, rtol=2e-5, atol=2e-5 * math.sqrt(N))


def test_unknown_backend_lists_the_valid_ones():
    v, x = inputs((1, 2), (2,))
    with pytest.raises(ConfigError, match=r"model.layer.backend='cuda' is not valid; choose one of: 'auto', 'torch'"):
        vandermonde(v, x, 3, backend="cuda")
