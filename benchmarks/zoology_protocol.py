"""`experiment=zoology-mqar` against zoology's own trainer (github:HazyResearch/zoology), side by
side on one small configuration: the same model, data law, number of examples, epochs, batch size,
learning rate and seeds; validation accuracy (zoology's: per example, then averaged; ours:
val/example_accuracy) after every epoch.

    git clone https://github.com/HazyResearch/zoology /tmp/zoology && git -C /tmp/zoology checkout 8700f46
    python -m benchmarks.zoology_protocol --zoology /tmp/zoology [--check] [--seeds 0 1 2] [--epochs 16]
        [--d-model 64] [--L 64] [--kv 4] [--vocab 128] [--train 8192] [--test 1000] [--batch 64] [--lr 0.003]
        [--ours "override ..."] [--out DIR]

--check only builds both models, copies zoology's weights into ours and prints the largest logit
difference (float64, eval mode); --mixer base_conv checks figure 2's BaseConv (kernel_size [3, -1]
by layer: a short, then an implicit long filter; no positions) instead of its attention. The
zoology side is figure 2's attention (iclr24_zoology_figure2/configs.py): MHA with one head and
dropout 0.1, learned positions, torch.nn.Identity as state mixer, 2 layers, tied embeddings, AdamW with weight decay 0.1, cosine per epoch, run through its
`Trainer` (zoology/train.py) with zoology's data (MQAR, random_non_queries=False, data seed 123) and
`set_determinism(seed)`. Commit 8700f46 (2025-03): at zoology's HEAD (d88d6f5, 2026-01)
`LanguageModel.forward` returns the hidden states by default, so its discrete cross-entropy path no
longer receives logits. Two shims run it on a CPU without torchvision: `StochasticDepth` with
p = 0 (the identity it is there) and the position ids' device (zoology makes them on "cuda").
Early stopping is off on both sides, so the curves have the same length. The curves go to
DIR/curves.csv and DIR/curves.png (default multirun/zoology-protocol).
"""

import argparse
import csv
import statistics
import subprocess
import sys
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def load_zoology(path):
    """zoology's modules from a checkout, with the two CPU shims of the module docstring."""
    class StochasticDepth(torch.nn.Module):
        def __init__(self, p, mode):
            super().__init__()
            if p != 0:
                raise ValueError(f"the shim is the identity, zoology asked for drop_path {p}")

        def forward(self, x):
            return x

    vision, ops = types.ModuleType("torchvision"), types.ModuleType("torchvision.ops")
    ops.StochasticDepth, vision.ops = StochasticDepth, ops
    sys.modules.setdefault("torchvision", vision)
    sys.modules.setdefault("torchvision.ops", ops)
    sys.path.insert(0, str(path))
    from zoology import config, model, train, utils
    from zoology.data import associative_recall, utils as data_utils
    return types.SimpleNamespace(config=config, model=model, train=train, utils=utils, mqar=associative_recall,
                                 data=data_utils)


MIXERS = {  # figure 2's (iclr24_zoology_figure2/configs.py): zoology's mixer, ours
    "attention": (dict(name="zoology.mixers.attention.MHA", kwargs={"dropout": 0.1, "num_heads": 1}), "mha"),
    "base_conv": (dict(name="zoology.mixers.base_conv.BaseConv", kwargs={"kernel_size": [3, -1]}), "base_conv"),
}


def zoology_model(z, a):
    mixer = MIXERS[a.mixer][0]
    if a.mixer != "attention":
        mixer = {**mixer, "kwargs": {**mixer["kwargs"], "l_max": a.L}}
    cfg = z.config.ModelConfig(
        d_model=a.d_model, n_layers=2, max_position_embeddings=a.L if a.mixer == "attention" else 0,
        vocab_size=a.vocab, sequence_mixer=mixer, state_mixer=dict(name="torch.nn.Identity", kwargs={}))
    m = z.model.LanguageModel(cfg)
    m.backbone.embeddings.device = "cpu"
    return m


