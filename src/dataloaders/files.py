"""Datasets read from files under DATA_PATH (the environment variable; default ./data).

A subclass implements `load()`, returning its three splits as sequences of samples (each with
`len` and `[i]` giving a tuple (x, y) or (x, y, extra dict) of tensors). Batches follow base.py:
training batch g of epoch e holds the samples at positions g b .. (g+1) b - 1 of a permutation
seeded by (seed, "train", e), so the order is the same for any number of workers and resumes
exactly; with W devices rank r takes the global batches g = i W + r. Each epoch covers the
largest whole number of global batches, floor(N / (b W)); the few samples left over
(fewer than b W) differ from epoch to epoch as the permutation changes. Validation and test
batches are the splits in order, dealt to ranks round-robin.
"""

import os
from pathlib import Path

import torch
from torch.utils.data import default_collate

from src.dataloaders.base import BatchDataset, batch_seed


def data_path():
    """DATA_PATH, where generated data lives (default ./data)."""
    return Path(os.environ.get("DATA_PATH", "data"))


class FileDataset(BatchDataset):
    def __init__(self, seed=0):
        self.seed = seed
        self.splits = None
        self._order = (None, None)  # (epoch, permutation) of the last training epoch used

    def load(self):
        """{"train": samples, "val": samples, "test": samples}."""
        raise NotImplementedError

    def setup(self):
        if self.splits is None:
            self.splits = self.load()

    def n_samples(self, split):
        return len(self.splits[split])

    def _permutation(self, epoch):
        if self._order[0] != epoch:
            generator = torch.Generator().manual_seed(batch_seed(self.seed, "train", epoch, 0))
            self._order = (epoch, torch.randperm(self.n_samples("train"), generator=generator))
        return self._order[1]

    def batch(self, split, epoch, index, rows):
        samples = self.splits[split]
        indices = self._permutation(epoch)[rows.start : rows.stop].tolist() if split == "train" else rows
        return default_collate([samples[i] for i in indices])
