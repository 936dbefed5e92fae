"""The wkv op against its loop, and the long-filter gated convolutions at L = 65,536 (issue 17).

    python -m benchmarks.gated_conv [--rounds 3] [--L-long 65536] [--skip-wkv] [--skip-long]

1. wkv (src/ops/wkv) at B 4, D 256, L 2048, float32: the C loop (`cpu`) against the loop of
   reference.py (`torch`), forward and forward+backward, interleaved round by round in one
   process; the median ratio and its range over the rounds.
2. hyena and base_conv (kernel_size=-1, implicit filter), built from their layer configs, at
   batch 1, d_model 64, L = --L-long, float32: forward+backward time (median of the rounds) and
   extra peak memory = the process's peak resident memory minus its resident memory before the
   first call (VmHWM - VmRSS), each layer in its own process.
"""

import argparse
import json
import statistics
import subprocess
import sys
import time

import torch

from benchmarks.kernels import memory_kb
from benchmarks.layers import layer_config
from src.models.sequence.backbone import build_layer
from src.ops.wkv import wkv

LONG = {"hyena": [], "base_conv": ["kernel_size", -1]}


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def wkv_rounds(rounds, B=4, D=256, L=2048):
    g = torch.Generator().manual_seed(0)
    w, u = -torch.exp(torch.randn(D, generator=g)), torch.randn(D, generator=g)
    k, v = torch.randn(B, L, D, generator=g), torch.randn(B, L, D, generator=g)

    def fwd(backend):
        with torch.no_grad():
            wkv(w, u, k, v, backend=backend)

    def fwd_bwd(backend):
        kk, vv = k.clone().requires_grad_(), v.clone().requires_grad_()
        wkv(w, u, kk, vv, backend=backend).square().mean().backward()

    print(f"wkv, B={B} D={D} L={L}, float32, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| pass | loop ms | C loop ms | loop / C loop, median (range) |")
    print("|---|---:|---:|---:|")
    for name, fn in (("forward", fwd), ("forward+backward", fwd_bwd)):
        fn("cpu")  # warm-up (compiles wkv.c once)
        loop, fast = [], []
        for _ in range(rounds):
            loop.append(timed(lambda: fn("torch")))
            fast.append(timed(lambda: fn("cpu")))
        ratios = [a / b for a, b in zip(loop, fast)]
        print(f"| {name} | {1000 * statistics.median(loop):.0f} | {1000 * statistics.median(fast):.1f} | "
              f"{statistics.median(ratios):.0f}x ({min(ratios):.0f}-{max(ratios):.0f}) |")


def one_long(name, L, rounds, D=64):
    config = dict(layer_config(name, L))
    if LONG[name]:
        config[LONG[name][0]] = LONG[name][1]
    torch.manual_seed(0)
    layer = build_layer(config, D, max_length=L)
    x = torch.randn(1, L, D)
    before = memory_kb("VmRSS")

    def fwd_bwd():
        layer.zero_grad(set_to_none=True)
        y, _ = layer(x)
        y.square().mean().backward()

    times = [timed(fwd_bwd) for _ in range(rounds)]
    return {"ms": 1000 * statistics.median(times), "peak_mb": (memory_kb("VmHWM") - before) / 1024}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--L-long", type=int, default=65536)
    parser.add_argument("--skip-wkv", action="store_true")
    parser.add_argument("--skip-long", action="store_true")
    parser.add_argument("--one", choices=list(LONG), help=argparse.SUPPRESS)  # a child process: one long layer
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one_long(args.one, args.L_long, args.rounds)))
        return
    if not args.skip_wkv:
        wkv_rounds(args.rounds)
    if not args.skip_long:
        print(f"\nlong filters, batch 1, d_model 64, L={args.L_long}, float32, forward+backward, median of {args.rounds}")
        print("| layer | ms | extra peak MB |")
        print("|---|---:|---:|")
        for name in LONG:
            out = subprocess.run([sys.executable, "-m", "benchmarks.gated_conv", "--one", name, "--L-long",
                                  str(args.L_long), "--rounds", str(args.rounds)], capture_output=True, text=True,
                                 check=True).stdout
            result = json.loads(out.strip().splitlines()[-1])
            print(f"| {name} (long filter) | {result['ms']:.0f} | {result['peak_mb']:.0f} |")


if __name__ == "__main__":
    main()
