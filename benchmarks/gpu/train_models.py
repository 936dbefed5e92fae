"""Train every `model=` (configs/model/*.yaml) a few steps on a small task, one after the other in
one process, and write one JSON line per model as it finishes (so a run cut off at its bound
keeps what it did).

    python -m benchmarks.gpu.train_models --device cuda --steps 20 --out train.jsonl
    python -m benchmarks.gpu.train_models --list        # the models and their overrides, composed

Each model trains `experiment=dss-sequence1d` (reverse, L = --L, d_model 64, 2 layers, batch 8)
for --steps optimizer steps, validating once at the end, through src.training.fit (the code path
of `python -m train`). A line: {model, ok, seconds, first_step_s, step_ms (median of the steps
after the first, synchronised), val_loss, error}. A model that raises, gives a non-finite loss
or runs past --per-model seconds is recorded as failed and the next one runs.
"""

import argparse
import json
import math
import signal
import statistics
import sys
import tempfile
import time
from pathlib import Path

import lightning as L
import torch

ROOT = Path(__file__).resolve().parents[2]
MODELS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml"))


def overrides(model, device, steps, length, batch=8):
    """The `python -m train` overrides of one model's short run."""
    return ["wandb=null", "experiment=dss-sequence1d", f"model={model}", f"dataset.L={length}",
            f"dataset.samples_per_epoch={steps * batch}", f"dataset.val_split={1 / steps}",
            f"loader.batch_size={batch}", "loader.num_workers=0", "loader.pin_memory=false",
            f"trainer.accelerator={device}", "trainer.devices=1", f"trainer.max_steps={steps}", "trainer.max_epochs=1",
            "trainer.num_sanity_val_steps=0", "trainer.enable_progress_bar=false", "trainer.log_every_n_steps=1",
            "callbacks.rich_model_summary=null", "model.d_model=64", "model.n_layers=2"]


def compose(args):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    from src.config import prepare

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return prepare(hydra_compose("config", overrides=args))


class StepTimer(L.Callback):
    """Wall time of each training step (the device synchronised at its end)."""

    def __init__(self):
        self.times, self.start = [], None

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        self.start = time.perf_counter()

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        if module.device.type == "cuda":
            torch.cuda.synchronize(module.device)
        self.times.append(time.perf_counter() - self.start)


class Overrun(Exception):
    pass


def _overrun(signum, frame):
    raise Overrun("ran past --per-model seconds")


def train(model, device, steps, length, per_model):
    """One model's short run: the record written for it."""
    from src.training import fit

    record = {"model": model, "ok": False}
    timer = StepTimer()
    start = time.perf_counter()
    signal.alarm(per_model)
    try:
        with tempfile.TemporaryDirectory() as run_dir:
            metrics = fit(compose(overrides(model, device, steps, length)), str(Path(run_dir) / "run"), [timer])
        loss = metrics.get("val/loss", float("nan"))
        record.update(val_loss=loss, ok=len(timer.times) == steps and math.isfinite(loss))
        if len(timer.times) != steps:
            record["error"] = f"trained {len(timer.times)} steps of {steps}"
        elif not math.isfinite(loss):
            record["error"] = f"val/loss is {loss}"
    except Exception as e:  # noqa: BLE001 - recorded; the next model runs
        record["error"] = f"{type(e).__name__}: {str(e).strip().splitlines()[0][:300] if str(e).strip() else ''}"
    finally:
        signal.alarm(0)
    record["seconds"] = round(time.perf_counter() - start, 2)
    if timer.times:
        record["first_step_s"] = round(timer.times[0], 3)
    if len(timer.times) > 1:
        record["step_ms"] = round(1e3 * statistics.median(timer.times[1:]), 2)
    return record


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--L", type=int, default=256)
    parser.add_argument("--per-model", type=int, default=30, help="seconds one model may take")
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS, metavar="MODEL")
    parser.add_argument("--out", type=Path, help="JSON lines, one per model (default: stdout only)")
    parser.add_argument("--list", action="store_true", help="compose every model's run and print it; train nothing")
    args = parser.parse_args(argv)
    if args.list:  # every override composes (a bad key fails here, before any device time)
        for model in args.models:
            config = compose(overrides(model, args.device, args.steps, args.L))
            print(f"{model}: layer {config.model.layer._name_ if config.model.layer else 'hybrid'}, "
                  f"L={config.dataset.L}, steps={config.trainer.max_steps}")
        return 0
    signal.signal(signal.SIGALRM, _overrun)
    if args.device == "cuda" and not torch.cuda.is_available():
        print("error: --device cuda but torch sees no CUDA device", file=sys.stderr)
        return 2
    failed = 0
    for model in args.models:
        record = train(model, args.device, args.steps, args.L, args.per_model)
        failed += not record["ok"]
        print(json.dumps(record), flush=True)
        if args.out:
            with open(args.out, "a") as f:
                f.write(json.dumps(record) + "\n")
    print(f"{len(args.models) - failed} of {len(args.models)} models trained {args.steps} steps on {args.device}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
