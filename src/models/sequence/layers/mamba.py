"""Selective state space layers: Mamba (S6 block), Mamba-2 (SSD block), and the DSF paper's
bare S6 and "SSD" (Sieber et al. 2024). All map x (B, L, d_model) -> (y (B, L, d_model), state).

Selective scan (S6), per channel d and state n, with input-dependent delta, B, C:
    delta_t = softplus(W_dt dt_t + b_dt)                       (dt_t: low-rank, dt_rank, from x_t)
    h_t[d, n] = exp(delta_t[d] A[d, n]) h_{t-1}[d, n] + delta_t[d] B_t[n] u_t[d]
    y_t[d]    = sum_n C_t[n] h_t[d, n] + D[d] u_t[d]
A = -exp(A_log) < 0, so |exp(delta A)| < 1: the recurrence is stable for any input; S4D-real
init A[d, n] = -(n + 1). The state is (d_inner, d_state) per sequence; inference is O(1) per step.
allow_neg_eigval (mamba, mamba2; Grazzi et al. 2024, "Unlocking State-Tracking in Linear RNNs
Through Negative Eigenvalues"): the transition exp(delta A) in (0, 1) becomes
    2 exp(delta A) - 1  in (-1, 1)        (the input term delta B u unchanged, as in their kernel)
so a channel can flip its sign each step, which parity and modular counting need; still stable.

mamba:  in_proj -> (u, z); u <- silu(causal depthwise conv_{d_conv}(u)); (dt, B, C) = x_proj(u);
        y = S6(u) * silu(z); out_proj.          state: conv (d_inner, d_conv-1) + ssm (d_inner, d_state)
mamba2: in_proj -> (z, xBC, dt); xBC <- silu(conv(xBC)); x, B, C = split(xBC);
        SSD: scalar A per head (nheads = d_inner / headdim), B, C shared by a group of heads:
            h_t[h] = exp(dt_t[h] A[h]) h_{t-1}[h] + dt_t[h] x_t[h] B_t^T    (headdim x d_state)
            y_t[h] = h_t[h] C_t + D[h] x_t[h]       (D per head, or per channel if D_has_hdim)
        dt_t = clamp(softplus(dt_t + dt_bias), dt_limit);
        y = RMSNorm(y * silu(z)) per group (rmsnorm; RMSNorm(y) * silu(z) if norm_before_gate;
        y * silu(z) without rmsnorm); out_proj.
                                                state: conv (conv_dim, d_conv-1) + ssm (nheads, headdim, d_state)
s6:     the selective scan alone on u = x (no in_proj, conv or gate), out_proj. state (d_model, d_state)
dsf_ssd: as s6 with A = -exp(a) one scalar for all channels and states, and delta rank 1: one
        dt_t from x_t repeated on every channel, plus a per-channel bias. state (d_model, d_state)
A_log, D (and mamba2's dt_bias) carry weight_decay 0, like mamba-ssm's _no_weight_decay.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.optim import register
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.selective_scan import DISPATCH as SELECTIVE_SCAN_DISPATCH
from src.ops.selective_scan import selective_scan
from src.ops.ssd_scan import DISPATCH as SSD_SCAN_DISPATCH
from src.ops.ssd_scan import ssd_scan
from src.utils.errors import ConfigError, check_choice


def inverse_softplus_dt(n, dt_min, dt_max, dt_init_floor):
    """Biases b with softplus(b) log-uniform in [dt_min, dt_max] (at least dt_init_floor)."""
    dt = torch.exp(torch.rand(n) * (math.log(dt_max) - math.log(dt_min)) + math.log(dt_min)).clamp(min=dt_init_floor)
    return dt + torch.log(-torch.expm1(-dt))


class SelectiveSSM(nn.Module):
    """x_proj -> (dt, B, C), delta = softplus(dt_proj(dt)), the S6 scan over u (B, E, L).
    dt_rank=1 and scalar_A=True give the DSF "SSD" (dt repeated over channels, one A);
    neg_eigval: the transition 2 exp(delta A) - 1."""

    def __init__(self, d_inner, d_state, dt_rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor, scalar_A, backend,
                 neg_eigval=False):
        super().__init__()
        check_choice("model.layer.dt_init", dt_init, ["random", "constant"])
        self.d_state, self.dt_rank, self.scalar_A, self.neg_eigval = d_state, dt_rank, scalar_A, neg_eigval
        self.backend = SELECTIVE_SCAN_DISPATCH.backend_of(backend)
        self.x_proj = nn.Linear(d_inner, dt_rank + 2 * d_state, bias=False)
        if scalar_A:  # DSF ssd: delta_t = softplus(dt_t + bias), the same dt_t on every channel
            register(self, "dt_bias", inverse_softplus_dt(d_inner, dt_min, dt_max, dt_init_floor))
            register(self, "A_log", torch.zeros(1), wd=0.0)  # A = -1
        else:
            self.dt_proj = nn.Linear(dt_rank, d_inner)
            std = dt_rank**-0.5 * dt_scale
            with torch.no_grad():
                if dt_init == "constant":
                    self.dt_proj.weight.fill_(std)
                else:
                    self.dt_proj.weight.uniform_(-std, std)
                self.dt_proj.bias.copy_(inverse_softplus_dt(d_inner, dt_min, dt_max, dt_init_floor))
            A = torch.arange(1, d_state + 1, dtype=torch.float32).repeat(d_inner, 1)  # S4D-real
            register(self, "A_log", torch.log(A), wd=0.0)  # (E, N)
        register(self, "D", torch.ones(d_inner), wd=0.0)

    def A(self):  # (E, N)
        return (-torch.exp(self.A_log)).expand(self.D.shape[0], self.d_state)

    def _dt_B_C(self, u):  # u (..., E) -> dt (..., E) before softplus, B, C (..., N), delta bias (E,)
        dt, B, C = self.x_proj(u).split([self.dt_rank, self.d_state, self.d_state], dim=-1)
        if self.scalar_A:
            return dt.expand(*dt.shape[:-1], self.D.shape[0]), B, C, self.dt_bias
        return dt @ self.dt_proj.weight.T, B, C, self.dt_proj.bias

    def forward(self, u, z=None, h0=None):  # u, z (B, E, L); h0 (B, E, N) -> y (B, E, L), h_L
        dt, B, C, bias = self._dt_B_C(u.transpose(1, 2))
        return selective_scan(u, dt.transpose(1, 2), self.A(), B.transpose(1, 2), C.transpose(1, 2), self.D, z,
                              delta_bias=bias, delta_softplus=True, return_last_state=True, initial_state=h0,
                              neg_eigval=self.neg_eigval, backend=self.backend)

    def step(self, u, h, z=None):  # u (B, E), h (B, E, N)
        dt, B, C, bias = self._dt_B_C(u)
        delta = F.softplus(dt + bias)  # (B, E)
        a = torch.exp(delta[..., None] * self.A())  # (B, E, N)
        if self.neg_eigval:
            a = 2 * a - 1
        h = a * h + (delta * u)[..., None] * B[:, None, :]
        y = (h * C[:, None, :]).sum(-1) + self.D * u
        return (y if z is None else y * F.silu(z)), h


def _dt_rank(dt_rank, d_model):
    if dt_rank == "auto":
        return math.ceil(d_model / 16)
    if not isinstance(dt_rank, int) or dt_rank < 1:
        raise ConfigError(f"model.layer.dt_rank={dt_rank!r} is not valid; choose 'auto' or a positive integer")
    return dt_rank


class Mamba(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, d_state=16, d_conv=4, expand=2, dt_rank: int | str = "auto", dt_min=0.001, dt_max=0.1,
                 dt_init="random", dt_scale=1.0, dt_init_floor=1e-4, conv_bias=True, bias=False,
                 allow_neg_eigval=False, backend="auto"):
        super().__init__()
        self.d_inner, self.d_state, self.d_conv = int(expand * d_model), d_state, d_conv
        self.in_proj = nn.Linear(d_model, 2 * self.d_inner, bias=bias)
        self.conv1d = ShortConv(self.d_inner, d_conv, conv_bias, "silu", backend)
        self.ssm = SelectiveSSM(self.d_inner, d_state, _dt_rank(dt_rank, d_model), dt_min, dt_max, dt_init, dt_scale,
                                dt_init_floor, scalar_A=False, backend=backend, neg_eigval=allow_neg_eigval)
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, h0 = (None, None) if state is None else state
        u, z = self.in_proj(x).transpose(1, 2).chunk(2, dim=1)  # (B, E, L) each
        u, conv_state = self.conv1d(u, conv_state)
        y, h = self.ssm(u, z, h0)
        return self.out_proj(y.transpose(1, 2)), (conv_state, h)

    def step(self, x_t, state):  # x_t (B, d_model)
        conv_state, h = state
        u, z = self.in_proj(x_t).chunk(2, dim=-1)
        u, conv_state = self.conv1d.step(u, conv_state)
        y, h = self.ssm.step(u, h, z)
        return self.out_proj(y), (conv_state, h)

    def default_state(self, batch_size, device=None):
        w = self.out_proj.weight
        h = torch.zeros(batch_size, self.d_inner, self.d_state, dtype=w.dtype, device=device or w.device)
        return self.conv1d.default_state(batch_size, device), h

    def state_size(self, L=None):
        """Floats per sequence: the conv window (d_inner (d_conv-1)) and the SSM state (d_inner d_state)."""
        return self.d_inner * (self.d_conv - 1 + self.d_state)


class S6(SequenceLayer):
    """DSF's S6 (scalar_A=False) and "SSD" (scalar_A=True): the selective scan alone."""

    recurrent = True
    scalar_A = False

    def __init__(self, d_model, d_state=16, dt_rank: int | str = "auto", dt_min=0.001, dt_max=0.1, dt_init="random",
                 dt_scale=1.0, dt_init_floor=1e-4, bias=False, backend="auto"):
        super().__init__()
        self.d_model, self.d_state = d_model, d_state
        rank = 1 if self.scalar_A else _dt_rank(dt_rank, d_model)
        self.ssm = SelectiveSSM(d_model, d_state, rank, dt_min, dt_max, dt_init, dt_scale, dt_init_floor,
                                scalar_A=self.scalar_A, backend=backend)
        self.out_proj = nn.Linear(d_model, d_model, bias=bias)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        y, h = self.ssm(x.transpose(1, 2), h0=state)
        return self.out_proj(y.transpose(1, 2)), h

    def step(self, x_t, state):
        y, h = self.ssm.step(x_t, state)
        return self.out_proj(y), h

    def default_state(self, batch_size, device=None):
        w = self.out_proj.weight
        return torch.zeros(batch_size, self.d_model, self.d_state, dtype=w.dtype, device=device or w.device)

    def state_size(self, L=None):
        """Floats per sequence: the SSM state, d_model d_state."""
        return self.d_model * self.d_state


