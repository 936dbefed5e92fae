"""Hawk's recurrent block (`model=hawk`) against recurrentgemma's torch RecurrentBlock, whose RG-LRU
runs `rnn_scan`, a Python loop over time, on one CPU thread.

    python -m benchmarks.rg_lru [--repeats 3]

Rows, forward and forward + backward, at (B=8, L=512, D=128) and (B=4, L=2048, D=256), float32:
  scan: the RG-LRU's h_t = a_t h_{t-1} + b_t, our linear_scan (backend `cpu`, the C loop, and
      `torch`, blocked) against recurrentgemma's rnn_scan (inputs (B, L, D)); ours on inputs
      (B, D, L) contiguous (BDL: rows of contiguous steps) and on transposed views of
      recurrentgemma's (B, L, D) ones (BLD: the layout the Hawk layer passes);
  block: the whole recurrent block (lru width D, 1 gate block), ours with the scan's two backends
      against recurrentgemma's RecurrentBlock with the same parameters.
Each time is the median of `repeats` runs after a warm-up, the three interleaved run by run. The
error column is the largest |y32 - y64| of our float32 output (C loop) against recurrentgemma's in
float64 (its scan summed in float64 too).
Needs recurrentgemma's wheel and what its torch code imports:
    pip install --no-deps recurrentgemma jaxtyping wadler_lindig 'typeguard<3'
"""

import argparse
import functools
import importlib
import importlib.util
import statistics
import sys
import time
import types
from pathlib import Path

import torch

INSTALL = "pip install --no-deps recurrentgemma jaxtyping wadler_lindig 'typeguard<3'"


