"""The Stack-RNN and Tape-RNN recurrences: our C loop (src/ops/memory_rnn, backend `cpu`) against
the per-step reference loop (src/ops/memory_rnn/reference.py, written from the Chomsky hierarchy's
StackRNNCore and TapeInputLengthJumpCore; autograd through it) on one CPU thread, float32.

    python -m benchmarks.memory_rnn [--rounds 5]

The hierarchy's sizes: hidden 256, a stack of 30 cells of 8, a tape of 40 cells of 8 with its
write MLP (64, 64) and five actions (jumps of 40, its longest training input); T 80 (an input of
40 and its reversal). Rows at B 4 and at the hierarchy's batch of 128. Each round runs ours then
the loop on the same inputs; a row gives the median time of each and the median of the per-round
ratios. err f32: the largest |ours32 - reference64| over h (fwd) and over h and the gradients of
u and every weight (fwd+bwd).
"""

import argparse
import statistics
import time

import torch

from src.ops.memory_rnn import cpu, reference

H, T = 256, 80
KINDS = {"stack": (30, 8, (), ()), "tape": (40, 8, (64, 64), (0, -1, 1, -40, 40))}


def inputs(B, kind, dtype, backward):
    """u, W_h, W_r, W_a, b_a, then the write layers' (W, b) flat; weights of std 1/sqrt(fan_in)."""
    K, C, widths, shifts = KINDS[kind]
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    dims = [H, *widths, C]
    write = [t for a, b in zip(dims, dims[1:]) for t in (r(b, a) / a**0.5, r(b))]
    xs = [r(B, T, H), r(H, H) / H**0.5, r(H, C) / H**0.5, r(len(shifts) or 3, H) / H**0.5, r(len(shifts) or 3)]
    return [t.to(dtype).requires_grad_(backward) for t in (*xs, *write)]


def run(fn, kind, args, backward, w):
    """Seconds for fn on args (and the backward of <h, w>); -> seconds, h, gradients."""
    K, _, _, shifts = KINDS[kind]
    u, W_h, W_r, W_a, b_a, *write = args
    start = time.perf_counter()
    h = fn(u, W_h, W_r, tuple(zip(write[::2], write[1::2])), W_a, b_a, kind, K, shifts)[0]
    grads = torch.autograd.grad((h * w).sum(), args) if backward else ()
    return time.perf_counter() - start, h.detach(), grads


def row(kind, B, backward, rounds):
    x32, x64 = inputs(B, kind, torch.float32, backward), inputs(B, kind, torch.float64, backward)
    w64 = torch.randn(B, T, H, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w32 = w64.float()
    _, h64, g64 = run(reference.memory_rnn, kind, x64, backward, w64)
    _, h32, g32 = run(cpu.memory_rnn, kind, x32, backward, w32)  # warm-up (and the compile on first use)
    err = max((a.double() - r).abs().max().item() for a, r in zip((h32, *g32), (h64, *g64)))
    times = []
    for _ in range(rounds):
        times.append((run(cpu.memory_rnn, kind, x32, backward, w32)[0],
                      run(reference.memory_rnn, kind, x32, backward, w32)[0]))
    mine, its = (statistics.median(t[i] for t in times) for i in (0, 1))
    ratio = statistics.median(t[1] / t[0] for t in times)
    name = f"{kind} {'fwd+bwd' if backward else 'fwd'} B={B} T={T} H={H}"
    print(f"{name:<34}{1e3 * mine:>10.1f}{1e3 * its:>16.1f}{ratio:>9.1f}x{err:>10.1e}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, float32, median of {args.rounds} interleaved rounds")
    print(f"{'row':<34}{'cpu (ms)':>10}{'reference (ms)':>16}{'ratio':>10}{'err f32':>10}")
    for kind in KINDS:
        for B in (4, 128):
            for backward in (False, True):
                row(kind, B, backward, args.rounds)


if __name__ == "__main__":
    main()
