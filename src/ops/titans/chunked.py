"""Titans' neural memory chunk by chunk: the same computation as reference.py, one step of matrix
products a chunk.

In a chunk (rows t, s, i of its m tokens, from the state (M, S) at its start; the gradients at
M0, so u_s = grad_M l(M0; k_s, v_s) = k_s^T g_s with one layer-norm backward for the chunk),
unrolling S_t = eta_t S_{t-1} - theta_t u_t and M_t = (1 - alpha_t) M_{t-1} + S_t gives

    S_t = m_t S - sum_{s <= t} N_ts u_s,            m_t = prod_{r <= t} eta_r,  N_ts = theta_s prod_{s < r <= t} eta_r
    M_t = b_t M + f_t S - sum_{s <= t} (P N)_ts u_s,  b_t = prod_{r <= t} (1 - alpha_r),  P_ti = b_t / b_i (i <= t),
                                                      f = P m
    z_t = q_t M_t = [b_t q_t, f_t q_t] [M; S] - sum_s (P N)_ts (q_t . k_s) g_s

(P N is fla's G, f its f). P and N come from cumulative sums of the log gates within the chunk,
exponentiated only where t >= i (no overflow). With the state stacked as [M; S] (2D, D), a chunk is
four products (k M0 for g, two for z, one for the state) and a 2 x 2 mix:

    z = [b q, f q] [M; S] - A g,    A = (P N) * (q k^T)
    [M; S] <- [[b_m, f_m], [0, m_m]] [M; S] - [(P N)_m k; N_m k]^T g

Chunk boundaries as reference.py: the rest of the current chunk, whole chunks, a partial last one;
M0 <- M at each chunk's end. The gate factors and A, free of the state, are computed for all whole
chunks in one batched pass; the loop scales q and k by them a chunk at a time ((B H, m, D) tensors,
where the whole sequence's would be large temporaries).
"""

import torch

from src.ops.ttt.chunked import ln_grad


def _decays(log_gate):
    """(..., m) log gates -> (..., m, m): exp(sum_{i < r <= t} log_gate_r) for i <= t, else 0."""
    c = log_gate.cumsum(-1)
    diff = c[..., :, None] - c[..., None, :]
    m = c.shape[-1]
    lower = torch.ones(m, m, dtype=torch.bool, device=c.device).tril()
    return diff.masked_fill(~lower, -float("inf")).exp()


def gate_coefficients(theta, log_decay, log_momentum):
    """The gates' factors of chunks of m tokens, gates (..., m): [b, f] (..., m, 2, 1), 2 P N (..., m, m),
    the rows [(P N)_m, N_m] (..., m, 2, 1) and the mix (..., 2, 2). The 2 is the squared loss's, so that
    g (ln_grad) is half the gradient. The C loop (cpu.py) takes them as they are."""
    P = _decays(log_decay)  # b_t / b_i
    N = 2 * _decays(log_momentum) * theta[..., None, :]  # 2 theta_s prod eta
    mom = log_momentum.cumsum(-1).exp()[..., None]  # m_t (..., m, 1)
    PN = P @ N
    dec = log_decay.cumsum(-1).exp()[..., None]  # b_t
    bf = torch.stack((dec, P @ mom), -2)  # (..., m, 2, 1)
    last = torch.stack((PN[..., -1, :], N[..., -1, :]), -1)[..., None]  # (..., m, 2, 1)
    m_last = mom[..., -1, :]  # (..., 1)
    mix = torch.stack((bf[..., -1, :, 0], torch.cat((torch.zeros_like(m_last), m_last), -1)), -2)  # [[b, f], [0, m]]
    return bf, PN, last, mix


def _coefficients(q, k, theta, log_decay, log_momentum):
    """gate_coefficients with 2 P N replaced by A = 2 (P N) * (q k^T) (..., m, m), for chunks q, k (..., m, D)."""
    bf, PN, last, mix = gate_coefficients(theta, log_decay, log_momentum)
    return bf, PN * (q @ k.transpose(-1, -2)), last, mix


def _chunk(MS, M0, q, k, kv, coefficients, w, bw, w2, eps):
    """One chunk (or the part of one), q, k, kv = k - v (B H, m, D), from the stacked state MS (B H, 2D, D) at
    its start, every gradient at M0: z and the state at its end."""
    bf, A, last, mix = coefficients
    BH, m, D = q.shape
    g = ln_grad(torch.bmm(k, M0), torch.addcmul(bw, kv, w), w2, eps)  # (B H, m, D)
    z = torch.baddbmm(torch.bmm((bf * q[:, :, None]).view(BH, m, 2 * D), MS), A, g, alpha=-1)
    mixed = torch.bmm(mix, MS.view(BH, 2, D * D)).view(BH, 2 * D, D)
    return z, torch.baddbmm(mixed, (last * k[:, :, None]).view(BH, m, 2 * D).transpose(1, 2), g, alpha=-1)


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """See reference.titans."""
    B, T, H, D = q.shape
    q, k, kv = (x.transpose(1, 2).reshape(B * H, T, D) for x in (q, k, k - v))  # (B H, T, D), contiguous
    gates = tuple(x.transpose(1, 2).reshape(B * H, T) for x in (theta, log_decay, log_momentum))
    w, b = (x.expand(B, H, D).reshape(B * H, 1, D) for x in (w, b))
    bw, w2 = b * w, w.square()  # the layer norm's c = (b - target) w = b w + (k - v) w
    M, S, M0 = (x.reshape(B * H, D, D) for x in state)
    MS = torch.cat((M, S), 1)  # (B H, 2D, D)
    K, out = chunk_size, []

    def part(start, end):  # the rest of a chunk, or a partial last one: its own coefficients
        nonlocal MS
        p = slice(start, end)
        z, MS = _chunk(MS, M0, q[:, p], k[:, p], kv[:, p], _coefficients(q[:, p], k[:, p], *(x[:, p] for x in gates)),
                       w, bw, w2, eps)
        out.append(z)

    start = min(K - offset, T) if offset else 0
    if offset:
        part(0, start)
        offset += start
        if offset == K:
            M0, offset = MS[:, :D], 0
    n = (T - start) // K if offset == 0 else 0  # whole chunks
    if n:
        qc, kc, kvc = (x[:, start:start + n * K].unflatten(1, (n, K)) for x in (q, k, kv))  # (B H, n, K, D)
        coefficients = _coefficients(qc, kc, *(x[:, start:start + n * K].unflatten(1, (n, K)) for x in gates))
        # unbind, not [:, i]: the backward of n selects would write n zero tensors of the whole size
        for qi, ki, kvi, *ci in zip(qc.unbind(1), kc.unbind(1), kvc.unbind(1), *(x.unbind(1) for x in coefficients)):
            z, MS = _chunk(MS, M0, qi, ki, kvi, ci, w, bw, w2, eps)
            out.append(z)
            M0 = MS[:, :D]
        start += n * K
    if start < T:
        part(start, T)
        offset += T - start
    z = torch.cat(out, dim=1).unflatten(0, (B, H)).transpose(1, 2)  # (B, T, H, D)
    return z, tuple(x.unflatten(0, (B, H)) for x in (MS[:, :D], MS[:, D:], M0)), offset
