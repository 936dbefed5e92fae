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
current chunk, whole chunks, a partial last one; M0 <- M at each chunk's end. The coefficients
(P N (q k^T), b, f, the last rows) are free of the state, so the whole chunks get theirs in one
batched pass; the loop over chunks does only the products with M, S and g.
"""

import torch

from src.ops.ttt.reference import ln_l2_grad


def _decays(log_gate):
    """(..., m) log gates -> (..., m, m): exp(sum_{i < r <= t} log_gate_r) for i <= t, else 0."""
    c = log_gate.cumsum(-1)
    diff = c[..., :, None] - c[..., None, :]
    m = c.shape[-1]
    lower = torch.ones(m, m, dtype=torch.bool, device=c.device).tril()
    return diff.masked_fill(~lower, -float("inf")).exp()


def _coefficients(q, k, theta, log_decay, log_momentum):
    """The state-free factors of chunks of m tokens, q, k (..., m, D), gates (..., m): A = 2 (P N) *
    (q k^T) (..., m, m); b, f (..., m, 1); the last rows 2 (P N)_m k, 2 N_m k (..., m, D) and m_m
    (..., 1, 1). The 2 is the squared loss's, so that g below is half the gradient."""
    P = _decays(log_decay)  # b_t / b_i
    N = 2 * _decays(log_momentum) * theta[..., None, :]  # 2 theta_s prod eta
    mom = log_momentum.cumsum(-1).exp()[..., None]  # m_t
    PN = P @ N
    dec = log_decay.cumsum(-1).exp()[..., None]  # b_t
    last = PN[..., -1, :, None] * k, N[..., -1, :, None] * k, mom[..., -1:, :]
    return PN * (q @ k.transpose(-1, -2)), dec, P @ mom, *last


def _chunk(M, S, M0, q, k, target, coefficients, w, b, eps):
    """One chunk (or the part of one), (B, H, m, D), from the state (M, S) at its start, every gradient
    at M0: z and the state at its end."""
    A, dec, f, PNk, Nk, mom = coefficients
    g = ln_l2_grad(k @ M0, target, w, b, eps)  # half of d l / d(k M0)
    z = dec * (q @ M) + f * (q @ S) - A @ g
    M_end = dec[..., -1:, :] * M + f[..., -1:, :] * S - PNk.transpose(-1, -2) @ g
    return z, M_end, mom * S - Nk.transpose(-1, -2) @ g


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """See reference.titans."""
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, D)
    gates = tuple(x.transpose(1, 2) for x in (theta, log_decay, log_momentum))  # (B, H, T)
    w, b = w[:, None], b[:, None]
    M, S, M0 = state
    T, K, out = q.shape[2], chunk_size, []

    def part(start, end):  # the rest of a chunk, or a partial last one: its own coefficients
        nonlocal M, S
        p = slice(start, end)
        coefficients = _coefficients(q[:, :, p], k[:, :, p], *(x[:, :, p] for x in gates))
        z, M, S = _chunk(M, S, M0, q[:, :, p], k[:, :, p], v[:, :, p] - k[:, :, p], coefficients, w, b, eps)
        out.append(z)

    start = min(K - offset, T) if offset else 0
    if offset:
        part(0, start)
        offset += start
        if offset == K:
            M0, offset = M, 0
    n = (T - start) // K if offset == 0 else 0  # whole chunks
    if n:
        chunks = slice(start, start + n * K)
        qc, kc, vc = (x[:, :, chunks].unflatten(2, (n, K)) for x in (q, k, v))  # (B, H, n, K, D)
        coefficients = _coefficients(qc, kc, *(x[:, :, chunks].unflatten(2, (n, K)) for x in gates))
        target = vc - kc
        for i in range(n):
            z, M, S = _chunk(M, S, M0, qc[:, :, i], kc[:, :, i], target[:, :, i], [c[:, :, i] for c in coefficients],
                             w, b, eps)
            out.append(z)
            M0 = M
        start += n * K
    if start < T:
        part(start, T)
        offset += T - start
    return torch.cat(out, dim=2).transpose(1, 2), (M, S, M0), offset
