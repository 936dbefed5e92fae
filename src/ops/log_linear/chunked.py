"""Log-linear attention in torch: the levels as inner gla / delta_rule passes, and, with Mamba-2
inside, the levels within a chunk as one dense weighting (the definition and the Fenwick states:
reference.py).

Per level (`log_linear`, both inner models). The bucket at level l >= 1 of a query t is the first
half of the aligned block of 2^l positions that holds t, read only when t sits in the block's
second half (bit l - 1 of t). So level l's term is the inner model run on each block of 2^l
positions on its own (the state zero at the block's start), with
    writes only in the first half:  k_s -> 0 (Mamba-2), v_s -> 0 (Gated DeltaNet: the step then
                                    only erases, S <- P_s S, as every bucket's state does);
    reads only in the second half:  q_t -> lambda_t[l] q_t there, 0 in the first half,
and the sequence cut into blocks is a batch of short sequences (no reset needs a -inf decay).
Level 0 is the token's own write: lambda_t[0] (q_t . k_t) v_t (times beta_t for Gated DeltaNet).
Levels run: 1 .. bit_length(t1 - 1) for the outputs (t1 = t0 + T), and bit_length(t1) for the
final state when t1 is a power of two (the whole prefix, one bucket). From a state at position t0
the sequence is padded in front to the start of its block with inputs that do nothing (q = k = v
= 0, g = 0, beta = 0), and the first block starts from the state the level's recurrence has at
t0: the bucket at level l where bit l - 1 of t0 is set, else the sum of the buckets below l (the
first half so far). The final state of the last block is the bucket at level l of t1 where bit
l - 1 of t1 is set. One inner pass over the sequence per level: O(T K V log T).

Mamba-2 inside (`log_linear_attn`), where A_ts = exp(b_t - b_s) (q_t . k_s) with b the cumulative
log decay: in chunks of C positions aligned to multiples of C (padded in front from t0), a pair
in one chunk has level bit_length(i xor j) <= log2 C (i, j the positions in the chunk), so
    o_intra = ((Q K^T) * exp(b_i - b_j) * lambda_i[bit_length(i xor j)], j <= i) V
per chunk, C^2 (K + V) a chunk; the levels above log2 C hold whole chunks, so the new tokens'
buckets there are sums of the chunks' states (dS_c = sum_j exp(b_end - b_j) k_j v_j^T), built as a
Fenwick tree over the chunks and read by the chunks whose bit of the level is set (_inter); the
buckets of the state at t0 are read directly, bucket l by query t at level max(l, bit_length(t xor
t0)) (a bucket stays whole as the tree merges), decayed by exp(b_t - b_{t0 - 1}); and the final
buckets are sums over their (contiguous) ranges, plus the state's buckets inside them.
O(T C (K + V) + T K V log(T / C)), all in matmuls. `inner` is the backend of the per-level form's
gla / delta_rule calls (auto, torch, cpu, triton); the dense path makes none.
"""

import functools

import torch
import torch.nn.functional as F

from src.ops.delta_rule import delta_rule
from src.ops.gla import gla
from src.ops.gla.chunked import chunks, decay_dtype, unchunk


def _blocks(x, front, size):
    """(B, T, ...) -> (B nb, size, ...): zeros in front and after, cut into blocks of `size`."""
    back = -(front + x.shape[1]) % size
    x = F.pad(x, (0, 0) * (x.dim() - 2) + (front, back))
    return x.reshape(-1, size, *x.shape[2:])


def _start_states(levels, t0, n):
    """The state of level l's recurrence at t0 for l = 1..n: (n, B, H, K, V)."""
    own = F.pad(levels, (0, 0, 0, 0, 0, n - levels.shape[2]))  # n >= bit_length(t0) levels
    below = F.pad(own.cumsum(2), (0, 0, 0, 0, 1, 0))[:, :, :n]  # the sum of the buckets below level l
    bits = torch.tensor([(t0 >> (l - 1)) & 1 for l in range(1, n + 1)], dtype=torch.bool, device=levels.device)
    return torch.where(bits[:, None, None], own, below).movedim(2, 0)


