"""Mamba-3 SISO, the obvious way: one Python step per time step (the oracle), as mamba-ssm's
`mamba3_siso_step_ref` (tests/ops/triton/test_mamba3_siso.py) in our layout (time second).

Per head, with theta_t = pi tanh(angles_t), lambda_t = sigmoid(trap_t), alpha_t = exp(adt_t):
    phi_t  = (phi_{t-1} + dt_t theta_t) mod 2 pi                    (angle state, S angles)
    q~_t   = R(phi_t)(q_t + q_bias),  k~_t = R(phi_t)(k_t + k_bias)  (R rotates the pairs (2i, 2i+1)
                                                                    for i < S; the rest unrotated)
    h_t    = alpha_t h_{t-1} + (1 - lambda_t) dt_t alpha_t v_{t-1} k~_{t-1}^T + lambda_t dt_t v_t k~_t^T
    y_t    = h_t q~_t + D v_t,  then y_t silu(z_t)
State (phi, h, k~_{last}, v_{last}): (B, H, S), (B, H, P, N), (B, H, N), (B, H, P); zeros at the start.
Autograd differentiates through the loop (floor has zero gradient, so the mod passes it on).
"""

import math

import torch
import torch.nn.functional as F


def rotate(x, cos, sin):
    """x (..., N) with the pairs (x_{2i}, x_{2i+1}) turned by the angle of cos, sin (..., S), S <= N / 2."""
    pairs = x.unflatten(-1, (-1, 2))  # (..., N/2, 2)
    pad = pairs.shape[-2] - cos.shape[-1]
    cos, sin = F.pad(cos, (0, pad), value=1.0), F.pad(sin, (0, pad), value=0.0)
    x0, x1 = pairs[..., 0], pairs[..., 1]
    return torch.stack((x0 * cos - x1 * sin, x0 * sin + x1 * cos), dim=-1).flatten(-2)


def mamba3_siso(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False):
    """q, k (B, T, G, N), G divides H; v, z (B, T, H, P); adt, dt, trap (B, T, H); q_bias, k_bias (H, N);
    angles (B, T, H, S); D (H,). -> y (B, T, H, P) [, state (phi, h, k~, v) as in the module docstring]."""
    batch, T, H, P = v.shape
    q, k = (M.repeat_interleave(H // M.shape[2], dim=2) for M in (q, k))  # (B, T, H, N)
    N, S = q.shape[-1], angles.shape[-1]
    if initial_state is None:
        phi, h = v.new_zeros(batch, H, S), v.new_zeros(batch, H, P, N)
        k_prev, v_prev = v.new_zeros(batch, H, N), v.new_zeros(batch, H, P)
    else:
        phi, h, k_prev, v_prev = initial_state
    theta = torch.tanh(angles) * math.pi
    lam = torch.sigmoid(trap)
    ys = []
    for t in range(T):
        phi = phi + theta[:, t] * dt[:, t, :, None]
        phi = phi - 2 * math.pi * torch.floor(phi / (2 * math.pi))
        cos, sin = torch.cos(phi), torch.sin(phi)
        q_t, k_t = rotate(q[:, t] + q_bias, cos, sin), rotate(k[:, t] + k_bias, cos, sin)  # (B, H, N)
        alpha = torch.exp(adt[:, t])[..., None, None]  # (B, H, 1, 1)
        beta = (1 - lam[:, t]) * dt[:, t]
        gamma = lam[:, t] * dt[:, t]
        h = alpha * (h + beta[..., None, None] * v_prev[..., None] * k_prev[..., None, :]) \
            + gamma[..., None, None] * v[:, t, ..., None] * k_t[..., None, :]
        ys.append((h * q_t[..., None, :]).sum(-1))
        k_prev, v_prev = k_t, v[:, t]
    y = torch.stack(ys, dim=1)
    if D is not None:
        y = y + D[:, None] * v
    if z is not None:
        y = y * F.silu(z)
    return (y, (phi, h, k_prev, v_prev)) if output_final_state else y
