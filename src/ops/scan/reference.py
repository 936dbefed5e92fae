"""Scans, the obvious way: one Python step per time step (the oracle for every other path).

    linear_scan:     h_t = a_t * h_{t-1} + b_t                                  (over the last dim)
    selective_scan:  h_t = exp(delta_t A) * h_t-1 + delta_t B_t u_t,  y_t = C_t . h_t + D u_t   (S6)
    ssd_scan:        h_t = exp(dt_t A_h) h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t     (SSD)

Same arguments and semantics as the fast paths in src/ops/scan/__init__.py; use float64 inputs
for exact checks. Autograd differentiates through the loop.
"""

import torch
import torch.nn.functional as F


def linear_scan(a, b, h0=None, reverse=False):
    """a, b: (..., L) real or complex; h0: (...) or None (zeros) -> h (..., L).
    reverse: h_t = a_t * h_{t+1} + b_t, from t = L-1 down to 0, h0 the state after the end."""
    a, b = torch.broadcast_tensors(a, b)
    h = torch.zeros_like(b[..., 0]) if h0 is None else h0
    steps = range(b.shape[-1] - 1, -1, -1) if reverse else range(b.shape[-1])
    out = [None] * b.shape[-1]
    for t in steps:
        h = a[..., t] * h + b[..., t]
        out[t] = h
    return torch.stack(out, dim=-1)


def _per_channel(M, D):
    """B or C as (batch, D, N, L) from (D, N), (batch, N, L) or (batch, G, N, L)."""
    if M.dim() == 2:
        return M[None, :, :, None]
    if M.dim() == 3:
        return M[:, None]
    return M.repeat_interleave(D // M.shape[1], dim=1)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    """mamba-ssm's selective_scan_fn semantics (real A).
    u, delta: (batch, D, L); A: (D, N); B, C: (D, N), (batch, N, L) or (batch, G, N, L);
    D: (D,); z: (batch, D, L) -> out * silu(z); delta_bias: (D,); initial_state: (batch, D, N).
    Returns out (batch, D, L) and, with return_last_state, the last state (batch, D, N)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dim, L = u.shape[1], u.shape[2]
    B, C = _per_channel(B, dim), _per_channel(C, dim)  # (batch or 1, D, N, L or 1)
    h = u.new_zeros(u.shape[0], *A.shape) if initial_state is None else initial_state
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A)  # (batch, D, N)
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., min(t, B.shape[-1] - 1)]
        ys.append((h * C[..., min(t, C.shape[-1] - 1)]).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return (out, h) if return_last_state else out


def ssd_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False):
    """mamba-ssm's mamba_chunk_scan_combined semantics (without chunks).
    x: (batch, L, H, P); dt: (batch, L, H); A: (H,); B, C: (batch, L, G, N), G divides H;
    D: (H,) or (H, P); z: (batch, L, H, P) -> out * silu(z); dt_bias: (H,);
    initial_states: (batch, H, P, N). Returns out (batch, L, H, P) [, final states (batch, H, P, N)]."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    batch, L, H, P = x.shape
    B = B.repeat_interleave(H // B.shape[2], dim=2)  # (batch, L, H, N)
    C = C.repeat_interleave(H // C.shape[2], dim=2)
    h = x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (batch, H, 1, 1)
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((h * C[:, t, :, None, :]).sum(-1))
    out = torch.stack(ys, dim=1)
    if D is not None:
        out = out + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        out = out * F.silu(z)
    return (out, h) if return_final_states else out


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None):
    """Depthwise causal convolution, one output per step: x (batch, C, L), weight (C, K), bias (C,)
    -> y[c, t] = bias[c] + sum_k weight[c, k] x[c, t - (K-1) + k], with x before t = 0 read from
    initial_states (batch, C, K-1) (zeros if None); activation None or "silu"."""
    K = weight.shape[1]
    xp = F.pad(x, (K - 1, 0)) if initial_states is None else torch.cat((initial_states, x), dim=-1)
    ys = [(weight * xp[..., t : t + K]).sum(-1) for t in range(x.shape[-1])]
    y = torch.stack(ys, dim=-1)
    if bias is not None:
        y = y + bias[:, None]
    return F.silu(y) if activation in ("silu", "swish") else y
