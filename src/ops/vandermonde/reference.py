"""Vandermonde kernel, the obvious way (the oracle for every other path).

    K[..., l] = sum_n v[..., n] exp(x[..., n] l),   l = 0 .. L-1

Materialises exp(x l) for every (..., n, l); use float64 / complex128 inputs for exact checks.
"""

import torch


def vandermonde(v, x, L):
    l = torch.arange(L, dtype=x.real.dtype, device=x.device)
    return (v.unsqueeze(-1) * torch.exp(x.unsqueeze(-1) * l)).sum(dim=-2)
