"""The torch paths of the working tree's ops (chunked.py; reference.py for memory_rnn, slstm and wkv,
the ops whose torch path it is) against the same files at a git revision, on CPU, interleaved
round by round in one process (how a change to an op is measured on this noisy machine: never two
runs made at different times).

    python -m benchmarks.revision --rev REV [--ops gla delta_rule ...] [--forward] [--rounds 5] [--threads 1] [--quick]

The revision's file is read with `git show` and executed as a module; the functions it imports
from other src/ops modules are taken from those modules at the same revision too (mesa_net's
pass_states is gla's). Inputs: float32, B 2, H 4, K = V = 64, chunks of 64 (mesa_net: each
revision's default; titans, ttt_linear, ttt_mlp: their mini-batches of 16; log_linear: Mamba-2
inside, 15 levels), at two lengths; memory_rnn a stack of 30 cells of 8 under 256 units, slstm 4
heads of 64, wkv 256 channels. The table gives the median wall times of forward + backward (with
--forward, of the forward alone), the median ratio revision / working tree and its range, and the
largest difference of the outputs. The backward takes the gradients of the first three inputs: q,
k, v; for memory_rnn u, W_h, W_r; slstm x, R, b; wkv w, u, k.
"""

import argparse
import statistics
import subprocess
import sys
import time
import types

import torch
import torch.nn.functional as F

from src.ops.delta_rule import chunked as delta_rule
from src.ops.dplr_delta_rule import chunked as dplr_delta_rule
from src.ops.gla import chunked as gla
from src.ops.log_linear import chunked as log_linear
from src.ops.memory_rnn import reference as memory_rnn
from src.ops.mesa_net import chunked as mesa_net
from src.ops.slstm import reference as slstm
from src.ops.titans import chunked as titans
from src.ops.ttt import chunked as ttt
from src.ops.wkv import reference as wkv

B, H, K = 2, 4, 64
OPS = {"gla": gla, "delta_rule": delta_rule, "dplr_delta_rule": dplr_delta_rule, "mesa_net": mesa_net,
       "log_linear": log_linear, "titans": titans, "ttt_linear": ttt, "ttt_mlp": ttt, "memory_rnn": memory_rnn,
       "slstm": slstm, "wkv": wkv}
SHORT = ("titans", "ttt_linear", "ttt_mlp", "memory_rnn", "slstm", "wkv")  # at T 256 and 1024; the others 1024, 4096


def at_revision(module, rev, _seen=None):
    """`module` (a src.ops module) as its file reads at `rev`; what it imports from other src.ops
    modules, from those at `rev` as well (but from packages' __init__, e.g. a dispatcher's public
    function, as they are now)."""
    seen = {} if _seen is None else _seen
    if module.__name__ in seen:
        return seen[module.__name__]
    path = module.__name__.replace(".", "/") + ".py"
    text = subprocess.run(["git", "show", f"{rev}:{path}"], capture_output=True, text=True, check=True).stdout
    old = seen[module.__name__] = types.ModuleType(f"{module.__name__}@{rev}")
    exec(compile(text, f"{rev}:{path}", "exec"), old.__dict__)
    for name, value in list(old.__dict__.items()):
        source = getattr(value, "__module__", None)
        if callable(value) and source in sys.modules and source.startswith("src.ops.") and source != module.__name__ \
                and not hasattr(sys.modules[source], "__path__"):
            setattr(old, name, getattr(at_revision(sys.modules[source], rev, seen), name))
    return old


