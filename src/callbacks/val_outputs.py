"""Saves each validation epoch's inputs, targets and predictions (`train.save_val_outputs`).

Writes `<run_dir>/val_outputs/epoch=<e>[-rank=<r>].pt`, a dict of CPU tensors
{"x": (N, ...), "y": (N, ...), "preds": (N, ...)} concatenated over this rank's batches.
"""

from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveValOutputs(Callback):
    def __init__(self, run_dir):
        self.dir = Path(run_dir) / "val_outputs"
        self.parts = []

    def on_validation_epoch_start(self, trainer, pl_module):
        self.parts = []

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking:
            return
        x, y = batch
        self.parts.append((x.cpu(), y.cpu(), outputs["preds"].float().cpu()))

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self.parts:
            return
        x, y, preds = (torch.cat(t) for t in zip(*self.parts))
        self.dir.mkdir(parents=True, exist_ok=True)
        rank = f"-rank={trainer.global_rank}" if trainer.world_size > 1 else ""
        torch.save({"x": x, "y": y, "preds": preds}, self.dir / f"epoch={trainer.current_epoch:03d}{rank}.pt")
        self.parts = []
