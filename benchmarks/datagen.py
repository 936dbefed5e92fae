"""Task-generation throughput: samples/s of the synthetic tasks (src.dataloaders.synthetic.sample), one process.

    python -m benchmarks.datagen [--families dlr counting formal state_tracking mqar chomsky icl mad] [--L L] [--batch B]
                                 [--tasks shift dyck ...]
                                 [--seconds 2] [--rounds 5] [--threads 1]

Each task family registers its rows in FAMILIES: {family: (rows(L, batch) -> {task: (batched, per_sample)},
default L, default batch)}, where batched(i) and per_sample(i) each make batch i (per_sample may be None).
Beside each batched generator, a per-sample baseline, interleaved with it over several rounds in
this process, and the median speedup with its range over the rounds:
  dlr               every atomic task against the DLR repo's own loader, one example at a time in
                    torch and stacked (benchmarks/dlr_loader.py); each dataset built once; L 4096, batch 16
  counting, formal, state_tracking
                    the per-sample Python definitions the tests check against
                    (src/dataloaders/{counting,formal,state_tracking}_reference.py), stacked into tensors;
                    L 512, batch 64
  chomsky           the original's sample_batch one example at a time, with its numpy (and, for the
                    numbers, Python) draws and per-example work (benchmarks/chomsky_original.py), stacked;
                    at the hierarchy's lengths 40 and 500 (or --L), batch 128
  mqar              zoology's semantics one example at a time, with one legacy numpy.random.choice
                    each for the keys, the values and the query slots (as its multiquery_ar does per
                    row); V 8192, (L, N) in {(64, 4), (256, 16), (512, 64)} whatever --L, batch 1024
  icl               the originals' generators one example at a time (benchmarks/icl_original.py: safari's
                    induction heads and associative recall, S4's copying, seq_icl's automata and prompts),
                    at seq_icl's and Mamba's settings whatever --L, batch 32
  mad               MAD's instance functions one example at a time, as MAD's dataset builds its sets
                    (src/dataloaders/mad_reference.py: MAD's numpy calls, the same numbers for a seed),
                    stacked; each task at its MAD baseline in MAD's training form (12,800 of the
                    14,080 examples a setting draws; fuzzy recall in both forms), and in-context
                    recall at seq_len 1024; batch 128 (MAD's), whatever --L
A family may also register FLOORS[family](L, batch) -> {task: floor(i)}, the part of a batch no
generator avoids; the `bound` column is the median per-round per-sample time / floor time, the
largest speedup possible (dlr: dlr_floors).
"""

import argparse
import random
import statistics
import time

import numpy as np
import torch

from benchmarks import chomsky_original, dlr_loader, icl_original
from src.dataloaders import counting_reference, formal_reference, mad_reference, state_tracking_reference
from src.dataloaders.sequence1d import TASKS, Sequence1D, frame, shapes
from src.dataloaders.synthetic import sample


def dlr_rows(L, batch):
    """Every atomic task: our generator (the dataset built once, as a run builds it) beside the
    DLR repo's loader, one example at a time (benchmarks/dlr_loader.py)."""
    rows = {}
    for task in TASKS:
        dataset, g = Sequence1D(task=task, L=L), torch.Generator().manual_seed(0)
        rows[task] = (lambda i, dataset=dataset: dataset.generate(batch, torch.Generator().manual_seed(i)),
                      lambda i, task=task, g=g: dlr_loader.batch(task, batch, g, L))
    return rows


def dlr_floors(L, batch):
    """The part of each atomic task no generator avoids, alone: its Gaussian draws (torch.randn: 2.5
    ns a number, numpy's generators were 3x slower here; the per-sample baseline draws the same
    numbers) and one write of its input tensor; for sort also a sort of (batch, L) int64 keys
    (numpy's SIMD sort, ~10x torch's here). per-sample time / this time bounds the speedup. mips
    (matmul-bound) has none."""
    keys = np.random.default_rng(0).integers(0, 2**62, (batch, L))
    floors = {}
    for task in TASKS:
        if task == "mips":
            continue
        T, d_input, N, _ = shapes(task, L)  # N: solve's N
        draws = {"context_shift": L - 2, "masked_select": 32 + L, "masked_select_fixed": 32 + L,
                 "solve": N * N + N, "solve_fixed": N}.get(task, L)
        sort = task == "sort"
        floors[task] = lambda i, T=T, C=d_input - 2, n=draws, sort=sort: (
            torch.randn(batch, n, generator=torch.Generator().manual_seed(i)), frame(batch, T, C),
            sort and np.sort(keys, axis=-1))
    return floors


