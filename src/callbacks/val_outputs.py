"""Saves each validation epoch's inputs, targets and predictions (`train.save_val_outputs`).

Writes `<run_dir>/val_outputs/epoch=<e>[-rank=<r>].pt` (the main validation set, not the eval sets), a dict of CPU tensors
{"x": (N, ...), "y": (N, ...), "preds": (N, ...)} concatenated over this rank's batches, plus
the batches' category ids (e.g. "height", "op" for ListOps) when the dataset has them. For
classification (integer targets) `preds` holds the predicted classes (argmax of the logits),
which is what the pictures need and C times smaller. `train.save_val_outputs=N` (an integer)
keeps only the first N samples of each epoch; `true` keeps them all.
"""

from pathlib import Path

import torch
from lightning.pytorch import Callback


class SaveValOutputs(Callback):
    def __init__(self, run_dir, limit=None):
        self.dir = Path(run_dir) / "val_outputs"
        self.limit = limit
        self.parts, self.count = [], 0

    def on_validation_epoch_start(self, trainer, pl_module):
        self.parts, self.count = [], 0

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0):
        if trainer.sanity_checking or dataloader_idx > 0 or (self.limit is not None and self.count >= self.limit):
            return
        x, y, *extra = batch
        preds = outputs["preds"].detach()
        preds = preds.argmax(-1) if not torch.is_floating_point(y) else preds.float()
        n = len(x) if self.limit is None else min(len(x), self.limit - self.count)
        part = {"x": x[:n].cpu(), "y": y[:n].cpu(), "preds": preds[:n].cpu()}
        part.update({k: v[:n].cpu() for k, v in (extra[0] if extra else {}).items()})
        self.parts.append(part)
        self.count += n

    def on_validation_epoch_end(self, trainer, pl_module):
        if trainer.sanity_checking or not self.parts:
            return
        outputs = {k: torch.cat([p[k] for p in self.parts]) for k in self.parts[0]}
        self.dir.mkdir(parents=True, exist_ok=True)
        rank = f"-rank={trainer.global_rank}" if trainer.world_size > 1 else ""
        torch.save(outputs, self.dir / f"epoch={trainer.current_epoch:03d}{rank}.pt")
        self.parts, self.count = [], 0
