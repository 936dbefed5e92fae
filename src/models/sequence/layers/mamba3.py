"""Mamba-3 (`model=mamba3`): mamba-ssm's `Mamba3` module (mamba_ssm/modules/mamba3.py), its SISO
path (is_mimo=False), with its defaults, on the mamba3 op (src/ops/mamba3).

    [z, x, B, C, dd_dt, dd_A, trap, angles] = in_proj(u)          (no bias; x, z (H, P) per token,
                                                                    H = expand d_model / headdim)
    B, C  = RMSNorm(B), RMSNorm(C) over d_state, per group (ngroups groups share a head's B, C)
    dt    = softplus(dd_dt + dt_bias),  A = min(-f(dd_A), -A_floor),  f(a) = 1 + a (a >= 0), 1 / (1 - a)
    per head, with lambda_t = sigmoid(trap_t), theta_t = pi tanh(angles_t) (S angles shared by heads):
        phi_t = phi_{t-1} + dt_t theta_t,   C~_t = R(phi_t)(C_t + C_bias),  B~_t = R(phi_t)(B_t + B_bias)
        h_t   = e^{A_t dt_t} h_{t-1} + (1 - lambda_t) dt_t e^{A_t dt_t} x_{t-1} B~_{t-1}^T + lambda_t dt_t x_t B~_t^T
        y_t   = h_t C~_t + D x_t
    y     = y silu(z)  (is_outproj_norm: RMSNorm(y) per head, weighted, then * silu(z));  out_proj(y)
R(phi) rotates the pairs (2i, 2i+1), i < S, of a d_state vector by phi_i; S = floor(rope_fraction
d_state) rounded down to even, halved ("complex" state as data-dependent RoPE). The trapezoidal rule
mixes the current and the previous token's x B^T; the op runs it as one SSD scan.

mamba-ssm's initialisation: in_proj and out_proj as torch's Linear (no bias), dt_bias with
softplus(dt_bias) log-uniform in [dt_min, dt_max] (at least dt_init_floor), B_bias = C_bias = 1,
the RMSNorm weights 1 (eps 1e-5), D = 1; dt_bias and D without weight decay.
State per sequence (phi, h, B~_last, x_last): H (S + headdim d_state + d_state + headdim) floats.

Kept: d_state, expand, headdim, ngroups, rope_fraction (0.5 or 1), dt_min, dt_max, dt_init_floor,
A_floor, is_outproj_norm, chunk_size. Departures: SISO only (no is_mimo, mimo_rank,
fuse_pregate_headwise_norm); everything runs in the input's dtype (mamba-ssm computes A, dt and the
angles in float32); the kernel is the op's (its chunked torch form, or gla's C loop on CPU)
instead of Triton; dropout is the backbone's; no varlen (cu_seqlens, seq_idx). The state is carried
through forward (and one-token steps, which are forward on one token) rather than an inference cache.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.mamba import inverse_softplus_dt
from src.models.sequence.layers.matrix_memory import OneTokenStep
from src.models.sequence.layers.optim import register
from src.ops.mamba3 import DISPATCH, mamba3_siso
from src.utils.errors import ConfigError, check_choice


def heavy_tail(a):
    """mamba-ssm's heavy_tail_activation: 1 + a for a >= 0, 1 / (1 - a) below; positive, C^1."""
    return a.clamp_min(0) + torch.reciprocal(1 - a.clamp_max(0))