def token_rows(reference, params):
    """Rows of the token tasks {row: params at L}, a row named by its task and optionally a variant
    ("word_problem A5"): the batched generator at fixed length L beside the per-sample definition,
    whose lists are stacked into (B, L) tensors."""

    def rows(L, batch):
        out = {}
        for row, make in params.items():
            task, kwargs, rng = row.split()[0], make(L), random.Random(0)
            options = {k: v for k, v in kwargs.items() if k not in ("L", "L_min")}

            def per_sample(i, task=task, options=options, rng=rng, length=kwargs["L"]):
                pairs = [reference.sample(task, rng, length, **options) for _ in range(batch)]
                return torch.tensor([x for x, _ in pairs]), torch.tensor([y for _, y in pairs])

            out[row] = (lambda i, task=task, kwargs=kwargs: sample(task, batch, torch.Generator().manual_seed(i),
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
    "modular_arithmetic m=7": lambda L: dict(L=L - 1 + L % 2, L_min=L - 1 + L % 2, modulus=7),
}
STATE_TRACKING = {  # the paper's groups, and the single-label variant
    "word_problem S5": lambda L: dict(L=L, L_min=L, group="S5"),
    "word_problem A5": lambda L: dict(L=L, L_min=L, group="A5"),
    "word_problem A4xZ5": lambda L: dict(L=L, L_min=L, group="A4xZ5"),
    "word_problem Z60": lambda L: dict(L=L, L_min=L, group="Z60"),
    "word_problem S5 last": lambda L: dict(L=L, L_min=L, group="S5", label_at="last"),
}


def chomsky_rows(L, batch):
    """Every task at the hierarchy's length L (or at 40 and 500, the ends of its protocol), beside
    the original's sample_batch one example at a time (benchmarks/chomsky_original.py)."""
    rows = {}
    for length in [L] if L else [40, 500]:
        for task in chomsky_original.TASKS:
            rng, python_rng = np.random.RandomState(0), random.Random(0)
            rows[f"{task} L{length}"] = (
                lambda i, task=task, length=length: sample(task, batch, torch.Generator().manual_seed(i), L=length,
                                                           L_min=length),
                lambda i, task=task, length=length, rng=rng, python_rng=python_rng: chomsky_original.batch(
                    task, batch, rng, python_rng, length))
    return rows


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


def icl_rows(L, batch):
    """The in-context tasks at the papers' settings (seq_icl's induction heads and associative
    recall, Mamba's selective copying, seq_icl's automata), beside the originals' generators one
    example at a time (benchmarks/icl_original.py), stacked."""
    settings = {
        "induction_head V16 L256": ("induction_head", dict(vocab_size=16, L=256)),
        "associative_recall V40 L384": ("associative_recall", dict(vocab_size=40, L=384)),
        "copying V16 L4064 M16": ("copying", dict(vocab_size=16, L=4064, M=16)),
        "icl_dfa": ("icl_dfa", dict(L=948)),
    }
    rows = {}
    for row, (task, params) in settings.items():
        rng = np.random.default_rng(0)
        if task == "copying":
            one = lambda rng, params=params: icl_original.copying(**params)  # noqa: E731 (torch's global RNG, as S4)
        elif task == "icl_dfa":
            one = lambda rng, params=params: icl_original.icl_dfa(rng, **params)[:2]  # noqa: E731
        else:
            one = lambda rng, task=task, params=params: getattr(icl_original, task)(rng, **params)  # noqa: E731
        rows[row] = (lambda i, task=task, params=params: sample(task, batch, torch.Generator().manual_seed(i), **params),
                     lambda i, one=one, rng=rng: [torch.stack(t) for t in zip(*(one(rng) for _ in range(batch)))])
    return rows


def icl_floors(L, batch):
    """copying's floor: one write of its int64 batch (x and y, 2 x 4096 ids an example), which the
    per-example baseline writes too; the other rows draw or compute far more than they write."""
    return {"copying V16 L4064 M16": lambda i: torch.empty((2, batch, 4096), dtype=torch.long).fill_(0)}


FLOORS = {"dlr": dlr_floors, "icl": icl_floors}


MAD = {  # row: (task, the settings over its baseline, MAD's form)
    "in_context_recall": ("in_context_recall", {}, "train"),
    "in_context_recall seq_len=1024": ("in_context_recall", {"seq_len": 1024}, "train"),
    "noisy_in_context_recall": ("noisy_in_context_recall", {}, "train"),
    "fuzzy_in_context_recall": ("fuzzy_in_context_recall", {}, "train"),
    "fuzzy_in_context_recall test": ("fuzzy_in_context_recall", {}, "test"),
    "memorization": ("memorization", {}, "train"),
    "compression": ("compression", {}, "train"),
    "selective_copying": ("selective_copying", {}, "train"),
}


def mad_rows(L, batch):
    """Each row: our batched generator (the dataset built once) beside MAD's instance function
    called once per example with one numpy Generator (mad_reference), stacked."""
    from src.dataloaders.mad import mad_task

    rows = {}
    for row, (task, settings, form) in MAD.items():
        data, rng, training = mad_task(task, **settings), np.random.default_rng(0), form == "train"
        full = {k: getattr(data, k) for k in ("vocab_size", "seq_len", "multi_query", "noise_vocab_size",
                                              "frac_noise", "original", "kv_map_seed") if hasattr(data, k)}
        full |= {"num_tokens_to_copy": data.n} if task == "selective_copying" else {}
        if task == "memorization":
            full["table"] = mad_reference.kv_map(data.vocab_size, data.noise_vocab_size, data.kv_map_seed)
        rows[row] = (
            lambda i, data=data, training=training: data.draw(batch, torch.Generator().manual_seed(i), training),
            lambda i, task=task, rng=rng, training=training, full=full: [torch.tensor(t) for t in zip(
                *(mad_reference.instance(task, rng, training, **full) for _ in range(batch)))])
    return rows


FAMILIES = {
    "dlr": (dlr_rows, 4096, 16),
    "mqar": (mqar_rows, None, 1024),
    "counting": (token_rows(counting_reference, COUNTING), 512, 64),
    "formal": (token_rows(formal_reference, FORMAL), 512, 64),
    "state_tracking": (token_rows(state_tracking_reference, STATE_TRACKING), 512, 64),
    "chomsky": (chomsky_rows, None, 128),
    "icl": (icl_rows, None, 32),
    "mad": (mad_rows, None, 128),
}


def rate(make_batch, batch, seconds):
    make_batch(0)  # warm-up
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        make_batch(n)
        n += 1
    return n * batch / (time.perf_counter() - start)


def interleaved(batched, per_sample, batch, seconds, rounds, floor=None):
    """Median samples/s of each over `rounds` alternating rounds, the median and range of the
    per-round ratios (the machine's load changes between rounds more than within one), and where a
    floor (the irreducible part alone) is given, the median per-round bound floor / per-sample."""
    fast, slow, bound = [], [], []
    for _ in range(rounds):
        fast.append(rate(batched, batch, seconds / rounds))
        slow.append(rate(per_sample, batch, seconds / rounds))
        if floor:
            bound.append(rate(floor, batch, seconds / rounds) / slow[-1])
    ratios = sorted(f / s for f, s in zip(fast, slow))
    return (statistics.median(fast), statistics.median(slow), statistics.median(ratios), ratios[0], ratios[-1],
            bound and statistics.median(bound))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=list(FAMILIES), choices=list(FAMILIES))
    parser.add_argument("--L", type=int, default=None, help="default: the family's")
    parser.add_argument("--batch", type=int, default=None, help="default: the family's")
    parser.add_argument("--tasks", nargs="+", default=None,
                        help="rows (or tasks: all their rows) to run; default: every row of the families")
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
        floors = FLOORS[family](L, batch) if family in FLOORS else {}
        rows = {task: pair for task, pair in make_rows(L, batch).items()
                if not args.tasks or task in args.tasks or task.split()[0] in args.tasks}  # "mqar L64 N4": "mqar"
        width = max([22, *(len(task) + 2 for task in rows)])
        print(f"{'task':<{width}}{'batched /s':>12}{'per-sample /s':>15}{'speedup (range)':>22}"
              + (f"{'bound':>8}" if floors else ""))
        for task, (batched, per_sample) in rows.items():
            if per_sample is None:
                print(f"{task:<{width}}{rate(batched, batch, args.seconds):>12.0f}", flush=True)
                continue
            fast, slow, ratio, low, high, bound = interleaved(batched, per_sample, batch, args.seconds, args.rounds,
                                                              floors.get(task))
            print(f"{task:<{width}}{fast:>12.0f}{slow:>15.0f}{ratio:>9.1f}x ({low:.1f}-{high:.1f}x)"
                  + (f"{bound:>7.1f}x" if bound else ""), flush=True)


if __name__ == "__main__":
    main()
