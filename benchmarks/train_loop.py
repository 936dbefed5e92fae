"""What a small run costs beyond its arithmetic: the fixed cost of a `python -m train` process, the
per-step cost of the Lightning loop and the cost of a validation, each against its floor.

    python -m benchmarks.train_loop [--layers attn mamba hyena lstm] [--rounds 5] [--steps 120]
                                    [--parts fixed step sweep] [--jobs 32] [--samples 6400]

Every case is `python -m train experiment=modern-rnns dataset=parity model=<layer> model.d_model=64
dataset.L=64` (parity: training length 64, eval sets at 64, 128 and 256; 2 layers), as a scorecard
cell would run it. The parts, each interleaved with its floor over `rounds` rounds (the median
ratio and its range; a stall of the machine hits both alike):

  fixed  the wall time of `python -m train <case> trainer.max_steps=1 trainer.limit_val_batches=1`
         (one step, one batch per validation set) against a process that imports torch and exits;
         the difference is what a run pays before and after its training. Also without the
         sanity check (trainer.num_sanity_val_steps=0, as in a sweep's jobs): its 2 batches per
         validation set are arithmetic, 0.4 s for Mamba's sets up to L 256.
  step   the seconds per training step of a run (src/training.fit, the run's own trainer, callbacks
         and logging; timed from the end of a warm-up to the last step) against a bare PyTorch loop
         with the same model, loss, optimizer groups, gradient clipping and batches;
  val    one validation of that run (all four sets, timed from on_validation_start to
         on_validation_end) against a bare evaluation: the same batches, forward, loss and
         accuracy under torch.no_grad.
  sweep  (--parts sweep) the wall time of a --jobs multirun of the first layer, seeds 0..jobs-1,
         --samples training samples and one validation each, on the basic launcher and on the
         pool (2 workers on a CPU), against the sum of its jobs' train_seconds (results.json)
         divided by the jobs run at once.

Prints one table per part with the load average before and after.
"""

import argparse
import contextlib
import json
import logging
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CASE = ["experiment=modern-rnns", "dataset=parity", "model.d_model=64", "model.n_layers=2", "dataset.L=64",
        "wandb=null", "trainer.accelerator=cpu"]


def overrides(layer):
    return [*CASE, f"model={layer}"]


def wall(command):
    start = time.perf_counter()
    subprocess.run(command, cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - start


def fixed_round(layer, out):
    """(seconds of a torch-only process, of a one-step run, of that run without its sanity check)."""
    floor = wall([sys.executable, "-c", "import torch"])
    run = [sys.executable, "-m", "train", *overrides(layer), "trainer.max_steps=1", "trainer.limit_val_batches=1"]
    runs = [wall([*run, *extra, f"hydra.run.dir={out}/{time.monotonic_ns()}"])
            for extra in ([], ["trainer.num_sanity_val_steps=0"])]
    return floor, *runs


def sweep_round(layer, launcher, jobs, samples, out):
    """(wall seconds of a `jobs`-job multirun (seeds 0..jobs-1) of `samples` training samples
    each, the sum of its jobs' train_seconds, the jobs it runs at once)."""
    sweep_dir = Path(out) / f"sweep{time.monotonic_ns()}"
    parallel = 1
    args = [*overrides(layer), "trainer.max_epochs=1", f"dataset.samples_per_epoch={samples}",
            f"train.seed={','.join(map(str, range(jobs)))}", f"hydra.sweep.dir={sweep_dir}"]
    if launcher == "pool":
        args.append("hydra/launcher=pool")
        parallel = 2  # ${local_jobs:} on a CPU
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "train", "-m", *args], cwd=ROOT, check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    train = sum(json.loads((sweep_dir / str(j) / "results.json").read_text())["train_seconds"] for j in range(jobs))
    return wall, train, parallel


def compose(args):
    from hydra import compose as hydra_compose, initialize_config_dir

    from src.config import prepare

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        return prepare(hydra_compose("config", overrides=list(args)))


def lightning_round(layer, steps, warm, out):
    """(s per training step after `warm` steps, s of the validation) of a run of `steps` steps."""
    import lightning as L

    from src.training import fit

    class Clock(L.Callback):
        def __init__(self):
            self.step, self.val = None, None

        def on_train_batch_start(self, trainer, module, batch, batch_idx):
            if batch_idx == warm:
                self.step = time.perf_counter()

        def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
            if batch_idx == steps - 1:
                self.step = (time.perf_counter() - self.step) / (steps - warm)

        def on_validation_start(self, trainer, module):
            self.val = time.perf_counter()

        def on_validation_end(self, trainer, module):
            if not trainer.sanity_checking:
                self.val = time.perf_counter() - self.val

    clock = Clock()
    config = compose([*overrides(layer), f"trainer.limit_train_batches={steps}", "trainer.max_epochs=1"])
    with open(os.devnull, "w") as quiet, contextlib.redirect_stdout(quiet):  # as a run whose output goes to a file
        fit(config, f"{out}/{time.monotonic_ns()}", extra_callbacks=[clock])
    return clock.step, clock.val


