"""Titans' memory as a compiled C loop for CPU tensors, backend `cpu` (titans.c).

The chunked path runs a chunk as ~25 torch calls on (16, 64) x (64, 64) products of all heads at
once (the layer norm's gradient alone is 14). The C loop takes a head through its chunks with
the stacked state (2 x 16 KB at D 64) in L1 and ttt_linear's products (../_cpu/blocked.h) and
layer-norm gradient (../_cpu/ln_l2_grad.h). The gates' factors of each chunk (b, f, 2 P N, its
last rows, the state's 2 x 2 mix: chunked.gate_coefficients) are computed here in torch, batched
over all chunks, so autograd takes their gradients from the loop's to the gates. Its backward
recomputes each chunk's inner gradients from the Z = K M0 and Q K^T the forward saved, with the
state at each chunk's start (titans.c has the formulas). float32 or float64, heads split over
torch's threads, calls from a chunk's start (offset 0). Compiled on first use by src/ops/_cpu.
"""

import ctypes
import pathlib

import torch
import torch.nn.functional as F

from src.ops import _cpu
from src.ops.precision import float32_inside
from src.ops.titans.chunked import gate_coefficients

SOURCE = pathlib.Path(__file__).with_name("titans.c")


def _call(which, shape, eps, tensors):
    """titans_<dtype>_<which>(T, H, D, K, h0, h1, eps, *tensors), heads [h0, h1) of the B H over threads."""
    fn = getattr(_cpu.library(SOURCE), f"titans_{_cpu.DTYPES[tensors[0].dtype]}_{which}")
    B, T, H, D, K = shape

    def call(i, h0, h1):
        fn(*_cpu.int64(T, H, D, K, h0, h1), ctypes.c_double(eps), *_cpu.pointers(*tensors))

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * H * D * D))


class _Titans(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, w, b, M, S, M0, bf, PN, last, mix, K, eps):  # contiguous, one dtype
        B, T, H, D = q.shape
        N = bf.shape[2]
        z, Mf, Sf, M0f = q.new_empty(B, T, H, D), *(torch.empty_like(M) for _ in range(3))
        saved = (q.new_empty(B, H, N, 2, D, D), q.new_empty(B, H, T, D), q.new_empty(B, H, N, K, K)) \
            if any(ctx.needs_input_grad) else (None, None, None)
        _call("forward", (B, T, H, D, K), eps, (q, k, v, w, b, M, S, M0, bf, PN, last, mix, z, Mf, Sf, M0f, *saved))
        ctx.save_for_backward(q, k, v, w, b, M0, bf, PN, last, mix, *saved)
        ctx.K, ctx.eps = K, eps
        return z, Mf, Sf, M0f

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dz, dMf, dSf, dM0f):
        q, k, v, w, b, M0, bf, PN, last, mix, MSs, Zs, Ps = ctx.saved_tensors
        B, T, H, D = q.shape
        dq, dk, dv = (torch.empty_like(x) for x in (q, k, v))
        dw, db = q.new_empty(B, H, D), q.new_empty(B, H, D)
        dM, dS, dM0, dbf, dPN, dlast, dmix = (torch.empty_like(x) for x in (M0, M0, M0, bf, PN, last, mix))
        grads = [None if x is None else x.contiguous() for x in (dz, dMf, dSf, dM0f)]
        grads[0] = torch.zeros_like(q) if grads[0] is None else grads[0]
        _call("backward", (B, T, H, D, ctx.K), ctx.eps, (q, k, v, w, b, M0, bf, PN, last, mix, MSs, Zs, Ps, *grads,
                                                         dq, dk, dv, dw, db, dM, dS, dM0, dbf, dPN, dlast, dmix))
        return dq, dk, dv, dw.sum(0), db.sum(0), dM, dS, dM0, dbf, dPN, dlast, dmix, None, None


def _chunk_coefficients(gates, K):
    """The C loop's coefficients from gates (B, H, T) each: bf, last (B, H, N, K, 2), 2 P N (B, H, N,
    K, K), mix (B, H, N, 2, 2), a partial last chunk's its own, zero-padded to K rows."""
    T = gates[0].shape[-1]
    n, r = divmod(T, K)
    parts = []
    if n:
        parts.append(gate_coefficients(*(x[..., :n * K].unflatten(-1, (n, K)) for x in gates)))
    if r:
        bf, PN, last, mix = gate_coefficients(*(x[..., None, n * K:] for x in gates))
        parts.append((F.pad(bf, (0, 0, 0, 0, 0, K - r)), F.pad(PN, (0, K - r, 0, K - r)),
                      F.pad(last, (0, 0, 0, 0, 0, K - r)), mix))
    bf, PN, last, mix = (torch.cat(x, 2) for x in zip(*parts))
    return bf[..., 0].contiguous(), PN.contiguous(), last[..., 0].contiguous(), mix.contiguous()


@float32_inside  # half-precision calls run the float32 loop
def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """Same arguments and result as reference.titans, from a chunk's start (offset 0)."""
    T = q.shape[1]
    gates = [x.to(q.dtype).transpose(1, 2) for x in (theta, log_decay, log_momentum)]  # (B, H, T)
    coefficients = _chunk_coefficients(gates, chunk_size)
    args = [x.to(q.dtype).contiguous() for x in (q, k, v, w, b, *state)]
    z, M, S, M0 = _Titans.apply(*args, *coefficients, chunk_size, eps)
    return z, (M, S, M0), T % chunk_size


def unsupported(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """Why the C loop cannot take this call (None if it can)."""
    if offset:
        return f"offset {offset}: the C loop starts at a chunk's start (offset 0)"
    return _cpu.refuses_dtype(q.dtype) or _cpu.on_cpu(q, k, v, theta, log_decay, log_momentum, w, b, *state)