def our_overrides(a, seed, epochs):
    return ["experiment=zoology-mqar", f"model={MIXERS[a.mixer][1]}", f"model.d_model={a.d_model}", f"dataset.L={a.L}", f"dataset.num_kv_pairs={a.kv}",
            f"dataset.vocab_size={a.vocab}", f"dataset.num_train_examples={a.train}",
            f"dataset.num_eval_examples={a.test}", f"loader.batch_size={a.batch}", f"optimizer.lr={a.lr}",
            f"trainer.max_epochs={epochs}", f"train.seed={seed}", "callbacks.early_stopping=null", "wandb=null",
            "trainer.enable_progress_bar=false", *a.ours.split()]


def check(z, a):
    """The largest |logit| difference between zoology's model and ours with its weights copied."""
    import train
    from omegaconf import OmegaConf

    from src.config import prepare
    from src.module import SequenceLightningModule

    torch.manual_seed(0)
    theirs = zoology_model(z, a).double().eval()
    config = prepare(train._compose(our_overrides(a, 0, 1)))
    ours = SequenceLightningModule(OmegaConf.to_container(config, resolve=True)).model.double().eval()
    p, D = dict(ours.named_parameters()), a.d_model
    pairs = [("encoder.weight", theirs.backbone.embeddings.word_embeddings.weight),
             ("final_norm.weight", theirs.backbone.ln_f.weight), ("final_norm.bias", theirs.backbone.ln_f.bias)]
    if a.mixer == "attention":
        pairs.append(("positions.embedding", theirs.backbone.embeddings.position_embeddings.weight))
    for i, block in enumerate(theirs.backbone.layers):
        mix = block.sequence_mixer
        if a.mixer == "attention":
            for j, n in enumerate("qkv"):  # Wqkv's rows are (three h d): q, then k, then v
                pairs += [(f"blocks.{i}.layer.{n}.weight", mix.Wqkv.weight[j * D:(j + 1) * D]),
                          (f"blocks.{i}.layer.{n}.bias", mix.Wqkv.bias[j * D:(j + 1) * D])]
            pairs += [(f"blocks.{i}.layer.out.weight", mix.out_proj.weight),
                      (f"blocks.{i}.layer.out.bias", mix.out_proj.bias)]
        else:  # BaseConv: the projection, then a short conv (conv.conv) or an implicit filter's MLP (conv.mlp)
            pairs += [(f"blocks.{i}.layer.{name}", value) for name, value in mix.named_parameters()
                      if name.startswith("projection.")]
            pairs += [(f"blocks.{i}.layer.{name}" if name.startswith("conv.conv.") else f"blocks.{i}.layer.filter.{name[5:]}",
                       value) for name, value in mix.named_parameters() if name.startswith(("conv.conv.", "conv.mlp."))]
        for ours_name, norm in (("norm", block.norm1), ("mixer_norm", block.norm2)):
            with torch.no_grad():  # off 1 so that a swapped or missing norm shows
                norm.weight.add_(0.1 * torch.randn_like(norm.weight))
                norm.bias.add_(0.1 * torch.randn_like(norm.bias))
            pairs += [(f"blocks.{i}.{ours_name}.weight", norm.weight), (f"blocks.{i}.{ours_name}.bias", norm.bias)]
    missing = sorted(set(p) - {name for name, _ in pairs})
    if missing:
        print(f"parameters zoology's model does not have: {missing}")
    with torch.no_grad():
        for name, value in pairs:
            p[name].copy_(value)
        x = torch.randint(0, a.vocab, (4, a.L))
        theirs_y, ours_y = theirs(x), ours(x)[0]
    print(f"max |logit difference| {(theirs_y - ours_y).abs().max().item():.3g} "
          f"(logits up to {theirs_y.abs().max().item():.3g}), float64, eval mode")
    return missing


