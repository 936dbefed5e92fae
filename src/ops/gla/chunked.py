"""Chunked gated linear attention in torch, for every device (the recurrence: reference.py).

Split T into chunks of C positions; b_i = sum_{s <= i} g_s is the log decay from the chunk's
start (per key, non-increasing). With S_0 the state at the chunk's start, inside the chunk
    o_i = (scale q_i * exp(b_i))^T S_0 + sum_{j <= i} [sum_k q_ik k_jk exp(b_ik - b_jk)] v_j
    S_C = diag(exp(b_C)) S_0 + sum_j (k_j * exp(b_C - b_j)) v_j^T.
Every exponent here is <= 0, so nothing overflows, also for g = -inf (a reset: g is floored
at a value whose exp is exactly 0 in the working dtype, -1e4 in float64, -200 in float32).
The in-chunk weights M_ij = sum_k x_ik y_jk exp(bx_ik - by_jk) are built by halving
(`decayed_scores`): in each diagonal block of s positions, the rows of its second half against
the columns of its first half are a matmul through the last position r of the first half,
    M_ij = sum_k (x_ik exp(bx_ik - b_rk)) (y_jk exp(b_rk - by_jk)),     both exponents <= 0,
for s = C, C/2, ..., 2 (all blocks of one size at once); the diagonal is x_i . y_i. The
cumulative decays are in float32 (float64 for float64 inputs): a difference b_i - b_j inside a
chunk is off by about eps |b_i|, so a float32 weight is off by ~1e-5 relative after a floored
reset in the chunk. The chunk states are passed on by a loop over the T / C chunks.
u (RWKV-6): the rows use b_{i-1} (the state before step i) and the diagonal is q_i . (u * k_i).
Signed decays (`negative`, d_s = -exp(g_s) where true): with sigma_i = prod_{s <= i} sign(d_s)
from the chunk's start (+-1, its own inverse), the decay from j to i is
    prod_{j < s <= i} d_s = sigma_i sigma_j exp(b_i - b_j),
so the path above runs unchanged on q_i sigma_i (sigma_{i-1} with u), k_j sigma_j, and the
chunk's decay sigma_C exp(b_C) with k_j sigma_C sigma_j in its state update: the magnitudes stay
in log space and the signs are exact multiplications. Without `negative` none of this runs.
"""

import torch
import torch.nn.functional as F


