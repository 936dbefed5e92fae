"""The Stack-RNN and Tape-RNN recurrences as a compiled C loop for CPU tensors, backend `cpu`
(memory_rnn.c), forward and backward.

The controller's relu and the actions' softmax sit inside the recurrence, so it has no chunked
form: every step is the (H, H) product, the write layers, the action softmax and the memory's mix
of shifted copies. The reference loop issues ~25 torch ops a step (and as many in its backward);
the C loop does one pass a step over a thread's batch rows (rows split over torch's threads),
four rows at a time through each weight. The forward saves each step's memory, action
probabilities and write-layer outputs; the backward walks the steps back from them (backprop
through time, nothing recomputed) and returns the gradients of each step's preactivations (u,
the action logits, the write layers' outputs); the weights' gradients are then one matrix product
each over all (B, T) here. float32 or float64, compiled on first use by src/ops/_cpu's `library`.
"""

import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside

KIND = {"stack": 0, "tape": 1}


def _call(which, dtype, meta, B, tensors):
    """memory_rnn_<dtype>_<which>(B, T, H, C, K, A, nl, dims, kind, shifts, b0, b1, *pointers), rows over threads."""
    library = _cpu.library(pathlib.Path(__file__).with_name("memory_rnn.c"))
    fn = getattr(library, f"memory_rnn_{_cpu.DTYPES[dtype]}_{which}")
    T, H, C, K, A, dims, kind, shifts = meta
    head = [*_cpu.int64(B, T, H, C, K, A, len(dims) - 1), *_cpu.pointers(dims), _cpu.int64(kind)[0],
            *_cpu.pointers(shifts)]
    pointers = _cpu.pointers(*tensors)

    def call(i, b0, b1):
        fn(*head, *_cpu.int64(b0, b1), *pointers)

    _cpu.parallel(call, _cpu.ranges(B, 4, B * T * H * (H + C)))


def _layers(dims, packed):
    """The write layers' (out, in) blocks of a packed buffer."""
    out, at = [], 0
    for m, n in zip(dims, dims[1:]):
        out.append(packed[at:at + n * m].view(n, m))
        at += n * m
    return out


def previous(g, x, x0, T):
    """sum over (b, t) of g[b, t] x[b, t - 1]^T (x[b, -1] = x0[b], None: 0), g and x flat (B T, .):
    all the neighbouring rows of the flat tensors (views), less the pairs across sequences."""
    out = g[1:].t() @ x[:-1] - g[T::T].t() @ x[T - 1:-1:T]  # (b, 0) follows (b - 1, T - 1) in the flat rows
    return out if x0 is None else out + g[::T].t() @ x0


class _MemoryRNN(torch.autograd.Function):
    @staticmethod
    def forward(ctx, meta, u, W_h, W_r, W_a, b_a, h0, M0, wW, wb):  # contiguous, one dtype; wW, wb packed
        B, T, H = u.shape
        C, K, A, dims = meta[2], meta[3], meta[4], meta[5].tolist()
        wWt = torch.cat([W.t().flatten() for W in _layers(dims, wW)])  # each layer's (in, out)
        y, hT, MT = u.new_empty(B, T, H), u.new_empty(B, H), u.new_empty(B, K, C)
        saved = (u.new_empty(B, T, K, C), u.new_empty(B, T, A), u.new_empty(B, T, sum(dims[1:]))) \
            if any(ctx.needs_input_grad) else (None,) * 3  # M_t, p_t, the write layers' outputs
        weights = (W_h, W_h.t().contiguous(), W_r, W_r.t().contiguous(), wW, wWt)
        _call("forward", u.dtype, meta, B, (u, *weights, wb, W_a, W_a.t().contiguous(), b_a, h0, M0, y, *saved, hT, MT))
        ctx.meta = meta
        ctx.save_for_backward(*weights, W_a, h0, M0, y, *saved)
        return y, hT, MT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dhT, dMT):
        W_h, W_ht, W_r, W_rt, wW, wWt, W_a, h0, M0, y, Ms, ps, zs = ctx.saved_tensors
        B, T, H = y.shape
        dims = ctx.meta[5].tolist()
        du, dl, gz = torch.empty_like(y), torch.empty_like(ps), torch.empty_like(zs)
        d0 = (None, None) if h0 is None else (torch.empty_like(h0), torch.empty_like(M0))
        dy, dhT, dMT = (g.contiguous() for g in (dy, dhT, dMT))
        _call("backward", y.dtype, ctx.meta, B, (W_h, W_ht, W_r, W_rt, wW, wWt, W_a, W_a.t().contiguous(), M0, y, Ms,
                                                 ps, zs, dy, dhT, dMT, du, dl, gz, *d0))
        # the weights: sums over (B, T) of each step's output gradient times its input
        flat = lambda t: t.reshape(B * T, -1)  # noqa: E731
        C = W_r.shape[1]
        dW_h = previous(flat(du), flat(y), h0, T)
        dW_r = previous(flat(du), flat(Ms)[:, :C], None if M0 is None else M0[:, 0], T)
        dW_a, db_a = flat(dl).t() @ flat(y), flat(dl).sum(0)
        ins = torch.split(flat(zs), dims[1:], dim=1)
        grads = torch.split(flat(gz), dims[1:], dim=1)
        dwW = torch.cat([(g.t() @ x).flatten() for g, x in zip(grads, (flat(y), *ins[:-1]))])
        return None, du, dW_h, dW_r, dW_a, db_a, *d0, dwW, flat(gz).sum(0)


@float32_inside  # half-precision calls run the float32 loop
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
    dtype = _cpu.refuses_dtype(u.dtype)
    return _cpu.on_cpu(u, W_h, W_r, W_a, b_a, *(t for layer in write for t in layer), *(initial_state or ())) or dtype