def bare_round(layer, steps, warm):
    """(s per training step, s of a validation) of a plain PyTorch loop over the same run."""
    import lightning as L
    import torch
    from omegaconf import OmegaConf

    from src.module import SequenceLightningModule
    from src.utils.labels import IGNORE_INDEX
    from src.utils.optim import build_optimizer
    from src.utils.threads import select

    config = compose([*overrides(layer), f"trainer.limit_train_batches={steps}", "trainer.max_epochs=1"])
    L.seed_everything(config.train.seed, verbose=False)
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    select(config)
    loader = dict(batch_size=config.loader.batch_size, batch_size_eval=None, num_workers=0, pin_memory=False,
                  rank=0, world_size=1)
    for dataset in [module.dataset, *module.eval_sets.values()]:
        dataset.setup()
    optimizer = build_optimizer(module, config.optimizer)
    clip = config.trainer.gradient_clip_val
    batches = iter(module.dataset.train_dataloader(**loader))
    for i in range(steps):
        if i == warm:
            start = time.perf_counter()
        x, y, *_ = next(batches)
        loss = module.loss(module(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
        optimizer.step()
    step = (time.perf_counter() - start) / (steps - warm)
    start = time.perf_counter()
    with torch.no_grad():
        for i, dataset in enumerate([module.dataset, *module.eval_sets.values()]):
            name = None if i == 0 else list(module.eval_sets)[i - 1]
            l_output = dataset.l_output if name else None
            right = total = 0
            for x, y, *_ in dataset.val_dataloader(**loader):
                preds = module(x, l_output)
                module.loss(preds, y)
                labelled = y != IGNORE_INDEX
                right += (preds.argmax(-1) == y)[labelled].sum()
                total += labelled.sum()
            float(right / total)
    return step, time.perf_counter() - start


def table(title, rows, unit):
    print(f"\n{title}")
    print(f"{'layer':<8} {'floor ' + unit:>12} {'run ' + unit:>12} {'run - floor':>12} {'ratio':>7} {'range':>13}")
    for layer, pairs in rows.items():
        floors, runs = zip(*pairs)
        ratios = sorted(r / f for f, r in pairs)
        print(f"{layer:<8} {statistics.median(floors):12.4g} {statistics.median(runs):12.4g} "
              f"{statistics.median(r - f for f, r in pairs):12.4g} {statistics.median(ratios):7.3f} "
              f"{ratios[0]:6.3f}-{ratios[-1]:.3f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", nargs="+", default=["attn", "mamba", "hyena", "lstm"])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=120, help="training steps per run (the first 20 warm up)")
    parser.add_argument("--parts", nargs="+", default=["fixed", "step"], choices=["fixed", "step", "sweep"],
                        help="step also times the validation")
    parser.add_argument("--jobs", type=int, default=32, help="jobs of the sweep part")
    parser.add_argument("--samples", type=int, default=6400, help="training samples of each sweep job (100 steps)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS')}")
    warm = 20
    fixed, step, val = ({layer: [] for layer in args.layers} for _ in range(3))
    logging.getLogger("lightning").setLevel(logging.ERROR)
    with tempfile.TemporaryDirectory() as out:
        for _ in range(args.rounds):
            for layer in args.layers:
                if "fixed" in args.parts:
                    fixed[layer].append(fixed_round(layer, out))
                if "step" in args.parts:
                    bare = bare_round(layer, args.steps, warm)
                    ours = lightning_round(layer, args.steps, warm, out)
                    step[layer].append((bare[0], ours[0]))
                    val[layer].append((bare[1], ours[1]))
        if "sweep" in args.parts:
            print(f"\n{args.jobs}-job multirun of {args.layers[0]} ({args.samples // 64} steps and one validation each): "
                  "wall time against the jobs' training time (train_seconds in results.json) / the jobs run at once")
            print(f"{'launcher':<9} {'wall s':>8} {'train s':>8} {'at once':>8} {'ratio':>7}")
            for launcher in ("basic", "pool"):
                wall, train, parallel = sweep_round(args.layers[0], launcher, args.jobs, args.samples, out)
                print(f"{launcher:<9} {wall:8.1f} {train:8.1f} {parallel:8d} {wall / (train / parallel):7.3f}")
    if "fixed" in args.parts:
        print("\nfixed cost: a one-step `python -m train` process (one batch per validation set) against "
              "`python -c 'import torch'`; without the sanity check (2 batches per validation set), as in a sweep")
        print(f"{'layer':<8} {'floor s':>8} {'run s':>8} {'above':>7} {'range':>11} {'no sanity s':>12} {'above':>7} "
              f"{'range':>11}")
        for layer, triples in fixed.items():
            floor = statistics.median(f for f, _, _ in triples)
            cells = []
            for i in (1, 2):
                above = sorted(t[i] - t[0] for t in triples)
                cells.append(f"{statistics.median(t[i] for t in triples):8.2f} {statistics.median(above):7.2f} "
                             f"{above[0]:5.2f}-{above[-1]:.2f}")
            print(f"{layer:<8} {floor:8.2f} {cells[0]} {cells[1]:>36}")
    if "step" in args.parts:
        table(f"per training step ({args.steps} steps, the first {warm} not timed): Lightning run against a bare loop",
              {k: [(f * 1e3, r * 1e3) for f, r in v] for k, v in step.items()}, "ms")
        table("one validation (4 sets): Lightning run against a bare evaluation",
              {k: [(f * 1e3, r * 1e3) for f, r in v] for k, v in val.items()}, "ms")
    print(f"\nload average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
