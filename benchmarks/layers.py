"""Forward + backward time of every layer config, one layer, on CPU (float32; `--device cuda`: on the GPU).

    python -m benchmarks.layers [--B 8] [--L 1024] [--D 128] [--repeats 3] [--layers s4 mha gla:torch ...]
                                [--device cuda]

Each layer is built from configs/model/layer/<name>.yaml (as `python -m train model/layer=<name>`
composes it, with dataset.L = L), and timed on x (B, L, D): y, _ = layer(x); y.square().mean().backward().
One warm-up, then the median of `repeats` runs, all layers in one process, interleaved round by
round so that load from other processes hits them alike. Prints a markdown table: the median,
the ratio to the fastest layer, parameters and state_size(L). `name:backend` sets the layer's
model.layer.backend (e.g. `gla gla:torch`: the default backend and the torch path side by side), and
`name:key=value` any other option (e.g. `based based:mode=chunk`).
On cuda each run is synchronised before the clock is read; a layer that fails to build or run
there is listed with its error and left out of the table.
"""

import argparse
import statistics
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from src.models.sequence.backbone import build_layer
from src.config import prepare

ROOT = Path(__file__).resolve().parents[1]
ALL = sorted(p.stem for p in (ROOT / "configs" / "model" / "layer").glob("*.yaml"))


def layer_config(name, L):
    """The layer config of `name`, `name:backend` (model.layer.backend=backend) or `name:key=value`
    (model.layer.key=value)."""
    name, _, option = name.partition(":")
    option = option if "=" in option else f"backend={option}"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = compose("config", overrides=["wandb=null", "experiment=dss-sequence1d", f"model/layer={name}",
                                              f"dataset.L={L}"] + ([f"model.layer.{option}"] if option != "backend=" else []))
    return prepare(config).model.layer


def layer_name(text):
    """argparse type: a layer config name, optionally with `:backend`."""
    if text.partition(":")[0] not in ALL:
        raise argparse.ArgumentTypeError(f"{text!r}: choose one of {', '.join(ALL)} (optionally name:backend or name:key=value)")
    return text


def fwd_bwd(layer, x):
    layer.zero_grad(set_to_none=True)
    sync(x.device)
    start = time.perf_counter()
    y, _ = layer(x)
    y.square().mean().backward()
    sync(x.device)
    return time.perf_counter() - start


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--B", type=int, default=8)
    parser.add_argument("--L", type=int, default=1024)
    parser.add_argument("--D", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--layers", nargs="+", default=ALL, type=layer_name)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    device = torch.device(args.device)
    torch.manual_seed(0)
    x = torch.randn(args.B, args.L, args.D).to(device)
    layers = {}
    for name in args.layers:
        try:
            layers[name] = build_layer(layer_config(name, args.L), args.D, max_length=args.L).to(device)
            fwd_bwd(layers[name], x)  # warm-up
        except Exception as e:  # noqa: BLE001 - reported, and the other layers are timed
            layers.pop(name, None)
            print(f"{name}: failed on {device.type} ({type(e).__name__}: {str(e).strip().splitlines()[0][:200]})",
                  flush=True)
    times = {name: [] for name in layers}
    for _ in range(args.repeats):
        for name, layer in layers.items():
            times[name].append(fwd_bwd(layer, x))
    median = {name: statistics.median(t) for name, t in times.items()}
    fastest = min(median.values())
    where = f"{torch.get_num_threads()} threads" if device.type == "cpu" else torch.cuda.get_device_name(device)
    print(f"forward+backward, B={args.B} L={args.L} D={args.D}, float32, {where}, median of {args.repeats}")
    print("| layer | ms | x fastest | parameters | state_size(L) |")
    print("|---|---:|---:|---:|---:|")
    for name in sorted(median, key=median.get):
        n_params = sum(p.numel() for p in layers[name].parameters())
        print(f"| {name} | {1000 * median[name]:.1f} | {median[name] / fastest:.1f} | {n_params} | "
              f"{layers[name].state_size(args.L)} |")


if __name__ == "__main__":
    main()
