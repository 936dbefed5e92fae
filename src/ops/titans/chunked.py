"""Titans' neural memory chunk by chunk: the same computation as reference.py, one step of matrix
products a chunk.

In a chunk (rows t, s, i of its m tokens, from the state (M, S) at its start; the gradients at
M0, so u_s = grad_M l(M0; k_s, v_s) = k_s^T g_s with one layer-norm backward for the chunk),
unrolling S_t = eta_t S_{t-1} - theta_t u_t and M_t = (1 - alpha_t) M_{t-1} + S_t gives

    S_t = m_t S - sum_{s <= t} N_ts u_s,            m_t = prod_{r <= t} eta_r,  N_ts = theta_s prod_{s < r <= t} eta_r
    M_t = b_t M + f_t S - sum_{s <= t} (P N)_ts u_s,  b_t = prod_{r <= t} (1 - alpha_r),  P_ti = b_t / b_i (i <= t),
                                                      f = P m
    z_t = q_t M_t = b_t q_t M + f_t q_t S - sum_s (P N)_ts (q_t . k_s) g_s

(P N is fla's G, f its f). P and N come from cumulative sums of the log gates within the chunk,
exponentiated only where t >= i (no overflow). Chunk boundaries as reference.py: the rest of the
current chunk, whole chunks, a partial last one; M0 <- M at each chunk's end.
"""

import torch

from src.ops.ttt.reference import ln_l2_grad


def _decays(log_gate):
    """(B, H, m) log gates -> (B, H, m, m): exp(sum_{i < r <= t} log_gate_r) for i <= t, else 0."""
    c = log_gate.cumsum(-1)
    diff = c[..., :, None] - c[..., None, :]
    m = c.shape[-1]
    lower = torch.ones(m, m, dtype=torch.bool, device=c.device).tril()
    return diff.masked_fill(~lower, -float("inf")).exp()


def _chunk(M, S, M0, q, k, v, theta, log_decay, log_momentum, w, b, eps):
    g = 2 * ln_l2_grad(k @ M0, v - k, w[:, None], b[:, None], eps)  # (B, H, m, D)
    P = _decays(log_decay)  # b_t / b_i
    N = _decays(log_momentum) * theta[..., None, :]  # theta_s prod eta
    mom = log_momentum.cumsum(-1).exp()  # m_t
    PN = P @ N
    f = (P @ mom[..., None])[..., 0]
    dec = log_decay.cumsum(-1).exp()  # b_t
    z = dec[..., None] * (q @ M) + f[..., None] * (q @ S) - (PN * (q @ k.transpose(-1, -2))) @ g
    M_end = dec[..., -1, None, None] * M + f[..., -1, None, None] * S - (PN[..., -1, :, None] * k).transpose(-1, -2) @ g
    S_end = mom[..., -1, None, None] * S - (N[..., -1, :, None] * k).transpose(-1, -2) @ g
    return z, M_end, S_end


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """See reference.titans."""
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, D)
    theta, log_decay, log_momentum = (x.transpose(1, 2) for x in (theta, log_decay, log_momentum))  # (B, H, T)
    M, S, M0 = state
    T, out, start = q.shape[2], [], 0
    while start < T:
        end = min(start + chunk_size - offset, T)
        p = slice(start, end)
        z, M, S = _chunk(M, S, M0, q[:, :, p], k[:, :, p], v[:, :, p], theta[:, :, p], log_decay[:, :, p],
                         log_momentum[:, :, p], w, b, eps)
        out.append(z)
        offset += end - start
        if offset == chunk_size:
            M0, offset = M, 0
        start = end
    return torch.cat(out, dim=2).transpose(1, 2), (M, S, M0), offset
