"""One training step (forward, loss, backward, AdamW step) of whole models on CPU, at 1 thread
and at N, the evidence behind train.threads=auto (src/utils/threads.py).

    python -m benchmarks.threads [--threads 2] [--rounds 3] [--cases default attn2 ...]

Each case is a `python -m train` config (its overrides below), built as a run builds it, fed one
training batch of its own dataset. One warm-up step per thread count, then `rounds` rounds, each
timing every case at 1 thread and at N in turn (interleaved, so that other processes' load hits
both alike); prints the median per case, d_model^2 x n_layers and the load average.
"""

import argparse
import os
import statistics
import time

import torch
from omegaconf import OmegaConf

CASES = {  # name: overrides of `python -m train`
    "default": ["experiment=base"],
    "attn2": ["experiment=dss-sequence1d", "model=attn", "model.n_layers=2", "dataset.L=512", "loader.batch_size=64"],
    "dlr-256x4": ["experiment=dss-sequence1d", "model=dlr", "model.d_model=256", "model.n_layers=4",
                  "model.layer.d_state=64", "dataset.L=256", "loader.batch_size=16"],
    "dlr-512x4": ["experiment=dss-sequence1d", "model=dlr", "model.d_model=512", "model.n_layers=4",
                  "model.layer.d_state=64", "dataset.L=256", "loader.batch_size=16"],
    "mha-512x6": ["experiment=dss-sequence1d", "model=mha", "model.d_model=512", "model.n_layers=6",
                  "dataset.L=256", "loader.batch_size=16"],
}


def build(overrides):
    """(module, optimizer, one training batch) of the run `python -m train *overrides`."""
    from hydra import compose, initialize_config_dir

    from src.config import prepare
    from src.module import SequenceLightningModule
    from src.utils.optim import build_optimizer

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    with initialize_config_dir(config_dir=os.path.join(root, "configs"), version_base="1.3"):
        config = prepare(compose("config", overrides=["wandb=null", "trainer.accelerator=cpu", *overrides]))
    torch.manual_seed(0)
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    module.dataset.setup()
    B = config.loader.batch_size
    loader = module.dataset.train_dataloader(batch_size=B, batch_size_eval=B, num_workers=0, pin_memory=False,
                                             rank=0, world_size=1)
    x, y, *_ = next(iter(loader))
    size = config.model.d_model ** 2 * config.model.n_layers
    return module, build_optimizer(module, config.optimizer), (x, y), size


def step(module, optimizer, batch, threads):
    torch.set_num_threads(threads)
    x, y = batch
    start = time.perf_counter()
    optimizer.zero_grad(set_to_none=True)
    module.loss(module(x), y).backward()
    optimizer.step()
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--threads", type=int, default=os.cpu_count())
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    args = p.parse_args()
    built = {name: build(CASES[name]) for name in args.cases}
    counts = sorted({1, args.threads})
    times = {(name, n): [] for name in built for n in counts}
    for name, (module, optimizer, batch, _) in built.items():
        for n in counts:
            step(module, optimizer, batch, n)  # warm-up
    for _ in range(args.rounds):
        for name, (module, optimizer, batch, _) in built.items():
            for n in counts:
                times[name, n].append(step(module, optimizer, batch, n))
    print(f"load average {os.getloadavg()[0]:.1f} (1 min), {os.cpu_count()} cores, median of {args.rounds} rounds")
    print("| case | d_model^2 x n_layers | " + " | ".join(f"{n} thread(s)" for n in counts) + " |")
    print("|---|---|" + "---|" * len(counts))
    for name, (*_, size) in built.items():
        cells = " | ".join(f"{statistics.median(times[name, n]) * 1e3:.0f} ms" for n in counts)
        print(f"| {name} ({' '.join(CASES[name])}) | {size:,} | {cells} |")


if __name__ == "__main__":
    main()