class Mamba3(OneTokenStep):
    """mamba-ssm's Mamba3, SISO (see the module docstring).

    math: h_t = a_t h_{t-1} + (1 - l_t) dt_t a_t x_{t-1} B~_{t-1}^T + l_t dt_t x_t B~_t^T, y_t = h_t C~_t + D x_t,
          B~, C~ turned by cumulative data-dependent angles
    """

    def __init__(self, d_model, d_state=128, expand=2, headdim=64, ngroups=1, rope_fraction=0.5, dt_min=0.001,
                 dt_max=0.1, dt_init_floor=1e-4, A_floor=1e-4, is_outproj_norm=False, chunk_size=64, backend="auto"):
        super().__init__()
        self.d_inner = int(expand * d_model)
        if headdim < 1 or self.d_inner % headdim:
            raise ConfigError(f"model.layer.headdim={headdim} must divide expand * d_model = {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if ngroups < 1 or self.nheads % ngroups:
            raise ConfigError(f"model.layer.ngroups={ngroups} must divide the number of heads {self.nheads}")
        check_choice("model.layer.rope_fraction", rope_fraction, [0.5, 1.0])
        rotated = int(d_state * rope_fraction)
        self.n_angles = (rotated - rotated % 2) // 2
        if self.n_angles < 1:
            raise ConfigError(f"model.layer.d_state={d_state}: rope_fraction * d_state = {rope_fraction * d_state} "
                              "leaves no pair to rotate; use d_state >= 2 / rope_fraction")
        if chunk_size < 1:
            raise ConfigError(f"model.layer.chunk_size={chunk_size} must be positive")
        self.d_state, self.headdim, self.ngroups, self.A_floor = d_state, headdim, ngroups, A_floor
        self.is_outproj_norm, self.chunk_size, self.backend = is_outproj_norm, chunk_size, DISPATCH.check(backend)
        GN = ngroups * d_state
        self.splits = [self.d_inner, self.d_inner, GN, GN, self.nheads, self.nheads, self.nheads, self.n_angles]
        self.in_proj = nn.Linear(d_model, sum(self.splits), bias=False)
        register(self, "dt_bias", inverse_softplus_dt(self.nheads, dt_min, dt_max, dt_init_floor), wd=0.0)
        self.B_bias, self.C_bias = (nn.Parameter(torch.ones(self.nheads, d_state)) for _ in range(2))
        self.B_norm_weight, self.C_norm_weight = (nn.Parameter(torch.ones(d_state)) for _ in range(2))
        register(self, "D", torch.ones(self.nheads), wd=0.0)
        self.norm_weight = nn.Parameter(torch.ones(self.nheads, headdim)) if is_outproj_norm else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=False)

    def forward(self, u, state=None, positions=None):  # u (B, L, d_model)
        z, x, B, C, dd_dt, dd_A, trap, angles = self.in_proj(u).split(self.splits, dim=-1)
        z, x = (t.unflatten(-1, (self.nheads, self.headdim)) for t in (z, x))  # (B, L, H, P)
        B = F.rms_norm(B.unflatten(-1, (self.ngroups, self.d_state)), (self.d_state,), self.B_norm_weight, 1e-5)
        C = F.rms_norm(C.unflatten(-1, (self.ngroups, self.d_state)), (self.d_state,), self.C_norm_weight, 1e-5)
        dt = F.softplus(dd_dt + self.dt_bias)  # (B, L, H)
        A = (-heavy_tail(dd_A)).clamp_max(-self.A_floor)
        angles = angles[:, :, None].expand(-1, -1, self.nheads, -1)  # (B, L, H, S)
        y, state = mamba3_siso(C, B, x, A * dt, dt, trap, self.C_bias, self.B_bias, angles, self.D,
                               None if self.is_outproj_norm else z, state, True, self.chunk_size, self.backend)
        if self.is_outproj_norm:  # mamba-ssm's RMSNormGated(norm_before_gate=True, group_size=headdim)
            y = F.rms_norm(y, (self.headdim,), eps=1e-5) * self.norm_weight * F.silu(z)
        return self.out_proj(y.flatten(-2)), state

    def default_state(self, batch_size, device=None):
        """(phi (B, H, S), h (B, H, headdim, d_state), B~_last (B, H, d_state), x_last (B, H, headdim)), zeros."""
        w = self.out_proj.weight
        kw = dict(dtype=w.dtype, device=device or w.device)
        H, P, N = self.nheads, self.headdim, self.d_state
        return (torch.zeros(batch_size, H, self.n_angles, **kw), torch.zeros(batch_size, H, P, N, **kw),
                torch.zeros(batch_size, H, N, **kw), torch.zeros(batch_size, H, P, **kw))
