"""PaTH attention (`model=path_attn`; Yang et al. 2025, fla's PaTHAttention): causal softmax
attention whose position signal is a product of data-dependent Householder transformations, one
per token, in place of RoPE's fixed rotations.

    q, k, v = x W_q, x W_k, x W_v                   (n_heads heads of d = d_model / n_heads, no bias)
    w_t = l2norm(SiLU(ShortConv(x W_w))_t)           (per head; W_w = W_2 W_1 of rank w_rank with use_low_rank_w)
    beta_t = 2 sigmoid(W_b x_t + b_b)                (per head, in (0, 2): H_t may be a reflection)
    H_t = I - beta_t w_t w_t^T,   logit_ij = q_i^T H_i H_{i-1} ... H_{j+1} k_j
    o_i = sum_{j <= i} softmax_j((logit_ij + G_i - G_j) / sqrt(d)) v_j          (src/ops/path_attn)
    y = o W_o                                        (no bias)
use_forget_gate (PaTH-FoX): G_t = sum_{s <= t} log sigmoid(W_f x_s + b_f), per head, scaled with the
logits as in fla; use_qk_norm: RMSNorm on each head of q and k (a weight shared by the heads).
fla's defaults (no forget gate, no qk norm, the rank-32 w projection, a short conv of width 3
with SiLU and no bias, no GQA); its 32 heads of 64 at width 2048 are n_heads = d_model / 64 here.

Recurrent view, as fla's decoding: a KV cache whose keys are kept transformed, k_j <- H_t k_j for
every past key at each step t before k_t joins, so q_t . (cached k_j) is the logit; with the
gate, each key's accumulated gate as in FoX; and the w conv's window. state_size(L) =
L (2 d_model [+ n_heads]) + d_model (conv_size - 1) floats.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.fox import HeadRMSNorm
from src.models.sequence.layers.matrix_memory import heads, split
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.path_attn import DISPATCH, path_attn
from src.utils.errors import ConfigError


def l2norm(x, eps=1e-6):  # fla's l2_norm: x / sqrt(|x|^2 + eps) over the last dim
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


class PaTHAttention(SequenceLayer):
    """Causal softmax attention with accumulated Householder transformations as positions.

    math: o_i = sum_{j <= i} softmax_j(q_i^T H_i ... H_{j+1} k_j / sqrt(d)) v_j, H_t = I - beta_t w_t w_t^T, beta_t in (0, 2)
    original: Yang et al. 2025, "PaTH Attention"; fla's PaTHAttention"""

    recurrent = True

    def __init__(self, d_model, n_heads=4, use_forget_gate=False, use_qk_norm=False, use_low_rank_w=True, w_rank=32,
                 use_w_shortconv=True, conv_size=3, conv_bias=False, norm_eps=1e-5, backend="auto"):
        super().__init__()
        if w_rank < 1:
            raise ConfigError(f"model.layer.w_rank={w_rank} is not a positive integer")
        self.backend = DISPATCH.check(backend)
        self.n_heads, self.head_dim = n_heads, split(d_model, n_heads, "model.d_model")
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model, bias=False) for _ in range(3))
        self.w_proj = (nn.Sequential(nn.Linear(d_model, w_rank, bias=False), nn.Linear(w_rank, d_model, bias=False))
                       if use_low_rank_w else nn.Linear(d_model, d_model, bias=False))
        self.w_conv = ShortConv(d_model, conv_size, conv_bias, "silu", backend) if use_w_shortconv else None
        self.bt_proj = nn.Linear(d_model, n_heads)
        self.g_proj = nn.Linear(d_model, n_heads) if use_forget_gate else None
        self.q_norm, self.k_norm = ((HeadRMSNorm(self.head_dim, norm_eps) for _ in range(2)) if use_qk_norm
                                    else (nn.Identity(), nn.Identity()))
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def _project(self, x):  # x (B, L, D) -> q, k, v (B, L, H, d); beta, g (B, L, H) (g None without the gate)
        q, k = self.q_norm(heads(self.q_proj(x), self.head_dim)), self.k_norm(heads(self.k_proj(x), self.head_dim))
        beta = 2 * torch.sigmoid(self.bt_proj(x))
        g = None if self.g_proj is None else F.logsigmoid(self.g_proj(x))
        return q, k, heads(self.v_proj(x), self.head_dim), beta, g

    def _w(self, w):  # (B, L, D) after the conv -> unit w per head (B, L, H, d)
        return l2norm(heads(w, self.head_dim))

    def forward(self, x, state=None, positions=None):  # x (B, L, D)
        self.refuse_state(state)
        q, k, v, beta, g = self._project(x)
        w = self.w_proj(x)
        if self.w_conv is not None:
            w = self.w_conv(w.transpose(1, 2))[0].transpose(1, 2)
        o = path_attn(q, k, v, self._w(w), beta, g, backend=self.backend)
        return self.o_proj(o.flatten(-2)), None

    def default_state(self, batch_size, device=None):
        """(w conv window (B, D, conv_size - 1) or (), keys (B, 0, H, d), values (B, 0, H, d),
        accumulated gates (B, 0, H) or None)."""
        w = self.o_proj.weight
        kv = w.new_zeros(batch_size, 0, self.n_heads, self.head_dim, device=device)
        conv = () if self.w_conv is None else self.w_conv.default_state(batch_size, device)
        gates = None if self.g_proj is None else w.new_zeros(batch_size, 0, self.n_heads, device=device)
        return conv, kv, kv, gates

    def step(self, x_t, state):  # x_t (B, D)
        conv, keys, values, gates = state
        q, k, v, beta, g = self._project(x_t[:, None])  # (B, 1, H, d), beta and g (B, 1, H)
        w = self.w_proj(x_t)
        if self.w_conv is not None:
            w, conv = self.w_conv.step(w, conv)
        w = self._w(w[:, None])  # (B, 1, H, d)
        keys = keys - beta[..., None] * (keys * w).sum(-1, keepdim=True) * w  # k_j <- H_t k_j, j < t
        keys, values = torch.cat((keys, k), 1), torch.cat((values, v), 1)
        logits = (q * keys).sum(-1)  # (B, t, H)
        if gates is not None:
            gates = torch.cat((gates + g, torch.zeros_like(g)), 1)
            logits = logits + gates
        o = ((logits * self.head_dim**-0.5).softmax(1)[..., None] * values).sum(1)  # (B, H, d)
        return self.o_proj(o.flatten(-2)), (conv, keys, values, gates)

    def state_size(self, L):
        D = self.n_heads * self.head_dim
        conv = 0 if self.w_conv is None else D * (self.w_conv.width - 1)
        return L * (2 * D + (0 if self.g_proj is None else self.n_heads)) + conv
