"""Implicit long filters (zoology's ImplicitLongConvolution and Hyena's filter): a small MLP on
positional features of each lag gives the filter h (H, L) of a long convolution, so the number
of parameters does not grow with the length.

Positional features of lag s = 0 .. l_max-1, d_emb = 1 + 2 n_bands (odd, >= 3):
    z_s = (t_s, cos(f_j w_s), -sin(f_j w_s))_j,   t_s = s / (l_max - 1),  w_s = 2 pi s / l_max,
    f_j = linspace(1e-4, n_bands - 1, n_bands)
(the real and imaginary parts of exp(-i f w)). The features are made for l_max and read for
the first L lags, so a layer built for l_max runs any L <= l_max.
"""

import math

import torch
from torch import nn

from src.utils.errors import ConfigError


def positional_features(d_emb, l_max):
    """z (l_max, d_emb) and t (l_max, 1) as in the module docstring."""
    if d_emb < 3 or d_emb % 2 == 0:
        raise ConfigError(f"model.layer.d_emb={d_emb} must be odd and >= 3 (time, then cosine and sine pairs)")
    bands = (d_emb - 1) // 2
    t = torch.linspace(0, 1, l_max)[:, None]  # (l_max, 1)
    w = 2 * math.pi * torch.arange(l_max, dtype=torch.float32)[:, None] / l_max  # (l_max, 1)
    f = torch.linspace(1e-4, bands - 1, bands)[None]  # (1, bands)
    return torch.cat((t, torch.cos(f * w), -torch.sin(f * w)), dim=-1), t


def check_length(L, l_max):
    if L > l_max:
        raise ConfigError(f"input length {L} exceeds model.layer.l_max={l_max} (the implicit filter's positions); "
                          f"set model.layer.l_max>={L} or null (the dataset's longest input)")


class ImplicitFilter(nn.Module):
    """zoology's ImplicitLongConvolution filter: h = Linear(ReLU(Linear(z))), z fixed.
    -> (H, L)."""

    def __init__(self, d_model, l_max, d_emb=3, d_hidden=16):
        super().__init__()
        self.l_max = l_max
        self.register_buffer("z", positional_features(d_emb, l_max)[0], persistent=False)
        self.mlp = nn.Sequential(nn.Linear(d_emb, d_hidden), nn.ReLU(), nn.Linear(d_hidden, d_model))

    def forward(self, L):
        check_length(L, self.l_max)
        return self.mlp(self.z[:L]).T  # (H, L)
