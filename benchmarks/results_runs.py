"""`python -m src.results` on N synthetic run directories: `python -m benchmarks.results_runs [--runs 1000]`.

Writes N runs (a zoology-sized grid: model x d_model x L x lr x seed) into a temporary folder,
each with a results.json holding the resolved config of a real run (the default experiment's,
composed here) and a metrics.csv of 20 epochs, then times the whole command in a fresh process
(imports included), median of --rounds: the table, --best-over optimizer.lr, and a figure.
"""

import argparse
import itertools
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]


def real_config():
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        config = compose("config", overrides=["wandb=null"])
    OmegaConf.resolve(config)
    return OmegaConf.to_container(config)


def write_runs(root, n):
    config = real_config()
    grid = itertools.product(("dlr", "dss", "mamba", "attn", "gla"), (32, 64, 128, 256), (64, 256, 1024),
                             (1e-4, 3e-4, 1e-3, 3e-3, 1e-2), range(100))
    for i, (model, d, L, lr, seed) in zip(range(n), grid):
        run = Path(root) / str(i)
        run.mkdir(parents=True)
        config["model"]["d_model"], config["dataset"]["L"], config["optimizer"]["lr"] = d, L, lr
        config["train"]["seed"] = seed
        accuracy = (i * 7919 % 1000) / 1000
        metrics = {"val/accuracy": accuracy, "val/loss": 1 - accuracy, "val/L4096/accuracy": accuracy / 2,
                   "train/loss": 1 - accuracy, "num_parameters": 1000.0 * d, "state_size": 16.0 * d}
        overrides = [f"model={model}", f"model.d_model={d}", f"dataset.L={L}", f"optimizer.lr={lr}",
                     f"train.seed={seed}"]
        (run / "results.json").write_text(json.dumps({
            "status": "finished", "metrics": metrics, "monitor": "val/loss", "mode": "min",
            "choices": {"model": model, "experiment": "base"}, "overrides": overrides, "config": config}, indent=1))
        rows = "".join(f"{e},{(e + 1) * 100},{metrics['val/loss'] + (20 - e) / 100},\n" for e in range(20))
        (run / "metrics.csv").write_text("epoch,step,val/loss,train/loss\n" + rows)


def timed(args):
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "src.results", *args], cwd=ROOT, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=3)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as root:
        write_runs(root, args.runs)
        size = sum(f.stat().st_size for f in Path(root).rglob("*") if f.is_file()) / 2**20
        print(f"{args.runs} run directories, {size:.0f} MB")
        commands = {
            "table": [root],
            "--best-over optimizer.lr --format md": [root, "--best-over", "optimizer.lr", "--format", "md"],
            "--best-over optimizer.lr --plot line": [root, "--metric", "val/accuracy", "--best-over", "optimizer.lr",
                                                     "train.seed", "--plot", "line:x=model.d_model,facet=dataset.L",
                                                     "--figures", str(Path(root) / "figures")],
        }
        times = {name: [] for name in commands}
        for _ in range(args.rounds):  # interleaved
            for name, command in commands.items():
                times[name].append(timed(command))
        for name, values in times.items():
            print(f"{name:45s} median {statistics.median(values):5.2f} s  (range {min(values):.2f}-{max(values):.2f})")


if __name__ == "__main__":
    main()
