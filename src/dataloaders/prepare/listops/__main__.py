"""ListOps data with sub-tree annotations: `python -m src.dataloaders.prepare.listops --help`.

Writes {task}_{train,val,test}.tsv into --output_dir with the columns
    Source          the expression (tokens separated by spaces; LRA's parentheses unless
                    --no_paranthesis; the dataset drops them either way)
    Target          the value of the whole expression
    SubTreeEvals, SubTreeLengths, SubTreeHeights, SubTreeOps, SubTreeInds
                    space-separated, one entry per operator node ordered by the position of its
                    closing `]` (so the root is last): its value, token length, height, operator
                    and the index of its `]` in the paren-free token sequence
    Id              a unique index over the three files

Determinism: candidate trees come in chunks of `CHUNK_ATTEMPTS` attempts, chunk c drawn from its
own generator seeded by (seed, c), and chunks are merged in order. The files therefore depend on
--seed (and the tree options) only, not on --num_workers. Duplicate expressions (and, with
--unique_templates, expressions with the same operator/bracket skeleton once digits are removed)
are dropped over the three splits together, so no expression is in two splits.
"""

import argparse
import hashlib
import itertools
import sys
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from src.dataloaders.prepare.listops.trees import OP0, OPERATORS, sample_chunk, to_string

COLUMNS = ["Source", "Target", "SubTreeEvals", "SubTreeLengths", "SubTreeHeights", "SubTreeOps", "SubTreeInds", "Id"]
CHUNK_ATTEMPTS = 1024
MAX_EMPTY_CHUNKS = 200  # give up when this many chunks in a row keep no tree


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m src.dataloaders.prepare.listops", description=__doc__.split("\n")[0])
    p.add_argument("--task", default="basic", choices=["basic", "subtrees"], help="file prefix: basic (LRA) or subtrees")
    p.add_argument("--seed", default=0, type=int)
    p.add_argument("--num_train_samples", default=96000, type=int)
    p.add_argument("--num_valid_samples", default=2000, type=int)
    p.add_argument("--num_test_samples", default=2000, type=int)
    p.add_argument("--max_depth", default=10, type=int, help="depth of the deepest leaves (the root is at depth 1)")
    p.add_argument("--max_args", default=10, type=int, help="most children of an operator (at least 2)")
    p.add_argument("--min_length", default=500, type=int, help="keep trees longer than this (paren-free tokens)")
    p.add_argument("--max_length", default=2000, type=int, help="keep trees shorter than this (paren-free tokens)")
    p.add_argument("--no_paranthesis", action="store_true", help="write expressions without LRA's parentheses")
    p.add_argument("--unique_templates", action="store_true", help="also drop trees whose skeleton (digits removed) was seen")
    p.add_argument("--num_workers", default=1, type=int, help="processes generating trees (the files do not depend on it)")
    p.add_argument("--output_dir", required=True, type=Path)
    args = p.parse_args(argv)
    checks = [
        (args.max_depth >= 1, f"--max_depth={args.max_depth} must be at least 1"),
        (args.max_args >= 2, f"--max_args={args.max_args} must be at least 2"),
        (args.min_length + 1 < args.max_length, f"--min_length={args.min_length} --max_length={args.max_length} leave no length"),
        (args.num_workers >= 1, f"--num_workers={args.num_workers} must be at least 1"),
        (min(args.num_train_samples, args.num_valid_samples, args.num_test_samples) >= 0, "sample counts must be >= 0"),
    ]
    for ok, message in checks:
        if not ok:
            p.error(message)
    return args


def chunk(args, index):
    """The kept trees of chunk `index` (a function of the seed, the index and the tree options)."""
    rng = np.random.default_rng([args.seed, index])
    return sample_chunk(rng, CHUNK_ATTEMPTS, args.max_depth, args.max_args, args.min_length, args.max_length)


def chunks(args):
    """Every chunk's trees, in chunk order, computed by --num_workers processes."""
    if args.num_workers == 1:
        yield from (chunk(args, i) for i in itertools.count())
        return
    with ProcessPoolExecutor(args.num_workers) as pool:
        pending = deque(pool.submit(chunk, args, i) for i in range(2 * args.num_workers))
        for i in itertools.count(len(pending)):
            yield pending.popleft().result()
            pending.append(pool.submit(chunk, args, i))


def digest(codes):
    return hashlib.blake2b(codes.tobytes(), digest_size=16).digest()


def unique_trees(args, wanted):
    """The first `wanted` trees that are not duplicates (16-byte digests are kept, not trees)."""
    seen, skeletons, n_empty = set(), set(), 0
    if wanted <= 0:
        return
    for trees in chunks(args):
        n_empty = 0 if trees else n_empty + 1
        if n_empty == MAX_EMPTY_CHUNKS:
            sys.exit(
                f"error: {MAX_EMPTY_CHUNKS * CHUNK_ATTEMPTS} trees in a row fell outside --min_length={args.min_length} "
                f"--max_length={args.max_length} with --max_depth={args.max_depth} --max_args={args.max_args}"
            )
        for tree in trees:
            key = digest(tree["tokens"])
            skeleton = digest(tree["tokens"][tree["tokens"] >= OP0]) if args.unique_templates else None
            if key in seen or (skeleton is not None and skeleton in skeletons):
                continue
            seen.add(key)
            skeletons.add(skeleton)
            yield tree
            wanted -= 1
            if wanted == 0:
                return


def row(tree, index, parentheses):
    join = lambda a: " ".join(map(str, a.tolist()))  # noqa: E731
    return [
        to_string(tree, parentheses), str(int(tree["evals"][-1]) if tree["evals"].size else int(tree["tokens"][0])),
        join(tree["evals"]), join(tree["lengths"]), join(tree["heights"]),
        " ".join(OPERATORS[o] for o in tree["ops"].tolist()), join(tree["inds"]), str(index),
    ]


def main(argv=None):
    args = parse_args(argv)
    sizes = {"train": args.num_train_samples, "val": args.num_valid_samples, "test": args.num_test_samples}
    paths = {split: args.output_dir / f"{args.task}_{split}.tsv" for split in sizes}
    existing = [str(p) for p in paths.values() if p.exists()]
    if existing:
        sys.exit(f"error: {existing[0]} exists; remove it or choose another --output_dir")
    args.output_dir.mkdir(parents=True, exist_ok=True)
    total = sum(sizes.values())
    trees = unique_trees(args, total)
    with tqdm(total=total, desc="ListOps trees", unit="tree") as progress:
        index = 0
        for split, n in sizes.items():
            with open(paths[split], "w") as f:
                f.write("\t".join(COLUMNS) + "\n")
                for tree in itertools.islice(trees, n):
                    f.write("\t".join(row(tree, index, not args.no_paranthesis)) + "\n")
                    index += 1
                    progress.update()
    print(f"wrote {', '.join(f'{sizes[s]} to {paths[s]}' for s in sizes)}")


if __name__ == "__main__":
    main()
