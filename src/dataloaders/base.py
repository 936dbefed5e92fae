"""Datasets that deal whole batches, keyed (split, epoch, global batch index, rows).

A sampler in the main process yields the keys and the torch Dataset turns a key into a batch, so
persistent workers stay correct across epochs and:
  - the stream does not depend on the number of DataLoader workers or devices;
  - ranks are disjoint: with W devices, rank r gets the global batches g = i W + r;
  - a resumed run sees the same batches: the train loader's `state_dict` (saved by Lightning in
    every checkpoint) records how many batches of the epoch were trained;
  - validation and test sets are fixed (epoch 0 of their own split), whatever the epoch.

Synthetic datasets draw every batch from its own torch.Generator seeded by (seed, split, epoch,
index), never from the global RNG; an epoch is exactly `samples_per_epoch` samples over all
devices together. Datasets on disk (files.py) gather batches from a per-epoch permutation.
"""

import math
import signal

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from src.utils.errors import ConfigError

SPLITS = {"train": 0, "val": 1, "test": 2}


def batch_seed(seed, split, epoch, index):
    """A 63-bit seed mixing (seed, split, epoch, index) through numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, SPLITS[split], epoch, index]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


class TrainBatches(Sampler):
    """Keys of this rank's training batches: ("train", epoch, g, rows) for g = i * W + rank, where
    rows = range(g * batch_size, (g + 1) * batch_size) are the batch's positions in the epoch.
    `start` skips the first batches of the next iteration only (mid-epoch resume)."""

    def __init__(self, n_batches, batch_size, rank, world_size):
        self.n_batches, self.batch_size, self.rank, self.world_size = n_batches, batch_size, rank, world_size
        self.epoch, self.start = 0, 0

    def set_epoch(self, epoch):  # called by Lightning before each epoch
        self.epoch = epoch

    def __len__(self):
        return self.n_batches

    def __iter__(self):
        start, self.start = self.start, 0
        for i in range(start, self.n_batches):
            g = i * self.world_size + self.rank
            yield "train", self.epoch, g, range(g * self.batch_size, (g + 1) * self.batch_size)


class ResumableLoader(DataLoader):
    """A training DataLoader whose position in the epoch is saved in Lightning checkpoints.
    `progress` (set by the LightningModule) returns the number of batches trained this epoch."""

    progress = None

    def state_dict(self):
        return {"epoch": self.sampler.epoch, "batches": self.progress() if self.progress else 0}

    def load_state_dict(self, state):
        # Lightning restarts a mid-epoch run before calling set_epoch: restore the epoch too.
        done = state["batches"] >= len(self.sampler)
        self.sampler.epoch = state["epoch"] + done
        self.sampler.start = 0 if done else state["batches"]


class BatchDataset(Dataset):
    """Base of every dataset (S4-style interface): subclasses set `d_input`, `d_output`,
    `l_output` (and `n_tokens` for token inputs), and implement `n_samples(split)` and
    `batch(split, epoch, index, rows)`: the batch of global index `index`, made of the samples at
    positions `rows` (a range) of the split's epoch order, as a tuple (x, y) or (x, y, extra).
    Items of this torch Dataset are whole batches, keyed by those four values."""

    d_input = d_output = l_output = n_tokens = None
    seed = 0

    def n_samples(self, split):
        """Training samples per epoch (all devices together), or the size of the val/test set."""
        raise NotImplementedError

    def batch(self, split, epoch, index, rows):
        raise NotImplementedError

    def setup(self):
        """Load or prepare the data (called on every rank before the loaders are built)."""

    def __getitem__(self, key):
        return self.batch(*key)

    def train_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        per_step = batch_size * world_size
        n_batches = self.n_samples("train") // per_step
        if n_batches == 0:
            raise ConfigError(
                f"{self.n_samples('train')} training samples cannot fill one step of loader.batch_size={batch_size} "
                f"x {world_size} device(s)"
            )
        sampler = TrainBatches(n_batches, batch_size, rank, world_size)
        return ResumableLoader(self, batch_size=None, sampler=sampler, **_workers(num_workers, pin_memory))

    def _eval_dataloader(self, split, batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size):
        b, n = batch_size_eval or batch_size, self.n_samples(split)
        keys = [(split, 0, g, range(g * b, min((g + 1) * b, n))) for g in range(math.ceil(n / b))]
        return DataLoader(self, batch_size=None, sampler=keys[rank::world_size], **_workers(num_workers, pin_memory))

    def val_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        return self._eval_dataloader("val", batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)

    def test_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        return self._eval_dataloader("test", batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)


class SyntheticDataset(BatchDataset):
    """Base of the on-the-fly datasets: subclasses implement `generate(batch_size, generator)`."""

    def __init__(self, samples_per_epoch, val_split, seed):
        self.samples_per_epoch, self.val_split, self.seed = samples_per_epoch, val_split, seed
        self.n_eval = int(val_split * samples_per_epoch)
        if self.n_eval < 1:
            raise ConfigError(
                f"dataset.val_split={val_split} with dataset.samples_per_epoch={samples_per_epoch} "
                "gives no validation samples; both must give at least one"
            )

    def generate(self, batch_size, generator):
        """(x, y) for `batch_size` samples drawn from `generator`."""
        raise NotImplementedError

    def n_samples(self, split):
        return self.samples_per_epoch if split == "train" else self.n_eval

    def batch(self, split, epoch, index, rows):
        generator = torch.Generator().manual_seed(batch_seed(self.seed, split, epoch, index))
        return self.generate(len(rows), generator)

    def train_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        if self.samples_per_epoch % (batch_size * world_size):
            raise ConfigError(
                f"dataset.samples_per_epoch={self.samples_per_epoch} is not a multiple of loader.batch_size="
                f"{batch_size} x {world_size} device(s); an epoch must be whole batches on every device"
            )
        return super().train_dataloader(batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)


def _workers(num_workers, pin_memory):
    extra = dict(persistent_workers=True, worker_init_fn=ignore_stop_signals) if num_workers > 0 else {}
    return dict(num_workers=num_workers, pin_memory=pin_memory, **extra)


def ignore_stop_signals(worker_id):
    """DataLoader workers ignore SIGTERM and SIGINT, which schedulers and Ctrl-C send to the whole
    process group: the main process stops the run cleanly (src/callbacks/guard.py) and then shuts
    its workers down; a worker also exits when the main process dies (torch's watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
