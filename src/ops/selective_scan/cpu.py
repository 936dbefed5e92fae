"""The selective scan (S6, mamba-ssm's selective_scan_fn) as a compiled C loop for CPU tensors,
backend `cpu` (selective_scan.c): real, float32 or float64, forward and backward, with the
transition exp(delta A) or (neg_eigval) 2 exp(delta A) - 1, formed in registers.

The forward keeps the (N,) state of a channel in L1 and never writes the (batch, D, N, L)
trajectory (the torch path stores it for its backward); the backward recomputes one channel's
states into a cache-sized scratch. Both cost the B D N L exponentials, which they vectorise.
Channels are split over torch's threads. Compiled on first use by src/ops/_cpu's `library`.
"""

import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import promoted_dtype

SOURCE = pathlib.Path(__file__).with_name("selective_scan.c")


def _selective_inputs(u, delta, A, B, C, B_layout, C_layout):
    """selective_scan.c's arguments after the sizes: u, delta, A, then B and C each with its
    strides and channels per group."""
    u_, delta_, A_, B_, C_ = _cpu.pointers(u, delta, A, B, C)
    return [u_, delta_, A_, B_, *_cpu.int64(*B_layout), C_, *_cpu.int64(*C_layout)]


def _groups(M, D):
    """B or C ((D, N), (batch, N, L) or (batch, G, N, L)) -> (array, its strides (b, g, t), channels
    per group) for selective_scan.c: a contiguous (batch or 1, G, L or 1, N) array, 0 strides where
    it broadcasts."""
    if M.dim() == 2:
        M = M[None, :, None, :]  # (1, D, 1, N): a group per channel
    elif M.dim() == 3:
        M = M.transpose(1, 2)[:, None]  # (batch, 1, L, N)
    else:
        M = M.transpose(2, 3)  # (batch, G, L, N)
    M = M.contiguous()
    return M, *(M.stride(i) if M.shape[i] > 1 else 0 for i in range(3)), D // M.shape[1]


class _SelectiveScan(torch.autograd.Function):
    """u, delta (batch, D, L), A (D, N) contiguous; B, C and their (strides, channels per group)
    as _groups makes them; h0 (batch, D, N) or None; neg (bool) -> y (batch, D, L), last state
    (batch, D, N)."""

    @staticmethod
    def forward(ctx, u, delta, A, B, C, h0, B_layout, C_layout, neg):
        (batch, dim, L), N = u.shape, A.shape[1]
        y, last = u.new_empty(batch, dim, L), u.new_empty(batch, dim, N)
        fn = getattr(_cpu.library(SOURCE), f"selective_scan_{_cpu.DTYPES[u.dtype]}_forward")
        args = _selective_inputs(u, delta, A, B, C, B_layout, C_layout) + _cpu.pointers(h0, y, last)

        def call(i, d0, d1):
            fn(*_cpu.int64(batch, dim, N, L, d0, d1, neg), *args)

        _cpu.parallel(call, _cpu.ranges(dim, 1, batch * dim * L * N))
        ctx.save_for_backward(u, delta, A, B, C, h0)
        ctx.layouts, ctx.neg = (B_layout, C_layout), neg
        return y, last

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y, grad_last):
        u, delta, A, B, C, h0 = ctx.saved_tensors
        B_layout, C_layout = ctx.layouts
        (batch, dim, L), N = u.shape, A.shape[1]
        parts = _cpu.ranges(dim, 1, batch * dim * L * N)
        grad_u, grad_delta, grad_A = torch.empty_like(u), torch.empty_like(delta), torch.empty_like(A)
        grad_B = B.new_zeros(len(parts), *B.shape)  # one buffer per thread: channels share B and C
        grad_C = C.new_zeros(len(parts), *C.shape)
        grad_h0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[5] else None
        scratch = u.new_empty(len(parts), L, N)  # each thread's recomputed states of one channel
        fn = getattr(_cpu.library(SOURCE), f"selective_scan_{_cpu.DTYPES[u.dtype]}_backward")
        grad_y, grad_last = grad_y.contiguous(), grad_last.contiguous()  # held here: the C loop reads them
        args = (_selective_inputs(u, delta, A, B, C, B_layout, C_layout)
                + _cpu.pointers(h0, grad_y, grad_last, grad_u, grad_delta, grad_A))

        def call(i, d0, d1):
            fn(*_cpu.int64(batch, dim, N, L, d0, d1, ctx.neg), *args,
               *_cpu.pointers(grad_B[i], grad_C[i], grad_h0, scratch[i]))

        _cpu.parallel(call, parts)
        return grad_u, grad_delta, grad_A, grad_B.sum(0), grad_C.sum(0), grad_h0, None, None, None


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, neg_eigval=False):
    """Same arguments and result as reference.selective_scan (mamba-ssm's selective_scan_fn).
    The bias, softplus, D u and z gate are torch ops around the C loop."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = torch.nn.functional.softplus(delta)
    dtype = promoted_dtype(u, delta, A, B, C, D, z, initial_state)
    batch, dim, L = u.shape
    N = A.shape[1]
    u, delta, A = (x.to(dtype).contiguous() for x in (u, delta, A))
    (Bm, *B_layout), (Cm, *C_layout) = _groups(B.to(dtype), dim), _groups(C.to(dtype), dim)
    h0 = None if initial_state is None else initial_state.to(dtype).expand(batch, dim, N).contiguous()
    y, last = _SelectiveScan.apply(u, delta, A, Bm, Cm, h0, B_layout, C_layout, bool(neg_eigval))
    in_place = not (torch.is_grad_enabled() and y.requires_grad)  # y is ours: spare a fresh array
    if D is not None:
        y = y.addcmul_(u, D[:, None].to(dtype)) if in_place else y + u * D[:, None].to(dtype)
    if z is not None:
        gate = torch.nn.functional.silu(z.to(dtype))
        y = y.mul_(gate) if in_place else y * gate
    return (y, last) if return_last_state else y


def unsupported(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
                initial_state=None, neg_eigval=False):
    """Why the C loop cannot take this call (None if it can)."""
    tensors = (u, delta, A, B, C, D, z, delta_bias, initial_state)
    dtype = promoted_dtype(*tensors)
    if dtype not in _cpu.DTYPES:
        return _cpu.on_cpu(*tensors) or f"dtype {dtype} (the C loop takes torch.float32, torch.float64)"
    return _cpu.on_cpu(*tensors)
