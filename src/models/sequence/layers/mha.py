"""Softmax multi-head attention (`model=mha`), with a separate query/key width and optional window.

    q = x W_q, k = x W_k  (width d_qk, split into n_heads heads of d_qk / n_heads),
    v = x W_v             (width d_model, heads of d_model / n_heads)
    rope: q, k rotated by their positions (positions.rotary)
    o_i = sum_{j in S(i)} softmax_j(q_i . k_j / sqrt(d_qk / n_heads)) v_j,   y = o W_o
    (attn_dropout: dropout on the softmax weights in training; dropout: on y)
    S(i) = {j <= i} (causal) or all j, intersected with |i - j| < window when `window` is set
           (sliding-window attention).

Recurrent view (causal): a KV cache. Step t appends k_t, v_t (keeping the last `window` pairs
when windowed) and attends q_t to the cache: state_size(L) = min(L, window) (d_qk + d_model)
floats. Non-causal: the forward needs all keys and values, L (d_qk + d_model).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.positions import rotary
from src.utils.errors import ConfigError


def split_heads(t, n_heads):  # (B, L, n d) -> (B, n, L, d)
    return rearrange(t, "b l (n d) -> b n l d", n=n_heads)


def attention_mask(L, causal, window, device=None):
    """(L, L) boolean: query i may read key j."""
    i = torch.arange(L, device=device)[:, None]
    j = torch.arange(L, device=device)[None, :]
    allowed = j <= i if causal else torch.ones(L, L, dtype=torch.bool, device=device)
    if window:
        allowed = allowed & ((i - j).abs() < window)
    return allowed


class MultiHeadAttention(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, n_heads=4, d_qk: int | None = None, causal=True, window: int | None = None,
                 rope=False, dropout=0.0, attn_dropout=0.0):
        super().__init__()
        d_qk = d_qk or d_model
        if d_model % n_heads or d_qk % n_heads:
            raise ConfigError(f"model.d_model={d_model} and model.layer.d_qk={d_qk} must split into n_heads={n_heads} heads")
        if rope and (d_qk // n_heads) % 2:
            raise ConfigError(f"rope rotates pairs: model.layer.d_qk / n_heads = {d_qk // n_heads} must be even")
        if window is not None and window < 1:
            raise ConfigError(f"model.layer.window={window} must be >= 1 (or null: full attention)")
        self.n_heads, self.d_qk, self.causal, self.window, self.rope = n_heads, d_qk, causal, window, rope
        self.q, self.k = nn.Linear(d_model, d_qk), nn.Linear(d_model, d_qk)
        self.v, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.attn_dropout = attn_dropout  # on the attention weights, in training (zoology's MHA)

    def _qkv(self, x, positions):  # x: (B, L, D), positions: (B, L) -> heads (B, n, L, d)
        q, k, v = (split_heads(f(x), self.n_heads) for f in (self.q, self.k, self.v))
        if self.rope:
            q, k = rotary(q, positions), rotary(k, positions)
        return q, k, v

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        B, L, _ = x.shape
        if positions is None:
            positions = torch.arange(L, device=x.device)
        q, k, v = self._qkv(x, positions)
        # torch's CPU flash kernel needs one width for q, k and v (else it builds the L x L matrix:
        # zero columns pad the narrower) and skips the masked blocks only through is_causal
        dv, scale = v.shape[-1], q.shape[-1] ** -0.5  # 1/sqrt(d_qk / n_heads)
        width = max(q.shape[-1], dv)
        q, k, v = (F.pad(t, (0, width - t.shape[-1])) for t in (q, k, v))
        mask = attention_mask(L, self.causal, self.window, x.device) if self.window else None
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.causal and mask is None, scale=scale,
                                           dropout_p=self.attn_dropout if self.training else 0.0)[..., :dv]
        return self.dropout(self.out(rearrange(o, "b n l d -> b l (n d)"))), None

    def default_state(self, batch_size, device=None):
        """(keys (B, n, 0, d_qk/n), values (B, n, 0, d_model/n), position 0)."""
        self.check_step()
        w = self.q.weight
        keys = w.new_zeros(batch_size, self.n_heads, 0, self.d_qk // self.n_heads, device=device)
        values = w.new_zeros(batch_size, self.n_heads, 0, self.v.out_features // self.n_heads, device=device)
        return keys, values, 0

    def step(self, x_t, state):  # x_t: (B, D)
        keys, values, t = state
        q, k, v = self._qkv(x_t[:, None], torch.tensor([t], device=x_t.device))  # (B, n, 1, d)
        keys, values = torch.cat((keys, k), dim=2), torch.cat((values, v), dim=2)
        if self.window:
            keys, values = keys[:, :, -self.window :], values[:, :, -self.window :]
        o = F.scaled_dot_product_attention(q, keys, values)
        return self.dropout(self.out(rearrange(o, "b n l d -> b (l n d)"))), (keys, values, t + 1)

    def state_size(self, L):
        kept = min(L, self.window) if (self.window and self.causal) else L
        return kept * (self.d_qk + self.v.out_features)
