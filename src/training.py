"""From a composed config to a finished run: run directory, loggers, callbacks, trainer, fit.

A run writes to its directory (hydra.run.dir, by default outputs/<date>/<time>):
    config.yaml              the resolved config
    metrics.csv, hparams.yaml  CSV logger (always, also with wandb=null)
    checkpoints/last.ckpt, checkpoints/best.ckpt
    val_outputs/epoch=<e>.pt   with train.save_val_outputs=true (or a number of samples)
    wandb/                     when wandb is on
"""

import os
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from src.callbacks.val_outputs import SaveValOutputs
from src.module import SequenceLightningModule
from src.utils import registry
from src.utils.errors import ConfigError

# CSVLogger warns that the run directory is not empty: it holds config.yaml, and claim_run_dir
# has made sure it holds no earlier metrics.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")


def is_rank_zero():
    return int(os.environ.get("LOCAL_RANK", 0)) == 0 and int(os.environ.get("NODE_RANK", 0)) == 0


def claim_run_dir(run_dir, config):
    """Refuse a directory that already holds a run; write the resolved config into it."""
    run_dir = Path(run_dir)
    if not is_rank_zero():  # DDP workers reuse the directory rank zero claimed
        return
    taken = [name for name in ("config.yaml", "checkpoints", "metrics.csv") if (run_dir / name).exists()]
    if taken:
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({', '.join(taken)}); "
            "pass another hydra.run.dir, or train.ckpt=.../last.ckpt to resume into a new directory"
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    OmegaConf.save(config, run_dir / "config.yaml", resolve=True)


def check_checkpoint(path, module):
    """ConfigError unless `path` is a Lightning checkpoint whose weights fit `module`."""
    if not Path(path).is_file():
        raise ConfigError(f"train.ckpt={path}: no such file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as e:  # any unreadable file: report it in one line
        raise ConfigError(f"train.ckpt={path} is not a checkpoint ({type(e).__name__}: {e})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise ConfigError(f"train.ckpt={path} is not a Lightning checkpoint (no state_dict)")
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if ours != theirs:
        missing = sorted(set(ours) - set(theirs))[:3]
        extra = sorted(set(theirs) - set(ours))[:3]
        shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])[:3]
        raise ConfigError(
            f"train.ckpt={path} does not match the configured model (missing {missing}, unexpected {extra}, "
            f"other shape {shapes}); resume with the config it was trained with (its config.yaml)"
        )


def build_callbacks(config, run_dir):
    callbacks = []
    for name, kwargs in (config.callbacks or {}).items():
        if kwargs is None:  # `callbacks.NAME=null` removes a callback
            continue
        if name == "rich_progress_bar" and not config.trainer.enable_progress_bar:
            continue
        kwargs = dict(kwargs)
        if name in ("model_checkpoint", "last_checkpoint"):
            kwargs["dirpath"] = str(Path(run_dir) / "checkpoints")
        callbacks.append(registry.build(registry.callbacks, {"_name_": name, **kwargs}, key="callbacks"))
    keep = config.train.save_val_outputs
    if isinstance(keep, bool) or keep is None:
        keep = None if keep else 0
    elif not isinstance(keep, int) or keep < 1:
        raise ConfigError(f"train.save_val_outputs={keep!r}: use true, false or a number of samples (>= 1)")
    if keep != 0:
        callbacks.append(SaveValOutputs(run_dir, limit=keep))
    return callbacks


def build_loggers(config, run_dir):
    loggers = [CSVLogger(save_dir=str(run_dir), name="", version="")]
    if config.wandb is not None:
        from lightning.pytorch.loggers import WandbLogger

        wandb = OmegaConf.to_container(config.wandb, resolve=True)
        wandb["save_dir"] = wandb["save_dir"] or str(run_dir)
        loggers.append(WandbLogger(config=OmegaConf.to_container(config, resolve=True), resume="allow", **wandb))
    return loggers


def finish_wandb(trainer):
    """Close this run's wandb run: wandb keeps one global run, which the next run in the same
    process (a Hydra multirun job) would otherwise reuse."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            logger.experiment.finish()


def build_trainer(config, run_dir, extra_callbacks=()):
    trainer = OmegaConf.to_container(config.trainer, resolve=True)
    return L.Trainer(
        **trainer,
        default_root_dir=str(run_dir),
        logger=build_loggers(config, run_dir),
        callbacks=build_callbacks(config, run_dir) + list(extra_callbacks),
        use_distributed_sampler=False,  # datasets deal batches to ranks themselves
    )


def fit(config, run_dir, extra_callbacks=()):
    """Train (and optionally test) the model of `config`; returns the final metrics.
    `extra_callbacks`: Lightning callbacks added to those of the config (programmatic use)."""
    claim_run_dir(run_dir, config)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    if config.train.ckpt is not None:
        check_checkpoint(config.train.ckpt, module)
    trainer = build_trainer(config, run_dir, extra_callbacks)
    try:
        trainer.fit(module, ckpt_path=config.train.ckpt)
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if config.train.test:
            best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
            results = trainer.test(module, ckpt_path=best or None, verbose=False)
            for result in results:  # one per test dataloader: the main set, then each eval set
                metrics.update({k: float(v) for k, v in result.items()})
    finally:
        finish_wandb(trainer)
    if trainer.is_global_zero:
        print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        print(f"run written to: {run_dir}")
    return metrics
