"""Pathfinder segmentation data: `python -m src.dataloaders.prepare.pathfinder --help`.

Writes into --output_dir (default DATA_PATH/pathfinder_segmentation/pathfinder<R>_segmentation):
    images/<i // 1000>/<i>.png   the grayscale picture of sample i (8-bit)
    masks/<i // 1000>/<i>.png    its per-pixel target: 0 background/distractors/markers,
                                 1 main snake not connecting the markers, 2 connecting path
    labels.npy                   (N,) uint8: 1 when one snake connects the two markers
    settings.json                the settings and seed that made the files
Sample i is drawn from its own generator seeded by (seed, resolution, i), so the files depend on
--seed only, not on --num_workers. labels.npy is written last: a directory without it is an
unfinished run, which a new run overwrites; a finished one is never overwritten.
"""

import argparse
import json
import sys
from contextlib import nullcontext
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from src.dataloaders.prepare.pathfinder.layout import RETRIALS, SETTINGS, default_output_dir, relative_path, settings
from src.dataloaders.prepare.pathfinder.snakes import draw_image

def sample(seed, resolution, index):
    """(image, mask, label) of sample `index`."""
    rng = np.random.default_rng([seed, resolution, index])
    image, mask, label, _ = draw_image(settings(resolution), rng)
    return image, mask, label


def write_range(output_dir, seed, resolution, start, stop):
    """Draw and save samples start..stop-1; returns their labels."""
    labels = []
    for i in range(start, stop):
        image, mask, label = sample(seed, resolution, i)
        for folder, array in (("images", image), ("masks", mask)):
            path = output_dir / folder / relative_path(i)
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(array).save(path)
        labels.append(label)
    return labels


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m src.dataloaders.prepare.pathfinder", description=__doc__.split("\n")[0])
    p.add_argument("--resolution", type=int, default=128, choices=sorted(SETTINGS))
    p.add_argument("--num_images", type=int, default=100000)
    p.add_argument("--num_workers", type=int, default=1, help="processes drawing images (the files do not depend on it)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output_dir", type=Path, default=None, help="default: DATA_PATH/pathfinder_segmentation/pathfinder<R>_segmentation")
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error(f"--num_images={args.num_images} must be at least 1")
    if args.num_workers < 1:
        p.error(f"--num_workers={args.num_workers} must be at least 1")
    args.output_dir = args.output_dir or default_output_dir(args.resolution)
    return args


def main(argv=None):
    args = parse_args(argv)
    out = args.output_dir
    if (out / "labels.npy").exists():
        sys.exit(f"error: {out} already holds a finished dataset (labels.npy); remove it or choose another --output_dir")
    out.mkdir(parents=True, exist_ok=True)
    step = 50
    ranges = [(i, min(i + step, args.num_images)) for i in range(0, args.num_images, step)]
    labels = []
    pool = ProcessPoolExecutor(args.num_workers) if args.num_workers > 1 else nullcontext()
    with pool, tqdm(total=args.num_images, desc=f"Pathfinder {args.resolution}", unit="image") as progress:
        run = pool.map if args.num_workers > 1 else map
        for part in run(write_range, *zip(*[(out, args.seed, args.resolution, *r) for r in ranges])):
            labels.extend(part)
            progress.update(len(part))
    (out / "settings.json").write_text(
        json.dumps({"resolution": args.resolution, "seed": args.seed, "num_images": args.num_images,
                    **SETTINGS[args.resolution], **RETRIALS}, indent=1)
    )
    np.save(out / "labels.npy", np.array(labels, dtype=np.uint8))
    print(f"wrote {args.num_images} images ({np.mean(labels):.1%} label 1) to {out}")


if __name__ == "__main__":
    main()
