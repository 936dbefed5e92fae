"""Positional information for the backbone (`model.pos_emb`, `model.pos_aug`).

pos_emb:
    none         NoPE: nothing is added
    learned      x_i + E[p_i],  E (pos_max_len, d) learned (pos_init=sinusoidal starts it at the
                 sinusoids; pos_frozen=true keeps it fixed)
    sinusoidal   x_i + s(p_i),  s(p)[2m] = sin(p w_m), s(p)[2m+1] = cos(p w_m), w_m = 10000^(-2m/d)
    rope         rotary positions inside the attention layers (queries and keys of head pair
                 (2m, 2m+1) rotated by p w_m), for the layers that take `rope`
    scaler       the channel p_i / pos_max_len appended to d_model - 1 encoder features
pos_aug (training only; evaluation uses p_i = i, unless `eval_aug` is set: train.eval_passes > 1):
    none         p_i = i
    shift        p_i = i + o, o uniform in [0, pos_max_len - L], one offset per sequence
    randomized   p = a sorted uniform random subset of L of {0, .., pos_max_len - 1}, per sequence
All positions have shape (B, L).
"""

import math

import torch
from torch import nn

from src.utils.errors import ConfigError, check_choice

POS_EMB = ["none", "learned", "sinusoidal", "rope", "scaler"]
POS_AUG = ["none", "shift", "randomized"]


def input_width(d_model, pos_emb):
    """The encoder's width: pos_emb=scaler appends one channel to d_model - 1 features."""
    return d_model - 1 if pos_emb == "scaler" else d_model


def frequencies(d, device=None, dtype=torch.float32, theta=10000.0):
    """w_m = theta^(-2m/d), m = 0 .. d/2 - 1."""
    return theta ** (-torch.arange(0, d, 2, device=device, dtype=dtype) / d)


def sinusoids(positions, d):  # positions: (..., L) -> (..., L, d), d even
    angle = positions[..., None].float() * frequencies(d, positions.device)
    return torch.stack((angle.sin(), angle.cos()), dim=-1).flatten(-2)


def rotary(x, positions, theta=10000.0):  # x: (B, nh, L, d), positions: (B, L) or (L,) -> x rotated, d even
    # the angles in float32 or wider: bfloat16 holds integers exactly only up to 256, and an angle
    # p w_m only to p 2^-8 radians (2 at p 1000)
    wide = torch.promote_types(x.dtype, torch.float32)
    angle = positions[..., None].to(wide) * frequencies(x.shape[-1], x.device, wide, theta)  # (B, L, d/2)
    if angle.ndim == 3:
        angle = angle[:, None]  # over heads
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).flatten(-2)


def sample_positions(batch_size, L, aug, max_len, device=None):
    """(B, L) integer positions for a training batch under augmentation `aug`."""
    if aug == "none":
        return torch.arange(L, device=device).expand(batch_size, L)
    if max_len is None or max_len < L:
        raise ConfigError(f"model.pos_aug={aug} draws positions below model.pos_max_len={max_len}, which must be >= L={L}")
    if aug == "shift":
        offset = torch.randint(0, max_len - L + 1, (batch_size, 1), device=device)
        return torch.arange(L, device=device) + offset
    keys = torch.rand(batch_size, max_len, device=device)  # a uniform random subset: the L smallest keys
    return keys.topk(L, dim=-1, largest=False).indices.sort(dim=-1).values


class Positions(nn.Module):
    """Adds (or appends) the position signal of `pos_emb` to x (B, L, d_input) -> (B, L, d_model)."""

    def __init__(self, d_model, pos_emb="none", pos_aug="none", pos_max_len=None, pos_init="random",
                 pos_frozen=False):
        super().__init__()
        self.pos_emb = check_choice("model.pos_emb", pos_emb, POS_EMB)
        self.pos_aug = check_choice("model.pos_aug", pos_aug, POS_AUG)
        check_choice("model.pos_init", pos_init, ["random", "sinusoidal"])
        self.max_len, self.pos_init = pos_max_len, pos_init
        if pos_emb in ("learned", "scaler") and not pos_max_len:
            raise ConfigError(f"model.pos_emb={pos_emb} needs model.pos_max_len (the longest position), got {pos_max_len}")
        if pos_emb in ("learned", "sinusoidal") and d_model % 2:
            raise ConfigError(f"model.pos_emb={pos_emb} needs an even model.d_model, got {d_model}")
        if pos_emb == "learned":
            init = sinusoids(torch.arange(pos_max_len), d_model) if pos_init == "sinusoidal" else torch.randn(
                pos_max_len, d_model) / math.sqrt(d_model)
            if pos_frozen:
                self.register_buffer("embedding", init)
            else:
                self.embedding = nn.Parameter(init)
        self.d_input = input_width(d_model, pos_emb)
        self.eval_aug = False  # draw augmented positions in evaluation too (train.eval_passes > 1)

    def positions(self, x):
        B, L = x.shape[:2]
        aug = self.pos_aug if self.training or self.eval_aug else "none"
        positions = sample_positions(B, L, aug, self.max_len, x.device)
        if self.pos_emb in ("learned", "scaler") and positions.max() >= self.max_len:
            raise ConfigError(f"position {positions.max().item()} is beyond model.pos_max_len={self.max_len}")
        return positions

    def forward(self, x, positions):  # x: (B, L, d_input), positions: (B, L)
        if self.pos_emb == "learned":
            return x + self.embedding[positions]
        if self.pos_emb == "sinusoidal":
            return x + sinusoids(positions, x.shape[-1]).to(x.dtype)
        if self.pos_emb == "scaler":
            return torch.cat((x, (positions / self.max_len).to(x.dtype)[..., None]), dim=-1)
        return x
