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
from types import SimpleNamespace

import numpy as np
from PIL import Image
from tqdm.auto import tqdm

from src.dataloaders.files import data_path
from src.dataloaders.prepare.pathfinder.snakes import draw_image

# Per-resolution settings: 128, 256 and 512 are those of the DLR paper; 32 and 64 are smaller
# versions of the 128 setting for tests and quick runs.
SETTINGS = {
    32: dict(padding=1, paddle_margins=[1], seed_distance=6, marker_radius=1.2, contour_length=5, paddle_thickness=1.0,
             antialias_scale=4, continuity=1.8, paddle_length=3, distractor_length=2, num_distractor_snakes=4,
             snake_contrast=0.9),
    64: dict(padding=1, paddle_margins=[1, 2], seed_distance=11, marker_radius=1.6, contour_length=10,
             paddle_thickness=1.0, antialias_scale=4, continuity=1.8, paddle_length=3, distractor_length=3,
             num_distractor_snakes=10, snake_contrast=0.9),
    128: dict(padding=1, paddle_margins=[2, 3], seed_distance=22, marker_radius=2.1, contour_length=14,
              paddle_thickness=1.5, antialias_scale=2, continuity=1.8, paddle_length=5, distractor_length=4,
              num_distractor_snakes=16, snake_contrast=0.9),
    256: dict(padding=1, paddle_margins=[4], seed_distance=27, marker_radius=4.2, contour_length=16, paddle_thickness=2,
              antialias_scale=2, continuity=2.2, paddle_length=8, distractor_length=5, num_distractor_snakes=16,
              snake_contrast=1.0),
    512: dict(padding=1, paddle_margins=[7], seed_distance=40, marker_radius=9, contour_length=12, paddle_thickness=6,
              antialias_scale=3, continuity=2.5, paddle_length=22, distractor_length=4, num_distractor_snakes=18,
              snake_contrast=1.0),
}
RETRIALS = dict(max_paddle_retrial=2, max_distractor_retrial=4)
PER_FOLDER = 1000


def settings(resolution):
    return SimpleNamespace(size=resolution, **SETTINGS[resolution], **RETRIALS)


def sample(seed, resolution, index):
    """(image, mask, label) of sample `index`."""
    rng = np.random.default_rng([seed, resolution, index])
    image, mask, label, _ = draw_image(settings(resolution), rng)
    return image, mask, label


def relative_path(index):
    return Path(f"{index // PER_FOLDER:04d}") / f"{index:06d}.png"


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


def default_output_dir(resolution):
    return data_path() / "pathfinder_segmentation" / f"pathfinder{resolution}_segmentation"


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
