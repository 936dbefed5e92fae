"""Based (`model=based`): linear attention with the Taylor feature map (Arora et al. 2024), on the
gla op with no decay, normalised; fla's layer defaults.

Per head, with q, k = W x of width feature_dim d' and v = W_v x of width d_model / n_heads,
    phi(x) = [1, x / d'^(1/4), vec(x x^T) / (sqrt(2) sqrt(d'))]      (1 + d' + d'^2 features)
so phi(q) . phi(k) = 1 + s + s^2 / 2 with s = q . k / sqrt(d'), the 2nd-order Taylor expansion of
exp(s), which is > 0 for every s. Causal and normalised:
    o_i = sum_{j <= i} (phi(q_i) . phi(k_j)) v_j / (sum_{j <= i} phi(q_i) . phi(k_j) + eps),   y = W_o o
Recurrent view: S_t = S_{t-1} + phi(k_t) [v_t, 1]^T (the last column is the normaliser's sum), so
state_size = n_heads (1 + d' + d'^2) (d_v + 1) floats at every L.

Two forms of the same sums (fla's modes), from a state S_0 (zero for a fresh sequence):
    parallel  o_i = sum_{j <= i} (1 + s_ij + s_ij^2 / 2) [v_j, 1] + phi(q_i) S_0,  S_L = S_0 + phi(K)^T [V, 1]
              the (L, L) weights in torch on any device: O(L^2 (d' + d_v)) time, O(L^2) memory per head;
    chunk     the gla op on the 1 + d' + d'^2 features (src/ops/gla, model.layer.backend), O(L) memory.
`mode=auto` runs parallel up to PARALLEL_MAX_L tokens and chunk beyond, or chunk whenever a backend is
named. On a CPU the parallel form's forward + backward is 7.3x faster than the chunked C loop at
L 64 and 1.5x at L 256 (d_model 64), and 1.3x slower at L 512 (d_model 128): benchmarks/README.md#layers.
"""

import torch
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep, heads, split
from src.ops.gla import DISPATCH, gla
from src.utils.errors import ConfigError, check_choice

MODES = ("auto", "parallel", "chunk")
PARALLEL_MAX_L = 256  # mode=auto's longest input for the parallel form


def taylor(x):  # (..., d) -> (..., 1 + d + d^2)
    d = x.shape[-1]
    outer = (x[..., :, None] * x[..., None, :]).flatten(-2)
    return torch.cat((torch.ones_like(x[..., :1]), x / d**0.25, outer / (2**0.5 * d**0.5)), dim=-1)


def parallel(q, k, v, state=None):
    """(o, S_L) of the parallel form; q, k (B, L, H, d'), v (B, L, H, d_v + 1), state (B, H, F, d_v + 1)."""
    s = torch.einsum("blhd,bmhd->bhlm", q, k) / q.shape[-1] ** 0.5  # (B, H, L, L)
    causal = torch.ones(s.shape[-2:], dtype=torch.bool, device=s.device).tril()
    w = (1 + s + s * s / 2).masked_fill(~causal, 0)
    o = torch.einsum("bhlm,bmhv->blhv", w, v)  # (B, L, H, d_v + 1)
    S = final_state(k, v)  # (B, H, F, d_v + 1)
    if state is not None:
        o = o + torch.einsum("blhf,bhfv->blhv", taylor(q), state)
        S = S + state
    return o, S


def final_state(k, v):
    """phi(K)^T V without the (B, L, H, F) features: the sums of v, k v^T and (k k^T) v^T, scaled as
    phi's parts are; k (B, L, H, d'), v (B, L, H, d_v) -> (B, H, 1 + d' + d'^2, d_v)."""
    d = k.shape[-1]
    kv = k[..., :, None] * v[..., None, :]  # (B, L, H, d', d_v)
    S2 = torch.einsum("blhd,blhev->bhdev", k, kv).flatten(2, 3) / (2**0.5 * d**0.5)  # the order of taylor's vec
    return torch.cat((v.sum(1)[:, :, None], kv.sum(1) / d**0.25, S2), dim=2)


class Based(OneTokenStep):
    def __init__(self, d_model, n_heads=12, feature_dim=16, eps=1e-12, mode="auto", backend="auto"):
        super().__init__()
        self.mode = check_choice("model.layer.mode", mode, MODES)
        self.backend = DISPATCH.check(backend)
        if mode == "parallel" and backend != "auto":
            raise ConfigError(f"model.layer.backend={backend!r} chooses the gla op of model.layer.mode='chunk'; "
                              "mode='parallel' runs in torch (set mode=chunk, or leave backend=auto)")
        self.n_heads, self.feature_dim, self.eps = n_heads, feature_dim, eps
        self.d_v = split(d_model, n_heads, "model.d_model")
        self.q_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.k_proj = nn.Linear(d_model, n_heads * feature_dim, bias=False)
        self.v_proj = nn.Linear(d_model, d_model, bias=False)
        self.o_proj = nn.Linear(d_model, d_model, bias=False)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        q, k = (heads(p(x), self.feature_dim) for p in (self.q_proj, self.k_proj))  # (B, L, H, d')
        v = heads(self.v_proj(x), self.d_v)
        v = torch.cat((v, torch.ones_like(v[..., :1])), dim=-1)  # (B, L, H, d_v + 1): the last column sums the weights
        chunk = self.mode == "chunk" or self.mode == "auto" and (self.backend != "auto" or x.shape[1] > PARALLEL_MAX_L)
        if not chunk:
            o, S = parallel(q, k, v, state)
        else:
            o, S = gla(taylor(q), taylor(k), v, scale=1.0, initial_state=state, output_final_state=True,
                       backend=self.backend)
        o = o[..., :-1] / (o[..., -1:] + self.eps)
        return self.o_proj(o.flatten(-2)), S

    def default_state(self, batch_size, device=None):
        w = self.o_proj.weight
        features = 1 + self.feature_dim + self.feature_dim**2
        return torch.zeros(batch_size, self.n_heads, features, self.d_v + 1, dtype=w.dtype, device=device or w.device)
