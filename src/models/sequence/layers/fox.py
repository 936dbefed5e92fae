"""The Forgetting Transformer's attention, FoX (`model=fox`; Lin et al. 2025, fla's
ForgettingAttention): causal softmax attention whose logits carry a cumulative forget gate, with
no position encoding.

    q, k, v = x W_q, x W_k, x W_v                   (n_heads heads of d = d_model / n_heads; qkv_bias)
    qk_norm: q, k <- RMSNorm(q), RMSNorm(k)          (per head, a learned weight per channel)
    f_t = log sigmoid(W_f x_t + b_f)                 (one forget gate per head, f_t <= 0)
    o_i = sum_{j <= i} softmax_j(q_i . k_j / sqrt(d) + f_{j+1} + ... + f_i) v_j      (src/ops/forgetting_attn)
    use_output_gate: o <- sigmoid(W_g x) * o;        y = o W_o
No bias on W_g, W_o. fla's defaults (no qk norm, no output gate, no GQA, no window; the paper's
"Pro" block adds qk_norm and the output gate); its 32 heads of 64 at width 2048 are n_heads =
d_model / 64 here, 4 at the default width 256. W_f's init is the backbone's (model.init=gpt2: fla's
N(0, 0.02) weights and zero bias, so f ~ log(1/2) per step at the start).

Recurrent view: a KV cache holding, per past key j, its value and its accumulated gate
f_{j+1} + ... + f_t, to which each step adds f_t (the new key starts at 0): state_size(L) =
L (2 d_model + n_heads) floats.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.matrix_memory import heads, split
from src.ops.forgetting_attn import DISPATCH, forgetting_attn


class HeadRMSNorm(nn.Module):
    """RMSNorm over each head's channels, (..., H, d), times a learned weight of `shape`: (H, d),
    one per channel (FoX, fla's GroupNorm), or (d,), shared by the heads (PaTH)."""

    def __init__(self, shape, eps):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(shape))
        self.eps = eps

    def forward(self, x):
        return F.rms_norm(x, x.shape[-1:], eps=self.eps) * self.weight


class ForgettingAttention(SequenceLayer):
    """Causal softmax attention with a cumulative forget gate per head.

    math: o_i = sum_{j <= i} softmax_j(q_i . k_j / sqrt(d) + f_{j+1} + ... + f_i) v_j, f_t = log sigmoid(W_f x_t + b_f)
    original: Lin et al. 2025, "Forgetting Transformer"; fla's ForgettingAttention"""

    recurrent = True

    def __init__(self, d_model, n_heads=4, qkv_bias=False, qk_norm=False, use_output_gate=False, norm_eps=1e-5,
                 backend="auto"):
        super().__init__()
        self.backend = DISPATCH.check(backend)
        self.n_heads, self.head_dim = n_heads, split(d_model, n_heads, "model.d_model")
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model, bias=qkv_bias) for _ in range(3))
        self.f_proj = nn.Linear(d_model, n_heads)
        self.q_norm, self.k_norm = ((HeadRMSNorm((n_heads, self.head_dim), norm_eps) for _ in range(2)) if qk_norm
                                    else (nn.Identity(), nn.Identity()))
        self.g_proj = nn.Linear(d_model, d_model, bias=False) if use_output_gate else None
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def _project(self, x):  # x (B, L, D) -> q, k, v (B, L, H, d), f (B, L, H)
        q, k = self.q_norm(heads(self.q_proj(x), self.head_dim)), self.k_norm(heads(self.k_proj(x), self.head_dim))
        return q, k, heads(self.v_proj(x), self.head_dim), F.logsigmoid(self.f_proj(x))

    def _out(self, x, o):  # o (B, L, H, d) -> (B, L, D)
        o = o.flatten(-2)
        return self.o_proj(o if self.g_proj is None else torch.sigmoid(self.g_proj(x)) * o)

    def forward(self, x, state=None, positions=None):  # x (B, L, D)
        self.refuse_state(state)
        return self._out(x, forgetting_attn(*self._project(x), backend=self.backend)), None

    def default_state(self, batch_size, device=None):
        """(keys (B, 0, H, d), values (B, 0, H, d), accumulated gates (B, 0, H))."""
        w = self.o_proj.weight
        kv = w.new_zeros(batch_size, 0, self.n_heads, self.head_dim, device=device)
        return kv, kv, w.new_zeros(batch_size, 0, self.n_heads, device=device)

    def step(self, x_t, state):  # x_t (B, D)
        keys, values, gates = state
        q, k, v, f = self._project(x_t[:, None])  # (B, 1, H, d), f (B, 1, H)
        keys, values = torch.cat((keys, k), 1), torch.cat((values, v), 1)
        gates = torch.cat((gates + f, torch.zeros_like(f)), 1)  # (B, t, H): f_{j+1} + ... + f_t
        logits = (q * keys).sum(-1) * self.head_dim**-0.5 + gates  # (B, t, H)
        o = (logits.softmax(1)[..., None] * values).sum(1, keepdim=True)  # (B, 1, H, d)
        return self._out(x_t[:, None], o)[:, 0], (keys, values, gates)

    def state_size(self, L):
        return L * (2 * self.n_heads * self.head_dim + self.n_heads)
