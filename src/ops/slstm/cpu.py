"""The sLSTM cell as a compiled C loop for CPU tensors, backend `cpu` (slstm.c), forward and
backward.

The recurrence runs through h_{t-1} inside the gates' nonlinearities, so it has no chunked form:
every step is a (d, 4 d) matvec per head and the pointwise gates. xlstm's vanilla loop issues ~25
torch ops a step; the C loop does one pass: a head steps its batch rows together (each row of R
read once a step for four rows, the partial sums in registers), heads split over torch's threads.
The forward saves each step's gate preactivations r and c, n, m (7 times the output's size); the
backward walks the steps back from them (backprop through time, nothing recomputed but the
pointwise gates). The bias's gradient is the sum of x's over (B, T). float32 or float64, compiled
on first use by src/ops/_cpu's `library`.
"""

import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside



def _call(which, dtype, shape, tensors):
    """slstm_<dtype>_<which>(B, T, H, d, h0, h1, *pointers), heads over threads."""
    fn = getattr(_cpu.library(pathlib.Path(__file__).with_name("slstm.c")), f"slstm_{_cpu.DTYPES[dtype]}_{which}")
    B, T, H, d = shape
    pointers = _cpu.pointers(*tensors)

    def call(i, h0, h1):
        fn(*_cpu.int64(B, T, H, d, h0, h1), *pointers)

    _cpu.parallel(call, _cpu.ranges(H, 1, B * T * H * 4 * d * d))


class _SLSTM(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, R, h0, c0, n0, m0):  # x (B, T, 4, H, d), b (4, H, d); contiguous, one dtype
        B, T, _, H, d = x.shape
        y, hT, cT, nT, mT = x.new_empty(B, T, H, d), *(x.new_empty(B, H, d) for _ in range(4))
        saved = (x.new_empty(B, T, H, d), x.new_empty(B, T, H, d), x.new_empty(B, T, H, d), torch.empty_like(x)) \
            if any(ctx.needs_input_grad) else (None,) * 4  # c, n, m (B, T, H, d); r (B, T, 4, H, d)
        _call("forward", x.dtype, (B, T, H, d), (x, b, R, h0, c0, n0, m0, y, *saved, hT, cT, nT, mT))
        ctx.save_for_backward(R, h0, c0, n0, m0, y, *saved)
        return y, hT, cT, nT, mT

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, dy, dhT, dcT, dnT, dmT):
        R, h0, c0, n0, m0, y, cs, ns, ms, rs = ctx.saved_tensors
        B, T, H, d = y.shape
        dx, dR = torch.empty_like(rs), torch.empty_like(R)
        d0 = (None,) * 4 if h0 is None else tuple(torch.empty_like(s) for s in (h0, c0, n0, m0))
        _call("backward", y.dtype, (B, T, H, d),
              (R, h0, c0, n0, m0, y, cs, ns, ms, rs, *(g.contiguous() for g in (dy, dhT, dcT, dnT, dmT)), dx, dR, *d0))
        return dx, dx.sum((0, 1)), dR, *d0


@float32_inside  # half-precision calls run the float32 loop
def slstm(x, R, b, initial_state=None, output_final_state=False):
    """Same arguments and result as reference.slstm."""
    dtype = x.dtype
    state = (None,) * 4 if initial_state is None else tuple(s.to(dtype).contiguous() for s in initial_state)
    y, *final = _SLSTM.apply(x.contiguous(), *(t.to(dtype).contiguous() for t in (b, R)), *state)
    return y, (tuple(final) if output_final_state else None)


def unsupported(x, R, b, initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    dtype = _cpu.refuses_dtype(x.dtype)
    return _cpu.on_cpu(x, R, b, *(initial_state or ())) or dtype
