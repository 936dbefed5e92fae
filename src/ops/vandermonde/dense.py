"""Vandermonde kernel as one broadcast matrix product.

    S[..., n, l] = exp(x[..., n] l)            (x's own shape: [N, L] when x is shared)
    K[..., l]    = (v[..., None, :] @ S)[..., 0, l]

With x shared across channels (DLR's Lambda of shape [N] against W of shape [C, H, N]) this is a
single [C*H, N] x [N, L] GEMM instead of an exp over [C, H, N, L]. The phase Im(x) l is reduced
modulo 2 pi in float64 before it is cast back, so float32 kernels stay accurate at l ~ 1e6
(float32 Im(x) l alone loses the phase there). Memory: O(numel(x) * L).
"""

import torch

from src.ops.vandermonde.blocked import exp_at


def vandermonde(v, x, L):
    dtype = torch.promote_types(v.dtype, x.dtype)
    S = exp_at(x.to(dtype), torch.arange(L, device=x.device))  # [..., N, L]
    return (v.to(dtype).unsqueeze(-2) @ S).squeeze(-2)  # [..., L]
