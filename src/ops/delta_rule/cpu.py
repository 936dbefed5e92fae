"""The delta rule as a compiled C loop for CPU tensors, forward only, backend `cpu` (delta_rule.c).

fla's delta_rule_recurrence runs ~10 torch ops over the whole (B, H, K, V) state per step; the
chunked UT form does ~2 GFLOP of small matmuls at (B 4, T 2048, H 4, K = V = 64). The C loop
keeps each head's (K, V) state in the L1 cache and makes two vectorised passes over it per step,
3 K V multiply-adds a position. It has no backward: where a gradient is needed the dispatcher
takes the torch path (whose autograd is already several times the loop's), so this serves
inference, evaluation and `step`-free forwards. float32 or float64, the inputs' layout, heads
split over torch's threads. Compiled on first use by src/ops/scan/cpu.py's `library`.
"""

import ctypes
import pathlib

import torch

from src.ops.scan.cpu import _int64, _parallel, _pointers, _ranges, library

DTYPES = {torch.float32: "float32", torch.float64: "float64"}


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """Same arguments and result as reference.delta_rule; no gradient (see `unsupported`)."""
    if torch.is_grad_enabled() and any(x is not None and x.requires_grad for x in (q, k, v, beta, g, initial_state)):
        raise RuntimeError("the delta rule's C loop has no backward (backend torch differentiates)")
    B, T, H, K = q.shape
    V = v.shape[-1]
    scale = K**-0.5 if scale is None else scale
    q, k, v, beta, g, S0 = (None if x is None else x.to(q.dtype).contiguous() for x in (q, k, v, beta, g, initial_state))
    o, S = q.new_empty(B, T, H, V), q.new_empty(B, H, K, V)
    fn = getattr(library("delta_rule", pathlib.Path(__file__).parent), f"delta_rule_{DTYPES[q.dtype]}_forward")
    c_scale = (ctypes.c_float if q.dtype == torch.float32 else ctypes.c_double)(scale)
    pointers = _pointers(q, k, v, beta, g, S0, o, S)

    def call(i, h0, h1):
        fn(*_int64(B, T, H, K, V, h0, h1), c_scale, *pointers)

    _parallel(call, _ranges(B * H, 1, B * T * H * K * V))
    return o, (S if output_final_state else None)


def unsupported(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    tensors = [x for x in (q, k, v, beta, g, initial_state) if x is not None]
    if any(x.device.type != "cpu" for x in tensors):
        return "inputs are not on the CPU"
    if q.dtype not in DTYPES:
        return f"dtype {q.dtype} (the C loop takes float32, float64)"
    if torch.is_grad_enabled() and any(x.requires_grad for x in tensors):
        return "a gradient is needed (the C loop is forward only)"
    return None
