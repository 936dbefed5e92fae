"""What signed transitions cost: selective_scan and ssd_scan with neg_eigval (a_t = 2 exp(dt A) - 1)
against the same call without it (exp(dt A)), on CPU, interleaved round by round.

    python -m benchmarks.signed_scans [--rounds 11] [--threads N] [--quick]

Inputs (float32) as benchmarks/scan.py makes them: the selective scan at B 4, D 256, N 16 (mamba's
default d_state) with B, C of shape (B, N, L), forward at L 2048 (no gradients) and forward +
backward at L 256; SSD at B 4, L 1024, H 8, P 32, N 16, chunks of 64, forward + backward. delta =
softplus(x - 2) and A = -exp(N(0, 1/4)), so 3-4% of the transitions are negative (the cost does
not depend on their signs). Each round times both calls once, in alternating order, in CPU time
of the process (time.process_time: on the shared 2-core machine wall times swing 2x with other
jobs); the table gives the median times, the median ratio signed / unsigned and its range.
"""

import argparse
import statistics
import time

import torch

from src.ops.selective_scan import selective_scan
from src.ops.ssd_scan import ssd_scan


def timed(fn):
    start = time.process_time()
    fn()
    return time.process_time() - start


def selective(L, grad, backend):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = [r(4, 256, L), r(4, 256, L) - 2.0, -torch.exp(r(256, 16) * 0.5), r(4, 16, L), r(4, 16, L), r(256),
         r(4, 256, L), r(256)]
    x = [t.requires_grad_(grad) for t in x]

    def run(neg):
        with torch.set_grad_enabled(grad):
            y = selective_scan(*x, delta_softplus=True, neg_eigval=neg, backend=backend)
            if grad:
                torch.autograd.grad(y.sum(), x)
    return run


def ssd(L):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    x = [t.requires_grad_() for t in (r(4, L, 8, 32), r(4, L, 8) - 2.0, -torch.exp(r(8) * 0.5), r(4, L, 1, 16),
                                      r(4, L, 1, 16))]

    def run(neg):
        y = ssd_scan(*x, chunk_size=64, dt_softplus=True, neg_eigval=neg, backend="torch")
        torch.autograd.grad(y.sum(), x)
    return run


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=11)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="L / 8, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds, k = (1, 8) if args.quick else (args.rounds, 1)
    rows = [("selective_scan C loop", "fwd", 2048 // k, selective(2048 // k, False, "cpu")),
            ("selective_scan C loop", "fwd+bwd", 256 // k, selective(256 // k, True, "cpu")),
            ("selective_scan blocked torch", "fwd", 2048 // k, selective(2048 // k, False, "torch")),
            ("selective_scan blocked torch", "fwd+bwd", 256 // k, selective(256 // k, True, "torch")),
            ("ssd_scan chunked torch", "fwd+bwd", 1024 // k, ssd(1024 // k))]
    print(f"float32, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| op, backend | pass | L | unsigned ms | signed ms | signed / unsigned, median (range) |")
    print("|---|---|---:|---:|---:|---:|")
    for name, kind, L, run in rows:
        run(False), run(True)  # warm-up (compiles the C loop once)
        plain, signed = [], []
        for i in range(rounds):
            for neg in (False, True) if i % 2 == 0 else (True, False):
                (signed if neg else plain).append(timed(lambda: run(neg)))
        ratios = [s / p for s, p in zip(signed, plain)]
        print(f"| {name} | {kind} | {L} | {1000 * statistics.median(plain):.1f} | "
              f"{1000 * statistics.median(signed):.1f} | {statistics.median(ratios):.2f} "
              f"({min(ratios):.2f}-{max(ratios):.2f}) |", flush=True)


if __name__ == "__main__":
    main()
