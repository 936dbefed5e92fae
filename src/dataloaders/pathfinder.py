"""Pathfinder datasets, read from the files of `python -m src.dataloaders.prepare.pathfinder`.

Input: the grayscale image scaled to [-1, 1] and flattened row-major, (R^2, 1) per sample.
The samples are split train/val/test (1 - val_split - test_split, val_split, test_split) by a
permutation seeded by `split_seed`, independent of the training seed.

    pathfinder_segmentation  -> (R^2,) per-pixel class: 2 connecting path, 1 main snake that does
                                not connect the markers, 0 elsewhere
    pathfinder               -> () the label: 1 when a snake connects the two markers (LRA)
"""

import sys
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from src.dataloaders.files import FileDataset, data_path
from src.dataloaders.prepare.pathfinder.layout import SETTINGS, default_output_dir, relative_path
from src.utils.errors import ConfigError, check_choice


class PathfinderSamples:
    def __init__(self, root, indices, labels, segmentation):
        self.root, self.indices, self.labels, self.segmentation = root, indices, labels, segmentation

    def __len__(self):
        return len(self.indices)

    def _read(self, folder, i):
        with Image.open(self.root / folder / relative_path(i)) as image:
            return torch.from_numpy(np.asarray(image).reshape(-1).astype(np.int64))

    def __getitem__(self, k):
        i = int(self.indices[k])
        x = self._read("images", i).float().div_(127.5).sub_(1).unsqueeze(-1)  # (R^2, 1) in [-1, 1]
        y = self._read("masks", i) if self.segmentation else torch.tensor(int(self.labels[i]))
        return x, y


class Pathfinder(FileDataset):
    """`dataset=pathfinder`: is there a path between the two markers? (image-level, 2 classes)"""

    segmentation = False
    d_input = 1
    d_output = 2
    l_output = 0  # one prediction per image

    def __init__(self, resolution=32, val_split=0.1, test_split=0.1, split_seed=42, data_dir=None, seed=0):
        super().__init__(seed)
        check_choice("dataset.resolution", resolution, sorted(SETTINGS))
        if not (val_split > 0 and test_split > 0 and val_split + test_split < 1):
            raise ConfigError(f"dataset.val_split={val_split} dataset.test_split={test_split}: each must be > 0, together < 1")
        self.resolution, self.val_split, self.test_split, self.split_seed = resolution, val_split, test_split, split_seed
        self.L_input = resolution**2  # pixels, row-major
        self.data_dir = Path(data_dir) if data_dir else default_output_dir(resolution)

    def load(self):
        labels_file = self.data_dir / "labels.npy"
        if not labels_file.exists():
            raise ConfigError(
                f"{labels_file} not found (DATA_PATH={data_path()}); generate the data with:\n  python -m "
                f"src.dataloaders.prepare.pathfinder --resolution {self.resolution} --output_dir {self.data_dir} "
                "--num_images 100000 --num_workers 2\n(the paper's 100,000 images take hours on a CPU; "
                "--num_images 1000 for a quick try, docs/cpu-tour.md)"
            )
        labels = np.load(labels_file)
        n = len(labels)
        n_val, n_test = int(self.val_split * n), int(self.test_split * n)
        if min(n_val, n_test) < 1:
            raise ConfigError(f"{n} images in {self.data_dir} leave no validation or test image; generate more")
        order = np.random.default_rng(self.split_seed).permutation(n)
        parts = {"train": order[: n - n_val - n_test], "val": order[n - n_val - n_test : n - n_test], "test": order[n - n_test :]}
        splits = {k: PathfinderSamples(self.data_dir, v, labels, self.segmentation) for k, v in parts.items()}
        print(f"{type(self).__name__}: " + ", ".join(f"{len(s)} {k}" for k, s in splits.items()), file=sys.stderr)
        return splits


class PathfinderSegmentation(Pathfinder):
    """`dataset=pathfinder_segmentation`: the class of every pixel (3 classes)."""

    segmentation = True
    d_output = 3
    l_output = None  # a prediction at every pixel

    def __init__(self, resolution=128, val_split=0.1, test_split=0.1, split_seed=42, data_dir=None, seed=0):
        super().__init__(resolution, val_split, test_split, split_seed, data_dir, seed)
