"""AttentionBlock (`model=attn`): multi-head softmax attention with rotary positions, the attention
baseline of the DLR paper (the DLR repo's `kernel_type=attn`).

    q, k, v = split_heads(x W_qkv);   q, k <- RoPE(q), RoPE(k);   q <- tau q   (tau learned, d_head^-1/2)
    o = softmax(q k^T + mask) v        causal (keys j <= i) unless bidirectional
    chunk_size c: local attention; window w = positions [w c, (w+1) c) attends to windows w-1 and w
                  (and w+1 when bidirectional), padding never attended
    o <- o W_o;  attn_ff > 0: o <- o + FF_1(o), o <- o + FF_2(o), FF = LN -> Linear(d, attn_ff d) -> GELU -> Linear
    y = Linear(d -> d, postact)(x + dropout(activation(o)))
RoPE (positions.rotary) rotates each pair (2m, 2m+1) of a head by angle t * 10000^(-2m / d_head).
state_size(L): no step here (see mha.py for the KV-cache view); what the forward keeps per
sequence: keys and values (2 d floats each) of all L positions, or of at most the 2 chunk_size
positions a causal local window reads.
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.sequence.layers.activation import Activation, OutputLinear
from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.positions import rotary
from src.utils.errors import ConfigError


def local_attention(q, k, v, chunk, causal):
    """Windowed attention; q, k, v: (B, nh, L, dh) -> (B, nh, L, dh)."""
    L = q.shape[-2]
    pad = -L % chunk
    q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    nw = q.shape[-2] // chunk
    q, k, v = (rearrange(t, "b n (w c) d -> b n w c d", c=chunk) for t in (q, k, v))
    offsets = [-1, 0] if causal else [-1, 0, 1]  # neighbouring windows each window sees

    def neighbours(t):  # (b, n, w, c, d) -> (b, n, w, len(offsets) c, d)
        shifted = [torch.roll(t, -o, dims=2) for o in offsets]
        return torch.cat(shifted, dim=-2)

    keys, values = neighbours(k), neighbours(v)
    w = torch.arange(nw, device=q.device)[:, None, None]
    query_pos = w * chunk + torch.arange(chunk, device=q.device)[None, :, None]  # (w, c, 1)
    key_pos = torch.cat([(w + o) * chunk + torch.arange(chunk, device=q.device)[None, None, :] for o in offsets], -1)
    allowed = (key_pos >= 0) & (key_pos < L)  # (w, 1, K): real positions (not padding / rolled around)
    if causal:
        allowed = allowed & (key_pos <= query_pos)
    o = F.scaled_dot_product_attention(q, keys, values, attn_mask=allowed, scale=1.0)
    return rearrange(o, "b n w c d -> b n (w c) d")[..., :L, :]


class AttentionBlock(SequenceLayer):
    def __init__(self, d_model, n_heads=4, bidirectional=False, chunk_size: int | None = None, attn_ff=0,
                 activation="gelu",
                 postact: str | None = None, dropout=0.0):
        super().__init__()
        if d_model % n_heads or (d_model // n_heads) % 2:
            raise ConfigError(f"model.d_model={d_model} must split into n_heads={n_heads} heads of even size")
        self.n_heads, self.causal, self.chunk_size = n_heads, not bidirectional, chunk_size
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.out = nn.Linear(d_model, d_model)
        self.scale = nn.Parameter(torch.tensor((d_model // n_heads) ** -0.5))
        self.ff = nn.ModuleList(
            nn.Sequential(nn.LayerNorm(d_model), nn.Linear(d_model, attn_ff * d_model), nn.GELU(),
                          nn.Linear(attn_ff * d_model, d_model))
            for _ in range(2 if attn_ff > 0 else 0)
        )
        self.activation = Activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = OutputLinear(d_model, d_model, postact)

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        q, k, v = rearrange(self.qkv(x), "b l (three n d) -> three b n l d", three=3, n=self.n_heads)
        if positions is None:
            positions = torch.arange(x.shape[1], device=x.device)
        q, k = rotary(q, positions) * self.scale, rotary(k, positions)
        if self.chunk_size:
            o = local_attention(q, k, v, self.chunk_size, self.causal)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=self.causal, scale=1.0)
        o = self.out(rearrange(o, "b n l d -> b l (n d)"))
        for ff in self.ff:
            o = o + ff(o)
        return self.output_linear(x + self.dropout(self.activation(o))), None

    def state_size(self, L):
        kept = min(L, 2 * self.chunk_size) if (self.chunk_size and self.causal) else L
        return kept * 2 * self.out.in_features
