"""SequenceLightningModule: a SequenceModel (encoder -> backbone -> decoder) trained on a registered
dataset, evaluated on its validation / test sets and on every named eval set.

Built from the resolved config alone (a plain dict), which `save_hyperparameters` stores in every
checkpoint, so `SequenceLightningModule.load_from_checkpoint(path)` rebuilds the model with no
other input.

Eval sets (`dataset.eval_sets={NAME: {key: value, ...}}`): each is the dataset built with those
overrides (same seed unless it sets one), giving its own validation and test dataloader after the
main one; its metrics are logged as `val/NAME/<metric>` and `test/NAME/<metric>`. A set given as
null is dropped (an experiment removes a set of its dataset's defaults: `eval_sets: {L64: null}`).
With `dataset.segments` the training set is a mixture of segments (src/dataloaders/mixture.py).
"""

import re
from pathlib import Path

import lightning as L
import torch
from omegaconf import OmegaConf
from torch import nn

from src.dataloaders import mixture
from src.dataloaders.base import SPLITS, batch_seed
from src.models.sequence.backbone import SequenceModel
from src.models.sequence.kernel_cache import accumulation_window
from src.tasks.metrics import CURVES, EVAL_SET_ONLY, SplitMetrics, build_loss
from src.utils import registry
from src.utils.errors import ConfigError
from src.utils.notice import notice
from src.utils.optim import build_optimizer


def build_datasets(config):
    """The main dataset and {name: dataset} for each eval set of `config` (the dataset config)."""
    config = OmegaConf.to_container(config, resolve=True)
    eval_sets = {k: v for k, v in (config.pop("eval_sets", None) or {}).items() if v is not None}
    segments = config.pop("segments", None)
    cls = registry.resolve(registry.dataset, config["_name_"], "dataset._name_")
    datasets = {}
    for name, overrides in {None: {}, **eval_sets}.items():
        if name is not None and not re.fullmatch(r"[A-Za-z0-9_\-]+", str(name)):
            raise ConfigError(f"dataset.eval_sets: the name {name!r} must be letters, digits, '_' or '-'")
        if not isinstance(overrides, dict):
            raise ConfigError(f"dataset.eval_sets.{name}={overrides!r} must map dataset keys to values, e.g. {{L: 256}}")
        kwargs = {k: v for k, v in {**config, **overrides}.items() if k != "_name_"}
        registry.check_kwargs(cls, kwargs, f"dataset.eval_sets.{name} ({cls.__name__})" if name else
                              f"dataset ({cls.__name__})")
        datasets[name] = mixture.build(cls, kwargs, segments) if name is None and segments else cls(**kwargs)
    return datasets.pop(None), datasets


def eval_passes(config):
    """train.eval_passes: evaluation passes, each re-drawing model.pos_aug's positions (the
    counting paper's test protocol; 1: one pass with positions 0..L-1)."""
    passes = config.train.get("eval_passes", 1)
    if not isinstance(passes, int) or isinstance(passes, bool) or passes < 1:
        raise ConfigError(f"train.eval_passes={passes!r} must be a positive integer")
    if passes > 1 and config.model.get("pos_aug", "none") == "none":
        raise ConfigError(f"train.eval_passes={passes} re-draws the position augmentation at evaluation, but "
                          "model.pos_aug=none: every pass would be the same; set model.pos_aug=shift|randomized "
                          "or 1 pass")
    return passes


