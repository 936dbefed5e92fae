"""Based (`model=based`): linear attention with the Taylor feature map (Arora et al. 2024), on the
gla op with no decay, normalised; fla's layer defaults.

Per head, with q, k = W x of width feature_dim d' and v = W_v x of width d_model / n_heads,
    phi(x) = [1, x / d'^(1/4), vec(x x^T) / (sqrt(2) sqrt(d'))]      (1 + d' + d'^2 features)
so phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k / sqrt(d'), the 2nd-order Taylor expansion of
exp(s), which is > 0 for every s. Causal and normalised:
    o_i = sum_{j <= i} (phi(q_i) . phi(k_j)) v_j / (sum_{j <= i} phi(q_i) . phi(k_j) + eps),   y = W_o o
Recurrent view: S_t = S_{t-1} + phi(k_t) [v_t, 1]^T (the last column is the normaliser's sum), so
state_size = n_heads (1 + d' + d'^2) (d_v + 1) floats at every L.
"""

import torch
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep, heads, split
from src.ops.gla import DISPATCH, gla


def taylor(x):  # (..., d) -> (..., 1 + d + d^2)
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2)
    return torch.cat((torch.ones_like(x[..., :1]), x / d**0.25, outer / (2**0.5 * d**0.5)), dim=-1)


class Based(OneTokenStep):
    def __init__(self, d_model, n_heads=12, feature_dim=16, eps=1e-12, backend="auto"):
        super().__init__()
        self.backend = DISPATCH.check(backend)
        self.n_heads, self.feature_dim, self.eps = n_heads, feature_dim, eps
        self.d_v = split(d_model, n_heads, "model.d_model")
        self.q_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        q, k = (taylor(heads(p(x), self.feature_dim)) for p in (self.q_proj, self.k_proj))  # (B, L, H, F)
        v = heads(self.v_proj(x), self.d_v)
        v = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)  # the last column sums phi(q) . phi(k)
        o, S = gla(q, k, v, scale=1.0, initial_state=state, output_final_state=True, backend=self.backend)
        o = o[..., :-1] / (o[..., -1:] + self.eps)
        return self.o_proj(o.flatten(-2)), S

    def default_state(self, batch_size, device=None):
        w = self.o_proj.weight
        features = 1 + self.feature_dim + self.feature_dim**2
        return torch.zeros(batch_size, self.n_heads, features, self.d_v + 1, dtype=w.dtype, device=device or w.device)
