"""Cauchy op: every backend against a per-element loop over (l, n)."""

import pytest
import torch

from src.ops.cauchy import BACKENDS, cauchy


def loop(v, z, w):  # v, w: (H, N); z: (L,)
    H, N = v.shape
    return torch.tensor([[sum(v[h, n] / (z[l] - w[h, n]) for n in range(N)) for l in range(len(z))]
                         for h in range(H)], dtype=v.dtype)


@pytest.mark.parametrize("backend", ["auto", *BACKENDS])
@pytest.mark.parametrize("H, N, L", [(1, 1, 1), (3, 5, 7)])
def test_cauchy_matches_a_loop(backend, H, N, L):
    torch.manual_seed(0)
    v, w = torch.randn(H, N, dtype=torch.cdouble), torch.randn(H, N, dtype=torch.cdouble)
    z = torch.randn(L, dtype=torch.cdouble)
    torch.testing.assert_close(cauchy(v, z, w, backend=backend), loop(v, z, w), rtol=1e-12, atol=1e-12)
