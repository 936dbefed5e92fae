"""The wkv recurrence as a compiled C loop for CPU tensors, backend `cpu` (wkv.c).

One pass over (batch, L, D) forward; the backward runs the recurrence again forward (for
d/du, d/dw and the denominators) and then once backward (d/dk, d/dv), as RWKV's CUDA kernel
does. float32 or float64. Channels are split over torch's threads (ctypes releases the GIL).
Compiled on first use by src/ops/_cpu's `library` (same cache, same compiler rules).
"""

import pathlib

import torch

from src.ops import _cpu



def _call(which, dtype, batch, L, D, tensors):
    fn = getattr(_cpu.library(pathlib.Path(__file__).with_name("wkv.c")), f"wkv_{_cpu.DTYPES[dtype]}_{which}")
    pointers = _cpu.pointers(*tensors)

    def call(i, d0, d1):
        fn(*_cpu.int64(batch, L, D, d0, d1), *pointers)

    _cpu.parallel(call, _cpu.ranges(D, 8, batch * L * D))


class _WKV(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, u, k, v):  # (D,), (D,), (batch, L, D), (batch, L, D), all contiguous
        y = torch.empty_like(k)
        _call("forward", k.dtype, *k.shape, (w, u, k, v, y))
        ctx.save_for_backward(w, u, k, v, y)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        w, u, k, v, y = ctx.saved_tensors
        batch, L, D = k.shape
        gw, gu = k.new_empty(batch, D), k.new_empty(batch, D)
        gk, gv, logd = torch.empty_like(k), torch.empty_like(k), torch.empty_like(k)
        _call("backward", k.dtype, batch, L, D, (w, u, k, v, y, gy.contiguous(), logd, gw, gu, gk, gv))
        return gw.sum(0), gu.sum(0), gk, gv


def wkv(w, u, k, v):
    """w, u (D,); k, v (batch, L, D) -> wkv (batch, L, D), as reference.wkv."""
    dtype = k.dtype
    return _WKV.apply(*(x.to(dtype).contiguous() for x in (w, u, k, v)))


def unsupported(w, u, k, v):
    """Why the C loop cannot take this call (None if it can)."""
    one_dtype = k.dtype in _cpu.DTYPES and all(x.dtype == k.dtype for x in (w, u, v))
    dtypes = None if one_dtype else (f"dtypes {w.dtype}, {u.dtype}, {k.dtype}, {v.dtype} "
                                     "(the C loop takes one of float32, float64)")
    return _cpu.on_cpu(w, u, k, v) or dtypes
