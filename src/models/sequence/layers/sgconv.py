"""SGConv (`model=sgconv`): a convolution layer (conv.LongConv) around the SGConv kernel (Li et
al. 2022, "What makes convolutional models great on long sequence modeling?"): a multi-scale
kernel of n_scales pieces, each a length-N weight vector linearly interpolated to a length that
doubles per scale and damped by alpha^i:

    k = concat_i( interp(w_i, N * 2^max(0, i-1)) * alpha^i ),   i = 0 .. n_scales-1
    len(k) = N * 2^(n_scales-1),   K = k / ||k_init||  (truncated to L)

With `l_max`, n_scales = 1 + ceil(log2(max(l_max / N, 1))), the fewest scales whose kernel
covers l_max. (The original's ceil(1 + log2(max(l_max / N, 2) - 1)) agrees when l_max / N is a
power of two, but can fall up to N short otherwise: N=8, l_max=24 gave a length-16 kernel.)
The normaliser ||k_init|| is a buffer fixed at construction (saved in checkpoints, identical on
every DDP rank; the original computed it lazily at the first forward).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.conv import LongConv
from src.utils.errors import ConfigError


class SGConvKernel(nn.Module):
    recurrent = False  # its kernel is not a finite-state recurrence

    def __init__(self, H, d_state=8, channels=1, n_scales: int | None = None, l_max: int | None = None, alpha_min=0.3,
                 alpha_max=1.0, w_scale: float | None = None):
        super().__init__()
        N = d_state
        if l_max:
            n_scales = 1 + math.ceil(math.log2(max(l_max / N, 1)))
        if not n_scales:
            raise ConfigError("SGConv needs model.layer.l_max (the longest input) or model.layer.n_scales")
        w_scale = 1 / N if w_scale is None else w_scale
        self.ws = nn.ParameterList(nn.Parameter(torch.randn(channels, H, N) * w_scale) for _ in range(n_scales))
        self.alpha = nn.Parameter(alpha_min + (alpha_max - alpha_min) * torch.rand(channels, H))
        for p in self.parameters():
            p._optim = {"weight_decay": 0.0}
        with torch.no_grad():
            self.register_buffer("k_norm", self.multiscale().norm(dim=-1, keepdim=True))  # (C, H, 1)

    def multiscale(self):  # -> (C, H, N * 2^(n_scales-1))
        pieces = [
            F.interpolate(w, scale_factor=2 ** max(0, i - 1), mode="linear") * self.alpha.unsqueeze(-1) ** i
            for i, w in enumerate(self.ws)
        ]
        return torch.cat(pieces, dim=-1)

    def forward(self, L):  # -> (C, H, L)
        k = self.multiscale()
        if k.shape[-1] < L:
            raise ConfigError(
                f"the SGConv kernel has length {k.shape[-1]} < L={L}: set model.layer.l_max={L} (or more n_scales)"
            )
        return (k / self.k_norm)[..., :L]


class SGConv(LongConv):
    Kernel = SGConvKernel