def recurrentgemma_torch():
    """recurrentgemma's torch modules (layers, modules), loaded from the installed wheel under stub
    packages: its package __init__ imports jax and flax, which its torch code does not need.
    ImportError with the reason when the wheel or what its torch code imports is absent."""
    names = ("recurrentgemma.torch.layers", "recurrentgemma.torch.modules")
    if all(name in sys.modules for name in names):
        return tuple(sys.modules[name] for name in names)
    spec = importlib.util.find_spec("recurrentgemma")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"recurrentgemma is not installed ({INSTALL})")
    missing = [m for m in ("jaxtyping", "typeguard", "einops") if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(f"recurrentgemma's torch code imports {', '.join(missing)} ({INSTALL})")
    root = Path(spec.submodule_search_locations[0])
    for name, path in (("recurrentgemma", root), ("recurrentgemma.torch", root / "torch")):
        if name not in sys.modules:
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
    return tuple(importlib.import_module(name) for name in names)


def copy_into(ours, theirs):
    """recurrentgemma's RecurrentBlock parameters into a Hawk layer."""
    with torch.no_grad():
        for mine, its in ((ours.linear_y, theirs.linear_y), (ours.linear_x, theirs.linear_x),
                          (ours.linear_out, theirs.linear_out)):
            mine.weight.copy_(its.weight)
            mine.bias.copy_(its.bias)
        ours.conv.conv.weight.copy_(theirs.conv_1d.w.T[:, None, :])  # its w[k] multiplies x_{t - (K-1) + k}
        ours.conv.conv.bias.copy_(theirs.conv_1d.b)
        for mine, its in ((ours.input_gate, theirs.rg_lru.input_gate), (ours.a_gate, theirs.rg_lru.a_gate)):
            mine.weight.copy_(its.w)
            mine.bias.copy_(its.b)
        ours.a_param.copy_(theirs.rg_lru.a_param)


def timed(fn, backward, inputs=()):
    for t in inputs:
        t.grad = None
    start = time.perf_counter()
    y = fn()
    if backward:
        y.square().mean().backward()
    return time.perf_counter() - start


def compare(name, runs, repeats, backward, inputs=()):
    """Median ms of each of `runs` (interleaved run by run after a warm-up); prints the row."""
    for fn in runs.values():
        timed(fn, backward, inputs)
    times = {k: [] for k in runs}
    for _ in range(repeats):
        for k, fn in runs.items():
            times[k].append(timed(fn, backward, inputs))
    ms = {k: 1000 * statistics.median(v) for k, v in times.items()}
    print(f"{name:40s} {ms['cpu']:9.1f} {ms['torch']:10.1f} {ms['theirs']:20.1f} "
          f"{ms['theirs'] / ms['cpu']:6.1f}x {ms['theirs'] / ms['torch']:6.1f}x", end="")
    return ms


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    from src.models.sequence.backbone import build_layer
    from src.ops.linear_scan import linear_scan

    layers, modules = recurrentgemma_torch()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, 1 thread, median of {args.repeats}")
    print(f"{'row':40s} {'cpu (ms)':>9s} {'torch (ms)':>10s} {'recurrentgemma (ms)':>20s} {'cpu x':>7s} {'torch x':>7s}"
          f" {'err f32':>8s}")
    for B, L, D in ((8, 512, 128), (4, 2048, 256)):
        torch.manual_seed(0)
        a, b = torch.rand(B, L, D).requires_grad_(), torch.randn(B, L, D).requires_grad_()  # recurrentgemma's layout
        reset = torch.zeros(B, L, dtype=torch.bool)
        at, bt = (t.detach().transpose(1, 2).contiguous().requires_grad_() for t in (a, b))
        with torch.no_grad():
            y64 = layers.rnn_scan(b.double(), a.double(), reset, None, acc_dtype=torch.float64)[0]
        # ours on rows of contiguous steps (B, D, L), and on recurrentgemma's (B, L, D) as Hawk calls it
        for layout, (ao, bo) in (("BDL", (at, bt)), ("BLD", (a, b))):
            view = (lambda t: t) if layout == "BDL" else (lambda t: t.transpose(1, 2))
            scans = {k: functools.partial(lambda k: linear_scan(view(ao), view(bo), backend=k), k) for k in ("cpu", "torch")}
            scans["theirs"] = lambda: layers.rnn_scan(b, a, reset, None)[0]
            for backward in (False, True):
                compare(f"scan {layout} {'fwd+bwd' if backward else 'fwd'} B={B} L={L} D={D}", scans, args.repeats,
                        backward, (a, b, at, bt))
                with torch.no_grad():
                    y = linear_scan(view(ao), view(bo), backend="cpu").transpose(1, 2)  # (B, L, D)
                    print(f" {(y.double() - y64).abs().max().item():8.1e}")
        theirs = modules.RecurrentBlock(width=D, num_heads=1)
        ours = {k: build_layer(dict(_name_="hawk", backend=k), D) for k in ("cpu", "torch")}
        for layer in ours.values():
            copy_into(layer, theirs)
        x = torch.randn(B, L, D)
        pos = torch.arange(1, L + 1).expand(B, L)  # no document starts inside (hawk.py's docstring)
        blocks = {"cpu": lambda: ours["cpu"](x)[0], "torch": lambda: ours["torch"](x)[0],
                  "theirs": lambda: theirs(x, pos, return_cache=False)[0]}
        for backward in (False, True):
            compare(f"block {'fwd+bwd' if backward else 'fwd'} B={B} L={L} D={D}", blocks, args.repeats, backward)
            with torch.no_grad(), _float64_scan(layers):
                y64 = theirs.double()(x.double(), pos, return_cache=False)[0]
                print(f" {(ours['cpu'](x)[0].double() - y64).abs().max().item():8.1e}")
                theirs.float()


class _float64_scan:
    """recurrentgemma's rnn_scan summing in float64 (its default accumulates in float32)."""

    def __init__(self, layers):
        self.layers, self.scan = layers, layers.rnn_scan

    def __enter__(self):
        self.layers.rnn_scan = functools.partial(self.scan, acc_dtype=torch.float64)

    def __exit__(self, *exc):
        self.layers.rnn_scan = self.scan


if __name__ == "__main__":
    main()
