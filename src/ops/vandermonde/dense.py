"""Vandermonde kernel as one broadcast matrix product.

    S[..., n, l] = exp(x[..., n] l)            (x's own shape: [N, L] when x is shared)
    K[..., l]    = (v[..., None, :] @ S)[..., 0, l]

With x shared across channels (DLR's Lambda of shape [N] against W of shape [C, H, N]) this is a
single [C*H, N] x [N, L] GEMM instead of an exp over [C, H, N, L]. The phase Im(x) l is reduced
modulo 2 pi in float64 before it is cast back, so float32 kernels stay accurate at l ~ 1e6
(float32 Im(x) l alone loses the phase there). Memory: O(numel(x) * L).
"""

import math

import torch


def vandermonde(v, x, L):
    l = torch.arange(L, device=x.device)
    real_dtype = x.real.dtype
    magnitude = torch.exp(x.real.unsqueeze(-1) * l.to(real_dtype))  # [..., N, L]
    phase = torch.remainder(x.imag.double().unsqueeze(-1) * l, 2 * math.pi).to(real_dtype)  # [..., N, L]
    S = torch.complex(magnitude * torch.cos(phase), magnitude * torch.sin(phase))
    return (v.unsqueeze(-2) @ S).squeeze(-2)  # [..., L]
