"""Whether 10x the original's speed fits under this core's roofline, for the ops whose CPU paths
are compared with vectorised originals (fla's naive functions): how many products a call makes,
and what fraction of the core's peak 10x would need.

    python -m benchmarks.roofline [--rounds 5] [--ops fox path ttt_linear mesa_net log_linear_attn] [--quick]

One thread. The peak is measured (fma_peak.c: independent chains of vector multiply-adds, the best of
20 runs; --peak gives one instead): on the development CPU 117 GFLOP/s, one 512-bit FMA a cycle at
its 3.67 GHz boost clock (its nominal 2.6 GHz would give 83). The header also gives the best
(256, 256) product torch runs, the practical ceiling of the products (~100 there).
Each case runs the original and ours interleaved, round by round, at the inputs of its own
benchmark (benchmarks.fox_path, benchmarks.ttt, benchmarks.mesa_log_linear), and takes the fastest
round of each: noise only adds time, so the fastest is the estimate of the uncontended one. The
products are counted by torch's FlopCounterMode (matmuls, batched matmuls, einsums, with formulas
added here for the triangular and LU solves and for torch's CPU flash attention; elementwise work,
softmax, exponentials and Python loops count nothing), so a count is what the call multiplies.

budget = peak x (original's time / 10): the most floating-point operations a call can make and
still run 10x the original. "10x needs" is a count over the budget, i.e. the fraction of the peak
at which the products alone would have to run, everything else free: over 100% cannot be reached.
Three counts are set against it:
    ours       our op's products (forward; forward and backward), or for mesa_net, ttt_linear and
               log_linear_attn, whose C loops make no torch products, their multiply-adds counted
               from the C source (mesa_loop_flops, ttt_loop_flops, log_linear_loop_flops);
    original   the original's products;
    bound      a lower bound for any algorithm computing the op, where one is plain:
               FoX and PaTH: causal attention's two products over the lower triangle,
                 2 B H T (T + 1) / 2 (K + V), whatever moves the keys or weighs the logits;
               TTT-Linear: the mini-batch form's three (b, K) x (K, V) products a mini-batch
                 (the inner loss's prediction, the output, the weight update), 6 B H T K V;
               forward and backward: 3x the forward's, each product's gradient being two products
               of its size.
"""

import argparse
import math
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode, register_flop_formula

from benchmarks import fox_path, mesa_log_linear, ttt
from benchmarks.timing import timed
from src.ops import _cpu
from src.ops.forgetting_attn import forgetting_attn
from src.ops.path_attn import path_attn

aten = torch.ops.aten
BOTH = (False, True)  # forward; forward and backward


def _batch(shape):
    return math.prod(shape[:-2])


@register_flop_formula(aten.linalg_solve_triangular)
def _solve_triangular(A, B, *args, out_shape=None, **kwargs):
    """n^2 / 2 multiply-adds a right-hand side: n^2 k flops, the result (..., n, k) or (..., k, n)."""
    return _batch(out_shape) * A[-1] * out_shape[-1] * out_shape[-2]


