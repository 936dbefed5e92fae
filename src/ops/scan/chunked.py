"""The scans in blocked form for CPU (and any device): no Python loop over every time step.

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
transposed once). On CPU tensors, cpu.py's C loops do this faster; this path serves every
device. The backward is the same
scan run backwards (`_LinearScan`): with g_t = dLoss/dh_t + conj(a_{t+1}) g_{t+1},
    dLoss/db_t = g_t,   dLoss/da_t = g_t conj(h_{t-1}),   dLoss/dh0 = conj(a_0) g_0.

Selective scan (S6): dA = exp(delta A), dBu = delta u B made directly as (L, batch, D, N), the
linear scan above, y = sum_n C h + D u: the state trajectory is materialised once,
O(batch D N L) memory (mamba-ssm's kernel keeps it in SRAM instead).

SSD (scalar A per head, Mamba-2) in its chunked matrix form, with the segment sums
    segsum(x)[i, j] = x_{j+1} + ... + x_i  (j <= i; -inf above the diagonal)
of dA = dt A inside chunks of T steps:
    Y_diag = (C B^T o exp(segsum(dA))) (dt x)                    (attention-like, per chunk)
             (inside a chunk segsum(dA)[i, j] = cs_i - cs_j, cs = cumsum(dA) in float64: O(T) sums,
             not O(T^2), and float32 would lose the digits the difference cancels)
    S_c    = sum_t exp(dA_cs[T-1] - dA_cs[t]) B_t (dt x_t)^T     (state at the end of chunk c)
    S'     = chunk recurrence of S with decays exp(sum of dA over the chunk) (segsum over chunks)
    Y_off  = exp(dA_cs[t]) C_t S'_{c-1}
Every exponent is a sum of dt A <= 0, so nothing overflows.
"""

import math

import torch
import torch.nn.functional as F


def _chunk_length(L):
    return max(1, math.isqrt(L))


@torch.no_grad()
def _scan(a, b, h0, reverse):
    """a, b: (L, M) time-major and contiguous, one dtype; h0: (M,) or None -> h: (L, M), written
    over b (blocked, module doc; callers pass a buffer of their own: writing in place spares a
    fresh (L, M) array, whose page faults cost as much as the scan here). Time-major so that
    every vector step reads and writes contiguous rows of M values."""
    L, M = b.shape
    T = _chunk_length(L)
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