class DSFSSD(S6):
    """DSF's "SSD": scalar A = -exp(a), rank-1 delta repeated across channels plus a per-channel bias
    (dt_rank and dt_init/dt_scale do not apply)."""

    scalar_A = True


class Mamba2(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, d_state=128, d_conv=4, expand=2, headdim=64, ngroups=1, A_init_range=(1, 16),
                 D_has_hdim=False, rmsnorm=True, norm_before_gate=False, dt_min=0.001, dt_max=0.1,
                 dt_init_floor=1e-4, dt_limit=(0.0, float("inf")), chunk_size=256, conv_bias=True, bias=False,
                 norm_eps=1e-5, allow_neg_eigval=False, backend="auto"):
        super().__init__()
        self.d_inner = int(expand * d_model)
        if self.d_inner % headdim:
            raise ConfigError(f"model.layer.headdim={headdim} must divide expand * d_model = {self.d_inner}")
        self.nheads = self.d_inner // headdim
        if self.nheads % ngroups:
            raise ConfigError(f"model.layer.ngroups={ngroups} must divide the number of heads {self.nheads}")
        low, high = dt_limit
        if not 0 <= low <= high:
            raise ConfigError(f"model.layer.dt_limit={list(dt_limit)}: need 0 <= low <= high")
        self.d_state, self.d_conv, self.headdim, self.ngroups = d_state, d_conv, headdim, ngroups
        self.rmsnorm, self.norm_before_gate, self.dt_limit = rmsnorm, norm_before_gate, (low, high)
        self.allow_neg_eigval = allow_neg_eigval
        self.chunk_size, self.norm_eps, self.backend = chunk_size, norm_eps, SSD_SCAN_DISPATCH.backend_of(backend)
        self.conv_dim = self.d_inner + 2 * ngroups * d_state
        self.in_proj = nn.Linear(d_model, self.d_inner + self.conv_dim + self.nheads, bias=bias)
        self.conv1d = ShortConv(self.conv_dim, d_conv, conv_bias, "silu", backend)
        register(self, "dt_bias", inverse_softplus_dt(self.nheads, dt_min, dt_max, dt_init_floor), wd=0.0)
        low, high = A_init_range
        register(self, "A_log", torch.log(torch.empty(self.nheads).uniform_(low, high)), wd=0.0)
        register(self, "D", torch.ones(self.d_inner if D_has_hdim else self.nheads), wd=0.0)  # per channel or head
        self.norm_weight = nn.Parameter(torch.ones(self.d_inner)) if rmsnorm else None
        self.out_proj = nn.Linear(self.d_inner, d_model, bias=bias)

    def _gate(self, y, z):  # y, z (..., d_inner): y silu(z), RMS-normalised over groups of d_inner / ngroups
        if not self.rmsnorm:
            return y * F.silu(z)
        if not self.norm_before_gate:
            y = y * F.silu(z)
        y = y.unflatten(-1, (self.ngroups, -1))
        y = (y * torch.rsqrt(y.pow(2).mean(-1, keepdim=True) + self.norm_eps)).flatten(-2) * self.norm_weight
        return y * F.silu(z) if self.norm_before_gate else y

    def _dt(self, dt):  # (..., H): softplus(dt + dt_bias), clamped to dt_limit
        low, high = self.dt_limit
        return F.softplus(dt + self.dt_bias).clamp(low, high)

    def _split(self, zxbcdt):
        return zxbcdt.split([self.d_inner, self.conv_dim, self.nheads], dim=-1)

    def _x_B_C(self, xBC):
        GN = self.ngroups * self.d_state
        x, B, C = xBC.split([self.d_inner, GN, GN], dim=-1)
        return (x.unflatten(-1, (self.nheads, self.headdim)), B.unflatten(-1, (self.ngroups, self.d_state)),
                C.unflatten(-1, (self.ngroups, self.d_state)))

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, h0 = (None, None) if state is None else state
        z, xBC, dt = self._split(self.in_proj(x))
        xBC, conv_state = self.conv1d(xBC.transpose(1, 2), conv_state)
        xs, B, C = self._x_B_C(xBC.transpose(1, 2))  # (B, L, H, P), (B, L, G, N) x2
        D = self.D.view(self.nheads, -1).squeeze(-1)  # (H,) or (H, P)
        y, h = ssd_scan(xs, self._dt(dt), -torch.exp(self.A_log), B, C, self.chunk_size, D=D, initial_states=h0,
                        return_final_states=True, neg_eigval=self.allow_neg_eigval, backend=self.backend)
        return self.out_proj(self._gate(y.flatten(-2), z)), (conv_state, h)

    def step(self, x_t, state):  # x_t (B, d_model)
        conv_state, h = state
        z, xBC, dt = self._split(self.in_proj(x_t))
        xBC, conv_state = self.conv1d.step(xBC, conv_state)
        xs, B, C = self._x_B_C(xBC)  # (B, H, P), (B, G, N) x2
        B, C = (M.repeat_interleave(self.nheads // self.ngroups, dim=1) for M in (B, C))  # (B, H, N)
        delta = self._dt(dt)  # (B, H)
        decay = torch.exp(delta * -torch.exp(self.A_log))[..., None, None]  # (B, H, 1, 1)
        if self.allow_neg_eigval:
            decay = 2 * decay - 1
        h = decay * h + (delta[..., None] * xs)[..., None] * B[:, :, None, :]  # (B, H, P, N)
        y = (h * C[:, :, None, :]).sum(-1) + self.D.view(self.nheads, -1) * xs
        return self.out_proj(self._gate(y.flatten(-2), z)), (conv_state, h)

    def default_state(self, batch_size, device=None):
        w = self.out_proj.weight
        h = torch.zeros(batch_size, self.nheads, self.headdim, self.d_state, dtype=w.dtype, device=device or w.device)
        return self.conv1d.default_state(batch_size, device), h

    def state_size(self, L=None):
        """Floats per sequence: the conv window (conv_dim (d_conv-1)) and the SSM state (d_inner d_state)."""
        return self.conv_dim * (self.d_conv - 1) + self.d_inner * self.d_state
