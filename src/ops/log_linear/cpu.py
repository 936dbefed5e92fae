"""Log-linear attention with Mamba-2 inside as a compiled C loop for CPU tensors (log_linear.c),
from position 0: the `cpu` backend's path for those calls.

chunked.py's dense form runs all heads' chunks at once as torch calls on (B, H, N, C, .) tensors
(~0.5-1 MB each at T 512), its backward through autograd. The C loop takes a head through its
chunks and levels with each chunk's rows in cache, in blocked.h's products over the triangle
within a chunk, forms the weights within chunks and the decays of its tree of chunk states itself
from b and lambda, and writes its backward out, to b and lambda too. The readers' factors of the
levels above the chunk (R: _read_factors) are computed here in torch, batched, so autograd takes
their gradients from the loop's on to g and lambda. float32 or float64, heads split over torch's threads. Compiled on first use by src/ops/_cpu.
"""

import functools
import pathlib

import torch

from src.ops import _cpu
from src.ops.precision import float32_inside
from src.ops.gla.chunked import decay_dtype
from src.ops.log_linear import chunked

SOURCE = pathlib.Path(__file__).with_name("log_linear.c")


def _call(which, shape, tensors):
    """log_linear_<dtype>_<which>(T, H, K, V, C, n_levels, h0, h1, *tensors), heads [h0, h1) of the B H
    over threads."""
    fn = getattr(_cpu.library(SOURCE), f"log_linear_{_cpu.DTYPES[tensors[0].dtype]}_{which}")
    B, T, H, K, V, C, n_levels = shape

    def call(i, h0, h1):
        fn(*_cpu.int64(T, H, K, V, C, n_levels, h0, h1), *_cpu.pointers(*tensors))

    _cpu.parallel(call, _cpu.ranges(B * H, 1, B * T * H * (K + V) * C))


class _LogLinear(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, b, lam, R):  # contiguous, one dtype
        B, T, H, K = q.shape
        V, (N, C), J = v.shape[-1], b.shape[2:], R.shape[2]
        nodes = sum((N - 1) >> j for j in range(J))  # the tree's read blocks, levels 0 .. J - 1
        o, P, F = q.new_empty(B, T, H, V), q.new_empty(B, H, N, C, C), q.new_empty(B, H, nodes, K, V)
        shape = (B, T, H, K, V, C, lam.shape[-1])
        _call("forward", shape, (q, k, v, b, lam, R, o, P, F))
        ctx.save_for_backward(q, k, v, b, lam, R, P, F)
        ctx.shape = shape
        return o

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, do):
        q, k, v, b, lam, R, P, F = ctx.saved_tensors
        grads = [torch.empty_like(x) for x in (q, k, v, b, lam, R)]  # the loop writes each whole
        do = do.contiguous()
        _call("backward", ctx.shape, (q, k, v, b, lam, R, P, F, do, *grads))
        return tuple(grads)


@functools.lru_cache(maxsize=16)
def _read_plan(T, C, device):
    """(J, T): for level j + 1 above the chunk, whether position t reads (bit j of its chunk set) and
    the last position of the half block before its own, whose state it reads."""
    N = -(-T // C)
    chunk = torch.arange(T, device=device) // C
    j = torch.arange((N - 1).bit_length(), device=device)[:, None]
    own = chunk >> j  # (J, T): the half block of 2^j chunks that holds t
    return own % 2 == 1, ((own << j) * C - 1).clamp(min=0)


def _read_factors(g, lam, C):
    """R (B, H, J, T): lambda_t[log2 C + j] exp(b_t - b_e) where t reads at level j (e the end of the
    half block it reads), else 0; b the cumulative log decay from g (B, T, H), in the dtype of lam
    (B, T, H, n_levels)."""
    reads, end = _read_plan(g.shape[1], C, g.device)
    J, L0 = reads.shape[0], C.bit_length() - 1
    b = g.to(decay_dtype(lam.dtype)).cumsum(1).transpose(1, 2)  # (B, H, T)
    R = torch.exp((b[:, :, None] - b[..., end]).masked_fill(~reads, float("-inf"))).to(lam.dtype)
    return (R * lam[..., L0 + 1: L0 + 1 + J].permute(0, 2, 3, 1)).contiguous()


@float32_inside  # half-precision calls run the float32 loop
def log_linear_attn(q, k, v, g, level_scales, output_final_state=False, chunk=64):
    """reference.log_linear_attn from position 0 (no initial state), float32 or float64."""
    q, k = chunked._heads(q, k, v)
    T = q.shape[1]
    C = min(chunk, 1 << (T - 1).bit_length())  # chunked.py's chunk
    lam = level_scales.to(q.dtype)
    b = chunked._chunked(g.to(q.dtype), 0, C).cumsum(-1)  # (B, H, N, C)
    o = _LogLinear.apply(*(x.contiguous() for x in (q, k, v)), b, lam.contiguous(), _read_factors(g, lam, C))
    if not output_final_state:
        return o, None
    return o, chunked._final(k, v, g, q.new_zeros(*v.shape[:1], v.shape[2], 0, k.shape[-1], v.shape[-1]), 0)


def unsupported(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    if beta is not None:
        return "Gated DeltaNet inside (the C loop runs Mamba-2's)"
    if initial_state is not None:
        return "an initial state (the C loop starts at position 0)"
    return _cpu.refuses_dtype(q.dtype) or _cpu.on_cpu(q, k, v, g, level_scales)
