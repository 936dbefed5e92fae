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
devices together. With `num_train_examples=N` the training set is instead N examples drawn once
(in chunks of 1024, so the first n of them do not depend on N) and replayed every epoch, in an
order reshuffled per epoch from (seed, epoch). Datasets on disk (files.py) gather batches from a
per-epoch permutation.

Evaluation sets are dealt to ranks as whole batches, the batches of one process. With fewer
batches than ranks, every rank builds each batch and keeps the rows p = rank (mod W): the
samples, hence the metrics, are those of one process whatever the number of ranks.
"""

import math
import multiprocessing
import signal
import sys

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from src.utils.errors import ConfigError
from src.utils.notice import notice

SPLITS = ("train", "val", "test")  # also the split's number in batch_seed
CHUNK = 1024  # examples per generator call when a finite training set is drawn


def batch_seed(seed, split, epoch, index, *extra):
    """A 63-bit seed mixing (seed, split, epoch, index, *extra) through numpy's SeedSequence."""
    state = np.random.SeedSequence([seed, SPLITS.index(split), epoch, index, *extra]).generate_state(1, np.uint64)
    return int(state[0] >> np.uint64(1))


def take(batch, part):
    """Rows part[0], part[0] + part[1], ... of every tensor of a batch (x, y[, {name: ids}])."""
    start, step = part
    rows = lambda v: v[start::step].contiguous()  # noqa: E731
    return tuple({k: rows(v) for k, v in item.items()} if isinstance(item, dict) else rows(item) for item in batch)


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
    L_input = None  # the input length (the longest, for variable lengths); sizes positions and l_max
    causal = False  # the label at t is read from x_{<=t}: a model that reads the future would see the answer
    seed = 0

    def n_samples(self, split):
        """Training samples per epoch (all devices together), or the size of the val/test set."""
        raise NotImplementedError

    def batch(self, split, epoch, index, rows):
        raise NotImplementedError

    def setup(self):
        """Load or prepare the data (called on every rank before the loaders are built)."""

    def __getitem__(self, key):  # (split, epoch, index, rows[, (rank, world_size): the rows this rank keeps])
        split, epoch, index, rows, *part = key
        batch = self.batch(split, epoch, index, rows)
        return take(batch, part[0]) if part else batch

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
        if n < world_size:
            raise ConfigError(f"the {split} set has {n} samples, fewer than the {world_size} devices: each needs one")
        keys = [(split, 0, g, rows) for g, rows in enumerate(self.eval_batches(split, b))]
        if len(keys) >= world_size:
            keys = keys[rank::world_size]
        else:  # every rank builds each batch and keeps its rows (p = rank mod W), skipping empty shares
            keys = [(*key, (rank, world_size)) for key in keys if len(key[3]) > rank]
        return DataLoader(self, batch_size=None, sampler=keys, **_workers(num_workers, pin_memory))

    def eval_batches(self, split, batch_size):
        """The rows of each validation / test batch, in order: consecutive ranges of batch_size."""
        n = self.n_samples(split)
        return [range(i, min(i + batch_size, n)) for i in range(0, n, batch_size)]

    def val_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        return self._eval_dataloader("val", batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)

    def test_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        return self._eval_dataloader("test", batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)


