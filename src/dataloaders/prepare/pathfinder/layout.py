"""Pathfinder generator settings per resolution, and where the files go."""

from pathlib import Path
from types import SimpleNamespace

from src.dataloaders.files import data_path

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


def relative_path(index):
    return Path(f"{index // PER_FOLDER:04d}") / f"{index:06d}.png"


def default_output_dir(resolution):
    return data_path() / "pathfinder_segmentation" / f"pathfinder{resolution}_segmentation"