def run_zoology(z, a, seed):
    """zoology's train() with its WandbLogger replaced by a list: valid/accuracy after each epoch."""
    z.utils.set_determinism(seed)
    segment = dict(vocab_size=a.vocab, input_seq_len=a.L, num_kv_pairs=a.kv, random_non_queries=False)
    data = z.config.DataConfig(train_configs=[z.mqar.MQARConfig(num_examples=a.train, **segment)],
                               test_configs=[z.mqar.MQARConfig(num_examples=a.test, **segment)], batch_size=a.batch)
    train_dl, test_dl = z.data.prepare_data(data)
    logged = []
    logger = types.SimpleNamespace(log=lambda d: logged.append(d) if "valid/accuracy" in d else None)
    trainer = z.train.Trainer(model=zoology_model(z, a), train_dataloader=train_dl, test_dataloader=test_dl,
                              max_epochs=a.epochs, learning_rate=a.lr, weight_decay=0.1, early_stopping_metric=None,
                              device="cpu", logger=logger)
    trainer.fit()
    return [d["valid/accuracy"] for d in logged]


def run_ours(a, seed, out):
    run_dir = out / f"ours-seed{seed}"
    cmd = [sys.executable, "-m", "train", *our_overrides(a, seed, a.epochs), f"hydra.run.dir={run_dir}"]
    subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    with open(run_dir / "metrics.csv") as f:
        rows = [r for r in csv.DictReader(f) if r.get("val/example_accuracy")]
    return [float(r["val/example_accuracy"]) for r in rows][-a.epochs:]  # the sanity check's row first, if any


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--zoology", type=Path, required=True, help="a checkout of HazyResearch/zoology (8700f46)")
    parser.add_argument("--check", action="store_true")
    parser.add_argument("--mixer", choices=sorted(MIXERS), default="attention", help="figure 2's mixer on both sides")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=16)
    parser.add_argument("--d-model", type=int, default=64)
    parser.add_argument("--L", type=int, default=64)
    parser.add_argument("--kv", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=128)  # zoology asserts vocab > L
    parser.add_argument("--train", type=int, default=8192)
    parser.add_argument("--test", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.003)
    parser.add_argument("--ours", default="", help="more overrides for our side (e.g. model.state_mixer=none)")
    parser.add_argument("--sides", nargs="+", default=["zoology", "ours"], choices=["zoology", "ours"])
    parser.add_argument("--out", type=Path, default=ROOT / "multirun" / "zoology-protocol")
    a = parser.parse_args()
    if a.check:
        import src.module  # noqa: F401  (before the torchvision shim, which torchmetrics would take for the package)
        return sys.exit(1 if check(load_zoology(a.zoology.resolve()), a) else 0)
    z = load_zoology(a.zoology.resolve())
    a.out.mkdir(parents=True, exist_ok=True)
    curves = {}
    for seed in a.seeds:  # interleaved, so that a change in the machine's load hits both sides alike
        for side in a.sides:
            curves[side, seed] = run_zoology(z, a, seed) if side == "zoology" else run_ours(a, seed, a.out)
            print(f"{side} seed {seed}: " + " ".join(f"{v:.3f}" for v in curves[side, seed]), flush=True)
    with open(a.out / "curves.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["side", "seed", *[f"epoch{e + 1}" for e in range(a.epochs)]])
        for (side, seed), c in curves.items():
            w.writerow([side, seed, *[f"{v:.4f}" for v in c]])
    print(f"\nvalidation accuracy after each epoch ({a.train // a.batch} steps an epoch); median over seeds (range)")
    for side in a.sides:
        cols = list(zip(*[curves[side, s] for s in a.seeds]))
        print(f"{side:8s}" + " ".join(f"{statistics.median(c):.3f}({min(c):.2f}-{max(c):.2f})" for c in cols))
    plot(curves, a)


def plot(curves, a):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for (side, seed), c in curves.items():
        ax.plot(range(1, len(c) + 1), c, color="C0" if side == "zoology" else "C1", alpha=0.8,
                label=side if seed == a.seeds[0] else None)
    ax.set(xlabel=f"epoch ({a.train // a.batch} steps)", ylabel="validation accuracy",
           title=f"MQAR (L {a.L}, N {a.kv}, V {a.vocab}), d_model {a.d_model}, lr {a.lr:g}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(a.out / "curves.png", dpi=120)


if __name__ == "__main__":
    main()
