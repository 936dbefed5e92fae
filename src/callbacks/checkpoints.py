"""The run's two checkpoints, `checkpoints/last.ckpt` and `checkpoints/best.ckpt`.

LastCheckpoint (`callbacks.last_checkpoint`) writes last.ckpt, the checkpoint a run resumes
from: at the end of every epoch, after every `every_n_train_steps` optimizer steps when set, and
after the first optimizer step that ends at least `every_n_minutes` after the previous write. A
mid-epoch last.ckpt resumes with the batches the uninterrupted run would have seen.

BestCheckpoint (`callbacks.model_checkpoint`) is Lightning's ModelCheckpoint for the best by
`train.monitor`, except that it never writes a model whose weights or monitored value are not
finite.

Both write through src/utils/checkpoint_io.py (atomic). Neither writes non-finite weights:
LastCheckpoint stops the run instead (RunError naming the last good checkpoint).
"""

import os
import time

import torch
from lightning.pytorch.callbacks import Checkpoint, ModelCheckpoint

from src.utils.errors import ConfigError, RunError


def finite_weights(module):
    return all(bool(torch.isfinite(p).all()) for p in module.parameters())


def completes_a_step(trainer, batch_idx):
    """Whether the optimizer stepped after this batch (the last of an accumulation window)."""
    k = trainer.accumulate_grad_batches
    return (batch_idx + 1) % k == 0 or batch_idx + 1 == trainer.num_training_batches


class LastCheckpoint(Checkpoint):
    def __init__(self, dirpath, every_n_minutes=10.0, every_n_train_steps=None):
        if every_n_minutes is not None and not every_n_minutes > 0:
            raise ConfigError(f"callbacks.last_checkpoint.every_n_minutes={every_n_minutes!r}: use a number > 0 or null")
        if every_n_train_steps is not None and not (isinstance(every_n_train_steps, int) and every_n_train_steps >= 1):
            raise ConfigError(
                f"callbacks.last_checkpoint.every_n_train_steps={every_n_train_steps!r}: use an integer >= 1 or null"
            )
        self.path = os.path.join(dirpath, "last.ckpt")
        self.every_n_seconds = None if every_n_minutes is None else 60.0 * every_n_minutes
        self.every_n_train_steps = every_n_train_steps
        self.saved = None  # (global step, "batch" | "epoch") of the last write of this run
        self.since = time.monotonic()

    def on_train_start(self, trainer, pl_module):
        self.since = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if not completes_a_step(trainer, batch_idx):
            return
        steps = self.every_n_train_steps is not None and trainer.global_step % self.every_n_train_steps == 0
        late = self.every_n_seconds is not None and time.monotonic() - self.since >= self.every_n_seconds
        if trainer.world_size > 1:  # every rank must take part in the write: rank zero's clock decides
            late = trainer.strategy.broadcast(late, src=0)
        if steps or late:
            self.save(trainer, "batch")

    def on_train_epoch_end(self, trainer, pl_module):
        self.save(trainer, "epoch")

    def save(self, trainer, where="batch"):
        """Write last.ckpt now (on every rank); RunError if the weights are not finite."""
        if not finite_weights(trainer.lightning_module):
            raise RunError(f"non-finite weights after step {trainer.global_step}; last good checkpoint: {self.describe()}")
        trainer.save_checkpoint(self.path, weights_only=False)  # the full training state
        self.saved = (trainer.global_step, where)
        self.since = time.monotonic()
        return self.path

    def describe(self):
        """The last good last.ckpt of this run, in words."""
        if self.saved is None:
            return "none written by this run"
        return f"{self.path} (step {self.saved[0]})"


class BestCheckpoint(ModelCheckpoint):
    def _save_topk_checkpoint(self, trainer, monitor_candidates):
        current = monitor_candidates.get(self.monitor) if self.monitor else None
        if current is not None and not bool(torch.isfinite(current)):
            return
        if not finite_weights(trainer.lightning_module):
            return
        super()._save_topk_checkpoint(trainer, monitor_candidates)
