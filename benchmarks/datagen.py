"""Task-generation throughput: samples/s of the DLR atomic tasks (src.dataloaders.synthetic.sample), one process.

    python -m benchmarks.datagen [--L 4096] [--batch 16] [--tasks shift sort ...] [--seconds 2]
    python -m benchmarks.datagen --mqar [--rounds 5]

Beside each batched generator, where one is written here, a per-sample baseline in the style of
the DLR repo's loader (one sample at a time, numpy) measured in the same run, and the speedup.

--mqar: MQAR at V 8192, (L, N) in {(64, 4), (256, 16), (512, 64)}: ours (4 batches of 1024) against
zoology's semantics one example at a time, with one legacy `numpy.random.choice` each for the keys,
the values and the query slots (as zoology's `multiquery_ar` does per row). Each round times the
baseline, then ours; the table gives the median rates and the median ratio with its range.
"""

import argparse
import statistics
import time

import numpy as np
import torch

from src.dataloaders.sequence1d import TASKS, solve_size
from src.dataloaders.synthetic import sample


def _pos(x):
    angle = 2 * np.pi * np.arange(len(x)) / len(x)
    return np.stack([x, np.cos(angle), np.sin(angle)], axis=-1).astype(np.float32)


def one_shift(rng, L, H=8):
    x = rng.standard_normal(L)
    x /= np.abs(x).max()
    y = np.zeros((L, H))
    for j, s in enumerate(np.linspace(0, L - L / H, H).astype(int)):
        y[s:, j] = x[: L - s]
    return _pos(x), y.astype(np.float32)


def one_sort(rng, L):
    x = rng.standard_normal(L)
    x /= np.abs(x).max()
    y = x[np.argsort(np.abs(x - x[0]), kind="stable")]
    return _pos(np.concatenate([x, np.zeros(L)])), y[:, None].astype(np.float32)


def one_solve(rng, L):
    N = solve_size(L)
    U, _, Vh = np.linalg.svd(rng.standard_normal((N, N)))
    A = U @ Vh
    X = rng.standard_normal(N)
    X /= np.linalg.norm(X)
    flat = np.zeros(L)
    flat[: N * N + N] = np.concatenate([A, (A @ X)[:, None]], axis=1).ravel()
    return _pos(flat), X[:, None].astype(np.float32)


PER_SAMPLE = {"shift": one_shift, "sort": one_sort, "solve": one_solve}


def rate(make_batch, batch, seconds):
    make_batch(0)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        make_batch(n)
        n += 1
    return n * batch / (time.perf_counter() - start)


def zoology_mqar(rng, V, L, N, power_a=0.01):
    """One MQAR example as zoology's multiquery_ar builds each row (numpy RandomState choice calls)."""
    keys = rng.choice(np.arange(1, V // 2), size=N, replace=False)
    values = rng.choice(np.arange(V // 2, V), size=N, replace=False)
    S = (L - 2 * N) // 2
    p = power_a * np.arange(1, S + 1) ** (power_a - 1)
    gaps = rng.choice(S, size=N, replace=False, p=p / p.sum())
    x = np.zeros(L, dtype=np.int64)
    x[0 : 2 * N : 2], x[1 : 2 * N : 2] = keys, values
    x[2 * N + 2 * gaps] = keys
    y = np.full(L, -100, dtype=np.int64)
    y[2 * N + 2 * gaps] = values
    return x, y


def mqar_rows(rounds):
    from src.dataloaders.recall import MQAR

    print(f"MQAR, V 8192, torch threads {torch.get_num_threads()}, {rounds} interleaved rounds")
    print("| (L, N) | ours /s | zoology per example /s | ratio (range) |")
    print("|---|---|---|---|")
    for L, N in [(64, 4), (256, 16), (512, 64)]:
        data = MQAR(vocab_size=8192, L=L, num_kv_pairs=N)
        rng = np.random.RandomState(0)
        ours, theirs = [], []
        for r in range(rounds):
            start = time.perf_counter()
            for _ in range(256):
                zoology_mqar(rng, 8192, L, N)
            theirs.append(256 / (time.perf_counter() - start))
            start = time.perf_counter()  # 4 batches: both sides timed over ~0.1 s (the machine stalls)
            for i in range(4):
                data.generate(1024, torch.Generator().manual_seed(4 * r + i))
            ours.append(4096 / (time.perf_counter() - start))
        ratios = sorted(a / b for a, b in zip(ours, theirs))
        print(f"| ({L}, {N}) | {statistics.median(ours):,.0f} | {statistics.median(theirs):,.0f} | "
              f"{statistics.median(ratios):.0f}x ({ratios[0]:.0f}-{ratios[-1]:.0f}) |", flush=True)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mqar", action="store_true", help="the MQAR table instead of the atomic tasks")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--L", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--tasks", nargs="+", default=TASKS, choices=TASKS)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    if args.mqar:
        return mqar_rows(args.rounds)

    print(f"L={args.L}, batch={args.batch}, torch threads={torch.get_num_threads()}")
    print(f"{'task':<22}{'batched /s':>12}{'per-sample /s':>15}{'speedup':>9}")
    for task in args.tasks:
        batched = rate(lambda i: sample(task, args.batch, torch.Generator().manual_seed(i), L=args.L), args.batch,
                       args.seconds)
        row = f"{task:<22}{batched:>12.0f}"
        one = PER_SAMPLE.get(task)
        if one:
            rng = np.random.default_rng(0)
            loop = rate(lambda i: [one(rng, args.L) for _ in range(args.batch)], args.batch, args.seconds)
            row += f"{loop:>15.0f}{batched / loop:>8.1f}x"
        print(row, flush=True)


if __name__ == "__main__":
    main()
