"""MesaNet as a compiled C loop for CPU tensors, backend `cpu` (mesa_net.c).

The chunked path applies each token's (K, K) state without forming it, so each of fla's 30 CG steps
is three products over a chunk plus a dozen elementwise passes over all chunks' rows at once
(2.1 GFLOP of products at T 1024, B 2, H 2, K 64). The C loop forms the state once every 4 tokens
instead (a rank-4 update, K^2 + K V multiply-adds a token) and solves those 4 tokens' systems on
it in lockstep, in L1: a CG step is one pass over the 16 KB state for all four (K^2 multiply-adds
a system, half the chunked form's, each row loaded once for the four), each system's rank-one
terms for the group's tokens up to its own, and a few passes over K floats. The backward
recomputes each segment of CHECKPOINT tokens from the states saved at its start and walks it back,
one more solve a token (fla's implicit gradient; the exact solve's gradient alike).
float32 or float64, heads split over torch's threads. Compiled on first use by src/ops/_cpu.
"""

import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside

# tokens between saved states (the backward's scratch of C + 1 states of (K, K + V): 1 MB at K = V = 64);
# as fast as 16 (1.02-1.04x, interleaved at T 1024) with half the checkpoints' memory
CHECKPOINT = 32


def _call(which, dtype, shape, steps, tensors):
    """mesa_net_<dtype>_<which>(T, H, K, V, h0, h1, steps, C, *tensors), heads [h0, h1) of the B H over
    threads."""
    fn = getattr(_cpu.library(pathlib.Path(__file__).with_name("mesa_net.c")), f"mesa_net_{_cpu.DTYPES[dtype]}_{which}")
    B, T, H, K, V = shape

    def call(i, h0, h1):
        fn(*_cpu.int64(T, H, K, V, h0, h1, steps, CHECKPOINT), *_cpu.pointers(*tensors))

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * H * K * (K + V)))


class _Mesa(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, g, beta, lamb, H0, G0, steps):  # contiguous, one dtype; H0, G0 may be None
        B, T, H, K = q.shape
        V = v.shape[-1]
        o, Hf, Gf = q.new_empty(B, T, H, V), q.new_empty(B, H, K, K), q.new_empty(B, H, K, V)
        grad = any(ctx.needs_input_grad)
        N = -(-T // CHECKPOINT)
        xs, ckH, ckG = ((q.new_empty(B, T, H, K), q.new_empty(B, H, N, K, K), q.new_empty(B, H, N, K, V)) if grad
                        else (None, None, None))
        _call("forward", q.dtype, (B, T, H, K, V), steps, (q, k, v, g, beta, lamb, H0, G0, o, Hf, Gf, xs, ckH, ckG))
        ctx.save_for_backward(k, v, g, beta, lamb, xs, ckH, ckG)
        ctx.steps, ctx.initial = steps, (H0 is not None, G0 is not None)
        return o, Hf, Gf

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do, dHf, dGf):
        k, v, g, beta, lamb, xs, ckH, ckG = ctx.saved_tensors
        B, T, H, K = k.shape
        V = v.shape[-1]
        dq, dk, dv, dg, dbeta = (torch.empty_like(x) for x in (k, k, v, g, beta))
        dlamb, dH0, dG0 = k.new_empty(B, H, K), k.new_empty(B, H, K, K), k.new_empty(B, H, K, V)
        _call("backward", k.dtype, (B, T, H, K, V), ctx.steps,
              (k, v, g, beta, lamb, xs, ckH, ckG, do.contiguous(), None if dHf is None else dHf.contiguous(),
               None if dGf is None else dGf.contiguous(), dq, dk, dv, dg, dbeta, dlamb, dH0, dG0))
        return (dq, dk, dv, dg, dbeta, dlamb.sum(0), dH0 if ctx.initial[0] else None,
                dG0 if ctx.initial[1] else None, None)


@float32_inside  # half-precision calls run the float32 loop
def mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=30):
    """Same arguments and result as reference.mesa_net (cg_steps=None: the exact solve)."""
    dtype = q.dtype
    H0, G0 = (None, None) if initial_state is None else initial_state
    args = [None if x is None else x.to(dtype).contiguous() for x in (q, k, v, g, beta, lamb, H0, G0)]
    o, Hf, Gf = _Mesa.apply(*args, -1 if cg_steps is None else cg_steps)
    return o, ((Hf, Gf) if output_final_state else None)


def unsupported(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=30):
    """Why the C loop cannot take this call (None if it can)."""
    why = _cpu.refuses_dtype(q.dtype) or _cpu.on_cpu(q, k, v, g, beta, lamb, *(initial_state or ()))
    if why or cg_steps is not None or initial_state is None:
        return why
    H0 = initial_state[0]  # the recurrence's states are symmetric to rounding: tolerances of float32 rounding
    if not torch.allclose(H0, H0.transpose(-1, -2), rtol=1e-5, atol=1e-6 * H0.abs().max().item()):
        return "the exact solve factors a symmetric H_kk, and the initial state's is not symmetric"
    return None
