"""Gated linear attention layers on the gla op (src/ops/gla), with fla's layer defaults:
GLA (`model=gla`), RetNet's multi-scale retention (`model=retnet`) and HGRN-2 (`model=hgrn2`).

Per head, state S (d_k, d_v), log decay g_t:
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,     o_t = S_t^T q_t / sqrt(d_k)
gla:     q, k, v = W x (d_k = expand_k d_model / n_heads, d_v = expand_v d_model / n_heads),
         g_t = logsigmoid(W_2 W_1 x_t + b) / gate_logit_normalizer per key (a rank-16 gate, / 16),
         y = W_o [RMSNorm(o_t) * swish(W_g x_t)]  (use_output_gate; else RMSNorm(o_t)).
retnet:  g_h = log(1 - 2^(-5-h)) per head, fixed (gamma_h = 1 - 2^(-5-h)); RoPE on q, k at the
         absolute position (the state carries the position reached); d_v = expand_v d_model / n_heads,
         output as gla.
hgrn2:   q = swish(W_q x), g = logsigmoid(W_f x) per key, k = 1 - exp(g) (the input gate tied to the
         forget gate), v = W_i x; d_k = expand_ratio = d_model / n_heads (n_heads 4), or n_heads =
         d_model // expand_ratio when expand_ratio is set (fla's default 128: 16 heads at d_model 2048),
         y = W_o RMSNorm(concat_h o_t).
allow_neg_eigval (gla, hgrn2; Grazzi et al. 2024, "Unlocking State-Tracking in Linear RNNs Through
Negative Eigenvalues"): the decay exp(g_t) in (0, 1) becomes a_t = 2 exp(g_t) - 1 in (-1, 1), as
their fla fork's `use_negative_gates` maps GLA's gate (and Mamba's exp(dt A) to 2 exp(dt A) - 1):
    S_t = diag(a_t) S_{t-1} + k_t v_t^T,
so the state can flip sign each step (parity, modular counting). Only the transition changes:
hgrn2's input gate stays k = 1 - exp(g) (as Mamba's input dt B stays), so a forget gate near 0
now reads "negate and write". The op takes log |a_t| and the sign (`signed_decay`); |a_t| is
floored at the dtype's eps, the rounding error of 2 exp(g) - 1 itself, so a gate at exactly 1/2
(a = 0) stays finite with a finite gradient. RetNet's decays are fixed, not data-dependent: no switch.
Optional short convs (use_short_conv) on q, k, v as fla. State: conv windows, S (n_heads, d_k, d_v)
(retnet: also the position, an integer per sequence).
"""


import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import Convs, GatedRMSNorm, OneTokenStep, heads, split, width
from src.models.sequence.positions import rotary
from src.ops.gla import DISPATCH, gla
from src.utils.errors import ConfigError


def signed_decay(g):
    """g (log decays <= 0) -> (log |a|, a < 0) for the decays a = 2 exp(g) - 1 in (-1, 1], |a|
    floored at eps of g's dtype: what the op takes as g and `negative`. d log|a| / da = 1 / a, so
    the gradient reaches g through the signed decay (zero where the floor holds)."""
    a = 2 * g.exp() - 1
    return a.abs().clamp(min=torch.finfo(a.dtype).eps).log(), a < 0


class _GLALayer(OneTokenStep):
    """q, k, v projections (+ optional convs), the gla op, the gated output norm."""

    def _build(self, d_model, n_heads, d_k, d_v, use_short_conv, conv_size, conv_bias, use_output_gate,
               elementwise_affine, norm_eps, backend, conv_activation="silu", allow_neg_eigval=False):
        self.backend = DISPATCH.check(backend)
        if allow_neg_eigval and backend == "triton":
            raise ConfigError("model.layer.allow_neg_eigval=true needs signed decays, which fla's kernels "
                              "(model.layer.backend=triton) do not take; use backend=auto, torch or cpu")
        self.allow_neg_eigval = allow_neg_eigval
        self.n_heads, self.d_k, self.d_v = n_heads, d_k, d_v
        self.q_proj = nn.Linear(d_model, n_heads * d_k, bias=False)
        self.k_proj = nn.Linear(d_model, n_heads * d_k, bias=False)
        self.v_proj = nn.Linear(d_model, n_heads * d_v, bias=False)
        self.convs = Convs([n_heads * d_k] * 2 + [n_heads * d_v], use_short_conv, conv_size, conv_bias,
                           [conv_activation] * 3, backend)
        self.g_proj = nn.Linear(d_model, n_heads * d_v, bias=False) if use_output_gate else None
        self.o_proj = nn.Linear(n_heads * d_v, d_model, bias=False)
        self.norm = GatedRMSNorm(d_v, norm_eps, elementwise_affine)

    def _qkv(self, x, conv_state):
        (q, k, v), conv_state = self.convs([self.q_proj(x), self.k_proj(x), self.v_proj(x)], conv_state)
        return heads(q, self.d_k), heads(k, self.d_k), heads(v, self.d_v), conv_state

    def _out(self, o, x):  # o (B, L, H, d_v)
        o = self.norm(o, None if self.g_proj is None else heads(self.g_proj(x), self.d_v))
        return self.o_proj(o.flatten(-2))

    def _S(self, batch_size, device):
        w = self.o_proj.weight
        return torch.zeros(batch_size, self.n_heads, self.d_k, self.d_v, dtype=w.dtype, device=device or w.device)


