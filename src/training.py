"""From a composed config to a finished run: run directory, loggers, callbacks, trainer, fit.

A run writes to its directory (hydra.run.dir, by default outputs/<date>/<time>):
    config.yaml              the resolved config
    metrics.csv, hparams.yaml  CSV logger (always, also with wandb=null)
    checkpoints/last.ckpt, checkpoints/best.ckpt   (src/callbacks/checkpoints.py)
    results.json             when the run has finished: its final metrics, the best checkpoint's
                             monitored value, epochs, steps and train_seconds (src/utils/run_results.py)
    val_outputs/epoch=<e>.pt   with train.save_val_outputs=true (or a number of samples)
    wandb/                     when wandb is on
"""

import contextlib
import csv
import logging
import os
import pickle
import re
import shlex
import warnings
from pathlib import Path

import lightning as L
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from src.callbacks.checkpoints import BestCheckpoint
from src.callbacks.clock import TrainClock
from src.callbacks.guard import RunGuard
from src.callbacks.val_outputs import SaveValOutputs
from src.module import SequenceLightningModule
from src.utils import registry, run_results
from src.utils.checkpoint_io import AtomicCheckpointIO, load_checkpoint
from src.utils.errors import ConfigError, RunError
from src.utils.optim import build_optimizer
from src.utils.run_dir import undo_writes
from src.utils.threads import select as select_threads

# CSVLogger warns that the run directory is not empty: it holds config.yaml, and claim_run_dir
# has made sure it holds no earlier metrics.
warnings.filterwarnings("ignore", message="Experiment logs directory .* exists and is not empty")
# Lightning's own pytree helper builds torch's LeafSpec, which torch 2.13 deprecates (a FutureWarning
# on every run); it is Lightning's to change, and nothing here can act on it.
warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated", category=FutureWarning)


class Quiet(logging.Filter):
    """Drops Lightning's lines that say nothing about this run: its advertisements for litlogger and
    litmodels, that the trainer has our model summary callback (callbacks.rich_model_summary), and
    that configs/trainer/default.yaml sets Lightning's own defaults (limit_*_batches=1.0, ...)."""

    NOISE = re.compile(r"💡 Tip:|Trainer already configured with model summary callbacks|"
                       r"`Trainer\((limit_\w+_batches|val_check_interval)=1\.0\)` was configured so")

    def filter(self, record):
        return not self.NOISE.match(record.getMessage())


for _name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
    logging.getLogger(_name).addFilter(Quiet())
# Lightning's lines once: `lightning` has its own stderr handler (lightning/__init__.py), and the
# root logger's (Hydra's job logging) would print each line again.
logging.getLogger("lightning").propagate = False


def is_rank_zero():
    ranks = ("LOCAL_RANK", "NODE_RANK", "SLURM_PROCID")  # SLURM_PROCID: a task that srun started
    return all(int(os.environ.get(name, 0)) == 0 for name in ranks)


def claim_run_dir(run_dir, config, in_place=False):
    """Refuse a directory that already holds a run (unless continuing it in place, `in_place`);
    write the resolved config into it."""
    run_dir = Path(run_dir)
    if not is_rank_zero():  # DDP workers reuse the directory rank zero claimed
        return
    taken = [name for name in ("config.yaml", "checkpoints", "metrics.csv") if (run_dir / name).exists()]
    if taken and not in_place:
        raise ConfigError(
            f"run directory {run_dir} already holds a run ({', '.join(taken)}); pass another hydra.run.dir, "
            "train.resume=auto to continue it, or train.ckpt=.../last.ckpt to resume into a new directory"
        )
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(config, run_dir / "config.yaml", resolve=True)
    except OSError as e:
        raise ConfigError(f"hydra.run.dir={run_dir} cannot be written ({e.strerror or e}); pass another hydra.run.dir")