@register_flop_formula(aten._linalg_solve_ex)
def _solve(A, B, *args, out_shape=None, **kwargs):
    """LU (2 n^3 / 3) and two triangular solves (2 n^2 a right-hand side)."""
    n, k = A[-1], (1 if len(B) == len(A) - 1 else B[-1])
    return math.prod(A[:-2]) * (2 * n**3 // 3 + 2 * n * n * k)


@register_flop_formula(aten.linalg_lu_solve)
def _lu_solve(LU, pivots, B, *args, out_shape=None, **kwargs):
    """Two triangular solves: 2 n^2 k flops."""
    return _batch(out_shape) * 2 * LU[-1] * out_shape[-1] * out_shape[-2]


def _attention(q, k, v, causal):
    """2 B H (pairs) (Dq + Dv): the logits and the weighted values over the pairs computed."""
    B, H, T, D = q
    S, Dv = k[-2], v[-1]
    pairs = T * (T + 1) // 2 if causal else T * S
    return 2 * B * H * pairs * (D + Dv)


@register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
def _flash(q, k, v, dropout_p=0.0, is_causal=False, *args, out_shape=None, **kwargs):
    return _attention(q, k, v, is_causal)


@register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
def _flash_backward(grad_out, q, k, v, out, logsumexp, dropout_p=0.0, is_causal=False, *args, out_shape=None,
                    **kwargs):
    """The logits recomputed, then dV, dP, dQ, dK: 3 products of q's width, 2 of v's."""
    B, H, T, D = q
    pairs = T * (T + 1) // 2 if is_causal else T * k[-2]
    return 2 * B * H * pairs * (3 * D + 2 * v[-1])


def causal_attention_bound(T, B=fox_path.B, H=fox_path.H, K=fox_path.K):
    return 2 * B * H * T * (T + 1) // 2 * (K + K)


def mesa_loop_flops(T, backward=False, B=2, H=2, K=64, V=64, steps=30, group=4):
    """The mesa_net C loop's forward (mesa_net.c; it makes no torch products to count), 2 flops a
    multiply-add, a token: the state's update (K^2 + K V: a group's rank-`group` update, once a
    group), 30 CG steps (a K^2 matvec, two dot products and three axpys of K, and the group's
    rank-one terms, a dot product and an axpy of K each), its output (K V, and the terms, K + V
    each); token j of a group (from 0) has j + 1 terms, (group + 1) / 2 on average (T a multiple of
    `group`, as at mesa_log_linear's inputs)."""
    terms = (group + 1) / 2
    return round(2 * B * H * T * (K * K + K * V + steps * (K * K + 5 * K + 2 * terms * K) + K * V + terms * (K + V)))


def ttt_loop_flops(T, backward=False, B=ttt.B, H=ttt.H, D=ttt.D, m=ttt.K):
    """The ttt_linear C loop's products (ttt_linear.c), 2 flops a multiply-add, a token: forward K W,
    Q W, K^T G (D^2 each) and Q K^T, A G (m D each); the backward 7 of D^2 (K dW, G dW^T, the
    weights rebuilt, dout W^T, Q^T dout, dZ W^T, K^T dZ) and 4 of m D (dout G^T, A^T dout, dP K,
    dP^T Q); at benchmarks.ttt's inputs."""
    return 2 * B * H * T * ((3 + 7 * backward) * D * D + (2 + 4 * backward) * m * D)


def log_linear_loop_flops(T, backward=False, B=2, H=2, K=128, V=64, C=64, rows=16):
    """The log_linear C loop's products (log_linear.c), 2 flops a multiply-add: in each chunk of m rows
    Q K^T and A V over the lower triangle by blocks of `rows` (the backward dO V^T, A^T dO, dP K and
    dP^T Q); each chunk's state K^T diag(w) V but the last's (the backward V dS^T, K dS); at each level
    above the chunks, each block's second half reading its first half's state, Q_S U (the backward
    dO_S U^T, Q_S^T dO_S); at mesa_log_linear's inputs."""
    N, total = -(-T // C), 0
    for n in range(N):
        m = min(C, T - n * C)
        lower = sum((min(r + rows, m) - r) * min(r + rows, m) for r in range(0, m, rows))  # rows x columns
        upper = sum((min(r + rows, m) - r) * (m - r) for r in range(0, m, rows))  # of the transposed
        total += lower * (K + V) + backward * (lower + upper) * (K + V)
    reads = sum(max(0, min(C << (j - 1), T - a0 - (C << (j - 1)))) for j in range(1, (N - 1).bit_length() + 1)
                for a0 in range(0, T, C << j))
    return 2 * B * H * (total + (1 + 2 * backward) * ((N - 1) * C + reads) * K * V)


def cases():
    """[(name, lengths, passes, make(T) -> inputs, ours, original, timer, bound(T) -> forward flops or
    None, ours' flops(T) where a C loop makes them, else None)]. MesaNet forward only: the original's
    backward runs autograd through its per-token loop (68 s at T 1024, benchmarks/README.md)."""
    fox_naive = fox_path.fla_naive("forgetting_attn/naive.py").naive_forgetting_attn
    path_naive = fox_path.fla_naive("path_attn/naive.py").naive_path_attn
    ttt_fla = ttt.ttt_calls(ttt.fla_module("ttt/naive.py"), None)
    mesa, _, _, log_linear, _, _ = mesa_log_linear.cases()
    ttt_bound = lambda T: 6 * ttt.B * ttt.H * T * ttt.D * ttt.D  # noqa: E731
    return [
        ("fox", (256, 1024), BOTH, lambda T: fox_path.inputs("fox", T, False), forgetting_attn, fox_naive, timed,
         causal_attention_bound, None),
        ("path", (256, 1024), BOTH, lambda T: fox_path.inputs("path", T, False), path_attn,
         lambda q, k, v, w, b, g: path_naive(q, k, v, w, b, g, fox_path.K**-0.5), timed, causal_attention_bound,
         None),
        ("ttt_linear", (256, 1024), BOTH, ttt.inputs, ttt_fla["ours"], ttt_fla["fla naive"], ttt.timed, ttt_bound,
         ttt_loop_flops),
        ("mesa_net", mesa[5], (False,), mesa[1], mesa[2], mesa[3], timed, lambda T: None, mesa_loop_flops),
        ("log_linear_attn", log_linear[5], BOTH, log_linear[1], log_linear[2], log_linear[3], timed, lambda T: None,
         log_linear_loop_flops),
    ]


def fma_peak():
    """The best of 20 runs of fma_peak.c's chains (compiled by the ops' C runtime), in FLOP/s."""
    lib, out, steps = _cpu.library(Path(__file__).with_name("fma_peak.c")), torch.zeros(16), 2_000_000
    best = float("inf")
    for _ in range(20):
        start = time.perf_counter()
        lib.fma_chains(*_cpu.arguments(steps, out))
        best = min(best, time.perf_counter() - start)
    return 12 * 16 * 2 * steps / best


def gemm_rate(n=256):
    """The best of 40 single-thread (n, n) x (n, n) float32 products, in FLOP/s."""
    a, b, c = torch.randn(n, n), torch.randn(n, n), torch.empty(n, n)
    best = float("inf")
    for _ in range(40):
        start = time.perf_counter()
        torch.mm(a, b, out=c)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def flops(timer, fn, x, backward):
    with FlopCounterMode(display=False) as counter:
        timer(fn, x, backward)
    return counter.get_total_flops()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--ops", nargs="+", default=["fox", "path", "ttt_linear", "mesa_net", "log_linear_attn"],
                        choices=["fox", "path", "ttt_linear", "mesa_net", "log_linear_attn"])
    parser.add_argument("--peak", type=float, default=None,
                        help="the core's float32 peak in GFLOP/s (default: measured, fma_peak.c)")
    parser.add_argument("--quick", action="store_true", help="T 64 and 128, 1 round (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rounds = 1 if args.quick else args.rounds
    P = fma_peak() if args.peak is None else args.peak * 1e9
    source = "given" if args.peak else "FMA chains"
    print(f"float32, 1 thread, peak {P / 1e9:.1f} GFLOP/s ({source}; the best (256, 256) product: "
          f"{gemm_rate() / 1e9:.1f}), fastest of {rounds} interleaved rounds")
    print("| op | pass | T | original ms | ours ms | ratio | budget GFLOP | ours GFLOP (% of peak run) | original "
          "GFLOP | bound GFLOP | 10x needs: ours / original / bound |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, lengths, passes, make, ours, original, timer, bound, loop_flops in cases():
        if name not in args.ops:
            continue
        for backward in passes:
            for T in ((64, 128) if args.quick else lengths):
                x = make(T)
                if isinstance(x, list):  # benchmarks.ttt's inputs are a dict, and its timer sets the gradients
                    x = [t.detach().requires_grad_(backward) for t in x]
                counts = [flops(timer, fn, x, backward) for fn in (ours, original)]
                if loop_flops:
                    counts[0] = loop_flops(T, backward)
                times = [[], []]
                for _ in range(rounds):
                    for i, fn in enumerate((original, ours)):
                        times[i].append(timer(fn, x, backward))
                t_orig, t_ours = min(times[0]), min(times[1])
                budget = P * t_orig / 10
                b = bound(T)
                b = None if b is None else b * (3 if backward else 1)
                need = " / ".join("-" if c is None else f"{100 * c / budget:.0f}%" for c in (*counts, b))
                row = f"| {name} | {'fwd+bwd' if backward else 'fwd'} | {T} | {1000 * t_orig:.1f} | {1000 * t_ours:.1f}"
                print(f"{row} | {t_orig / t_ours:.1f}x | {budget / 1e9:.2f} | {counts[0] / 1e9:.2f} "
                      f"({100 * counts[0] / t_ours / P:.0f}%) | {counts[1] / 1e9:.2f} | "
                      f"{'-' if b is None else f'{b / 1e9:.2f}'} | {need} |", flush=True)


if __name__ == "__main__":
    main()
