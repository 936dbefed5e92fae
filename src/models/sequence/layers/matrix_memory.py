"""Shared parts of the matrix-state layers (deltanet.py, gla.py, rwkv.py, based.py).

Each of those layers runs a chunked op (src/ops/gla, src/ops/delta_rule) that takes and returns
the recurrent state, so one step is the forward pass on one token from the state: `OneTokenStep`
gives `step` and `state_size` from `forward` and `default_state`. `GatedRMSNorm` is fla's output
norm: RMSNorm over each head's values, optionally times act(gate).
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.short_conv import ShortConv
from src.utils.errors import ConfigError

GATES = {"swish": F.silu, "silu": F.silu, "sigmoid": torch.sigmoid}


def heads(x, d):  # (B, L, H d) -> (B, L, H, d)
    return x.unflatten(-1, (-1, d))


def width(d_model, expand, key):
    """round(d_model * expand), which must be an integer (fla's rule)."""
    n = round(d_model * expand)
    if abs(n - d_model * expand) > 1e-6 or n < 1:
        raise ConfigError(f"model.layer.{key}={expand} times d_model={d_model} is not a positive integer")
    return n


def split(total, n_heads, what):
    if total % n_heads:
        raise ConfigError(f"{what}={total} does not split into model.layer.n_heads={n_heads} heads")
    return total // n_heads


def states(state):
    """The tensors of a (nested) state tuple."""
    if isinstance(state, torch.Tensor):
        return [state]
    return [t for s in state for t in states(s)]


class OneTokenStep(SequenceLayer):
    """A layer whose forward continues from a state: step(x_t, state) is forward on the one token
    x_t from `state`; state_size counts the floats of default_state."""

    recurrent = True

    def step(self, x_t, state):  # x_t (B, D)
        y, state = self(x_t[:, None], state)
        return y[:, 0], state

    def state_size(self, L=None):
        """Floats per sequence, the same at every L (a fixed-size recurrent state)."""
        return sum(t[0].numel() for t in states(self.default_state(1)) if t.is_floating_point())


class GatedRMSNorm(nn.Module):
    """o (..., d) -> RMSNorm(o) (* act(gate)), the weight learned if `affine`."""

    def __init__(self, d, eps=1e-5, affine=True, activation="swish"):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(d)) if affine else None
        self.eps, self.act = eps, GATES[activation]

    def forward(self, o, gate=None):
        o = F.rms_norm(o, o.shape[-1:], self.weight, self.eps)
        return o if gate is None else o * self.act(gate)


class Convs(nn.Module):
    """Optional short causal convolutions (ShortConv) on several projections, each with its state."""

    def __init__(self, widths, use, size, bias, activations, backend):
        super().__init__()
        self.convs = nn.ModuleList(ShortConv(w, size, bias, a, backend) for w, a in zip(widths, activations)) \
            if use else None

    def forward(self, xs, state):  # xs: tensors (B, L, C_i); state: tuple of (B, C_i, size-1) or None
        if self.convs is None:
            return xs, ()
        state = state or [None] * len(xs)
        out = [conv(x.transpose(1, 2), s) for conv, x, s in zip(self.convs, xs, state)]
        return [y.transpose(1, 2) for y, _ in out], tuple(s for _, s in out)

    def default_state(self, batch_size, device=None):
        return () if self.convs is None else tuple(c.default_state(batch_size, device) for c in self.convs)
