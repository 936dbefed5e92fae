"""Cauchy op: every backend against a per-element loop and reference.py, forward and backward."""

import math

import pytest
import torch
from op_backends import backend_params, device_for

from src.ops.cauchy import DISPATCH, blocked, cauchy, reference

ALL = backend_params(DISPATCH.loaders)
SHAPES = [  # (v shape, w shape, L): w shared, per row, broadcast; awkward sizes
    ((1, 1), (1, 1), 1),
    ((3, 5), (3, 5), 7),
    ((2, 3, 6), (3, 6), 33),
    ((4, 1, 3), (1, 2, 3), 10),
]


def loop(v, z, w):  # v, w: (H, N); z: (L,)
    H, N = v.shape
    return torch.tensor([[sum(v[h, n] / (z[l] - w[h, n]) for n in range(N)) for l in range(len(z))]
                         for h in range(H)], dtype=v.dtype)


def inputs(v_shape, w_shape, L, dtype=torch.complex128, device="cpu"):
    g = torch.Generator().manual_seed(0)
    v = torch.randn(v_shape, dtype=torch.complex128, generator=g)
    w = torch.complex(-0.5 - torch.rand(w_shape, generator=g).double(), torch.randn(w_shape, generator=g).double())
    z = torch.complex(torch.zeros(L, dtype=torch.float64), torch.linspace(-3, 3, L, dtype=torch.float64))  # i omega
    return (t.to(device, dtype) for t in (v, z, w))


@pytest.mark.parametrize("backend", ["auto", "torch", "dense"])
@pytest.mark.parametrize("H, N, L", [(1, 1, 1), (3, 5, 7)])
def test_cauchy_matches_a_loop(backend, H, N, L):
    torch.manual_seed(0)
    v, w = torch.randn(H, N, dtype=torch.cdouble), torch.randn(H, N, dtype=torch.cdouble)
    z = torch.randn(L, dtype=torch.cdouble)
    torch.testing.assert_close(cauchy(v, z, w, backend=backend), loop(v, z, w), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("v_shape, w_shape, L", SHAPES)
def test_forward_and_backward_match_reference(backend, v_shape, w_shape, L):
    v, z, w = inputs(v_shape, w_shape, L, device=device_for(backend))
    for t in (v, z, w):
        t.requires_grad_()
    out, ref = cauchy(v, z, w, backend), reference.cauchy(v, z, w)
    # float64; |z - w| >= 0.5 so terms are <= 2 |v|: rounding of a few ulps per term
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (v, z, w), grad), torch.autograd.grad(ref, (v, z, w), grad)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("backend", ALL)
@pytest.mark.parametrize("v_shape, w_shape, L", SHAPES)
def test_float32_matches_float64_reference(backend, v_shape, w_shape, L):
    v, z, w = inputs(v_shape, w_shape, L, dtype=torch.complex64, device=device_for(backend))
    for t in (v, z, w):
        t.requires_grad_()
    out = cauchy(v, z, w, backend)
    v64, z64, w64 = (t.detach().to(torch.complex128).requires_grad_() for t in (v, z, w))
    ref = reference.cauchy(v64, z64, w64)
    # float32 terms of size <= 2 |v| ~ 4, N <= 6 of them: ~1e-6 relative each
    torch.testing.assert_close(out.to(torch.complex128), ref, rtol=1e-5, atol=1e-5)
    grad = torch.randn_like(ref)
    got = torch.autograd.grad(out, (v, z, w), grad.to(torch.complex64))
    for a, b in zip(got, torch.autograd.grad(ref, (v64, z64, w64), grad)):
        # sums over L (v, w) or over rows and N (z) of float32 terms
        torch.testing.assert_close(a.to(torch.complex128), b, rtol=1e-5, atol=1e-5 * math.sqrt(L))


@pytest.mark.parametrize("budget", [1, 11])
def test_blocked_path_at_every_block_size(budget):
    """budget 1 -> one position per block; 11 with B N = 6 -> one position; 13 positions either way."""
    v, z, w = inputs((2, 3), (2, 3), 13)
    for t in (v, z, w):
        t.requires_grad_()
    out, ref = blocked.cauchy(v, z, w, budget=budget), reference.cauchy(v, z, w)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)  # float64, see above
    grad = torch.randn_like(ref)
    for a, b in zip(torch.autograd.grad(out, (v, z, w), grad), torch.autograd.grad(ref, (v, z, w), grad)):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)
