"""Task-generation throughput: samples/s of the synthetic tasks (src.dataloaders.synthetic.sample), one process.

    python -m benchmarks.datagen [--families dlr counting formal mqar] [--L L] [--batch B] [--tasks shift dyck ...]
                                 [--seconds 2] [--rounds 5] [--threads 1]

Each task family registers its rows in FAMILIES: {family: (rows(L, batch) -> {task: (batched, per_sample)},
default L, default batch)}, where batched(i) and per_sample(i) each make batch i (per_sample may be None).
Beside each batched generator, a per-sample baseline, interleaved with it over several rounds in
this process, and the median speedup with its range over the rounds:
  dlr               the DLR repo's loader style (one sample at a time, numpy); L 4096, batch 16
  counting, formal  the per-sample Python definitions the tests check against
                    (src/dataloaders/{counting,formal}_reference.py), stacked into tensors; L 512, batch 64
  mqar              zoology's semantics one example at a time, with one legacy numpy.random.choice
                    each for the keys, the values and the query slots (as its multiquery_ar does per
                    row); V 8192, (L, N) in {(64, 4), (256, 16), (512, 64)} whatever --L, batch 1024
"""

import argparse
import random
import statistics
import time

import numpy as np
import torch

from src.dataloaders import counting_reference, formal_reference
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


def dlr_rows(L, batch):
    rows = {}
    for task in TASKS:
        one, rng = PER_SAMPLE.get(task), np.random.default_rng(0)
        rows[task] = (lambda i, task=task: sample(task, batch, torch.Generator().manual_seed(i), L=L),
                      one and (lambda i, one=one, rng=rng: [one(rng, L) for _ in range(batch)]))
    return rows


def token_rows(reference, params):
    """Rows of the token tasks {task: params at L}: the batched generator at fixed length L beside
    the per-sample definition, whose lists are stacked into (B, L) tensors."""

    def rows(L, batch):
        out = {}
        for task, make in params.items():
            kwargs, rng = make(L), random.Random(0)
            options = {k: v for k, v in kwargs.items() if k not in ("L", "L_min")}

            def per_sample(i, task=task, options=options, rng=rng, length=kwargs["L"]):
                pairs = [reference.sample(task, rng, length, **options) for _ in range(batch)]
                return torch.tensor([x for x, _ in pairs]), torch.tensor([y for _, y in pairs])

            out[task] = (lambda i, task=task, kwargs=kwargs: sample(task, batch, torch.Generator().manual_seed(i),
                                                                    **kwargs), per_sample)
        return out

    return rows


COUNTING = {  # each at length L (max_count and cap large enough to count that far)
    "count_same": lambda L: dict(L=L, L_min=L, max_count=L),
    "count_mod": lambda L: dict(L=L, L_min=L),
    "count_shifted": lambda L: dict(L=L, L_min=L, max_count=2 * L),
    "count_selective": lambda L: dict(L=L, items=10, cap=-(-L // 10)),
}
FORMAL = {
    "parity": lambda L: dict(L=L, L_min=L),
    "majority": lambda L: dict(L=L, L_min=L),
    "dyck": lambda L: dict(L=L - L % 2, L_min=L - L % 2),
    "even_pairs": lambda L: dict(L=L, L_min=L),
    "cycle_navigation": lambda L: dict(L=L, L_min=L),
    "modular_arithmetic": lambda L: dict(L=L - 1 + L % 2, L_min=L - 1 + L % 2),
}
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
    return torch.from_numpy(x), torch.from_numpy(y)


def mqar_rows(L, batch):
    from src.dataloaders.recall import MQAR

    rows = {}
    for L, N in [(64, 4), (256, 16), (512, 64)]:
        data, rng = MQAR(vocab_size=8192, L=L, num_kv_pairs=N), np.random.RandomState(0)
        rows[f"mqar L{L} N{N}"] = (
            lambda i, data=data: data.generate(batch, torch.Generator().manual_seed(i)),
            lambda i, rng=rng, L=L, N=N: [torch.stack(t) for t in zip(*(zoology_mqar(rng, 8192, L, N) for _ in range(batch)))])
    return rows


FAMILIES = {
    "dlr": (dlr_rows, 4096, 16),
    "mqar": (mqar_rows, None, 1024),
    "counting": (token_rows(counting_reference, COUNTING), 512, 64),
    "formal": (token_rows(formal_reference, FORMAL), 512, 64),
}


def rate(make_batch, batch, seconds):
    make_batch(0)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        make_batch(n)
        n += 1
    return n * batch / (time.perf_counter() - start)


def interleaved(batched, per_sample, batch, seconds, rounds):
    """Median samples/s of each over `rounds` alternating rounds, and the median and range of the
    per-round ratios (the machine's load changes between rounds more than within one)."""
    fast, slow = [], []
    for _ in range(rounds):
        fast.append(rate(batched, batch, seconds / rounds))
        slow.append(rate(per_sample, batch, seconds / rounds))
    ratios = sorted(f / s for f, s in zip(fast, slow))
    return statistics.median(fast), statistics.median(slow), statistics.median(ratios), ratios[0], ratios[-1]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--L", type=int, default=None, help="default: the family's")
    parser.add_argument("--batch", type=int, default=None, help="default: the family's")
    parser.add_argument("--tasks", nargs="+", default=None, help="default: every task of the families")
    parser.add_argument("--seconds", type=float, default=2.0, help="per task and generator, over all rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the baselines use one core)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch threads={torch.get_num_threads()}, {args.rounds} interleaved rounds, {args.seconds} s per generator")
    for family in args.families:
        make_rows, L, batch = FAMILIES[family]
        L, batch = args.L or L, args.batch or batch
        print(f"\n{family}: L={L}, batch={batch}")
        print(f"{'task':<22}{'batched /s':>12}{'per-sample /s':>15}{'speedup (range)':>22}")
        for task, (batched, per_sample) in make_rows(L, batch).items():
            if args.tasks and task not in args.tasks:
                continue
            if per_sample is None:
                print(f"{task:<22}{rate(batched, batch, args.seconds):>12.0f}", flush=True)
                continue
            fast, slow, ratio, low, high = interleaved(batched, per_sample, batch, args.seconds, args.rounds)
            print(f"{task:<22}{fast:>12.0f}{slow:>15.0f}{ratio:>9.1f}x ({low:.1f}-{high:.1f}x)", flush=True)


if __name__ == "__main__":
    main()
