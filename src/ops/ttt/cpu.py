"""TTT-Linear and TTT-MLP as compiled C loops for CPU tensors, backend `cpu` (ttt_linear.c,
ttt_mlp.c).

The chunked path runs a mini-batch as ~20 torch calls on (16, 64) x (64, 64) products of all heads
at once, each result written to memory and read back by the next call (12-17% of one core's
peak at T 256-1024, benchmarks/README.md). The C loop takes a head through all its mini-batches
with the inner weights (16 KB at D 64) in L1, every product a register-blocked loop over them
(../_cpu/blocked.h), the layer norm's gradient row by row. Its backward walks the mini-batches
from the last, recomputing each one's inner gradients from the Z = K W + c and Q K^T the forward
saved and rebuilding its start weights from the next one's: no (D, D) matrix is saved a
mini-batch, where autograd through the chunked path keeps each W (the formulas: ttt_linear.c).
TTT-MLP's loop is the same on its two layers, with the weights (64 KB each at D 64) in L2
(ttt_mlp.c). float32 or float64, heads
split over torch's threads, calls that start a mini-batch (offset 0). Compiled on first use by
src/ops/_cpu.
"""

import ctypes
import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside

SOURCE = pathlib.Path(__file__).with_name("ttt_linear.c")
MLP_SOURCE = pathlib.Path(__file__).with_name("ttt_mlp.c")


def _call(which, shape, eps, tensors, mlp=False):
    """ttt_linear_<dtype>_<which>(T, H, D, M, h0, h1, eps, *tensors) with shape (B, T, H, D, M), or
    ttt_mlp's (T, H, D, F, M, ...) with shape (B, T, H, D, F, M); heads [h0, h1) of the B H over
    threads."""
    prefix, source = ("ttt_mlp", MLP_SOURCE) if mlp else ("ttt_linear", SOURCE)
    fn = getattr(_cpu.library(source), f"{prefix}_{_cpu.DTYPES[tensors[0].dtype]}_{which}")
    B, T, H = shape[:3]

    def call(i, h0, h1):
        fn(*_cpu.int64(*shape[1:], h0, h1), ctypes.c_double(eps), *_cpu.pointers(*tensors))

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * H * shape[3] * shape[-2]))


class _TTTLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, eta, lr, w, b, W0, c0, M, eps):  # contiguous, one dtype
        B, T, H, D = q.shape
        out, Wf, cf, GW, Gc = q.new_empty(B, T, H, D), *(torch.empty_like(x) for x in (W0, c0, W0, c0))
        grad = any(ctx.needs_input_grad)
        Zs, Ps = (q.new_empty(B, H, T, D), q.new_empty(B, H, -(-T // M), M, M)) if grad else (None, None)
        _call("forward", (B, T, H, D, M), eps, (q, k, v, eta, lr, w, b, W0, c0, out, Wf, cf, GW, Gc, Zs, Ps))
        ctx.save_for_backward(q, k, v, eta, lr, w, b, Wf, Zs, Ps)
        ctx.M, ctx.eps = M, eps
        return out, Wf, cf, GW, Gc

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, dWf, dcf, dGW, dGc):
        q, k, v, eta, lr, w, b, Wf, Zs, Ps = ctx.saved_tensors
        B, T, H, D = q.shape
        dq, dk, dv, deta, dlr = (torch.empty_like(x) for x in (q, k, v, eta, lr))
        dw, db, dW0, dc0 = q.new_empty(B, H, D), q.new_empty(B, H, D), q.new_empty(B, H, D, D), q.new_empty(B, H, D)
        grads = [None if x is None else x.contiguous() for x in (dout, dWf, dcf, dGW, dGc)]
        if grads[0] is None:
            grads[0] = torch.zeros_like(q)
        _call("backward", (B, T, H, D, ctx.M), ctx.eps,
              (q, k, v, eta, lr, w, b, Wf, Zs, Ps, *grads, dq, dk, dv, deta, dlr, dw, db, dW0, dc0))
        return dq, dk, dv, deta, dlr, dw.sum(0), db.sum(0), dW0, dc0, None, None


class _TTTMLP(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, eta, lr, w, b, W1, c1, W2, c2, M, eps):  # contiguous, one dtype
        B, T, H, D = q.shape
        F, N = W1.shape[-1], -(-T // M)
        out = q.new_empty(B, T, H, D)
        final = [torch.empty_like(x) for x in (W1, c1, W2, c2, W1, c1, W2, c2)]  # the weights, then the sums
        saved = (q.new_empty(B, H, T, F), q.new_empty(B, H, T, D), q.new_empty(B, H, T, F),
                 q.new_empty(B, H, N, M, M), q.new_empty(B, H, N, M, M)) if any(ctx.needs_input_grad) else (None,) * 5
        _call("forward", (B, T, H, D, F, M), eps, (q, k, v, eta, lr, w, b, W1, c1, W2, c2, out, *final, *saved), True)
        ctx.save_for_backward(q, k, v, eta, lr, w, b, final[0], final[2], *saved)
        ctx.M, ctx.eps = M, eps
        return (out, *final)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dout, *dfinal):
        q, k, v, eta, lr, w, b, W1f, W2f, *saved = ctx.saved_tensors
        B, T, H, D = q.shape
        F = W1f.shape[-1]
        dq, dk, dv, deta, dlr = (torch.empty_like(x) for x in (q, k, v, eta, lr))
        dw, db = q.new_empty(B, H, D), q.new_empty(B, H, D)
        dW1, dc1, dW2, dc2 = (q.new_empty(B, H, *s) for s in ((D, F), (F,), (F, D), (D,)))
        dout = torch.zeros_like(q) if dout is None else dout.contiguous()
        dfinal = [None if x is None else x.contiguous() for x in dfinal]
        _call("backward", (B, T, H, D, F, ctx.M), ctx.eps, (q, k, v, eta, lr, w, b, W1f, W2f, *saved, dout, *dfinal,
                                                           dq, dk, dv, deta, dlr, dw, db, dW1, dc1, dW2, dc2), True)
        return dq, dk, dv, deta, dlr, dw.sum(0), db.sum(0), dW1, dc1, dW2, dc2, None, None


@float32_inside  # half-precision calls run the float32 loop
def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """Same arguments and result as reference.ttt_linear, from a mini-batch's start (offset 0: the
    state's sums G are zero there and not read)."""
    T = q.shape[1]
    (W0, c0), _ = state
    args = [x.to(q.dtype).contiguous() for x in (q, k, v, eta, lr, w, b, W0, c0)]
    out, Wf, cf, GW, Gc = _TTTLinear.apply(*args, mini_batch_size, eps)
    return out, ((Wf, cf), (GW, Gc)), T % mini_batch_size


@float32_inside
def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """Same arguments and result as reference.ttt_mlp, from a mini-batch's start (offset 0)."""
    T = q.shape[1]
    args = [x.to(q.dtype).contiguous() for x in (q, k, v, eta, lr, w, b, *state[0])]
    out, *final = _TTTMLP.apply(*args, mini_batch_size, eps)
    return out, (tuple(final[:4]), tuple(final[4:])), T % mini_batch_size


def unsupported(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """Why the C loop cannot take this call (None if it can)."""
    if offset:
        return f"offset {offset}: the C loop starts at a mini-batch's start (offset 0)"
    return _cpu.refuses_dtype(q.dtype) or _cpu.on_cpu(q, k, v, eta, lr, w, b, *state[0])
