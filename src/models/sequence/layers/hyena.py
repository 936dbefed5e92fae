"""Hyena of order 2 (Poli et al. 2023; zoology's defaults), `model=hyena`.

    (x1, x2, v) = split(shortconv_3(W_in u + b_in))        a causal depthwise conv of width
                                                           short_filter_order over 3D channels
    z = h * (x1 v) + bias (x1 v)                           a long causal conv per channel (fftconv)
    y = W_o (x2 z) + b_o                                   u, y: (B, L, D)

The filter h (D, L) is implicit: an MLP with sine activations sin(freq x) (one trainable freq
vector of width filter_order, shared by its layers) on the positional features z_s of
implicit_filter.py, modulated by a decay per channel:
    h[:, s] = (W_3 sin(W_2 sin(W_1 sin(W_0 z_s)))) * (exp(-t_s |delta_c|) + shift),
    delta_c = linspace(ln(target) / slow_decay_pct, ln(target) / fast_decay_pct, D)
(num_inner_mlps = 2 inner layers; the last linear has no bias). Optimizer groups as zoology's:
the filter MLP (and freq) lr = filter_lr, weight decay filter_wd; the features z trainable with
lr = lr_pos_emb; the decays fixed (modulation_lr = 0).

The long filter has no finite-state recurrence: the layer does not step. state_size(L) = D L.
"""

import math

import torch
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.implicit_filter import check_length, positional_features
from src.models.sequence.layers.optim import register
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.fftconv import fftconv
from src.utils.errors import ConfigError


class Sin(nn.Module):
    def __init__(self, width, w=1.0):
        super().__init__()
        self.freq = nn.Parameter(w * torch.ones(width))

    def forward(self, x):
        return torch.sin(self.freq * x)


class HyenaFilter(nn.Module):
    """The modulated implicit filter -> (D, L)."""

    def __init__(self, d_model, l_max, d_emb=3, filter_order=64, num_inner_mlps=2, w=1.0, filter_lr=1e-3,
                 filter_wd=0.0, lr_pos_emb=1e-5, fast_decay_pct=0.3, slow_decay_pct=1.5, target=1e-2, shift=0.0,
                 modulate=True):
        super().__init__()
        self.l_max, self.shift, self.modulate = l_max, shift, modulate
        z, t = positional_features(d_emb, l_max)
        register(self, "z", z, True, lr_pos_emb, 0.0)  # (l_max, d_emb)
        self.register_buffer("t", t, persistent=False)  # (l_max, 1)
        act = Sin(filter_order, w)
        layers = [nn.Linear(d_emb, filter_order), act]
        for _ in range(num_inner_mlps):
            layers += [nn.Linear(filter_order, filter_order), act]
        self.mlp = nn.Sequential(*layers, nn.Linear(filter_order, d_model, bias=False))
        for p in self.mlp.parameters():
            p._optim = {"lr": filter_lr, "weight_decay": filter_wd}
        deltas = torch.linspace(math.log(target) / slow_decay_pct, math.log(target) / fast_decay_pct, d_model)
        self.register_buffer("deltas", deltas)  # (D,), fixed (zoology's modulation_lr = 0)

    def forward(self, L):
        check_length(L, self.l_max)
        h = self.mlp(self.z[:L])  # (L, D)
        if self.modulate:
            h = h * (torch.exp(-self.t[:L] * self.deltas.abs()) + self.shift)
        return h.T  # (D, L)


class Hyena(SequenceLayer):
    def __init__(self, d_model, l_max: int | None = None, filter_order=64, short_filter_order=3, dropout=0.0, d_emb=3,
                 num_inner_mlps=2, w=1.0, filter_lr=1e-3, filter_wd=0.0, lr_pos_emb=1e-5, fast_decay_pct=0.3,
                 slow_decay_pct=1.5, target=1e-2, shift=0.0, modulate=True, backend="auto"):
        super().__init__()
        if l_max is None:
            raise ConfigError("model.layer.l_max is needed by the implicit filter (null: the dataset's longest input)")
        self.d_model = d_model
        self.in_proj = nn.Linear(d_model, 3 * d_model)
        self.short_filter = ShortConv(3 * d_model, short_filter_order, backend=backend)
        self.filter = HyenaFilter(d_model, l_max, d_emb, filter_order, num_inner_mlps, w, filter_lr, filter_wd,
                                  lr_pos_emb, fast_decay_pct, slow_decay_pct, target, shift, modulate)
        self.bias = nn.Parameter(torch.randn(d_model))  # the filter's D skip
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.out_proj = nn.Linear(d_model, d_model)

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        u, _ = self.short_filter(self.in_proj(x).transpose(1, 2))  # (B, 3D, L)
        x1, x2, v = u.split(self.d_model, dim=1)  # (B, D, L) each
        v = self.dropout(v * x1)
        z = fftconv(v, self.filter(v.shape[-1])[None])[:, 0] + self.bias[:, None] * v  # (B, D, L)
        return self.out_proj((x2 * z).transpose(1, 2)), None

    def why_no_step(self):
        return "the implicit long filter is not a finite-state recurrence"

    def state_size(self, L):
        return self.d_model * L
