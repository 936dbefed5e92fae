"""The linear scan in blocked form for CPU (and any device): no Python loop over every time step.

Linear scan h_t = a_t h_{t-1} + b_t over L = n T steps, cut into n chunks of T (T ~ sqrt L):
  1. local scans: every chunk from a zero state, all chunks at once, T vector steps, keeping
     only each chunk's last state E[c] = H[c, T-1] and product P[c] = prod_t a[c, t]
         H[c, t] = a[c, t] H[c, t-1] + b[c, t]
  2. chunk carries: the state entering chunk c, n small steps on (rows,)
         s_{c+1} = P[c] s_c + E[c]
  3. the local scans again, from s_c: h[c, t] = a[c, t] h[c, t-1] + b[c, t], h[c, -1] = s_c
So 3 sqrt(L) Python iterations instead of L, only products of a (no division, no logarithm:
exact for a = 0, negative or complex a), and five passes over the (L, rows) arrays (steps 1
and 3 read a and b, step 3 writes h; the (n, rows) buffers stay in cache). The work is done
time-major, (L, rows), so each vector step touches contiguous rows (time-last inputs are
transposed once). On CPU tensors, cpu.py's C loop does this faster; this path serves every
device. The backward is the same scan run backwards (`_LinearScan`): with g_t = dLoss/dh_t + conj(a_{t+1}) g_{t+1},
    dLoss/db_t = g_t,   dLoss/da_t = g_t conj(h_{t-1}),   dLoss/dh0 = conj(a_0) g_0.
"""

import math

import torch
import torch.nn.functional as F


def chunk_length(L):
    """The chunk length of the blocked scans over L steps: about sqrt(L)."""
    return max(1, math.isqrt(L))


@torch.no_grad()
def _scan(a, b, h0, reverse):
    """a, b: (L, M) time-major and contiguous, one dtype; h0: (M,) or None -> h: (L, M), written
    over b (blocked, module doc; callers pass a buffer of their own: writing in place spares a
    fresh (L, M) array, whose page faults cost as much as the scan here). Time-major so that
    every vector step reads and writes contiguous rows of M values."""
    L, M = b.shape
    T = chunk_length(L)
    pad = -L % T
    out = b
    if pad:  # inert: after the end (or before the start, in reverse)
        where = (0, 0, pad, 0) if reverse else (0, 0, 0, pad)
        a, b = F.pad(a, where), F.pad(b, where)
    n = (L + pad) // T
    A, Bv = a.reshape(n, T, M), b.reshape(n, T, M)
    order = range(T - 1, -1, -1) if reverse else range(T)
    end, spare, prod = Bv[:, order[0]].clone(), torch.empty_like(Bv[:, 0]), A[:, order[0]].clone()
    for t in order[1:]:  # 1. every chunk's last local state and product of a, all chunks at once
        torch.addcmul(Bv[:, t], A[:, t], end, out=spare)
        end, spare = spare, end
        prod.mul_(A[:, t])
    carries = torch.empty_like(end)  # (n, M): the state entering each chunk
    s = torch.zeros_like(end[0]) if h0 is None else h0
    for c in range(n - 1, -1, -1) if reverse else range(n):  # 2. carries
        carries[c] = s
        s = torch.addcmul(end[c], prod[c], s)
    state = carries
    for t in order:  # 3. the local scans again, from the carries, over b
        torch.addcmul(Bv[:, t], A[:, t], state, out=Bv[:, t])
        state = Bv[:, t]
    if pad:
        out.copy_(Bv.reshape(n * T, M)[pad:] if reverse else Bv.reshape(n * T, M)[:L])
    return out


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse):  # (L, M) any strides, (L, M) any strides, (M,) or None
        a = a.contiguous()
        h = _scan(a, b.clone(memory_format=torch.contiguous_format), h0, reverse)  # one copy of b
        ctx.save_for_backward(a, h, h0)
        ctx.reverse = reverse
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        reverse = ctx.reverse
        # the gradient flows against the scan: g_t = grad_t + conj(a_next) g_next
        a_next = (F.pad(a[:-1], (0, 0, 1, 0)) if reverse else F.pad(a[1:], (0, 0, 0, 1))).conj()
        g = _scan(a_next, grad_h.clone(memory_format=torch.contiguous_format), None, not reverse)  # (L, M)
        grad_a = grad_h0 = None
        if ctx.needs_input_grad[0]:
            start = torch.zeros_like(h[:1]) if h0 is None else h0[None]
            h_prev = torch.cat((h[1:], start)) if reverse else torch.cat((start, h[:-1]))
            grad_a = g * h_prev.conj()
        if h0 is not None and ctx.needs_input_grad[2]:
            first = -1 if reverse else 0
            grad_h0 = a[first].conj() * g[first]
        return grad_a, g, grad_h0, None


def linear_scan_time_major(a, b, h0=None, reverse=False):
    """h_t = a_t * h_{t-1} + b_t over the FIRST dim: a, b (L, ...) broadcast, h0 (...) or None.
    The layout the blocked scan works in: use it where the time-major tensors are made anyway."""
    dtype = torch.promote_types(a.dtype, b.dtype)
    if h0 is not None:
        dtype = torch.promote_types(dtype, h0.dtype)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    shape = b.shape
    if shape[0] == 0:
        return b.clone()
    h0 = None if h0 is None else h0.to(dtype).expand(shape[1:]).reshape(-1).contiguous()
    h = _LinearScan.apply(a.reshape(shape[0], -1), b.reshape(shape[0], -1), h0, reverse)
    return h.reshape(shape)


def linear_scan(a, b, h0=None, reverse=False):
    """h_t = a_t * h_{t-1} + b_t over the last dim; a, b broadcast; h0 (...) or None (zeros).
    reverse: h_t = a_t * h_{t+1} + b_t from the end, h0 the state after the end."""
    a, b = torch.broadcast_tensors(a, b)
    return linear_scan_time_major(a.movedim(-1, 0), b.movedim(-1, 0), h0, reverse).movedim(0, -1)
