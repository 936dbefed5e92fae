"""The selective scan (S6) in blocked form for CPU (and any device).

With gradients: dA = exp(delta A) (2 exp(delta A) - 1 with neg_eigval), dBu = delta u B made
directly as (L, batch, D, N), the blocked linear scan (src/ops/linear_scan/chunked.py), y =
sum_n C h + D u: the state trajectory is materialised once, O(batch D N L) memory (mamba-ssm's
kernel keeps it in SRAM instead). Without gradients the trajectory is never made: the blocked
scan runs over chunks of (n, batch, D, N) slices, first for the chunk carries, then from them,
emitting y. Both multiply the transitions and never take their logarithm, so signed ones
(neg_eigval), 0 included, are exact: a chunk's decay is exp(sum_t delta_t A) when they are
positive and the product of its transitions otherwise.
"""

import torch
import torch.nn.functional as F

from src.ops.linear_scan.chunked import chunk_length, linear_scan_time_major


def _time_major_per_channel(M, D):
    """B or C (D, N), (batch, N, L) or (batch, G, N, L) -> broadcastable to (L, batch, D, N)."""
    if M.dim() == 2:
        return M[None, None]
    if M.dim() == 3:
        return M.permute(2, 0, 1)[:, :, None, :]
    return M.permute(3, 0, 1, 2).repeat_interleave(D // M.shape[1], dim=2)


class _SignedTransition(torch.autograd.Function):
    """a = 2 exp(x) - 1 (Grazzi et al. 2024) made in place in exp's output, which it saves for its
    derivative 2 exp(x) = a + 1: no second (L, batch, D, N) array, as autograd through exp, * 2
    and - 1 would keep."""

    @staticmethod
    def forward(ctx, x):
        a = torch.exp(x).mul_(2).sub_(1)
        ctx.save_for_backward(a)
        return a

    @staticmethod
    def backward(ctx, grad):
        (a,) = ctx.saved_tensors
        return grad * (a + 1)


def _transition(dtA, neg_eigval):
    """a = exp(delta A), or 2 exp(delta A) - 1 with neg_eigval, from delta A."""
    return _SignedTransition.apply(dtA) if neg_eigval else torch.exp(dtA)


def _selective_scan_no_grad(delta_t, du_t, A, B_t, C_t, h0, neg_eigval):
    """The selective scan without autograd and without materialising the (L, batch, D, N) states:
    the blocked scan run twice over chunks of (n, batch, D, N) slices, first for the chunk carries,
    then from them, emitting y. delta_t, du_t: (L, batch, D); B_t, C_t: (L or 1, batch or 1, D or 1, N)."""
    L = delta_t.shape[0]
    T = chunk_length(L)
    pad = -L % T
    n = (L + pad) // T

    def chunks(x):  # (L or 1, ...) -> indexable [:, t]: (n, ...) or (1, ...)
        if x.shape[0] == 1:
            return x[None].expand(n, T, *x.shape[1:])
        return F.pad(x, (0, 0) * (x.dim() - 1) + (0, pad)).reshape(n, T, *x.shape[1:])

    dt, du, Bc, Cc = chunks(delta_t), chunks(du_t), chunks(B_t), chunks(C_t)  # padding: dt = 0, du = 0

    def step(h, t):
        dA = _transition(dt[:, t, ..., None] * A, neg_eigval)  # (n, batch, D, N)
        return torch.addcmul(du[:, t, ..., None] * Bc[:, t], dA, h), dA

    h, P = torch.zeros((), dtype=du_t.dtype, device=du_t.device), 1
    for t in range(T):  # 1. chunk-local end states (and, for signed transitions, their products)
        h, dA = step(h, t)
        if neg_eigval:
            P = P * dA
    if not neg_eigval:
        P = torch.exp(dt.sum(1)[..., None] * A)  # (n, batch, D, N): prod_t exp(dt_t A) over each chunk
    carries = torch.empty_like(h)
    s = torch.zeros_like(h[0]) if h0 is None else h0
    for c in range(n):  # 2. carries
        carries[c] = s
        s = torch.addcmul(h[c], P[c], s)
    h, ys = carries, []
    for t in range(T):  # 3. again from the carries, reading y out
        h, _ = step(h, t)
        ys.append((h * Cc[:, t]).sum(-1))  # (n, batch, D)
    y = torch.stack(ys, dim=1).reshape(n * T, *ys[0].shape[1:])[:L]  # (L, batch, D)
    return y, s


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, neg_eigval=False):
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
        y, last = _selective_scan_no_grad(delta_t, delta_t * u_t, A, B_t, C_t, initial_state, neg_eigval)
    else:
        dA = _transition(delta_t[..., None] * A, neg_eigval)  # (L, batch, D, N)
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