def case(op, T):
    """(inputs, a call taking (module, inputs) -> output) for op at length T."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=g)  # noqa: E731
    if op == "memory_rnn":
        D, C = 256, 8
        x = [r(B, T, D), r(D, D) / D**0.5, r(D, C) / C**0.5, r(C, D) / D**0.5, r(C), r(3, D) / D**0.5, r(3)]
        return x, lambda m, x: m.memory_rnn(x[0], x[1], x[2], ((x[3], x[4]),), x[5], x[6], "stack", 30)[0]
    if op == "slstm":
        return [r(B, T, 4, H, K), 0.1 * r(H, K, 4, K), r(4, H, K)], lambda m, x: m.slstm(*x)[0]
    if op == "wkv":
        return [-u(4 * K), r(4 * K), r(B, T, 4 * K), r(B, T, 4 * K)], lambda m, x: m.wkv(*x)
    q, k, v = (F.normalize(r(B, T, H, K), dim=-1) for _ in range(3))
    if op == "gla":
        return [q, k, v, F.logsigmoid(r(B, T, H, K))], lambda m, x: m.gla(*x)[0]
    if op == "delta_rule":
        return [q, k, v, u(B, T, H), F.logsigmoid(r(B, T, H))], lambda m, x: m.delta_rule(*x)[0]
    if op == "dplr_delta_rule":
        a = -F.normalize(r(B, T, H, K), dim=-1)
        return [q, k, v, a, -a * u(B, T, H, 1), F.logsigmoid(r(B, T, H, K))], lambda m, x: m.dplr_delta_rule(*x)[0]
    if op == "log_linear":
        return [q, k, v, F.logsigmoid(r(B, T, H)), u(B, T, H, 15)], lambda m, x: m.log_linear_attn(*x)[0]
    if op == "mesa_net":
        x = [q, k, v, F.logsigmoid(r(B, T, H)), u(B, T, H), torch.ones(H, K)]
        return x, lambda m, x: m.mesa_net(*x, cg_steps=30)[0]
    if op.startswith("ttt"):
        W = (0.02 * r(B, H, K, K), torch.zeros(B, H, K)) if op == "ttt_linear" else \
            (0.02 * r(B, H, K, 4 * K), torch.zeros(B, H, 4 * K), 0.02 * r(B, H, 4 * K, K), torch.zeros(B, H, K))
        x = [q, k, v, 0.5 * u(B, T, H), torch.ones(B, T, H), 1 + 0.1 * r(H, K), 0.1 * r(H, K)]
        state = (W, tuple(torch.zeros_like(t) for t in W))
        return x, lambda m, x: getattr(m, op)(*x, state, 0, 16)[0]
    M = 0.02 * r(B, H, K, K)
    x = [q, k, v, 0.1 * u(B, T, H), torch.log1p(-0.1 * u(B, T, H)), (0.5 + 0.5 * u(B, T, H)).log(),
         1 + 0.1 * r(H, K), 0.1 * r(H, K)]
    return x, lambda m, x: m.titans(*x, (M, torch.zeros_like(M), M), 0, 16)[0]


def timed(call, module, x, backward):
    x = [t.detach().requires_grad_(backward and i < 3) for i, t in enumerate(x)]
    start = time.perf_counter()
    y = call(module, x)
    if backward:
        torch.autograd.grad(y.sum(), x[:3])
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rev", required=True, help="the git revision to compare with (e.g. HEAD~1)")
    parser.add_argument("--ops", nargs="+", default=list(OPS), choices=list(OPS))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--forward", action="store_true", help="time the forward alone (without autograd)")
    parser.add_argument("--quick", action="store_true", help="lengths / 4, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    print(f"{'forward' if args.forward else 'forward + backward'}, float32, B {B}, H {H}, K = V = {K}, {torch.get_num_threads()} threads, "
          f"{rounds} interleaved rounds, {args.rev} against the working tree")
    print(f"| op | T | {args.rev} ms | ours ms | ratio (median) | ratio range | max abs. difference |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for op in args.ops:
        new = OPS[op]
        old = at_revision(new, args.rev)
        for T in (256, 1024) if op in SHORT else (1024, 4096):
            T = T // 4 if args.quick else T
            x, call = case(op, T)
            with torch.no_grad():
                difference = (call(old, x) - call(new, x)).abs().max().item()
            backward = not args.forward
            timed(call, old, x, backward), timed(call, new, x, backward)  # warm-up
            times = [(timed(call, old, x, backward), timed(call, new, x, backward)) for _ in range(rounds)]
            ratios = sorted(a / b for a, b in times)
            print(f"| {op} | {T} | {statistics.median(a for a, _ in times) * 1e3:.1f} | "
                  f"{statistics.median(b for _, b in times) * 1e3:.1f} | {statistics.median(ratios):.2f}x | "
                  f"{ratios[0]:.2f}-{ratios[-1]:.2f}x | {difference:.1e} |", flush=True)


if __name__ == "__main__":
    main()
