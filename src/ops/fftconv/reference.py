"""Long convolution, the obvious way (the oracle for blocked.py).

    causal:         y[b, c, h, t] = sum_{s=0}^{Lk-1} k[c, h, s] u[b, h, t - s]
    bidirectional:  k = (causal (C, H, Lk), anticausal (C, H, Lk)) stacked on dim 0, and
                    y[b, c, h, t] = sum_s causal[c, h, s] u[b, h, t - s] + sum_j anticausal[c, h, j] u[b, h, t + 1 + j]
with u = 0 outside 0 .. L-1. Materialises (B, H, L, Lk) windows: for tests only.
"""

import torch
import torch.nn.functional as F


def fftconv(u, k, bidirectional=False):  # u (B, H, L), k (C or 2C, H, Lk) -> (B, C, H, L)
    L, Lk = u.shape[-1], k.shape[-1]
    causal, anticausal = k.chunk(2, dim=0) if bidirectional else (k, None)
    past = F.pad(u, (Lk - 1, 0)).unfold(-1, Lk, 1).flip(-1)  # (B, H, L, Lk): u[t - s]
    y = torch.einsum("bhts,chs->bcht", past, causal)
    if bidirectional:
        future = F.pad(u, (0, Lk))[..., 1:].unfold(-1, Lk, 1)  # (B, H, L, Lk): u[t + 1 + j]
        y = y + torch.einsum("bhtj,chj->bcht", future, anticausal)
    return y