def decay_dtype(dtype):
    """The dtype of the cumulative log decays: float64 for float64 inputs, else float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def floor(dtype):
    """Log decays below this are the same decay, 0: exp(floor) == 0 in `dtype` (float32 or float64)."""
    return -1e4 if dtype == torch.float64 else -200.0


def chunks(x, C):
    """(B, T, H, ...) -> (B, H, N, C, ...), T padded with zeros to N C; a view of x if C divides T
    (F.pad copies even when it pads nothing)."""
    if x.shape[1] % C:
        x = F.pad(x, (0, 0) * (x.dim() - 2) + (0, -x.shape[1] % C))
    x = x.unflatten(1, (-1, C))  # (B, N, C, H, ...)
    return x.movedim(3, 1)


def unchunk(x, T):
    """(B, H, N, C, V) -> (B, T, H, V)."""
    return x.flatten(2, 3).transpose(1, 2)[:, :T]


def chunk_size(T, C):
    """The chunk length: C, or the power of two >= T if T is shorter (halving needs powers of two)."""
    return min(C, 1 << max(T - 1, 0).bit_length())


def log_decay(g, q, C):
    """Cumulative log decays from each chunk's start (B, H, N, C, K or 1), in decay_dtype(q.dtype);
    g (B, T, H, K), (B, T, H) or None, padded with 0 (no decay) after the end."""
    dtype = decay_dtype(q.dtype)
    if g is None:
        return q.new_zeros(q.shape[0], q.shape[2], -(-q.shape[1] // C), C, 1, dtype=dtype)
    g = g.to(dtype).clamp(min=floor(dtype))
    return chunks(g if g.dim() == 4 else g[..., None], C).cumsum(-2)


def signs(negative, C, dtype):
    """sigma (B, H, N, C, K or 1) in `dtype`: the product of the decays' signs from each chunk's
    start, (-1)^(the number of negative decays so far); negative (B, T, H, K) or (B, T, H) bool,
    padded with False (positive) after the end."""
    n = chunks(negative if negative.dim() == 4 else negative[..., None], C).to(torch.int32).cumsum(-2)
    return (1 - 2 * (n % 2)).to(dtype)


def decayed_scores(x, y, bx, by, diagonal):
    """M[..., i, j] = sum_k x_ik y_jk exp(bx_ik - by_jk) for j < i (and j = i if `diagonal`), else 0.
    x, y (..., n, K), n a power of two; bx, by (..., n, K or 1), with bx_i <= by_j for j < i
    (by non-increasing, bx_i <= by_{i-1}), and bx_i = by_i where `diagonal`. -> (..., n, n)."""
    n = x.shape[-2]
    M = x.new_zeros(*x.shape[:-1], n)
    if diagonal:
        M.diagonal(dim1=-2, dim2=-1).copy_((x * y).sum(-1))
    s = n
    while s > 1:  # blocks of s positions on the diagonal: rows in the second half, columns in the first
        h, nb = s // 2, n // s
        x2, y2, bx2, by2 = (t.unflatten(-2, (nb, 2, h)) for t in (x, y, bx, by))  # (..., nb, 2, h, K)
        ref = by2[..., 0, -1:, :]  # the last position of each first half (..., nb, 1, K)
        rows = x2[..., 1, :, :] * torch.exp(bx2[..., 1, :, :] - ref)
        cols = y2[..., 0, :, :] * torch.exp(ref - by2[..., 0, :, :])
        blocks = M.unflatten(-1, (nb, 2, h)).unflatten(-4, (nb, 2, h))  # (..., nb, 2, h, nb, 2, h)
        blocks.diagonal(dim1=-6, dim2=-3)[..., 1, :, 0, :, :].copy_((rows @ cols.transpose(-1, -2)).movedim(-3, -1))
        s = h
    return M


def pass_states(S, decay, dS):
    """The state at each chunk's start, S_{n+1} = decay_n * S_n + dS_n. S (B, H, K, V);
    decay (B, H, N, K or 1, 1); dS (B, H, N, K, V). -> starts (B, H, N, K, V), final state. The chunks
    are taken by unbind, not [:, :, n]: the backward of N selects would write N zero tensors of the
    whole (B, H, N, ...) size (O(N^2) memory traffic), unbind's stacks the N gradients once."""
    starts = []
    for dn, dSn in zip(decay.unbind(2), dS.unbind(2)):
        starts.append(S)
        S = dn * S + dSn
    return torch.stack(starts, dim=2), S


def gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None, chunk=64):
    """Same arguments and result as reference.gla."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    C = chunk_size(T, chunk)
    qc, kc, vc = (chunks(t, C).contiguous() for t in (q * scale, k, v))  # (B, H, N, C, K or V)
    b = log_decay(g, q, C)  # (B, H, N, C, K or 1)
    bq = b if u is None else F.pad(b[..., :-1, :], (0, 0, 1, 0))  # u: rows read the state before step i
    qd, kd = qc, kc  # q, k times the signs of their decays
    if negative is not None:
        sigma = signs(negative, C, q.dtype)  # (B, H, N, C, K or 1)
        qd, kd = qc * (sigma if u is None else F.pad(sigma[..., :-1, :], (0, 0, 1, 0), value=1.0)), kc * sigma
    A = decayed_scores(qd, kd, bq, b, diagonal=u is None)  # (B, H, N, C, C)
    if u is not None:
        A = A + torch.diag_embed((qc * kc * u[:, None, None, :]).sum(-1))
    last = b[..., -1:, :]  # (B, H, N, 1, K or 1)
    kS = kc * torch.exp(last - b).to(q.dtype)  # k in the chunk's state update
    if negative is not None:
        kS = kS * (sigma * sigma[..., -1:, :])
    dS = kS.transpose(-1, -2) @ vc  # (B, H, N, K, V)
    S0 = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    decay = torch.exp(last).to(q.dtype)  # the chunk's decay
    if negative is not None:
        decay = decay * sigma[..., -1:, :]
    starts, S = pass_states(S0, decay.transpose(-1, -2), dS)
    o = A @ vc + (qd * torch.exp(bq).to(q.dtype)) @ starts
    return unchunk(o, T), (S if output_final_state else None)
