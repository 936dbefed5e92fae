"""Log-linear Mamba-2 (`model=log_linear_mamba2`) and log-linear Gated DeltaNet
(`model=log_linear_gdn`) (Guo et al. 2025, "Log-Linear Attention"): the Mamba-2 and Gated DeltaNet
layers with their linear-attention state replaced by a Fenwick tree of O(log L) states, on the
log_linear op (src/ops/log_linear).

Both read, for the query at position t,
    o_t = sum_{s <= t} lambda_t[l(t, s)] A_ts v_s,      l(t, s) = 0 if s = t, else 1 + floor(log2(t xor s))
where A is the inner layer's attention (Mamba-2: exp(dt_{s+1} A + ... + dt_t A) C_t . B_s; Gated
DeltaNet: the delta rule's) and the level weights are data-dependent,
    lambda_t = softplus(L * (W_l x_t))      (n_heads, num_levels) per token; L = 1 at init,
so each head weighs the past in buckets of 1, 2, 4, ... tokens (the most recent ones finest). With
lambda = 1 both are their inner layer. State: the inner layer's conv windows and one state per
level in use, (n_heads, bit_length(t), K, V) after t tokens (O(log L)), and the position t; the
levels merge as t passes powers of two. A sequence (with its state's position) may reach
2^(num_levels - 1) tokens: fla's 15 levels give 16384.

log_linear_mamba2: fla's `LogLinearMamba2` (fla/layers/log_linear_mamba2.py) with its defaults: the
Mamba-2 block (mamba.py's Mamba2: in_proj -> (z, xBC, dt, dl); silu(conv(xBC)); gated RMSNorm,
norm_before_gate false) with A = -(1, ..., n_heads) at init (fla's, not Mamba-2's U(1, 16)), no conv
bias, in_proj and out_proj with biases, and dl the extra n_heads num_levels outputs of in_proj.
Departures: no dt_limit (fla refuses one too), no conv_init; the scan is the op's (one inner gla
pass per level: gla's C loop on CPU) where fla runs its Triton kernel.
log_linear_gdn: HanGuo97/log-linear-attention's `HGatedDeltaNet` (hattention/modeling_h_gated_deltanet.py),
fla's Gated DeltaNet (deltanet.py's GatedDeltaNet, with its heads relative to d_model) plus
W_l (no bias) and L. q is not scaled by 1/sqrt(d_k): the original divides lambda by the scale it
multiplies q by (SCALE_LAMBDA), so o_t reads lambda q_t^T S on unit q. Departures: the inner delta
rule runs through the op per level (fla's gated delta rule kernels on CUDA) where the original has
its own Triton kernel; no num_householder.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.deltanet import GatedDeltaNet
from src.models.sequence.layers.mamba import Mamba2
from src.models.sequence.layers.matrix_memory import heads
from src.models.sequence.layers.optim import register
from src.ops.log_linear import DISPATCH, log_linear_attn, log_linear_delta_rule
from src.utils.errors import ConfigError


def _check_levels(num_levels):
    if num_levels < 1:
        raise ConfigError(f"model.layer.num_levels={num_levels} must be at least 1 (2^(num_levels - 1) positions)")
    return num_levels


class LogLinearMamba2(Mamba2):
    """fla's LogLinearMamba2 (see the module docstring).

    original: Guo et al. 2025, "Log-Linear Attention"; fla's LogLinearMamba2
    math: o_t = sum_{s <= t} lambda_t[l(t, s)] exp(sum_{s < r <= t} dt_r A) (C_t . B_s) dt_s x_s + D x_t,
          l(t, s) = 1 + floor(log2(t xor s)) (0 for s = t), lambda_t = softplus(L * W_l x_t)
    """

    def __init__(self, d_model, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, D_has_hdim=False,
                 rmsnorm=True, norm_before_gate=False, dt_min=0.001, dt_max=0.1, dt_init_floor=1e-4, conv_bias=False,
                 bias=True, norm_eps=1e-5, num_levels=15, backend="auto"):
        super().__init__(d_model, d_state, d_conv, expand, headdim, ngroups, (1, 16), D_has_hdim, rmsnorm,
                         norm_before_gate, dt_min, dt_max, dt_init_floor, (0.0, float("inf")), 64, conv_bias, bias,
                         norm_eps, False, backend)
        self.num_levels, self.backend = _check_levels(num_levels), DISPATCH.backend_of(backend)
        H = self.nheads
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + H + H * num_levels, bias=bias)
        register(self, "A_log", torch.log(torch.arange(1, H + 1, dtype=torch.float32)), wd=0.0)
        register(self, "L", torch.ones(H, num_levels), wd=0.0)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, levels = (None, None) if state is None else state
        H = self.nheads
        z, xBC, dt, dl = self.in_proj(x).split([self.d_inner, self.conv_dim, H, H * self.num_levels], dim=-1)
        xBC, conv_state = self.conv1d(xBC.transpose(1, 2), conv_state)
        xs, B, C = self._x_B_C(xBC.transpose(1, 2))  # (B, L, H, P), (B, L, G, N) x2
        delta = self._dt(dt)  # (B, L, H)
        lam = F.softplus(self.L * dl.unflatten(-1, (H, self.num_levels)))
        y, levels = log_linear_attn(C, B, xs * delta[..., None], -torch.exp(self.A_log) * delta, lam, levels, True,
                                    self.backend)
        y = y + self.D.view(H, -1) * xs
        return self.out_proj(self._gate(y.flatten(-2), z)), (conv_state, levels)

    def step(self, x_t, state):  # x_t (B, d_model): forward on one token
        y, state = self(x_t[:, None], state)
        return y[:, 0], state

    def default_state(self, batch_size, device=None):
        """(conv window, (levels (B, n_heads, 0, d_state, headdim), position 0))."""
        w = self.out_proj.weight
        levels = torch.zeros(batch_size, self.nheads, 0, self.d_state, self.headdim, dtype=w.dtype,
                             device=device or w.device)
        return self.conv1d.default_state(batch_size, device), (levels, 0)

    def state_size(self, L=None):
        """Floats per sequence after L tokens: the conv window and bit_length(L) levels of d_inner d_state."""
        return self.conv_dim * (self.d_conv - 1) + self.d_inner * self.d_state * int(L).bit_length()


class LogLinearGatedDeltaNet(GatedDeltaNet):
    """HanGuo97's HGatedDeltaNet (see the module docstring).

    original: Guo et al. 2025, "Log-Linear Attention"; HanGuo97/log-linear-attention's HGatedDeltaNet
    math: o_t = sum_{s <= t} lambda_t[l(t, s)] q_t^T P_t ... P_{s+1} beta_s k_s v_s^T,
          P_r = exp(g_r) (I - beta_r k_r k_r^T), lambda_t = softplus(L * W_l x_t)
    """

    def __init__(self, d_model, n_heads=4, head_dim: int | None = None, expand_v=2.0, use_gate=True,
                 use_short_conv=True, conv_size=4, conv_bias=False, allow_neg_eigval=False, norm_eps=1e-5,
                 num_levels=15, backend="auto"):
        super().__init__(d_model, n_heads, head_dim, expand_v, use_gate, use_short_conv, conv_size, conv_bias,
                         allow_neg_eigval, norm_eps, "swish", backend)
        self.num_levels, self.backend = _check_levels(num_levels), DISPATCH.check(backend)
        self.l_proj = nn.Linear(d_model, n_heads * num_levels, bias=False)
        register(self, "L", torch.ones(n_heads, num_levels), wd=0.0)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, levels = (None, None) if state is None else state
        (q, k, v), conv_state = self.convs([self.q_proj(x), self.k_proj(x), self.v_proj(x)], conv_state)
        if self.convs.convs is None:  # the convs apply SiLU to q, k and v
            q, k, v = F.silu(q), F.silu(k), F.silu(v)
        q, k = F.normalize(heads(q, self.d_k), dim=-1), F.normalize(heads(k, self.d_k), dim=-1)
        beta = torch.sigmoid(self.b_proj(x)) * (2 if self.allow_neg_eigval else 1)
        lam = F.softplus(self.L * heads(self.l_proj(x), self.num_levels))
        o, levels = log_linear_delta_rule(q, k, heads(v, self.d_v), beta, self._log_decay(x), lam, levels, True,
                                          self.backend)
        o = self.o_norm(o, heads(self.g_proj(x), self.d_v) if self.use_gate else None)
        return self.o_proj(o.flatten(-2)), (conv_state, levels)

    def default_state(self, batch_size, device=None):
        """(conv windows, (levels (B, n_heads, 0, d_k, d_v), position 0))."""
        w = self.o_proj.weight
        levels = torch.zeros(batch_size, self.n_heads, 0, self.d_k, self.d_v, dtype=w.dtype, device=device or w.device)
        return self.convs.default_state(batch_size, device), (levels, 0)

    def state_size(self, L=None):
        """Floats per sequence after L tokens: the conv windows and bit_length(L) levels of n_heads d_k d_v."""
        conv = sum(c.conv.weight.shape[0] * (c.width - 1) for c in self.convs.convs) if self.convs.convs else 0
        return conv + self.n_heads * self.d_k * self.d_v * int(L).bit_length()
