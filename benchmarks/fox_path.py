"""The forgetting_attn and path_attn ops' CPU paths against fla's reference functions
(naive_forgetting_attn, naive_path_attn at its chunk of 64, loaded by path from the installed
fla-core wheel), measured side by side, interleaved round by round.

    python -m benchmarks.fox_path [--rounds 3] [--threads N] [--quick]

Inputs (float32) as the layers make them at their defaults (d_model 256): B 2, H 4 heads of
K = V = 64; g = log sigmoid(N(0, 1) + 3) per head; PaTH's w unit, beta in (0, 2). T 256 and 1024,
forward and forward + backward (the gradients of every input). The table gives the median wall
time over the rounds, the median ratio fla / ours and its range, and the relative error
||y - y_64|| / ||y_64|| of the float32 forward (ours and fla's) against our reference in float64.
fla's functions are themselves vectorised quadratic forms (einsum and softmax; PaTH's loops run
over chunks, not steps), so the ratios are those of one dense form against another.
"""

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.timing import relative_error, timed
from src.ops.forgetting_attn import forgetting_attn
from src.ops.forgetting_attn import reference as fox_reference
from src.ops.path_attn import path_attn
from src.ops.path_attn import reference as path_reference

B, H, K = 2, 4, 64


def fla_naive(relative):
    """fla/ops/<relative> loaded by its path (importing fla.ops would pull Triton)."""
    spec = importlib.util.find_spec("fla")
    if spec is None:
        raise SystemExit("fla-core is not installed (pip install fla-core): nothing to compare against")
    path = Path(spec.submodule_search_locations[0]) / "ops" / relative
    module_spec = importlib.util.spec_from_file_location(relative.replace("/", "_")[:-3], path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def inputs(op, T, grad):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    q, k, v, gate = r(B, T, H, K), r(B, T, H, K), r(B, T, H, K), F.logsigmoid(r(B, T, H) + 3)
    x = [q, k, v, gate] if op == "fox" else [q, k, v, F.normalize(r(B, T, H, K), dim=-1),
                                              2 * torch.rand(B, T, H, generator=g), gate]
    return [t.requires_grad_(grad) for t in x]



def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="T 64 and 128, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    fox_naive = fla_naive("forgetting_attn/naive.py").naive_forgetting_attn
    path_naive = fla_naive("path_attn/naive.py").naive_path_attn
    ops = {"fox": (forgetting_attn, fox_naive, fox_reference.forgetting_attn),
           "path": (path_attn, lambda q, k, v, w, b, g: path_naive(q, k, v, w, b, g, K**-0.5),
                    path_reference.path_attn)}
    print(f"float32, B {B}, H {H}, K = V = {K}, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| op | pass | T | fla ms | ours ms | ratio (median) | ratio range | rel. error ours / fla |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for op, (ours, theirs, reference) in ops.items():
        for backward in (False, True):
            for T in ((64, 128) if args.quick else (256, 1024)):
                x = inputs(op, T, backward)
                timed(ours, x, backward), timed(theirs, x, backward)  # warm-up
                t_fla, t_ours = [], []
                for _ in range(rounds):
                    t_fla.append(timed(theirs, x, backward))
                    t_ours.append(timed(ours, x, backward))
                ratios = [a / b for a, b in zip(t_fla, t_ours)]
                err = ""
                if not backward:
                    with torch.no_grad():
                        y64 = reference(*[t.detach().double() for t in x])
                    err = f"{relative_error(ours, x, y64):.1e} / {relative_error(theirs, x, y64):.1e}"
                print(f"| {op} | {'fwd+bwd' if backward else 'fwd'} | {T} | {1000 * statistics.median(t_fla):.1f} | "
                      f"{1000 * statistics.median(t_ours):.1f} | {statistics.median(ratios):.1f}x | "
                      f"{min(ratios):.1f}-{max(ratios):.1f}x | {err} |", flush=True)


if __name__ == "__main__":
    main()
