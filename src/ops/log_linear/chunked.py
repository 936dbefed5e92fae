"""Log-linear attention as one inner linear recurrence per level, on the gla and delta_rule ops
(the definition and the Fenwick states: reference.py).

The bucket at level l >= 1 of a query t is the first half of the aligned block of 2^l positions
that holds t, read only when t sits in the block's second half (bit l - 1 of t). So level l's term
is the inner model run on each block of 2^l positions on its own (the state zero at the block's
start), with
    writes only in the first half:  k_s -> 0 (Mamba-2), v_s -> 0 (Gated DeltaNet: the step then
                                    only erases, S <- P_s S, as every bucket's state does);
    reads only in the second half:  q_t -> lambda_t[l] q_t there, 0 in the first half,
and the sequence cut into blocks is a batch of short sequences, so no reset needs a -inf decay.
Level 0 is the token's own write: lambda_t[0] (q_t . k_t) v_t (times beta_t for Gated DeltaNet).
Levels run: 1 .. bit_length(t1 - 1) for the outputs (t1 = t0 + T), and bit_length(t1) for the
final state when t1 is a power of two (the whole prefix, one bucket). From a state at position t0
the sequence is padded in front to the start of its block with inputs that do nothing (q = k = v
= 0, g = 0, beta = 0), and the first block starts from the state the level's recurrence has at
t0: the bucket at level l where bit l - 1 of t0 is set, else the sum of the buckets below l (the
first half so far). The final state of the last block is the bucket at level l of t1 where bit
l - 1 of t1 is set. Cost: one inner pass over the sequence per level, O(T log T) in all.
`inner` is the backend of the gla / delta_rule calls (auto, torch, cpu, triton).
"""

import torch
import torch.nn.functional as F

from src.ops.delta_rule import delta_rule
from src.ops.gla import gla


def log_linear_attn(q, k, v, g, level_scales, initial_state=None, output_final_state=False, inner="auto"):
    """Same arguments and result as reference.log_linear_attn."""
    return log_linear(q, k, v, None, g, level_scales, initial_state, output_final_state, inner)


def log_linear_delta_rule(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False,
                          inner="auto"):
    """Same arguments and result as reference.log_linear_delta_rule."""
    return log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner)


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


def log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner="auto"):
    """Gated DeltaNet inside where beta is given, Mamba-2 where it is None."""
    q, k = (x.repeat_interleave(v.shape[2] // x.shape[2], dim=2) for x in (q, k))  # groups -> heads
    B, T, H, K = q.shape
    V = v.shape[-1]
    levels, t0 = (q.new_zeros(B, H, 0, K, V), 0) if initial_state is None else initial_state
    levels = levels.to(q.dtype)
    t1 = t0 + T
    n = t1.bit_length() if output_final_state else (t1 - 1).bit_length()
    starts = _start_states(levels, t0, n)
    lam = level_scales.to(q.dtype)
    own = (q * k).sum(-1) * lam[..., 0]  # (B, T, H): level 0
    o = (own if beta is None else own * beta)[..., None] * v
    finals = []
    for l in range(1, n + 1):
        size, front = 1 << l, t0 % (1 << l)
        half = torch.arange(size, device=q.device) >= size // 2  # the reading half of a block
        read = lam[..., l] if l < lam.shape[-1] else torch.zeros_like(lam[..., 0])  # (B, T, H)
        ql = _blocks(q * read[..., None], front, size) * half[:, None, None]
        kl, vl, gl = (_blocks(x, front, size) for x in (k, v, g))
        S0 = torch.zeros(B, kl.shape[0] // B, H, K, V, dtype=q.dtype, device=q.device)
        S0[:, 0] = starts[l - 1]
        if beta is None:
            ol, Sl = gla(ql, kl * ~half[:, None, None], vl, gl, None, 1.0, S0.flatten(0, 1), True, backend=inner)
        else:
            bl = _blocks(beta, front, size)
            ol, Sl = delta_rule(ql, kl, vl * ~half[:, None, None], bl, gl, 1.0, S0.flatten(0, 1), True, backend=inner)
        o = o + ol.reshape(B, -1, H, V)[:, front : front + T]
        finals.append(Sl.unflatten(0, (B, -1))[:, -1] * ((t1 >> (l - 1)) & 1))
    if not output_final_state:
        return o, None
    return o, (torch.stack(finals, dim=2) if finals else levels[:, :, :0], t1)