def read_checkpoint(path):
    """The checkpoint at `path` (weights_only); ConfigError unless it is a Lightning checkpoint."""
    if not Path(path).is_file():
        raise ConfigError(f"train.ckpt={path}: no such file")
    try:
        ckpt = load_checkpoint(path)
    except pickle.UnpicklingError:  # weights_only refused an object: nothing of it ran
        raise ConfigError(f"train.ckpt={path} is not a checkpoint this repository wrote: it holds objects other than "
                          "tensors and plain values (refused unloaded)") from None
    except Exception as e:  # any other unreadable file: report it in one line
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else ""
        raise ConfigError(f"train.ckpt={path} is not a checkpoint this repository wrote ({type(e).__name__}: {why})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt or "pytorch-lightning_version" not in ckpt:
        raise ConfigError(f"train.ckpt={path} is not a Lightning checkpoint (no state_dict)")
    return ckpt


def check_checkpoint(path, module, config=None):
    """The checkpoint at `path`; ConfigError unless its weights fit `module` and, when resuming
    training with `config`, its optimizer and epochs fit too."""
    ckpt = read_checkpoint(path)
    ours = {k: tuple(v.shape) for k, v in module.state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in ckpt["state_dict"].items()}
    if ours != theirs:
        missing = sorted(set(ours) - set(theirs))[:3]
        extra = sorted(set(theirs) - set(ours))[:3]
        shapes = sorted(k for k in set(ours) & set(theirs) if ours[k] != theirs[k])[:3]
        differ = contradicting_keys(ckpt, module)
        if differ:  # a run from a checkpoint takes its config from it: these came from the command line
            raise ConfigError(
                f"train.ckpt={path} does not match the configured model: {', '.join(differ)} (its weights: missing "
                f"{missing}, unexpected {extra}, other shape {shapes}); leave that out: a run from a checkpoint takes "
                "its config from the checkpoint"
            )
        raise ConfigError(
            f"train.ckpt={path} does not match the configured model (missing {missing}, unexpected {extra}, "
            f"other shape {shapes}); resume with the config it was trained with (its config.yaml)"
        )
    if config is not None:
        check_resumable(path, ckpt, module, config)
    return ckpt


def contradicting_keys(ckpt, module, limit=4):
    """`key=value (checkpoint: value)` for the keys of the model, encoder, decoder and dataset on
    which `module`'s config differs from the config `ckpt` was trained with, model keys first."""
    from src.utils.run_results import flat

    trained = ckpt.get("hyper_parameters", {}).get("config")
    if not isinstance(trained, dict):
        return []
    ours, theirs = flat(module.hparams.config), flat(trained)
    sections = ("model.", "encoder", "decoder", "dataset.")
    keys = sorted((k for k in set(ours) | set(theirs) if k.startswith(sections) and ours.get(k) != theirs.get(k)),
                  key=lambda k: (not k.startswith("model."), k))
    return [f"{k}={ours.get(k)} (checkpoint: {theirs.get(k)})" for k in keys[:limit]]


class FinishedRun(ConfigError):
    """The checkpoint to resume from ends a finished run."""


def check_resumable(path, ckpt, module, config):
    """ConfigError when training cannot continue from `ckpt` with `config`: another optimizer
    (or other parameter groups), or no epoch or step left (a finished run)."""
    trained = ckpt.get("hyper_parameters", {}).get("config", {})
    name = trained.get("optimizer", {}).get("_name_")
    if name is not None and name != config.optimizer._name_:
        raise ConfigError(
            f"train.ckpt={path} was trained with optimizer={name}, whose state optimizer={config.optimizer._name_} "
            f"cannot take; resume with optimizer={name}"
        )
    groups = [len(g["params"]) for g in build_optimizer(module, config.optimizer).param_groups]
    saved = [len(g["params"]) for g in ckpt["optimizer_states"][0]["param_groups"]] if ckpt.get("optimizer_states") else groups
    if groups != saved:
        raise ConfigError(
            f"train.ckpt={path} has optimizer groups of {saved} parameters, this config {groups} (per-parameter "
            "lr / weight decay differ); resume with the config it was trained with (its config.yaml)"
        )
    epochs, steps = config.trainer.get("max_epochs"), config.trainer.get("max_steps", -1)
    done = ckpt["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]  # epochs whose training ended
    if epochs not in (None, -1) and epochs < ckpt["epoch"] + 1:
        raise ConfigError(
            f"trainer.max_epochs={epochs} is below the epoch train.ckpt={path} reached ({ckpt['epoch'] + 1}); "
            f"use trainer.max_epochs >= {ckpt['epoch'] + 1}"
        )
    if (epochs not in (None, -1) and done >= epochs) or (steps not in (None, -1) and ckpt["global_step"] >= steps):
        raise FinishedRun(
            f"train.ckpt={path} is a finished run ({done} epochs, {ckpt['global_step']} steps; trainer.max_epochs="
            f"{epochs}, trainer.max_steps={steps}): nothing to train; raise trainer.max_epochs to train on, or "
            "evaluate it with train.eval_only=true"
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
        if "settings" not in wandb and not {"WANDB_SILENT", "WANDB_QUIET"} & set(os.environ):
            import wandb as sdk

            # wandb prints some 30 lines of its own. Offline it prints none, and finish_wandb one
            # line saying where the run is; online, its quiet mode keeps the run's URL. Set
            # WANDB_SILENT or WANDB_QUIET to have wandb's own choice.
            wandb["settings"] = sdk.Settings(quiet=True, silent=wandb.get("mode") == "offline")
        logger = WandbLogger(config=OmegaConf.to_container(config, resolve=True), resume="allow", **wandb)
        if logger._wandb_init.get("anonymous", False) is None:  # Lightning passes it unset; wandb warns that
            del logger._wandb_init["anonymous"]  # it has no effect (wandb 0.31)
        loggers.append(logger)
    return loggers


def finish_wandb(trainer):
    """Close this run's wandb run: wandb keeps one global run, which the next run in the same
    process (a Hydra multirun job) would otherwise reuse. An offline run that wandb was told to
    keep silent about (build_loggers) is named in one line."""
    for logger in trainer.loggers:
        if type(logger).__name__ == "WandbLogger" and logger._experiment is not None:
            run = logger.experiment
            if trainer.is_global_zero and run.offline and run.settings.silent:
                print(f"wandb: offline run saved; `wandb sync {run.sync_dir}` uploads it")
            run.finish()


def build_trainer(config, run_dir, extra_callbacks=()):
    trainer = OmegaConf.to_container(config.trainer, resolve=True)
    return L.Trainer(
        **trainer,
        default_root_dir=str(run_dir),
        logger=build_loggers(config, run_dir),
        callbacks=build_callbacks(config, run_dir) + list(extra_callbacks),
        use_distributed_sampler=False,  # datasets deal batches to ranks themselves
        plugins=[AtomicCheckpointIO()],
    )


def resume_command(run_dir):
    """The command line that continues this run in place (train.resume=auto)."""
    from hydra.core.hydra_config import HydraConfig

    args = list(HydraConfig.get().overrides.task) if HydraConfig.initialized() else []
    replaced = ("hydra.run.dir", "train.resume", "train.ckpt", "trainer.resume_from_checkpoint")
    args = [a for a in args if a.lstrip("+~").split("=")[0] not in replaced]
    return shlex.join(["python", "-m", "train", *args, f"hydra.run.dir={Path(run_dir).absolute()}", "train.resume=auto"])


def resume_point(config, run_dir):
    """(the checkpoint training starts from or None, whether the run continues in run_dir).
    train.resume=auto: run_dir's own last.ckpt when there is one, else train.ckpt (or nothing)."""
    if config.train.get("resume") != "auto":
        return config.train.ckpt, False
    last = Path(run_dir) / "checkpoints" / "last.ckpt"
    return (str(last) if last.is_file() else config.train.ckpt), True


def earlier_metrics(run_dir, ckpt):
    """The rows of run_dir/metrics.csv logged before the step of `ckpt`, the checkpoint the run
    continues from in place (none for a fresh start: an earlier attempt's rows are stale)."""
    path = Path(run_dir) / "metrics.csv"
    if ckpt is None or not path.is_file():
        return []
    step = load_checkpoint(ckpt)["global_step"]
    with open(path, newline="") as f:
        rows = [{k: v for k, v in row.items() if v != ""} for row in csv.DictReader(f)]
    return [row for row in rows if int(row["step"]) < step]


def fit(config, run_dir, extra_callbacks=()):
    """Train (and optionally test) the model of `config`; returns the final metrics; with
    train.eval_only, evaluates train.ckpt instead (`evaluate`).
    `extra_callbacks`: Lightning callbacks added to those of the config (programmatic use).
    Nothing is written before every check has passed; a run refused later (ConfigError, e.g.
    missing data) removes what it wrote."""
    if config.train.get("eval_only"):
        return evaluate(config, run_dir)
    ckpt, in_place = resume_point(config, run_dir)
    L.seed_everything(config.train.seed, workers=True, verbose=False)
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    if ckpt is not None:
        try:
            check_checkpoint(ckpt, module, config)
        except FinishedRun as e:
            if not in_place:
                raise
            print(f"nothing to do: {e}")  # a requeued or restarted job whose run had finished
            if is_rank_zero() and run_results.read(run_dir) is None:  # cut off before writing it
                done = load_checkpoint(ckpt)
                run_results.write(run_dir, config, {}, epochs=done["epoch"] + 1, steps=done["global_step"])
            return {}
    earlier = earlier_metrics(run_dir, ckpt) if in_place and is_rank_zero() else []
    select_threads(config)  # torch intra-op threads on CPU (train.threads), once the run is accepted
    with refusal_undone(run_dir):
        claim_run_dir(run_dir, config, in_place)
        clock = TrainClock()
        trainer = build_trainer(config, run_dir, [*extra_callbacks, RunGuard(resume_command(run_dir)), clock])
        if earlier:  # the CSV logger replaces metrics.csv: it writes these rows first
            trainer.loggers[0].experiment.metrics[:0] = earlier
        try:
            trainer.fit(module, ckpt_path=ckpt, weights_only=True)
            metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/") or k in module.sizes}
            keeper = next((c for c in trainer.callbacks if isinstance(c, BestCheckpoint)), None)
            best_score = None if keeper is None or keeper.best_model_score is None else float(keeper.best_model_score)
            if config.train.test:
                best = keeper.best_model_path if keeper is not None else ""
                results = trainer.test(module, ckpt_path=best or None, verbose=False, weights_only=True)
                metrics.update({k: float(v) for r in results for k, v in r.items()})
        finally:
            finish_wandb(trainer)
    if trainer.is_global_zero:
        choices = run_results.choices_of(ckpt) if ckpt is not None and not in_place else None
        seconds = {} if clock.seconds is None else {"train_seconds": round(clock.seconds, 3)}
        run_results.write(run_dir, config, metrics, choices=choices, epochs=trainer.current_epoch,
                          steps=trainer.global_step, best_score=best_score, **seconds)
    report(trainer, metrics, run_dir)
    return metrics


def evaluate(config, run_dir):
    """train.eval_only=true: the metrics of exactly train.ckpt on every validation and test set,
    written to a new run directory (metrics.csv, results.json); nothing is trained."""
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    ckpt = check_checkpoint(config.train.ckpt, module)
    module.load_state_dict(ckpt["state_dict"])
    select_threads(config)  # torch intra-op threads on CPU (train.threads), once the run is accepted
    with refusal_undone(run_dir, undo=Exception):  # a failed evaluation leaves no half-made directory
        claim_run_dir(run_dir, config)
        trainer = build_trainer(config, run_dir)
        try:
            metrics = {}
            for results in (trainer.validate(module, verbose=False), trainer.test(module, verbose=False)):
                metrics.update({k: float(v) for r in results for k, v in r.items()})
        finally:
            finish_wandb(trainer)
    if trainer.is_global_zero:
        run_results.write(run_dir, config, metrics, "evaluated", run_results.choices_of(config.train.ckpt),
                          checkpoint=str(Path(config.train.ckpt).absolute()))
    report(trainer, metrics, run_dir)
    return metrics


@contextlib.contextmanager
def refusal_undone(run_dir, undo=ConfigError):
    """Undo the run's writes into run_dir on an `undo` exception (by default a ConfigError: a refused
    run); report a failed write (OSError) as one RunError line naming the directory."""
    before = set(os.listdir(run_dir)) if os.path.isdir(run_dir) else None
    try:
        yield
    except Exception as e:
        if isinstance(e, undo) and is_rank_zero():
            undo_writes(run_dir, before)
        if not isinstance(e, OSError):
            raise
        if isinstance(e.__context__, RunError):  # e.g. the logger failing on the full disk after a checkpoint did
            raise e.__context__ from None
        raise RunError(f"cannot write to the run directory {run_dir} (hydra.run.dir): {e}") from None


def report(trainer, metrics, run_dir):
    if trainer.is_global_zero:
        print("final metrics: " + ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items())))
        print(f"run written to: {run_dir}")
