"""The sLSTM cell: our C loop (src/ops/slstm, backend `cpu`) against xlstm's vanilla per-step loop
(xlstm/blocks/slstm/src/vanilla: slstm_forward with its slstm pointwise step, autograd through it)
on one CPU thread, float32.

    python -m benchmarks.slstm [--rounds 5]

Rows: forward at T 2048, forward + backward at T 512 (B 4, H 4, d 64: xlstm's default 4 heads at
embedding 256). Each round runs ours then xlstm's on the same inputs; a row gives the median time
of each and the median of the per-round ratios. err f32: the largest |h32 - h64| of our float32
output against xlstm's loop in float64 (fwd rows), and of the gradients of x, R, b (fwd+bwd rows).
Needs xlstm (pip install --no-deps xlstm); its vanilla backend is loaded by path (pure torch).
"""

import argparse
import importlib.util
import statistics
import sys
import time
from pathlib import Path

import torch

from src.ops.slstm import cpu


def xlstm_vanilla():
    """xlstm's vanilla sLSTM backend, loaded by path as a package of its own; ImportError if absent."""
    spec = importlib.util.find_spec("xlstm")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("xlstm is not installed (pip install --no-deps xlstm)")
    folder = Path(spec.submodule_search_locations[0]) / "blocks" / "slstm" / "src" / "vanilla"
    module_spec = importlib.util.spec_from_file_location("xlstm_slstm_vanilla", folder / "__init__.py",
                                                         submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(module_spec)
    sys.modules[module_spec.name] = module
    module_spec.loader.exec_module(module)
    return module


def theirs(vanilla, x, R, b):
    """xlstm's loop from zeros in our layout: x (B, T, 4, H, d), R (H, d, 4, d), b (4, H, d) -> h (B, T, H, d)."""
    B, T, _, H, d = x.shape
    states = vanilla.slstm_forward(x.flatten(2).transpose(0, 1), x.new_zeros(4, B, H * d),
                                   R.permute(0, 2, 3, 1).flatten(1, 2), b.flatten(),
                                   vanilla.slstm_pointwise_function_registry["slstm"])[0]
    return states[0, 1:].transpose(0, 1).unflatten(-1, (H, d))


def inputs(B, T, H, d, dtype, backward):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, T, 4, H, d, generator=g, dtype=torch.float64)
    R = torch.randn(H, d, 4, d, generator=g, dtype=torch.float64) / d**0.5
    b = torch.randn(4, H, d, generator=g, dtype=torch.float64)
    return [t.to(dtype).requires_grad_(backward) for t in (x, R, b)]


def run(fn, args, backward, w):
    """Seconds for fn(*args) (and its backward of <h, w>); -> seconds, h, gradients."""
    start = time.perf_counter()
    h = fn(*args)
    grads = torch.autograd.grad((h * w).sum(), args) if backward else ()
    return time.perf_counter() - start, h.detach(), grads


def row(vanilla, B, T, H, d, backward, rounds):
    ours = lambda x, R, b: cpu.slstm(x, R, b)[0]  # noqa: E731
    xl = lambda x, R, b: theirs(vanilla, x, R, b)  # noqa: E731
    x32, x64 = inputs(B, T, H, d, torch.float32, backward), inputs(B, T, H, d, torch.float64, backward)
    w64 = torch.randn(B, T, H, d, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    w32 = w64.float()
    _, h64, g64 = run(xl, x64, backward, w64)
    _, h32, g32 = run(ours, x32, backward, w32)  # warm-up (and the compile on first use)
    err = max((a.double() - r).abs().max().item() for a, r in zip((h32, *g32), (h64, *g64)))
    times = []
    for _ in range(rounds):
        times.append((run(ours, x32, backward, w32)[0], run(xl, x32, backward, w32)[0]))
    mine, its = (statistics.median(t[i] for t in times) for i in (0, 1))
    ratio = statistics.median(t[1] / t[0] for t in times)
    name = f"sLSTM {'fwd+bwd' if backward else 'fwd'} B={B} T={T} H={H} d={d}"
    print(f"{name:<36}{1e3 * mine:>10.1f}{1e3 * its:>12.1f}{ratio:>9.1f}x{err:>10.1e}", flush=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    vanilla = xlstm_vanilla()
    print(f"torch {torch.__version__}, 1 thread, float32, median of {args.rounds} interleaved rounds")
    print(f"{'row':<36}{'cpu (ms)':>10}{'xlstm (ms)':>12}{'ratio':>10}{'err f32':>10}")
    row(vanilla, 4, 2048, 4, 64, False, args.rounds)
    row(vanilla, 4, 512, 4, 64, True, args.rounds)


if __name__ == "__main__":
    main()
