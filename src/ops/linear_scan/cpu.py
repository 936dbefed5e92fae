"""The linear scan as a compiled C loop for CPU tensors, backend `cpu` (linear_scan.c).

h_t = a_t * h_{t-1} + b_t over the last dim, real or complex, float32 or float64, forward and
backward. The blocked torch path (chunked.py) avoids a Python step per time step, but it works
time-major and so pays two transposing copies and their fresh pages (~70% of its time at
(2048, 4096)). The C loop reads a and b once in the layout they come in (time-last, or
time-major as layers' transposed (B, L, D) activations are) and writes h once in it: a
memory-speed pass. The rows are split over torch's threads (ctypes calls release the GIL).
Compiled on first use by src/ops/_cpu's `library`.
"""

import ctypes
import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import promoted_dtype

SOURCE = pathlib.Path(__file__).with_name("linear_scan.c")
DTYPES = {torch.float32: "float32", torch.float64: "float64", torch.complex64: "complex64",
          torch.complex128: "complex128"}


def _run(fn, batch, R, L, time_major, tensors, reverse):
    """fn(batch, R, L, r0, r1, time_major, *pointers, reverse) with the rows split over threads
    at multiples of the C loop's row group. tensors: contiguous, or None (NULL)."""
    if not time_major:  # rows of contiguous steps, batch after batch: one batch of batch * R rows
        batch, R = 1, batch * R
    pointers = _cpu.pointers(*tensors)

    def call(i, r0, r1):
        fn(*_cpu.int64(batch, R, L, r0, r1), ctypes.c_int(time_major), *pointers, ctypes.c_int(reverse))

    _cpu.parallel(call, _cpu.ranges(R, 64 if time_major else 2, batch * R * L))


def _in_layout(x, time_major):
    """x (batch, R, L) -> the same values, contiguous in the layout asked for (a copy only if needed)."""
    return x.transpose(1, 2).contiguous().transpose(1, 2) if time_major else x.contiguous()


class _LinearScan(torch.autograd.Function):
    @staticmethod
    def forward(ctx, a, b, h0, reverse, time_major):  # (batch, R, L) both in the layout, (batch, R) or None
        batch, R, L = b.shape
        h = torch.empty(batch, L, R, dtype=b.dtype).transpose(1, 2) if time_major else torch.empty_like(b)
        _run(getattr(_cpu.library(SOURCE), f"scan_{DTYPES[b.dtype]}_forward"), batch, R, L, time_major,
             (a, b, h0, h), reverse)
        ctx.save_for_backward(a, h, h0)
        ctx.reverse, ctx.time_major = reverse, time_major
        return h

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_h):
        a, h, h0 = ctx.saved_tensors
        grad_a = torch.empty_like(a) if ctx.needs_input_grad[0] else None  # empty_like keeps the layout
        grad_b = torch.empty_like(a)
        grad_h0 = torch.empty_like(h0) if h0 is not None and ctx.needs_input_grad[2] else None
        _run(getattr(_cpu.library(SOURCE), f"scan_{DTYPES[a.dtype]}_backward"), *a.shape, ctx.time_major,
             (a, h, h0, _in_layout(grad_h, ctx.time_major), grad_a, grad_b, grad_h0), ctx.reverse)
        return grad_a, grad_b, grad_h0, None, None


def linear_scan(a, b, h0=None, reverse=False):
    """h_t = a_t * h_{t-1} + b_t over the last dim; a, b broadcast; h0 (...) or None (zeros).
    reverse: h_t = a_t * h_{t+1} + b_t from the end, h0 the state after the end.
    Works in b's layout where b is a (..., R, L) view of a time-major (..., L, R) tensor, as
    layers' (B, L, D) activations are once transposed; h comes back in that layout too."""
    dtype = promoted_dtype(a, b, h0)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    shape = b.shape
    if b.numel() == 0:
        return b.clone()
    R, L = (shape[-2] if len(shape) > 1 else 1), shape[-1]
    batch = b.numel() // (R * L)
    a, b = a.reshape(batch, R, L), b.reshape(batch, R, L)
    time_major = R > 1 and L > 1 and b.transpose(1, 2).is_contiguous()
    if h0 is not None:
        h0 = h0.to(dtype).expand(shape[:-1]).reshape(batch, R).contiguous()
    h = _LinearScan.apply(_in_layout(a, time_major), _in_layout(b, time_major), h0, reverse, time_major)
    return h.reshape(shape)


def unsupported(a, b, h0=None, reverse=False):
    """Why the C loop cannot take this call (None if it can)."""
    dtype = promoted_dtype(a, b, h0)
    if dtype not in DTYPES:
        return _cpu.on_cpu(a, b, h0) or f"dtype {dtype} (the C loop takes {', '.join(str(d) for d in DTYPES)})"
    return _cpu.on_cpu(a, b, h0)
