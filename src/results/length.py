"""Length generalisation of one run, as a picture:
`python -m src.results.length RUN_DIR [--curve accuracy_by_position|accuracy_by_length] [--split val] [--epoch E]`.

Reads the curves a run wrote (RUN_DIR/curves/<split>[-<set>]/<curve>/epoch=<E>.csv, with
`task.metrics` listing the curve; the last epoch by default) and draws one line of accuracy
against position (or length) per set, the main set and each eval set, with the longest training
input (RUN_DIR/config.yaml, dataset.L) marked: everything right of it was never trained on.
The figure is titled with the run (RUN_DIR), its model and its task.
Writes RUN_DIR/plots/<curve>-<split>-epoch=<E>.png.
"""

import argparse
import csv
import json
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

CURVES = ("accuracy_by_position", "accuracy_by_length")


def read_curve(path):  # -> (x, accuracy) lists
    with open(path) as f:
        rows = list(csv.reader(f))[1:]
    return [int(r[0]) for r in rows], [float(r[1]) for r in rows]


def curve_files(run_dir, split, curve, epoch):
    """{set name: csv path} of one epoch (the last one written when epoch is None)."""
    files = {}
    for folder in sorted((run_dir / "curves").glob(f"{split}*")):
        if folder.name != split and not folder.name.startswith(f"{split}-"):
            continue
        epochs = {int(re.match(r"epoch=(\d+)", f.name).group(1)): f for f in (folder / curve).glob("epoch=*.csv")}
        if epochs:
            e = max(epochs) if epoch is None else epoch
            if e in epochs:
                files[folder.name[len(split) + 1:] or "main"] = (e, epochs[e])
    return files


def title(run, models, tasks):
    """'RUN: model M, task T' (several models or tasks joined by commas)."""
    def names(values):
        return ", ".join(sorted(str(v) for v in values))

    return f"{run}: model {names(models)}, task {names(tasks)}"


def model_and_task(run_dir, config):
    """(the run's model: its `model=` choice (results.json) or its layer's name, its task)."""
    results = Path(run_dir) / "results.json"
    choice = json.loads(results.read_text()).get("choices", {}).get("model") if results.is_file() else None
    layer = (config.get("model") or {}).get("layer") or {}
    dataset = config.get("dataset") or {}
    return choice or layer.get("_name_") or "?", dataset.get("task") or dataset.get("_name_") or "?"


def draw(files, train_length, curve, out, heading=""):
    fig, ax = plt.subplots(figsize=(7, 3.8))
    for name, (_, path) in files.items():
        x, accuracy = read_curve(path)
        ax.plot(x, accuracy, marker="." if len(x) < 80 else None, linewidth=1.2, label=name)
    if train_length:
        edge = train_length - 0.5 if curve == "accuracy_by_position" else train_length + 0.5
        ax.axvline(edge, color="grey", linestyle="--", linewidth=1, label=f"training length {train_length}")
    ax.set_xlabel("position t (0-indexed)" if curve == "accuracy_by_position" else "example length")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    ax.set_title(heading, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m src.results.length", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--curve", default="accuracy_by_position", choices=CURVES)
    p.add_argument("--split", default="val", choices=["val", "test"])
    p.add_argument("--epoch", type=int, default=None, help="default: the last epoch written")
    args = p.parse_args(argv)
    config_file = args.run_dir / "config.yaml"
    if not config_file.exists():
        sys.exit(f"error: {config_file} not found; RUN_DIR must be a run directory (outputs/<date>/<time>)")
    files = curve_files(args.run_dir, args.split, args.curve, args.epoch)
    if not files:
        sys.exit(f"error: no {args.curve} curves of split {args.split} in {args.run_dir / 'curves'}"
                 f"{'' if args.epoch is None else f' at epoch {args.epoch}'}; add {args.curve} to task.metrics")
    epoch = max(e for e, _ in files.values())
    out = args.run_dir / "plots" / f"{args.curve}-{args.split}-epoch={epoch:03d}.png"
    out.parent.mkdir(exist_ok=True)
    config = OmegaConf.load(config_file)
    model, task = model_and_task(args.run_dir, config)
    draw(files, config.dataset.get("L"), args.curve, out, title(args.run_dir, [model], [task]))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