def _time_major_per_channel(M, D):
    """B or C (D, N), (batch, N, L) or (batch, G, N, L) -> broadcastable to (L, batch, D, N)."""
    if M.dim() == 2:
        return M[None, None]
    if M.dim() == 3:
        return M.permute(2, 0, 1)[:, :, None, :]
    return M.permute(3, 0, 1, 2).repeat_interleave(D // M.shape[1], dim=2)


def _selective_scan_no_grad(delta_t, du_t, A, B_t, C_t, h0):
    """The selective scan without autograd and without materialising the (L, batch, D, N) states:
    the blocked scan run twice over chunks of (n, batch, D, N) slices, first for the chunk carries,
    then from them, emitting y. delta_t, du_t: (L, batch, D); B_t, C_t: (L or 1, batch or 1, D or 1, N)."""
    L = delta_t.shape[0]
    T = _chunk_length(L)
    pad = -L % T
    n = (L + pad) // T

    def chunks(x):  # (L or 1, ...) -> indexable [:, t]: (n, ...) or (1, ...)
        if x.shape[0] == 1:
            return x[None].expand(n, T, *x.shape[1:])
        return F.pad(x, (0, 0) * (x.dim() - 1) + (0, pad)).reshape(n, T, *x.shape[1:])

    dt, du, Bc, Cc = chunks(delta_t), chunks(du_t), chunks(B_t), chunks(C_t)  # padding: dt = 0, du = 0

    def step(h, t):
        dA = torch.exp(dt[:, t, ..., None] * A)  # (n, batch, D, N)
        return torch.addcmul(du[:, t, ..., None] * Bc[:, t], dA, h)

    h = torch.zeros((), dtype=du_t.dtype, device=du_t.device)
    for t in range(T):  # 1. chunk-local end states
        h = step(h, t)
    P = torch.exp(dt.sum(1)[..., None] * A)  # (n, batch, D, N): prod_t exp(dt_t A) over each chunk
    carries = torch.empty_like(h)
    s = torch.zeros_like(h[0]) if h0 is None else h0
    for c in range(n):  # 2. carries
        carries[c] = s
        s = torch.addcmul(h[c], P[c], s)
    h, ys = carries, []
    for t in range(T):  # 3. again from the carries, reading y out
        h = step(h, t)
        ys.append((h * Cc[:, t]).sum(-1))  # (n, batch, D)
    y = torch.stack(ys, dim=1).reshape(n * T, *ys[0].shape[1:])[:L]  # (L, batch, D)
    return y, s


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None):
    """Same arguments and result as reference.selective_scan (mamba-ssm's selective_scan_fn).
    The (L, batch, D, N) tensors are made time-major, the layout of the blocked scan; without
    gradients they are not made at all (`_selective_scan_no_grad`)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dim = u.shape[1]
    delta_t, u_t = delta.permute(2, 0, 1), u.permute(2, 0, 1)  # (L, batch, D)
    B_t, C_t = _time_major_per_channel(B, dim), _time_major_per_channel(C, dim)
    inputs = (u, delta, A, B, C, initial_state)
    if not (torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in inputs)):
        y, last = _selective_scan_no_grad(delta_t, delta_t * u_t, A, B_t, C_t, initial_state)
    else:
        dA = torch.exp(delta_t[..., None] * A)  # (L, batch, D, N)
        dBu = (delta_t * u_t)[..., None] * B_t
        h = linear_scan_time_major(dA, dBu, initial_state)  # (L, batch, D, N)
        if C.dim() == 3:
            y = torch.einsum("lbdn,nbl->lbd", h, C.transpose(0, 1))
        else:
            y = (h * C_t).sum(-1)
        last = h[-1]
    out = y.permute(1, 2, 0)  # (batch, D, L)
    if D is not None:
        out = out + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return (out, last) if return_last_state else out


def segsum(x):
    """x (..., T) -> (..., T, T): out[i, j] = x[j+1] + ... + x[i] for j <= i, -inf for j > i."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)  # [..., i, j] = x[i]
    ones = torch.ones(T, T, dtype=torch.bool, device=x.device)
    out = torch.cumsum(x.masked_fill(~ones.tril(-1), 0), dim=-2)  # [i, j] = sum of x[k], j < k <= i
    return out.masked_fill(ones.triu(1), float("-inf"))


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False):
    """Same arguments and result as reference.ssd_scan (mamba-ssm's mamba_chunk_scan_combined)."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    batch, L, H, P = x.shape
    B = B.repeat_interleave(H // B.shape[2], dim=2)  # (batch, L, H, N)
    C = C.repeat_interleave(H // C.shape[2], dim=2)
    T = min(chunk_size, L)
    pad = -L % T  # dt = 0 and x = 0 after the end: no decay, no input
    xdt = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))
    dA = F.pad(dt * A, (0, 0, 0, pad))
    B, C = (F.pad(M, (0, 0, 0, 0, 0, pad)) for M in (B, C))
    n = (L + pad) // T
    xdt, B, C = (M.reshape(batch, n, T, H, -1) for M in (xdt, B, C))  # (b, c, l, h, p or n)
    dA = dA.reshape(batch, n, T, H).permute(0, 3, 1, 2)  # (b, h, c, l)
    dA_cs = torch.cumsum(dA, dim=-1)

    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    cs = torch.cumsum(dA.double(), dim=-1)  # float64: the differences below cancel its leading digits
    decay = torch.exp((cs[..., :, None] - cs[..., None, :]).to(dA.dtype).masked_fill(~causal, float("-inf")))
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, xdt)
    decay_to_end = torch.exp(dA_cs[..., -1:] - dA_cs)  # (b, h, c, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_to_end, xdt)  # end of each chunk, from 0
    if initial_states is None:
        initial_states = torch.zeros_like(states[:, :1])
    else:
        initial_states = initial_states[:, None].to(states.dtype)
    states = torch.cat((initial_states, states), dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(dA_cs[..., -1], (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)  # state at the end of chunk z-1
    final = states[:, -1]
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states[:, :-1], torch.exp(dA_cs))
    out = (y_diag + y_off).reshape(batch, n * T, H, P)[:, :L]
    if D is not None:
        out = out + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        out = out * F.silu(z)
    return (out, final) if return_final_states else out


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None):
    """Depthwise causal convolution: x (batch, C, L), weight (C, K), bias (C,), initial_states
    (batch, C, K-1) (the inputs before t = 0; zeros if None) -> (batch, C, L). K shifted
    multiply-adds: torch's CPU depthwise conv1d backward is ~100x slower at these shapes."""
    K, L = weight.shape[1], x.shape[-1]
    window = F.pad(x, (K - 1, 0)) if initial_states is None else torch.cat((initial_states, x), dim=-1)
    y = weight[:, K - 1, None] * window[..., K - 1 :]
    for k in range(K - 1):
        y = y + weight[:, k, None] * window[..., k : k + L]
    if bias is not None:
        y = y + bias[:, None]
    return F.silu(y) if activation in ("silu", "swish") else y
