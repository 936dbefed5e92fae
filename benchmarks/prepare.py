"""Offline-generator throughput: ListOps trees/s and Pathfinder images/s, one process.

    python -m benchmarks.prepare [--listops_seconds 20] [--pathfinder_images 20] [--resolution 128]

ListOps at the DLR paper's setting (max_depth 15, max_args 9, kept lengths 7000 < L < 8180):
the vectorised sampler of src/dataloaders/prepare/listops (kept trees/s, and attempts/s, since
most attempts fall outside the length window), against a per-node recursive sampler and
evaluator in the style of LRA's generator (one Python call per node) measured in the same run
on the same number of attempts. Pathfinder: `draw_image` at --resolution, images/s.
"""

import argparse
import random
import statistics
import time

import numpy as np

from src.dataloaders.prepare.listops.__main__ import CHUNK_ATTEMPTS
from src.dataloaders.prepare.listops.trees import sample_chunk
from src.dataloaders.prepare.pathfinder.layout import settings
from src.dataloaders.prepare.pathfinder.snakes import draw_image

DEPTH, ARGS, MIN_LEN, MAX_LEN = 15, 9, 7000, 8180
OPS = {"[MIN": min, "[MAX": max, "[MED": lambda a: int(statistics.median(a)), "[SM": lambda a: sum(a) % 10}


def recursive_tree(rng, depth=1):
    """LRA-style: a node is an operator with probability 0.25 below max depth, else a digit."""
    if depth < DEPTH and rng.random() < 0.25:
        return (rng.choice(list(OPS)), [recursive_tree(rng, depth + 1) for _ in range(rng.randint(2, ARGS))])
    return rng.randint(0, 9)


def recursive_length(tree):
    return 1 if isinstance(tree, int) else 2 + sum(recursive_length(c) for c in tree[1])


def recursive_eval(tree):
    return tree if isinstance(tree, int) else OPS[tree[0]]([recursive_eval(c) for c in tree[1]])


def listops(seconds):
    rng, attempts, kept, start = np.random.default_rng(0), 0, 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        kept += len(sample_chunk(rng, CHUNK_ATTEMPTS, DEPTH, ARGS, MIN_LEN, MAX_LEN))
        attempts += CHUNK_ATTEMPTS
    fast = time.perf_counter() - start
    py, py_kept, start = random.Random(0), 0, time.perf_counter()
    for _ in range(attempts):  # the same number of attempts, one tree at a time
        tree = recursive_tree(py)
        if MIN_LEN < recursive_length(tree) < MAX_LEN:
            recursive_eval(tree)
            py_kept += 1
    slow = time.perf_counter() - start
    print(f"ListOps, max_depth {DEPTH}, max_args {ARGS}, {MIN_LEN} < length < {MAX_LEN}: {attempts} attempts")
    print(f"{'sampler':<26}{'attempts/s':>12}{'kept trees/s':>14}{'kept':>8}")
    print(f"{'vectorised (this repo)':<26}{attempts / fast:>12.0f}{kept / fast:>14.1f}{kept:>8}")
    print(f"{'recursive, per node':<26}{attempts / slow:>12.0f}{py_kept / slow:>14.1f}{py_kept:>8}")
    print(f"speedup {slow / fast:.1f}x")


def pathfinder(resolution, n):
    s, start = settings(resolution), time.perf_counter()
    for i in range(n):
        draw_image(s, np.random.default_rng([0, resolution, i]))
    elapsed = time.perf_counter() - start
    print(f"Pathfinder {resolution}x{resolution}: {n} images in {elapsed:.1f} s, {n / elapsed:.2f} images/s")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--listops_seconds", type=float, default=20)
    p.add_argument("--pathfinder_images", type=int, default=20)
    p.add_argument("--resolution", type=int, default=128)
    args = p.parse_args()
    listops(args.listops_seconds)
    pathfinder(args.resolution, args.pathfinder_images)


if __name__ == "__main__":
    main()
