"""Linear attention (`model=linear_attn`) and normalised attention (`model=norm_attn`).

Per head, with q_i = x_i W_q + b_q, k_j = x_j W_k + b_k, v_j = x_j W_v + b_v (no 1/sqrt(d) on q,
as in the DSF code) and a feature map phi (elu+1: phi(a) = elu(a) + 1 > 0; identity: phi(a) = a):
    o_i = sum_{j in S(i)} (phi(q_i) . phi(k_j)) v_j / n_i,      y = o W_o + b_o
    S(i) = {j <= i} (causal) or all j
    normalizer sum      n_i = sum_{j in S(i)} phi(q_i) . phi(k_j)    (Katharopoulos et al. 2020;
                        with elu+1, the DSF's linear attention, Sieber et al. 2024)
               exp      n_i = exp(x_i . w_h + b_h), w_h, b_h with nn.Linear's default init (the DSF's
                        normalised attention, with phi = identity: y_t = sum_{s<=t} (q_t.k_s) v_s / n_t)
               softplus n_i = softplus(x_i . w_h + b_h) + 1e-4, b_h starts at softplus^-1(1): n_i >= 1e-4,
                        where exp's 1/n_i = exp(-x_i . w_h - b_h) is unbounded
               none     n_i = 1
The parallel form materialises the (L, L) weights. Recurrent view (causal), per head:
    S_t = S_{t-1} + phi(k_t) v_t^T  (d_k, d_v),   z_t = z_{t-1} + phi(k_t)  (sum only),
    o_t = phi(q_t)^T S_t / n_t,   n_t = phi(q_t) . z_t | exp | softplus | 1,
so state_size = n_heads d_k d_v (+ n_heads d_k for sum) floats at every L.
normalizer=sum with the identity map is refused: phi(q).phi(k) changes sign, the sum can vanish.
Dropout acts on the output (the DSF code drops attention weights, which has no recurrent form).
"""

import math

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.mha import split_heads
from src.utils.errors import ConfigError, check_choice

FEATURE_MAPS = {"elu+1": lambda a: F.elu(a) + 1, "identity": lambda a: a}
NORMALIZERS = ["sum", "exp", "softplus", "none"]


class LinearAttention(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, n_heads=4, d_qk: int | None = None, feature_map="elu+1", normalizer="sum", causal=True,
                 dropout=0.0):
        super().__init__()
        d_qk = d_qk or d_model
        if d_model % n_heads or d_qk % n_heads:
            raise ConfigError(f"model.d_model={d_model} and model.layer.d_qk={d_qk} must split into n_heads={n_heads} heads")
        check_choice("model.layer.feature_map", feature_map, list(FEATURE_MAPS))
        self.normalizer = check_choice("model.layer.normalizer", normalizer, NORMALIZERS)
        if normalizer == "sum" and feature_map == "identity":
            raise ConfigError("model.layer.normalizer=sum needs a positive feature map (elu+1): with "
                              "feature_map=identity the sum of q.k can vanish; use normalizer=exp, softplus or none")
        self.n_heads, self.d_qk, self.causal = n_heads, d_qk, causal
        self.phi = FEATURE_MAPS[feature_map]
        self.q, self.k = nn.Linear(d_model, d_qk), nn.Linear(d_model, d_qk)
        self.v, self.out = nn.Linear(d_model, d_model), nn.Linear(d_model, d_model)
        if normalizer in ("exp", "softplus"):
            self.eta = nn.Linear(d_model, n_heads)  # eta(x) = x w_h + b_h: nn.Linear's init for exp (DSF)
            if normalizer == "softplus":
                nn.init.constant_(self.eta.bias, math.log(math.e - 1))  # softplus(b) = 1
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _features(self, x):  # x: (B, L, D) -> phi(q), phi(k) (B, n, L, d_k), v (B, n, L, d_v)
        q, k, v = (split_heads(f(x), self.n_heads) for f in (self.q, self.k, self.v))
        return self.phi(q), self.phi(k), v

    def _learned_normalizer(self, x):  # (B, L, D) -> n (B, n_heads, L)
        eta = self.eta(x).transpose(1, 2)
        return torch.exp(eta) if self.normalizer == "exp" else F.softplus(eta) + 1e-4

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        q, k, v = self._features(x)
        weights = q @ k.transpose(-1, -2)  # (B, n, L, L)
        if self.causal:
            L = x.shape[1]
            weights = weights * torch.ones(L, L, dtype=torch.bool, device=x.device).tril()
        o = weights @ v
        if self.normalizer == "sum":
            o = o / weights.sum(-1, keepdim=True)
        elif self.normalizer != "none":
            o = o / self._learned_normalizer(x)[..., None]
        return self.dropout(self.out(rearrange(o, "b n l d -> b l (n d)"))), None

    def default_state(self, batch_size, device=None):
        """(S (B, n, d_k, d_v), z (B, n, d_k) for normalizer=sum, else None)."""
        self.check_step()
        w = self.q.weight
        d_k, d_v = self.d_qk // self.n_heads, self.v.out_features // self.n_heads
        z = w.new_zeros(batch_size, self.n_heads, d_k, device=device) if self.normalizer == "sum" else None
        return w.new_zeros(batch_size, self.n_heads, d_k, d_v, device=device), z

    def step(self, x_t, state):  # x_t: (B, D)
        S, z = state
        q, k, v = (t[:, :, 0] for t in self._features(x_t[:, None]))  # (B, n, d)
        S = S + k[..., :, None] * v[..., None, :]
        o = (q[..., None] * S).sum(-2)  # (B, n, d_v)
        if self.normalizer == "sum":
            z = z + k
            o = o / (q * z).sum(-1, keepdim=True)
        elif self.normalizer != "none":
            o = o / self._learned_normalizer(x_t[:, None])[..., 0, None]
        return self.dropout(self.out(o.flatten(1))), (S, z)

    def state_size(self, L):
        if not self.causal:
            return L * (self.d_qk + self.v.out_features)  # the forward reads every key and value
        d_k, d_v = self.d_qk // self.n_heads, self.v.out_features // self.n_heads
        return self.n_heads * d_k * (d_v + (1 if self.normalizer == "sum" else 0))
