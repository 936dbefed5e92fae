"""SequenceLightningModule: encoder -> backbone -> decoder, trained on a registered dataset.

Built from the resolved config alone (a plain dict), which `save_hyperparameters` stores in every
checkpoint, so `SequenceLightningModule.load_from_checkpoint(path)` rebuilds the model with no
other input.
"""

import lightning as L
from omegaconf import OmegaConf
from torch import nn
from torchmetrics import MetricCollection

from src.models.sequence.backbone import SequenceModel
from src.models.sequence.kernel_cache import accumulation_window
from src.models.sequence.positions import input_width
from src.tasks.decoders import build_decoder
from src.tasks.encoders import build_encoder
from src.tasks.metrics import GroupedAccuracy, build_loss, build_metric
from src.utils import registry
from src.utils.notice import notice
from src.utils.optim import build_optimizer

SPLITS = ("train", "val", "test")


class SequenceLightningModule(L.LightningModule):
    def __init__(self, config):
        super().__init__()
        self.save_hyperparameters()  # self.hparams.config: the resolved config (a dict)
        self.config = config = OmegaConf.create(config)
        self.dataset = registry.build(registry.dataset, config.dataset, key="dataset._name_")
        model = {k: v for k, v in OmegaConf.to_container(config.model).items() if k != "_name_"}
        d_model = model["d_model"]
        self.encoder = build_encoder(config.encoder, self.dataset, input_width(d_model, model.get("pos_emb", "none")))
        self.backbone = SequenceModel(**model, notice=notice)
        self.decoder = build_decoder(config.decoder, self.dataset, d_model)
        self.loss = build_loss(config.task.loss)
        self.metrics = nn.ModuleDict(  # "train" is an nn.Module attribute: key by f"{split}_"
            {
                f"{split}_": MetricCollection(
                    {name: build_metric(name, self.dataset.d_output) for name in config.task.metrics},
                    prefix=f"{split}/",
                )
                for split in SPLITS
            }
        )
        # Accuracy by category (e.g. ListOps sub-tree height and operator) where the dataset
        # declares categories; its batches then carry a third element {category: (B, L) ids}.
        categories = getattr(self.dataset, "categories", {})
        self.grouped = nn.ModuleDict(
            {
                f"{split}_": nn.ModuleDict({name: GroupedAccuracy(groups) for name, groups in categories.items()})
                for split in ("val", "test")
            }
        )

    def forward(self, x, lengths=None):  # x: (B, L_in, d_input) or (B, L_in) tokens; lengths (B,) if padded
        y, _ = self.backbone(self.encoder(x))  # (B, L_in, d_model)
        return self.decoder(y, lengths)  # (B, l_output, d_output)

    def _step(self, batch, split):
        # extra: [{category: (B, L) ids, and "lengths": (B,) for padded batches}] where the dataset has them
        x, y, *extra = batch
        preds = self(x, extra[0].get("lengths") if extra else None)
        loss = self.loss(preds, y)
        metrics = self.metrics[f"{split}_"]
        metrics.update(preds.detach(), y)
        if split != "train":
            for name, metric in self.grouped[f"{split}_"].items():
                metric.update(preds.detach(), y, extra[0][name])
        self.log(
            f"{split}/loss", loss, on_step=split == "train", on_epoch=True, prog_bar=True,
            sync_dist=split != "train", batch_size=y.shape[0],
        )
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=split == "val")
        return loss, preds

    def training_step(self, batch, batch_idx):
        k = self.trainer.accumulate_grad_batches
        if k == 1:
            return self._step(batch, "train")[0]
        # Long-convolution kernels are computed once per optimizer step (src/models/sequence/kernel_cache.py);
        # `last`: Lightning steps the optimizer after this micro-batch.
        last = (batch_idx + 1) % k == 0 or batch_idx + 1 == self.trainer.num_training_batches
        with accumulation_window(self.trainer.global_step, last):
            return self._step(batch, "train")[0]

    def validation_step(self, batch, batch_idx):
        return {"preds": self._step(batch, "val")[1]}

    def test_step(self, batch, batch_idx):
        self._step(batch, "test")

    def _log_grouped(self, split):
        for name, metric in self.grouped[f"{split}_"].items():
            values = metric.compute()  # synchronised over ranks
            metric.reset()
            self.log_dict({f"{split}/accuracy_{name}_{group}": v for group, v in values.items()})

    def on_validation_epoch_end(self):
        self._log_grouped("val")

    def on_test_epoch_end(self):
        self._log_grouped("test")

    # Data: the dataset deals batches to this rank; Lightning's distributed sampler is off.
    def _loader_kwargs(self):
        loader = self.config.loader
        return dict(
            batch_size=loader.batch_size,
            batch_size_eval=loader.batch_size_eval,
            num_workers=loader.num_workers,
            pin_memory=loader.pin_memory and self.device.type == "cuda",
            rank=self.trainer.global_rank,
            world_size=self.trainer.world_size,
        )

    def setup(self, stage):
        self.dataset.setup()

    def train_dataloader(self):
        loader = self.dataset.train_dataloader(**self._loader_kwargs())
        # Batches trained so far this epoch, saved in checkpoints so a run resumed mid-epoch
        # continues with the batches the uninterrupted run would have seen.
        loader.progress = lambda: self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def val_dataloader(self):
        return self.dataset.val_dataloader(**self._loader_kwargs())

    def test_dataloader(self):
        return self.dataset.test_dataloader(**self._loader_kwargs())

    def configure_optimizers(self):
        optimizer = build_optimizer(self, self.config.optimizer)
        for i, group in enumerate(optimizer.param_groups):
            n = sum(p.numel() for p in group["params"])
            notice(f"optimizer group {i}: {n} parameters, lr={group['lr']:g}, weight_decay={group['weight_decay']:g}")
        scheduler = registry.build(registry.scheduler, self.config.scheduler, optimizer, key="scheduler._name_")
        interval = self.config.train.interval
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": interval, "monitor": self.config.train.monitor},
        }
