"""Pictures of a run's saved validation outputs: `python -m src.results.predictions RUN_DIR [--epoch E] [--samples K]`.

Reads RUN_DIR/config.yaml (for the dataset) and RUN_DIR/val_outputs/epoch=<E>.pt (the last
epoch by default; train with `train.save_val_outputs=true` or `=N`), and writes into RUN_DIR/plots/:
    pathfinder_segmentation   pathfinder-epoch=<E>.png: image | target mask | predicted mask,
                              one row per sample (K samples)
    listops_subtrees          listops-epoch=<E>.png: accuracy by sub-tree height and by operator
                              (bars labelled with the number of positions)
"""

import argparse
import re
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from src.dataloaders.listops import HEIGHT_BUCKETS, ListOpsSubTrees  # noqa: E402
from src.utils.labels import IGNORE_INDEX  # noqa: E402

MASK_COLOURS = np.array([[0, 0, 0], [70, 130, 230], [250, 170, 30]], dtype=np.uint8)  # 0, 1, 2


def pathfinder(outputs, path, samples):
    x, y, preds = outputs["x"], outputs["y"], outputs["preds"]
    k = min(samples, len(x))
    side = int(round(x.shape[1] ** 0.5))
    fig, axes = plt.subplots(k, 3, figsize=(7.5, 2.5 * k), squeeze=False)
    for i in range(k):
        image = ((x[i, :, 0] + 1) * 127.5).reshape(side, side).numpy()
        target, pred = (MASK_COLOURS[m[i].reshape(side, side).numpy()] for m in (y, preds))
        label = int((y[i] == 2).any())
        for ax, picture, title in zip(axes[i], (image, target, pred), (f"image (label {label})", "target", "prediction")):
            ax.imshow(picture, cmap="gray", vmin=0, vmax=255, interpolation="nearest")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
    fig.suptitle("0 background (black), 1 main snake (blue), 2 connecting path (orange)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def listops(outputs, path, samples):
    y, preds = outputs["y"], outputs["preds"]
    labelled = y != IGNORE_INDEX
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    names = {"height": HEIGHT_BUCKETS, "op": ListOpsSubTrees.categories["op"]}
    for ax, (category, groups) in zip(axes, names.items()):
        ids = outputs[category]
        acc, count = [], []
        for g in range(len(groups)):
            where = labelled & (ids == g)
            count.append(int(where.sum()))
            acc.append(float((preds[where] == y[where]).float().mean()) if count[-1] else np.nan)
        bars = ax.bar(groups, acc, color="tab:blue")
        ax.bar_label(bars, labels=[f"n={c}" for c in count], fontsize=7)
        ax.set_ylim(0, 1.1)
        ax.set_xlabel("sub-tree height" if category == "height" else "operator")
        ax.set_ylabel("accuracy")
    overall = float((preds[labelled] == y[labelled]).float().mean())
    fig.suptitle(f"ListOpsSubTrees validation accuracy at `]` positions (overall {overall:.3f})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


PLOTS = {"pathfinder_segmentation": ("pathfinder", pathfinder), "listops_subtrees": ("listops", listops)}


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m src.results.predictions", description=__doc__.split("\n")[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--epoch", type=int, default=None, help="default: the last saved epoch")
    p.add_argument("--samples", type=int, default=4, help="Pathfinder: samples to show")
    args = p.parse_args(argv)
    config_file = args.run_dir / "config.yaml"
    if not config_file.exists():
        sys.exit(f"error: {config_file} not found; RUN_DIR must be a run directory (outputs/<date>/<time>)")
    name = OmegaConf.load(config_file).dataset._name_
    if name not in PLOTS:
        sys.exit(f"error: no pictures for dataset {name!r}; valid: {', '.join(sorted(PLOTS))}")
    files = sorted((args.run_dir / "val_outputs").glob("epoch=*.pt"))
    epochs = {int(re.match(r"epoch=(\d+)", f.name).group(1)): f for f in files if "rank" not in f.name}
    if not epochs:
        sys.exit(f"error: no validation outputs in {args.run_dir / 'val_outputs'}; train with train.save_val_outputs=true")
    epoch = max(epochs) if args.epoch is None else args.epoch
    if epoch not in epochs:
        sys.exit(f"error: --epoch={epoch} has no outputs; saved epochs: {sorted(epochs)}")
    prefix, plot = PLOTS[name]
    out = args.run_dir / "plots" / f"{prefix}-epoch={epoch:03d}.png"
    out.parent.mkdir(exist_ok=True)
    plot(torch.load(epochs[epoch], weights_only=True), out, args.samples)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