def _level(l, q, k, v, beta, g, lam, start, t0, inner):
    """Level l's term (B, T, H, V) and its recurrence's state after the last token (B, H, K, V),
    from `start` (B, H, K, V) or zeros."""
    B, T, H, K = q.shape
    V = v.shape[-1]
    size, front = 1 << l, t0 % (1 << l)
    half = torch.arange(size, device=q.device) >= size // 2  # the reading half of a block
    read = lam[..., l] if l < lam.shape[-1] else torch.zeros_like(lam[..., 0])  # (B, T, H)
    ql = _blocks(q * read[..., None], front, size) * half[:, None, None]
    kl, vl, gl = (_blocks(x, front, size) for x in (k, v, g))
    S0 = torch.zeros(B, kl.shape[0] // B, H, K, V, dtype=q.dtype, device=q.device)
    if start is not None:
        S0[:, 0] = start
    if beta is None:
        o, S = gla(ql, kl * ~half[:, None, None], vl, gl, None, 1.0, S0.flatten(0, 1), True, backend=inner)
    else:
        bl = _blocks(beta, front, size)
        o, S = delta_rule(ql, kl, vl * ~half[:, None, None], bl, gl, 1.0, S0.flatten(0, 1), True, backend=inner)
    return o.reshape(B, -1, H, V)[:, front : front + T], S.unflatten(0, (B, -1))[:, -1]


def _heads(q, k, v):  # groups -> heads (no copy where each head is its own group)
    return (x if x.shape[2] == v.shape[2] else x.repeat_interleave(v.shape[2] // x.shape[2], dim=2) for x in (q, k))


def log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner="auto"):
    """The per-level form (see the module docstring): Gated DeltaNet inside where beta is given,
    Mamba-2 where it is None. Same arguments and result as reference.py's."""
    q, k = _heads(q, k, v)
    B, T, H, K = q.shape
    levels, t0 = (q.new_zeros(B, H, 0, K, v.shape[-1]), 0) if initial_state is None else initial_state
    t1 = t0 + T
    n = t1.bit_length() if output_final_state else (t1 - 1).bit_length()
    starts = _start_states(levels.to(q.dtype), t0, n)
    lam = level_scales.to(q.dtype)
    own = (q * k).sum(-1) * lam[..., 0]  # (B, T, H): level 0
    o, finals = (own if beta is None else own * beta)[..., None] * v, []
    for l in range(1, n + 1):
        o_l, S_l = _level(l, q, k, v, beta, g, lam, starts[l - 1], t0, inner)
        o = o + o_l
        finals.append(S_l * ((t1 >> (l - 1)) & 1))
    if not output_final_state:
        return o, None
    return o, (torch.stack(finals, dim=2) if finals else levels[:, :, :0].to(q.dtype), t1)


def log_linear_delta_rule(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False,
                          inner="auto"):
    """Same arguments and result as reference.log_linear_delta_rule."""
    return log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner)


def _chunked(x, front, C):
    """(B, T, H, ...) -> (B, H, N, C, ...) contiguous, aligned chunks: `front` zeros in front."""
    return chunks(F.pad(x, (0, 0) * (x.dim() - 2) + (front, 0)) if front else x, C).contiguous()


@functools.lru_cache(maxsize=8)
def _levels_in_chunk(C, device):
    """(C, C): the level bit_length(i xor j) of positions i, j of an aligned chunk (built in Python
    once: ~1 ms a call at C 64, a fifth of the forward at T 512)."""
    return torch.tensor([[(a ^ c).bit_length() for c in range(C)] for a in range(C)], device=device)


def _intra(qc, kc, vc, lc, b):
    """The pairs within aligned chunks of C: (B, H, N, C, V), from the chunked q, k, v, lambda
    (B, H, N, C, ...) and the log decays from each chunk's start b (B, H, N, C)."""
    C, n_levels = qc.shape[3], lc.shape[-1]
    i = torch.arange(C, device=qc.device)
    causal = i[:, None] >= i[None, :]
    decay = torch.exp((b[..., :, None] - b[..., None, :]).masked_fill(~causal, float("-inf"))).to(qc.dtype)
    level = _levels_in_chunk(C, qc.device).clamp(max=n_levels - 1)
    weight = lc.gather(-1, level.expand(*lc.shape[:3], C, C))  # lambda_i[l(i, j)]
    return ((qc @ kc.transpose(-1, -2)) * decay * weight) @ vc


@functools.lru_cache(maxsize=64)
def _reads(N, c0, device):
    """For the chunk levels j = 1 .. bit_length(c0 xor (c0 + N - 1)) of N chunks from absolute chunk
    c0: (the chunks that read a bucket at j, that bucket's index in level j - 1's blocks), as
    index tensors. Chunk a reads at j when bit j - 1 of a is set and the block before its own at
    level j - 1, a >> (j - 1) - 1, holds one of the N chunks (else the bucket is the state's)."""
    plans = []
    for j in range(1, (c0 ^ (c0 + N - 1)).bit_length() + 1):
        first = c0 >> (j - 1)  # level j - 1's first block
        readers = [c for c in range(N) if ((c0 + c) >> (j - 1)) & 1 and (c0 + c) >> (j - 1) > first]
        buckets = [((c0 + c) >> (j - 1)) - 1 - first for c in readers]
        plans.append((torch.tensor(readers, device=device), torch.tensor(buckets, device=device)))
    return plans


def _pairs(S, E, first):
    """Level j - 1's block states -> level j's: blocks of chunks (B, H, n, K, V), each summed to the
    log decay E (B, H, n) at its last chunk, the first starting at block `first`; a missing half (before
    the first chunk or after the last) is zero, its end the other half's."""
    if first % 2:
        S, E = F.pad(S, (0, 0, 0, 0, 1, 0)), torch.cat([E[..., :1], E], -1)
    if S.shape[2] % 2:
        S, E = F.pad(S, (0, 0, 0, 0, 0, 1)), torch.cat([E, E[..., -1:]], -1)
    S, E = S.unflatten(2, (-1, 2)), E.unflatten(-1, (-1, 2))
    S = S[:, :, :, 0] * torch.exp(E[..., 1] - E[..., 0]).to(S.dtype)[..., None, None] + S[:, :, :, 1]
    return S, E[..., 1], first // 2


def _inter(qc, kc, vc, lc, b, c0):
    """The pairs in different aligned chunks (levels log2 C + j, j >= 1): (B, H, N, C, V), chunk 0 the
    absolute chunk c0. A Fenwick tree over chunks: with dS_c = sum_j exp(b_end - b_j) k_j v_j^T a
    chunk's state at its end, a block of 2^j chunks holds its halves' states, the first decayed over
    the second; chunk a reads at level j the state of the block of 2^(j - 1) before its own when bit
    j - 1 of a is set, decayed from that block's end E to the chunk's start, and times
    lambda_t[log2 C + j] exp(b_t) a row. N K V log N for the tree, and each chunk reads one (K, V)
    state per set bit: half the levels on average."""
    N, C = qc.shape[2:4]
    L0 = C.bit_length() - 1
    S = kc.transpose(-1, -2) @ (vc * torch.exp(b[..., -1:] - b).to(qc.dtype)[..., None])  # (B, H, N, K, V)
    E = b[..., -1].cumsum(-1)  # (B, H, N): the log decay from the start to each chunk's end
    start = E - b[..., -1]  # to each chunk's start
    eb = torch.exp(b).to(qc.dtype)  # (B, H, N, C): from the chunk's start
    o = qc.new_zeros(*qc.shape[:-1], vc.shape[-1])  # (B, H, N, C, V)
    plans, first = _reads(N, c0, qc.device), c0
    for j, (readers, buckets) in enumerate(plans, start=1):
        if len(readers):
            x = torch.exp(start.index_select(2, readers) - E.index_select(2, buckets)).to(qc.dtype)  # (B, H, n)
            scale = lc[..., L0 + j].index_select(2, readers) * eb.index_select(2, readers) * x[..., None]
            read = qc.index_select(2, readers) @ S.index_select(2, buckets)  # (B, H, n, C, V)
            o = o.index_add(2, readers, scale[..., None] * read)
        if j < len(plans):
            S, E, first = _pairs(S, E, first)
    return o


def _read_state(q, levels, t0, lam, e):
    """The state's buckets read by every query: (B, T, H, V). e (B, T, H) = exp(b_t - b_{t0 - 1})."""
    T, m, n_levels = q.shape[1], levels.shape[2], lam.shape[-1]
    index = torch.tensor([[max(l, (t ^ t0).bit_length()) for l in range(1, m + 1)] for t in range(t0, t0 + T)],
                         device=q.device).clamp(max=n_levels - 1)  # (T, m)
    weight = lam.gather(-1, index[None, :, None, :].expand(*lam.shape[:3], m)) * e[..., None]  # (B, T, H, m)
    return torch.einsum("bthk,bhlkv,bthl->bthv", q, levels, weight)


def _final(k, v, g, levels, t0):
    """The buckets after the last token: (levels (B, H, bit_length(t1), K, V), t1)."""
    T = k.shape[1]
    t1 = t0 + T
    b = g.to(decay_dtype(k.dtype)).cumsum(1)  # (B, T, H)
    w = torch.exp(b[:, -1:] - b).to(k.dtype)  # decay from s to the end
    whole = torch.exp(b[:, -1]).to(k.dtype)[..., None, None]  # (B, H, 1, 1): from t0 - 1 to the end
    out = []
    for l in range(1, t1.bit_length() + 1):
        lo, hi = t1 >> l << l, t1 >> (l - 1) << (l - 1)  # empty where bit l - 1 of t1 is 0
        s0, s1 = max(lo, t0) - t0, max(hi, t0) - t0
        S = torch.einsum("bthk,bthv->bhkv", k[:, s0:s1] * w[:, s0:s1, :, None], v[:, s0:s1])
        for l0 in range(1, levels.shape[2] + 1):  # the state's buckets inside [lo, hi)
            if lo <= t0 >> l0 << l0 and t0 >> (l0 - 1) << (l0 - 1) <= hi and (t0 >> (l0 - 1)) & 1:
                S = S + whole * levels[:, :, l0 - 1]
        out.append(S)
    return torch.stack(out, dim=2) if out else levels[:, :, :0], t1


def log_linear_attn(q, k, v, g, level_scales, initial_state=None, output_final_state=False, chunk=64):
    """Same arguments and result as reference.log_linear_attn (see the module docstring)."""
    q, k = _heads(q, k, v)
    B, T, H, K = q.shape
    levels, t0 = (q.new_zeros(B, H, 0, K, v.shape[-1]), 0) if initial_state is None else initial_state
    levels = levels.to(q.dtype)
    C = min(chunk, 1 << (T - 1 + t0 % chunk).bit_length())  # a power of two; less for a short sequence
    lam = level_scales.to(q.dtype)
    front = t0 % C  # chunks aligned to multiples of C: padded in front
    qc, kc, vc, lc = (_chunked(x, front, C) for x in (q, k, v, lam))  # (B, H, N, C, ...), once for both
    b = _chunked(g.to(decay_dtype(q.dtype)), front, C).cumsum(-1)  # (B, H, N, C)
    oc = _intra(qc, kc, vc, lc, b)
    if T + front > C:  # the levels above the chunk
        oc = oc + _inter(qc, kc, vc, lc, b, (t0 - front) // C)
    o = unchunk(oc, front + T)[:, front:]
    if levels.shape[2]:
        o = o + _read_state(q, levels, t0, lam, torch.exp(g.to(decay_dtype(q.dtype)).cumsum(1)).to(q.dtype))
    return o, (_final(k, v, g, levels, t0) if output_final_state else None)
