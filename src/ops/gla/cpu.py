"""Gated linear attention as a compiled C loop for CPU tensors, backend `cpu` (gla.c).

fla's naive loop runs ~6 torch ops over the whole (B, H, K, V) state per step; the chunked
path does ~1 GFLOP of small matmuls and T K log(C) exponentials at (B 4, T 2048, H 4, K = V = 64).
The C loop steps the heads of a batch row together, so that the inputs stream in order, each
head's (K, V) state in L1 while it is stepped: without u, 2 K V multiply-adds per
position (the decays in row scales), 8 steps per pass over the state; with u, 3, a pass a step.
The backward recomputes each segment of CHECKPOINT steps from the state saved at its start and
walks it back, ~7 multiply-adds per state element and step. Signed decays: the mask `negative`
(bool, one byte an entry) negates the decays as they are read. float32 or float64, the inputs'
layout, heads split over torch's threads. Compiled on first use by src/ops/_cpu's `library`.
"""

import ctypes
import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside

CHECKPOINT = 32  # steps between saved states: C + 1 states of a head (~0.5 MB at K = V = 64) stay in L2


def _call(which, dtype, shape, options, tensors):
    """gla_<dtype>_<which>(B, T, H, K, V, h0, h1, gmode, C, scale, *pointers), heads over threads."""
    fn = getattr(_cpu.library(pathlib.Path(__file__).with_name("gla.c")), f"gla_{_cpu.DTYPES[dtype]}_{which}")
    B, T, H, K, V = shape
    gmode, scale = options
    scalar = (ctypes.c_float if dtype == torch.float32 else ctypes.c_double)(scale)
    pointers = _cpu.pointers(*tensors)

    def call(i, h0, h1):
        fn(*_cpu.int64(B, T, H, K, V, h0, h1), ctypes.c_int(gmode), *_cpu.int64(CHECKPOINT), scalar, *pointers)

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * H * K * V))


class _GLA(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, u, S0, scale, negative):  # contiguous, one dtype; g, u, S0, negative may be None
        B, T, H, K = q.shape
        V = v.shape[-1]
        gmode = 0 if g is None else (2 if g.dim() == 4 else 1)
        o, S = q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)
        ckpt = q.new_empty(B, H, -(-T // CHECKPOINT), K, V) if any(ctx.needs_input_grad) else None
        _call("forward", q.dtype, (B, T, H, K, V), (gmode, scale), (q, k, v, g, negative, u, S0, o, S, ckpt))
        ctx.save_for_backward(q, k, v, g, negative, u, S0, ckpt)
        ctx.gmode, ctx.scale = gmode, scale
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dS):
        q, k, v, g, negative, u, S0, ckpt = ctx.saved_tensors
        B, T, H, K = q.shape
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        dg = None if g is None else torch.empty_like(g)
        du = None if u is None else q.new_empty(B, H, K)
        dS0 = None if S0 is None else torch.empty_like(S0)
        _call("backward", q.dtype, (B, T, H, K, v.shape[-1]), (ctx.gmode, ctx.scale),
              (q, k, v, g, negative, u, ckpt, do.contiguous(), None if dS is None else dS.contiguous(),
               dq, dk, dv, dg, du, dS0))
        return dq, dk, dv, dg, None if du is None else du.sum(0), dS0, None, None


@float32_inside  # half-precision calls run the float32 loop
def gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None):
    """Same arguments and result as reference.gla."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    dtype = q.dtype
    args = [None if x is None else x.to(dtype).contiguous() for x in (q, k, v, g, u, initial_state)]
    o, S = _GLA.apply(*args, float(scale), None if negative is None else negative.contiguous())
    return o, (S if output_final_state else None)


def unsupported(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None):
    """Why the C loop cannot take this call (None if it can)."""
    dtype = _cpu.refuses_dtype(q.dtype)
    return _cpu.on_cpu(q, k, v, g, u, initial_state, negative) or dtype