class GLA(_GLALayer):
    def __init__(self, d_model, n_heads=4, expand_k=0.5, expand_v=1.0, use_short_conv=False, conv_size=4,
                 conv_bias=False, use_output_gate=True, gate_logit_normalizer=16, gate_low_rank_dim=16,
                 clamp_min: float | None = None, allow_neg_eigval=False, elementwise_affine=True, norm_eps=1e-5,
                 backend="auto"):
        super().__init__()
        d_k = split(width(d_model, expand_k, "expand_k"), n_heads, "key width")
        d_v = split(width(d_model, expand_v, "expand_v"), n_heads, "value width")
        self._build(d_model, n_heads, d_k, d_v, use_short_conv, conv_size, conv_bias, use_output_gate,
                    elementwise_affine, norm_eps, backend, allow_neg_eigval=allow_neg_eigval)
        self.gk_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False),
                                     nn.Linear(gate_low_rank_dim, n_heads * d_k))
        self.gate_logit_normalizer, self.clamp_min = gate_logit_normalizer, clamp_min

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, S = (None, None) if state is None else state
        q, k, v, conv_state = self._qkv(x, conv_state)
        g = F.logsigmoid(heads(self.gk_proj(x), self.d_k)) / self.gate_logit_normalizer
        if self.clamp_min is not None:
            g = g.clamp(min=self.clamp_min)
        g, negative = signed_decay(g) if self.allow_neg_eigval else (g, None)
        o, S = gla(q, k, v, g, initial_state=S, output_final_state=True, negative=negative, backend=self.backend)
        return self._out(o, x), (conv_state, S)

    def default_state(self, batch_size, device=None):
        return self.convs.default_state(batch_size, device), self._S(batch_size, device)


class RetNet(_GLALayer):
    def __init__(self, d_model, n_heads=8, expand_k=1.0, expand_v=2.0, use_short_conv=False, conv_size=4,
                 conv_bias=False, use_output_gate=True, elementwise_affine=True, norm_eps=1e-5, backend="auto"):
        super().__init__()
        d_k = split(width(d_model, expand_k, "expand_k"), n_heads, "key width")
        d_v = split(width(d_model, expand_v, "expand_v"), n_heads, "value width")
        if d_k % 2:
            raise ConfigError(f"model.layer: RetNet rotates q, k in pairs: the key width per head {d_k} must be even")
        self._build(d_model, n_heads, d_k, d_v, use_short_conv, conv_size, conv_bias, use_output_gate,
                    elementwise_affine, norm_eps, backend)
        self.register_buffer("log_gamma", torch.log1p(-(2.0 ** (-5.0 - torch.arange(n_heads, dtype=torch.float64)))).float())

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        B, L, _ = x.shape
        conv_state, S, start = (None, None, x.new_zeros(B, dtype=torch.long)) if state is None else state
        q, k, v, conv_state = self._qkv(x, conv_state)
        positions = start[:, None] + torch.arange(L, device=x.device)  # (B, L)
        q, k = (rotary(t.transpose(1, 2), positions).transpose(1, 2) for t in (q, k))
        g = self.log_gamma.to(x.dtype).expand(B, L, self.n_heads)
        o, S = gla(q, k, v, g, initial_state=S, output_final_state=True, backend=self.backend)
        return self._out(o, x), (conv_state, S, start + L)

    def default_state(self, batch_size, device=None):
        device = device or self.o_proj.weight.device
        return (self.convs.default_state(batch_size, device), self._S(batch_size, device),
                torch.zeros(batch_size, dtype=torch.long, device=device))


class HGRN2(_GLALayer):
    def __init__(self, d_model, n_heads: int | None = 4, expand_ratio: int | None = None, use_short_conv=False,
                 conv_size=4, conv_bias=False, allow_neg_eigval=False, elementwise_affine=True, norm_eps=1e-5,
                 backend="auto"):
        super().__init__()
        if expand_ratio is None and n_heads is None:
            raise ConfigError("model.layer: HGRN-2 needs expand_ratio or n_heads")
        if expand_ratio is None:
            expand_ratio = split(d_model, n_heads, "model.d_model")
        n_heads = d_model // expand_ratio
        if n_heads < 1:
            raise ConfigError(f"model.layer.expand_ratio={expand_ratio} is wider than model.d_model={d_model}: "
                              "n_heads = d_model // expand_ratio must be >= 1")
        d_v = split(d_model, n_heads, "model.d_model")
        self._build(d_model, n_heads, expand_ratio, d_v, use_short_conv, conv_size, conv_bias, False,
                    elementwise_affine, norm_eps, backend, conv_activation=None, allow_neg_eigval=allow_neg_eigval)
        self.norm = GatedRMSNorm(d_model, norm_eps, elementwise_affine)  # over the concatenated heads

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, S = (None, None) if state is None else state
        q, f, i, conv_state = self._qkv(x, conv_state)  # q, forget logits, input
        g = F.logsigmoid(f)
        k = -torch.expm1(g)  # the input gate 1 - exp(g), also with signed decays
        g, negative = signed_decay(g) if self.allow_neg_eigval else (g, None)
        o, S = gla(F.silu(q), k, i, g, initial_state=S, output_final_state=True, negative=negative,
                   backend=self.backend)
        return self.o_proj(self.norm(o.flatten(-2))), (conv_state, S)

    def default_state(self, batch_size, device=None):
        return self.convs.default_state(batch_size, device), self._S(batch_size, device)
