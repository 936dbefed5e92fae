"""The Stack-RNN and Tape-RNN recurrences as a compiled C loop for CPU tensors, backend `cpu`
(memory_rnn.c), forward and backward.

The controller's relu and the actions' softmax sit inside the recurrence, so it has no chunked
form: every step is the (H, H) matvec, the write layers, the action softmax and the memory's mix
of shifted copies. The reference loop issues ~25 torch ops a step (and as many in its backward);
the C loop does one pass a batch row, rows split over torch's threads. The forward saves each
step's memory, action probabilities and write-layer outputs; the backward walks the steps back
from them (backprop through time, nothing recomputed), each thread summing the weights' gradients
into its own buffers, added up here. float32 or float64, compiled on first use by src/ops/_cpu's
`library`.
"""

import pathlib

import torch

from src.ops import _cpu

DTYPES = {torch.float32: "float32", torch.float64: "float64"}
KIND = {"stack": 0, "tape": 1}


def _call(which, dtype, meta, B, tensors):
    """memory_rnn_<dtype>_<which>(B, T, H, C, K, A, nl, dims, kind, shifts, b0, b1, *pointers), rows over threads;
    -> the row ranges."""
    fn = getattr(_cpu.library(pathlib.Path(__file__).with_name("memory_rnn.c")), f"memory_rnn_{DTYPES[dtype]}_{which}")
    T, H, C, K, A, dims, kind, shifts = meta
    head = [*_cpu.int64(B, T, H, C, K, A, len(dims) - 1), *_cpu.pointers(dims), _cpu.int64(kind)[0],
            *_cpu.pointers(shifts)]
    parts = _cpu.ranges(B, 1, B * T * H * (H + C))

    def call(i, b0, b1):
        fn(*head, *_cpu.int64(b0, b1), *_cpu.pointers(*tensors(i)))

    _cpu.parallel(call, parts)
    return parts


class _MemoryRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, meta, u, W_h, W_r, W_a, b_a, h0, M0, wW, wb):  # contiguous, one dtype; wW, wb packed
        B, T, H = u.shape
        K, C, A, Z = meta[3], meta[2], meta[4], int(meta[5][1:].sum())
        y, hT, MT = u.new_empty(B, T, H), u.new_empty(B, H), u.new_empty(B, K, C)
        saved = (u.new_empty(B, T, K, C), u.new_empty(B, T, A), u.new_empty(B, T, Z)) \
            if any(ctx.needs_input_grad) else (None,) * 3  # M_t, p_t, the write layers' outputs
        _call("forward", u.dtype, meta, B, lambda i: (u, W_h, W_r, wW, wb, W_a, b_a, h0, M0, y, *saved, hT, MT))
        ctx.meta = meta
        ctx.save_for_backward(W_h, W_r, wW, W_a, h0, M0, y, *saved)
        return y, hT, MT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dhT, dMT):
        W_h, W_r, wW, W_a, h0, M0, y, Ms, ps, zs = ctx.saved_tensors
        B = y.shape[0]
        n = len(_cpu.ranges(B, 1, B * y.shape[1] * y.shape[2] * (y.shape[2] + W_r.shape[1])))
        du = torch.empty_like(y)
        grads = [y.new_zeros(n, *w.shape) for w in (W_h, W_r, wW, wW.new_empty(ctx.meta[5][1:].sum()), W_a,
                                                     W_a[:, 0])]  # per thread: W_h, W_r, wW, wb, W_a, b_a
        d0 = (None, None) if h0 is None else (torch.empty_like(h0), torch.empty_like(M0))
        dy, dhT, dMT = (g.contiguous() for g in (dy, dhT, dMT))  # held until the call ends
        _call("backward", y.dtype, ctx.meta, B,
              lambda i: (W_h, W_r, wW, W_a, h0, M0, y, Ms, ps, zs, dy, dhT, dMT, du, *(g[i] for g in grads), *d0))
        dW_h, dW_r, dwW, dwb, dW_a, db_a = (g.sum(0) for g in grads)
        return None, du, dW_h, dW_r, dW_a, db_a, *d0, dwW, dwb


def memory_rnn(u, W_h, W_r, write, W_a, b_a, kind, size, shifts=(), initial_state=None, output_final_state=False):
    """Same arguments and result as reference.memory_rnn."""
    dtype = u.dtype
    B, T, H = u.shape
    C, A = W_r.shape[1], W_a.shape[0]
    dims = torch.tensor([H] + [W.shape[0] for W, _ in write], dtype=torch.int64)
    meta = (T, H, C, size, A, dims, KIND[kind], torch.tensor(list(shifts) or [0], dtype=torch.int64))
    wW = torch.cat([W.to(dtype).flatten() for W, _ in write])
    wb = torch.cat([b.to(dtype) for _, b in write])
    state = (None, None) if initial_state is None else tuple(s.to(dtype).contiguous() for s in initial_state)
    y, hT, MT = _MemoryRNN.apply(meta, u.contiguous(), *(t.to(dtype).contiguous() for t in (W_h, W_r, W_a, b_a)),
                                 *state, wW, wb)
    return y, ((hT, MT) if output_final_state else None)


def unsupported(u, W_h, W_r, write, W_a, b_a, kind, size, shifts=(), initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    dtype = None if u.dtype in DTYPES else f"dtype {u.dtype} (the C loop takes float32, float64)"
    return _cpu.on_cpu(u, W_h, W_r, W_a, b_a, *(t for layer in write for t in layer), *(initial_state or ())) or dtype
