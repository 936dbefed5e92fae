"""The mamba3 op (backends cpu and torch) against its per-step loop (src/ops/mamba3/reference.py,
mamba-ssm's mamba3_siso_step_ref in our layout), on CPU, measured side by side, interleaved round
by round.

    python -m benchmarks.mamba3 [--rounds 3] [--threads N] [--quick]

Inputs (float32) as the Mamba3 layer makes them at its defaults: B 2, H 4 heads of P = 64, N = 128
(d_state), S = 32 angles, one B/C group; dt = softplus(x - 4), A in [-1, 0), trap, angles ~ N(0, 1).
Forward at T 2048 and forward + backward at T 512 (the gradients of every input; autograd through
the loop). The table gives the median wall time over the rounds, the median ratio loop / ours and
its range, and the relative error ||y - y_64|| / ||y_64|| of the float32 forward against the loop in
float64.
"""

import argparse
import statistics

import torch
import torch.nn.functional as F

from benchmarks.timing import timed
from src.ops.mamba3 import mamba3_siso, reference

B, H, P, N, S = 2, 4, 64, 128, 32


def inputs(T, grad):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    dt = F.softplus(r(B, T, H) - 4)
    adt = -dt * torch.rand(B, T, H, generator=g)
    x = [r(B, T, 1, N), r(B, T, 1, N), r(B, T, H, P), adt, dt, r(B, T, H), r(H, N), r(H, N), r(B, T, H, S), r(H),
         r(B, T, H, P)]
    return [t.requires_grad_(grad) for t in x]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="T 256 / 64, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    T_fwd, T_bwd = (256, 64) if args.quick else (2048, 512)
    print(f"float32, B {B}, H {H}, P {P}, N {N}, S {S}, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| pass | T | loop ms | backend | ours ms | ratio (median) | ratio range | rel. error ours / loop |")
    print("|---|---:|---:|---|---:|---:|---:|---|")
    for backward, T in ((False, T_fwd), (True, T_bwd)):
        x = inputs(T, backward)
        with torch.no_grad():
            y64 = reference.mamba3_siso(*[t.detach().double() for t in x])
        for backend in ("cpu", "torch"):
            fn = lambda *a, b=backend: mamba3_siso(*a, backend=b)  # noqa: E731
            timed(fn, x, backward)  # warm-up (and the C loop's compile)
            t_loop, t_ours = [], []
            for _ in range(rounds):
                t_loop.append(timed(reference.mamba3_siso, x, backward))
                t_ours.append(timed(fn, x, backward))
            ratios = [a / b for a, b in zip(t_loop, t_ours)]
            err = ""
            if not backward:
                with torch.no_grad():
                    err = " / ".join(f"{((f(*[t.detach() for t in x]).double() - y64).norm() / y64.norm()).item():.1e}"
                                     for f in (fn, reference.mamba3_siso))
            print(f"| {'fwd+bwd' if backward else 'fwd'} | {T} | {1000 * statistics.median(t_loop):.0f} | {backend} | "
                  f"{1000 * statistics.median(t_ours):.1f} | {statistics.median(ratios):.1f}x | "
                  f"{min(ratios):.1f}-{max(ratios):.1f}x | {err} |")


if __name__ == "__main__":
    main()
