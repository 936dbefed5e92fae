"""The delta rule as a compiled C loop for CPU tensors, backend `cpu` (delta_rule.c): the delta
rule with decays per head or per key, and its product form (N delta steps a token) natively.

fla's delta_rule_recurrence runs ~10 torch ops over the whole (B, H, K, V) state per step; the
chunked UT form does ~2 GFLOP of small matmuls at (B 4, T 2048, H 4, K = V = 64). The C loop
steps the heads of a batch row together (the inputs stream in order) and makes two passes over
each head's (K, V) state a token, 2 N + 1 multiply-adds a state element, with the decays in
per-row scales. The backward recomputes each segment of CHECKPOINT steps from the state saved at
its start and walks it back (~12 multiply-adds per state element and step). float32 or float64,
the inputs' layout, heads split over torch's threads. Compiled on first use by src/ops/_cpu's
`library`.
"""

import ctypes
import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside

CHECKPOINT = 32  # steps between saved states: C + 2 states of a head (~0.5 MB at K = V = 64) stay in L2


def _call(which, dtype, shape, n, per_key, scale, tensors):
    """delta_rule_<dtype>_<which>(B, T, H, K, V, h0, h1, C, N, GK, scale, *pointers), heads over
    threads, C the tokens between checkpoints."""
    library = _cpu.library(pathlib.Path(__file__).with_name("delta_rule.c"))
    fn = getattr(library, f"delta_rule_{_cpu.DTYPES[dtype]}_{which}")
    B, T, H, K, V = shape
    c_scale = (ctypes.c_float if dtype == torch.float32 else ctypes.c_double)(scale)
    pointers = _cpu.pointers(*tensors)

    def call(i, h0, h1):
        fn(*_cpu.int64(B, T, H, K, V, h0, h1, max(1, CHECKPOINT // n), n, int(per_key)), c_scale, *pointers)

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * n * H * K * V))


class _DeltaRule(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, beta, g, S0, scale, n):  # contiguous, one dtype; g, S0 may be None
        B, T, H, K = q.shape
        V = v.shape[-1]
        per_key = g is not None and g.dim() == 4
        o, S = q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)
        ckpt = q.new_empty(B, H, -(-T // max(1, CHECKPOINT // n)), K, V) if any(ctx.needs_input_grad) else None
        _call("forward", q.dtype, (B, T, H, K, V), n, per_key, scale, (q, k, v, beta, g, S0, o, S, ckpt))
        ctx.save_for_backward(q, k, v, beta, g, S0, ckpt)
        ctx.scale, ctx.n, ctx.per_key = scale, n, per_key
        return o, S

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dS):
        q, k, v, beta, g, S0, ckpt = ctx.saved_tensors
        dq, dk, dv, dbeta = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v), torch.empty_like(beta)
        dg = None if g is None else torch.empty_like(g)
        dS0 = None if S0 is None else torch.empty_like(S0)
        _call("backward", q.dtype, (*q.shape, v.shape[-1]), ctx.n, ctx.per_key, ctx.scale,
              (q, k, v, beta, g, ckpt, do.contiguous(), dS.contiguous(), dq, dk, dv, dbeta, dg, dS0))
        return dq, dk, dv, dbeta, dg, dS0, None, None


@float32_inside  # half-precision calls run the float32 loop
def delta_product(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
                  num_householder=2):
    """Same arguments and result as reference.delta_product."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    args = [None if x is None else x.to(q.dtype).contiguous() for x in (q, k, v, beta, g, initial_state)]
    o, S = _DeltaRule.apply(*args, float(scale), num_householder)
    return o, (S if output_final_state else None)


@float32_inside  # half-precision calls run the float32 loop
def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """Same arguments and result as reference.delta_rule."""
    return delta_product(q, k, v, beta, g, scale, initial_state, output_final_state, num_householder=1)


def unsupported(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    dtype = _cpu.refuses_dtype(q.dtype)
    return _cpu.on_cpu(q, k, v, beta, g, initial_state) or dtype