def eval_sets_every(config):
    """train.eval_sets_every_n_epochs: validate the eval sets every n epochs (and at the last)."""
    n = config.train.get("eval_sets_every_n_epochs", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ConfigError(f"train.eval_sets_every_n_epochs={n!r} must be a positive integer")
    return n


class Gated:
    """An evaluation loader that yields no batch while `active()` is false; its length (which
    Lightning reads once) stays."""

    def __init__(self, loader, active):
        self.loader, self.active = loader, active

    def __iter__(self):
        return iter(self.loader) if self.active() else iter(())

    def __len__(self):
        return len(self.loader)


def compression(compress, data, dataset_config):
    """model.compress (not a key of configs/backbone/base.yaml: `+model.compress=true` sets it):
    absent or null follows the dataset (`compress`: MAD's compression task, whose labels are its
    inputs); false on such a dataset is refused (a causal model would copy x_t)."""
    asks = getattr(data, "compress", False)
    if compress is None:
        return asks
    if asks and not compress:
        raise ConfigError(f"dataset {dataset_config.get('task', dataset_config._name_)} labels each position with its "
                          "own input: it needs model.compress=true (or unset), else the model copies x_t")
    return bool(compress)


HALF_WEIGHTS = ("bf16-true", "16-true")  # trainer.precision values that cast the weights (autocast: the -mixed ones)


def longest_input(datasets):
    """The longest input over `datasets` (None when one does not know its length)."""
    lengths = [getattr(d, "L_input", None) for d in datasets]
    return None if None in lengths else max(lengths)


class SequenceLightningModule(L.LightningModule):
    def __init__(self, config):
        super().__init__()
        self.save_hyperparameters()  # self.hparams.config: the resolved config (a dict)
        self.config = config = OmegaConf.create(config)
        self.dataset, self.eval_sets = build_datasets(config.dataset)
        data = self.dataset
        longest = longest_input([data, *self.eval_sets.values()])
        model = {k: v for k, v in OmegaConf.to_container(config.model).items() if k != "_name_"}
        model["compress"] = compression(model.get("compress"), data, config.dataset)
        self.model = SequenceModel(
            **model, encoder=config.encoder, decoder=OmegaConf.to_container(config.decoder), d_input=data.d_input,
            n_tokens=data.n_tokens, d_output=data.d_output, l_output=data.l_output,
            max_length=longest,
        )
        if data.causal and not self.model.causal:
            reading = sorted({type(b.layer).__name__ for b in self.model.blocks if not b.layer.causal})
            raise ConfigError(f"dataset {config.dataset._name_} labels position t from x_<=t: a non-causal layer "
                              f"({', '.join(reading)}) would read the answer; use a causal one "
                              "(model.bidirectional=false, model.layer.causal=true)")
        precision = str(config.get("trainer", {}).get("precision"))
        if precision in HALF_WEIGHTS:
            cannot = sorted({f"{type(b.layer).__name__} ({b.layer.why_no_half_weights()})" for b in self.model.blocks
                             if b.layer.why_no_half_weights()})
            if cannot:
                raise ConfigError(f"trainer.precision={precision} holds the weights in half precision, which "
                                  f"{', '.join(cannot)} cannot run with; use trainer.precision=bf16-mixed")
        # Logged with every validation, so that results tables and recall-against-state figures
        # (zoology, DSF) read them as metrics: parameters, and the floats of state the model keeps per
        # sequence at the longest evaluation length (SequenceModel.state_size).
        self.sizes = {"num_parameters": float(sum(p.numel() for p in self.model.parameters()))}
        if longest is not None:
            self.sizes["state_size"] = float(self.model.state_size(longest))
        self.loss = build_loss(config.task.loss)
        self.eval_passes = eval_passes(config)
        self.eval_sets_every = eval_sets_every(config)
        self.model.positions.eval_aug = self.eval_passes > 1
        # Metrics of each split and eval set ("train" is an nn.Module attribute: keys end in "_").
        # Datasets with categories (e.g. ListOps sub-tree height and operator) get accuracy by
        # category; their batches then carry a third element {category: (B, L) ids}.
        self.metrics = nn.ModuleDict()
        for split in SPLITS:
            for name, dataset in {None: data, **(self.eval_sets if split != "train" else {})}.items():
                names = [m for m in config.task.metrics if split != "train" or m not in CURVES]
                names = [m for m in names if name is not None or m not in EVAL_SET_ONLY]
                self.metrics[self._key(split, name)] = SplitMetrics(
                    names, data.d_output, self._prefix(split, name),
                    getattr(dataset, "categories", {}) if split != "train" else {}, getattr(dataset, "L_input", None),
                    getattr(data, "L_input", None),
                )

    @staticmethod
    def _key(split, name):
        return f"{split}_" if name is None else f"{split}_{name}"

    @staticmethod
    def _prefix(split, name):
        return f"{split}/" if name is None else f"{split}/{name}/"

    def forward(self, x, l_output=None, lengths=None):  # x: (B, L_in, d_input) or (B, L_in) tokens, lengths (B,)
        return self.model(x, l_output=l_output, lengths=lengths)[0]  # (B, l_output, d_output), (B, d_output), ...

    def _step(self, batch, split, dataloader_idx=0, scored=True):
        """The loss and predictions of a batch; its metrics updated when `scored`."""
        # extra: [{category: (B, L) ids, "lengths": (B,) for padded batches, "task_lengths": (B,) to key
        # length metrics by}] where the dataset has them
        x, y, *extra = batch
        name = None if dataloader_idx == 0 else list(self.eval_sets)[dataloader_idx - 1]
        l_output = self.eval_sets[name].l_output if name else None
        preds = self(x, l_output, extra[0].get("lengths") if extra else None)
        loss = self.loss(preds, y)
        if not scored:
            return loss, preds
        metrics = self.metrics[self._key(split, name)]
        metrics.update(preds.detach(), y, loss.detach(), extra[0] if extra else {})
        if split == "train":  # evaluation metrics are logged once per epoch (_epoch_end)
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=y.shape[0])
            self.log_dict(metrics.scalars, on_step=False, on_epoch=True, add_dataloader_idx=False)
        return loss, preds

    def training_step(self, batch, batch_idx):
        # Training metrics are updated and logged on the steps whose logs the loggers write
        # (trainer.log_every_n_steps) and on the last batch of each epoch: their epoch values are
        # means over those batches. Every step would cost more than the step itself on small
        # models (benchmarks/train_loop.py); trainer.log_every_n_steps=1 scores every batch.
        last_batch = batch_idx + 1 == self.trainer.num_training_batches
        scored = last_batch or self.trainer._logger_connector.should_update_logs
        k = self.trainer.accumulate_grad_batches
        if k == 1:
            return self._step(batch, "train", scored=scored)[0]
        # Long-convolution kernels are computed once per optimizer step (src/models/sequence/kernel_cache.py);
        # `last`: Lightning steps the optimizer after this micro-batch.
        last = (batch_idx + 1) % k == 0 or last_batch
        with accumulation_window(self.trainer.global_step, last):
            return self._step(batch, "train", scored=scored)[0]

    def _eval_step(self, batch, split, batch_idx, dataloader_idx):
        """One evaluation batch, `train.eval_passes` times: each pass re-draws the position
        augmentation from a generator seeded by (seed, split, batch, set, pass), and updates the
        metrics, so they average over the passes. -> the last pass's predictions."""
        if self.eval_passes == 1:
            return self._step(batch, split, dataloader_idx)[1]
        devices = [self.device] if self.device.type == "cuda" else []
        for p in range(self.eval_passes):
            with torch.random.fork_rng(devices=devices):
                torch.manual_seed(batch_seed(self.config.train.seed, split, p, batch_idx, dataloader_idx))
                preds = self._step(batch, split, dataloader_idx)[1]
        return preds

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        return {"preds": self._eval_step(batch, "val", batch_idx, dataloader_idx)}

    def test_step(self, batch, batch_idx, dataloader_idx=0):
        self._eval_step(batch, "test", batch_idx, dataloader_idx)

    def _epoch_end(self, split):
        """Log the loss, metrics and per-category accuracies and write the curves of every set of
        `split`, computed over its batches on every rank (once per epoch: logging a batch's metric
        objects costs more than its update)."""
        for name in [None, *self.eval_sets]:
            metrics = self.metrics[self._key(split, name)]
            if metrics.loss.update_count == 0:  # a set not evaluated this time (train.eval_sets_every_n_epochs)
                continue
            main = name is None
            self.log(f"{metrics.prefix}loss", metrics.loss.compute(), prog_bar=main, add_dataloader_idx=False)
            self.log_dict(metrics.scalars.compute(), prog_bar=split == "val" and main, add_dataloader_idx=False)
            metrics.loss.reset()
            metrics.scalars.reset()
            self.log_dict(metrics.grouped_values(), add_dataloader_idx=False)
            curves = metrics.curve_values()
            if curves and self.trainer.is_global_zero and not self.trainer.sanity_checking:
                self._write_curves(split, name, curves)

    def _write_curves(self, split, name, curves):
        """<run dir>/curves/<split>[-<set>]/<curve>/epoch=<e>.csv: position (or length), value, count."""
        for curve, (values, counts) in curves.items():
            path = Path(self.trainer.default_root_dir) / "curves" / (split if name is None else f"{split}-{name}")
            path = path / curve / f"epoch={self.current_epoch:03d}.csv"
            path.parent.mkdir(parents=True, exist_ok=True)
            axis, first = ("length", 1) if curve == "accuracy_by_length" else ("position", 0)
            rows = [f"{t + first},{v:.6g},{n}"
                    for t, (v, n) in enumerate(zip(values.tolist(), counts.tolist())) if n > 0]
            path.write_text(f"{axis},value,count\n" + "".join(row + "\n" for row in rows))

    def on_validation_epoch_end(self):
        self._epoch_end("val")
        self.log_dict(self.sizes, add_dataloader_idx=False)

    def on_test_epoch_end(self):
        self._epoch_end("test")

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
        for dataset in [self.dataset, *self.eval_sets.values()]:
            dataset.setup()

    def train_dataloader(self):
        loader = self.dataset.train_dataloader(**self._loader_kwargs())
        # Batches trained so far this epoch, saved in checkpoints so a run resumed mid-epoch
        # continues with the batches the uninterrupted run would have seen.
        loader.progress = lambda: self.trainer.fit_loop.epoch_loop.batch_progress.current.processed
        return loader

    def _eval_dataloaders(self, split):
        loaders = [getattr(d, f"{split}_dataloader")(**self._loader_kwargs())
                   for d in [self.dataset, *self.eval_sets.values()]]
        if split == "val" and self.eval_sets_every > 1:
            monitored = str(self.config.train.monitor).split("/")
            loaders[1:] = [loader if monitored[1:2] == [name] else Gated(loader, self._validates_eval_sets)
                           for name, loader in zip(self.eval_sets, loaders[1:])]
        return loaders if self.eval_sets else loaders[0]

    def _validates_eval_sets(self):
        """Whether this validation covers the eval sets (train.eval_sets_every_n_epochs): always
        outside training and in the sanity check, else every n epochs and in the last epoch."""
        t, n = self.trainer, self.eval_sets_every
        if t.state.fn != "fit" or t.sanity_checking or (t.current_epoch + 1) % n == 0:
            return True
        last_epoch = t.max_epochs not in (None, -1) and t.current_epoch + 1 >= t.max_epochs
        return last_epoch or (t.max_steps not in (None, -1) and t.global_step >= t.max_steps)

    def val_dataloader(self):
        return self._eval_dataloaders("val")

    def test_dataloader(self):
        return self._eval_dataloaders("test")

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