class SyntheticDataset(BatchDataset):
    """Base of the on-the-fly datasets: subclasses implement `generate(batch_size, generator)`.
    num_train_examples: None, fresh samples every epoch (`samples_per_epoch` of them); N, the
    same N examples every epoch, reshuffled. The validation and test sets have
    `num_eval_examples` samples each, or else int(val_split x the training set size)."""

    def __init__(self, samples_per_epoch, val_split, seed, num_train_examples=None, num_eval_examples=None):
        self.samples_per_epoch, self.val_split, self.seed = samples_per_epoch, val_split, seed
        self.num_train_examples, self.examples = num_train_examples, None
        for key, value in (("num_train_examples", num_train_examples), ("num_eval_examples", num_eval_examples)):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"dataset.{key}={value!r} must be a positive integer or null")
        size, key = (num_train_examples, "num_train_examples") if num_train_examples else (samples_per_epoch,
                                                                                         "samples_per_epoch")
        self.n_eval = num_eval_examples or int(val_split * size)
        if self.n_eval < 1:
            raise ConfigError(
                f"dataset.val_split={val_split} with dataset.{key}={size} gives no validation samples; "
                "both must give at least one"
            )

    def generate(self, batch_size, generator):
        """(x, y), or (x, y, {name: tensor with a row per sample}), for `batch_size` samples drawn from
        `generator`."""
        raise NotImplementedError

    def generate_split(self, batch_size, generator, split):
        """The samples of `split`: those of `generate`, unless a task draws its training samples
        differently from its evaluation ones (MAD's tasks: src/dataloaders/mad.py)."""
        return self.generate(batch_size, generator)

    def n_samples(self, split):
        if split == "train":
            return self.num_train_examples or self.samples_per_epoch
        return self.n_eval

    def setup(self):
        if self.num_train_examples and self.examples is None:
            N = self.num_train_examples
            chunks = [self._chunk(i, min(CHUNK, N - i * CHUNK)) for i in range(math.ceil(N / CHUNK))]
            self.examples = tuple(_cat(parts) for parts in zip(*chunks))  # (x (N, ...), y (N, ...)[, extra])

    def _chunk(self, i, size):
        return self.generate_split(size, torch.Generator().manual_seed(batch_seed(self.seed, "train", 0, i, 1)), "train")

    def batch(self, split, epoch, index, rows):
        if split == "train" and self.num_train_examples:
            order = torch.randperm(self.num_train_examples, generator=torch.Generator().manual_seed(
                batch_seed(self.seed, "train", epoch, 0, 2)))
            ids = order[rows.start : rows.stop]
            return tuple({k: v[ids] for k, v in part.items()} if isinstance(part, dict) else part[ids]
                         for part in self.examples)
        generator = torch.Generator().manual_seed(batch_seed(self.seed, split, epoch, index))
        return self.generate_split(len(rows), generator, split)

    def train_dataloader(self, batch_size, batch_size_eval=None, num_workers=0, pin_memory=False, rank=0, world_size=1):
        per_step = batch_size * world_size
        if self.num_train_examples:
            left = self.num_train_examples % per_step
            if left and rank == 0:
                notice(f"notice: dataset.num_train_examples={self.num_train_examples} is not a multiple of "
                       f"loader.batch_size={batch_size} x {world_size} device(s): each epoch trains "
                       f"{self.num_train_examples - left} of them, in a new order (and a new {left} left out)")
        elif self.samples_per_epoch % per_step:
            raise ConfigError(
                f"dataset.samples_per_epoch={self.samples_per_epoch} is not a multiple of loader.batch_size="
                f"{batch_size} x {world_size} device(s); an epoch must be whole batches on every device"
            )
        return super().train_dataloader(batch_size, batch_size_eval, num_workers, pin_memory, rank, world_size)


def _cat(parts):
    """Tensors (or {name: tensor} dicts, a batch's extra) of several batches, concatenated along rows."""
    if isinstance(parts[0], dict):
        return {k: torch.cat([part[k] for part in parts]) for k in parts[0]}
    return torch.cat(parts)


def _workers(num_workers, pin_memory):
    extra = {}
    if num_workers > 0:
        extra = dict(persistent_workers=True, worker_init_fn=ignore_stop_signals, multiprocessing_context=worker_context())
    return dict(num_workers=num_workers, pin_memory=pin_memory, **extra)


def worker_context():
    """The multiprocessing context of DataLoader workers: Python's default for the platform (fork
    on Linux, spawn elsewhere), named, because in a worker of the pool launcher (joblib's loky) the
    default is loky's, whose processes the DataLoader cannot start."""
    return multiprocessing.get_context("fork" if sys.platform.startswith("linux") else "spawn")


def ignore_stop_signals(worker_id):
    """DataLoader workers ignore SIGTERM and SIGINT, which schedulers and Ctrl-C send to the whole
    process group: the main process stops the run cleanly (src/callbacks/guard.py) and then shuts
    its workers down; a worker also exits when the main process dies (torch's watchdog)."""
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
