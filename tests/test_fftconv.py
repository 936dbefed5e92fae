"""src/ops/fftconv: the FFT path against the direct sum, forward and backward."""

import math

import pytest
import torch

from src.ops.fftconv import fftconv, reference
from src.ops.fftconv.blocked import fast_length

CASES = [  # (B, C, H, L, Lk)
    (1, 1, 1, 1, 1),
    (2, 1, 3, 7, 7),
    (1, 2, 5, 33, 10),
    (3, 1, 2, 64, 64),
]


@pytest.mark.parametrize("bidirectional", [False, True])
@pytest.mark.parametrize("budget", [1, 1 << 23])  # one feature per block / all features at once
@pytest.mark.parametrize("B, C, H, L, Lk", CASES)
def test_float64_matches_direct_sum(bidirectional, budget, B, C, H, L, Lk):
    g = torch.Generator().manual_seed(0)
    u = torch.randn(B, H, L, dtype=torch.float64, generator=g, requires_grad=True)
    k = torch.randn((2 if bidirectional else 1) * C, H, Lk, dtype=torch.float64, generator=g, requires_grad=True)
    from src.ops.fftconv.blocked import fftconv as fft_path

    y, ref = fft_path(u, k, bidirectional, budget=budget), reference.fftconv(u, k, bidirectional)
    # float64 FFTs: rounding ~1e-16 * log(n) * sqrt(Lk) per output
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    grad = torch.randn(y.shape, dtype=torch.float64, generator=g)
    for a, b in zip(torch.autograd.grad(y, (u, k), grad), torch.autograd.grad(ref, (u, k), grad)):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bidirectional", [False, True])
def test_float32_matches_float64(bidirectional):
    g = torch.Generator().manual_seed(1)
    B, C, H, L, Lk = 2, 1, 3, 301, 150
    u = torch.randn(B, H, L, generator=g, requires_grad=True)
    k = torch.randn((2 if bidirectional else 1) * C, H, Lk, generator=g, requires_grad=True)
    y = fftconv(u, k, bidirectional)
    u64, k64 = (t.detach().double().requires_grad_() for t in (u, k))
    ref = reference.fftconv(u64, k64, bidirectional)
    # float32 FFT of size ~450: error ~1e-7 * log2(n) relative to the norm sqrt(Lk) of each output
    torch.testing.assert_close(y.double(), ref, rtol=1e-5, atol=1e-5 * math.sqrt(Lk))
    grad = torch.randn(y.shape, generator=g)
    for a, b in zip(torch.autograd.grad(y, (u, k), grad), torch.autograd.grad(ref, (u64, k64), grad.double())):
        torch.testing.assert_close(a.double(), b, rtol=1e-5, atol=1e-5 * math.sqrt(L))


def test_fft_length_is_a_fast_size_at_least_the_length():
    for m in [1, 2, 7, 97, 4097, 8193, 262144 * 2, 1000001]:
        n = fast_length(m)
        rest = n
        for p in (2, 3, 5):
            while rest % p == 0:
                rest //= p
        assert n >= m and rest == 1 and n < 2 * m
