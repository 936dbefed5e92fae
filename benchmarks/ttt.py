"""The ttt ops (TTT-Linear, TTT-MLP) and the titans op as `auto` runs them on CPU (their C loops)
against the originals' loops, measured side by side, interleaved round by round.

    python -m benchmarks.ttt [--rounds 3] [--threads N] [--batch 2] [--ops ttt_linear ttt_mlp titans] [--quick]

Baselines: fla's naive.py (loaded from the installed fla-core wheel by path, as it ships; it
scales q in place, so it gets copies): for
TTT-Linear chunk_ttt_linear_ref (a loop over mini-batches in the dual form, one eta per token: run
with lr = 1 in ours), for Titans chunk_titans_linear_ref with use_chunk=False (the per-token loop)
and use_chunk=True (its chunk form; its coefficients come from Python double loops); and our
reference.py (the per-token primal form, which is the official code's decoding path) for all
three, TTT-MLP having no fla loop. Inputs (float32) at the layers' defaults at d_model 256: B 2 (or
--batch), H 4 heads of D 64, mini-batches / chunks of 16, TTT-MLP's hidden 4 D. Forward, and forward +
backward (the gradients of q, k, v), at two lengths. The table gives median wall times, the median
ratio baseline / ours and its range, and the relative error ||y - y_64|| / ||y_64|| of ours in
float32 against our loop in float64.
"""

import argparse
import importlib.util
import statistics
import time
import types
from pathlib import Path

import torch

from src.ops.titans import reference as titans_reference
from src.ops.titans import titans
from src.ops.ttt import reference, ttt_linear, ttt_mlp

B, H, D, K = 2, 4, 64, 16


def fla_module(relative):
    """fla/ops/<relative> from the wheel, executed without importing fla (which pulls Triton)."""
    root = Path(importlib.util.find_spec("fla").submodule_search_locations[0]) / "ops"
    text = (root / relative).read_text()
    module = types.ModuleType(relative)
    if relative == "titans/naive.py":
        log_impl = fla_module("titans/log_impl.py")
        text = text.replace("from fla.ops.titans.log_impl import combine_params_log\n", "")
        module.combine_params_log = log_impl.combine_params_log
    exec(compile(text, str(root / relative), "exec"), module.__dict__)
    return module


def inputs(T, hidden=None, B=B):
    g = torch.Generator().manual_seed(0)
    r = lambda *s, scale=1.0: scale * torch.randn(*s, generator=g)  # noqa: E731
    u = lambda: torch.rand(B, T, H, generator=g)  # noqa: E731
    q, k, v = (torch.nn.functional.normalize(r(B, T, H, D), dim=-1) for _ in range(3))
    W = (r(B, H, D, D, scale=0.02), torch.zeros(B, H, D)) if hidden is None else \
        (r(B, H, D, hidden, scale=0.02), torch.zeros(B, H, hidden), r(B, H, hidden, D, scale=0.02), torch.zeros(B, H, D))
    return dict(q=q, k=k, v=v, eta=0.5 * u(), lr=torch.ones(B, T, H), w=1 + r(H, D, scale=0.1), b=r(H, D, scale=0.1),
                W=W, theta=0.1 * u(), alpha=0.1 * u(), momentum=0.5 + 0.5 * u())


def ttt_calls(fla, hidden):
    def ours(op):
        return lambda x: op(x["q"], x["k"], x["v"], x["eta"], x["lr"], x["w"], x["b"],
                            (x["W"], tuple(torch.zeros_like(w) for w in x["W"])), 0, K)[0]
    name = "ttt_linear" if hidden is None else "ttt_mlp"
    calls = {"ours": ours(ttt_linear if hidden is None else ttt_mlp), "our loop": ours(getattr(reference, name))}
    if hidden is None:
        calls["fla naive"] = lambda x: fla.chunk_ttt_linear_ref(
            x["q"].clone(), x["k"].clone(), x["v"].clone(), x["w"], x["b"], x["eta"][..., None], scale=1.0, mini_batch_size=K,
            initial_state=x["W"][0], initial_state_bias=x["W"][1][:, :, None])[0]
    return calls


def titans_calls(fla):
    def ours(op):
        def run(x):
            M = x["W"][0]
            return op(x["q"], x["k"], x["v"], x["theta"], torch.log1p(-x["alpha"]), x["momentum"].log(), x["w"],
                      x["b"], (M, torch.zeros_like(M), M), 0, K)[0]
        return run

    def fla_loop(chunk):
        return lambda x: fla.chunk_titans_linear_ref(
            x["q"], x["k"], x["v"], x["w"], x["b"], x["theta"][..., None], x["alpha"][..., None],
            x["momentum"][..., None], chunk_size=K, initial_state=x["W"][0], use_chunk=chunk)[0]
    return {"ours": ours(titans), "our loop": ours(titans_reference.titans), "fla naive loop": fla_loop(False),
            "fla naive chunk": fla_loop(True)}


def timed(fn, x, backward):
    x = {k: (t.detach().requires_grad_(backward and k in "qkv") if torch.is_tensor(t) else t) for k, t in x.items()}
    start = time.perf_counter()
    y = fn(x)
    if backward:
        torch.autograd.grad(y.sum(), [x["q"], x["k"], x["v"]])
    return time.perf_counter() - start


def error(fn, ref, x):
    with torch.no_grad():
        y64 = ref({k: (t.double() if torch.is_tensor(t) else tuple(w.double() for w in t)) for k, t in x.items()})
        return ((fn(x).double() - y64).norm() / y64.norm()).item()


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--batch", type=int, default=B, help="sequences a call (the layers' B 2 by default)")
    parser.add_argument("--ops", nargs="+", default=["ttt_linear", "ttt_mlp", "titans"],
                        choices=["ttt_linear", "ttt_mlp", "titans"])
    parser.add_argument("--quick", action="store_true", help="T 64 / 128, 1 round (a smoke run)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    lengths = (64, 128) if args.quick else (256, 1024)
    ttt_fla, titans_fla = fla_module("ttt/naive.py"), fla_module("titans/naive.py")
    print(f"float32, B {args.batch}, H {H}, D {D}, mini-batch {K}, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| op | pass | T | ours ms | baseline | baseline ms | ratio (median) | ratio range | rel. error |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|")
    ops = [("ttt_linear", None, ttt_calls(ttt_fla, None)), ("ttt_mlp", 4 * D, ttt_calls(ttt_fla, 4 * D)),
           ("titans", None, titans_calls(titans_fla))]
    for op, hidden, calls in (o for o in ops if o[0] in args.ops):
        for backward in (False, True):
            for T in lengths:
                x = inputs(T, hidden, args.batch)
                err = "" if backward else f"{error(calls['ours'], calls['our loop'], x):.1e}"
                times = {name: [] for name in calls}
                for name, fn in calls.items():
                    timed(fn, x, backward)  # warm-up
                for _ in range(rounds):
                    for name, fn in calls.items():
                        times[name].append(timed(fn, x, backward))
                for name in calls:
                    if name == "ours":
                        continue
                    ratios = [a / b for a, b in zip(times[name], times["ours"])]
                    print(f"| {op} | {'fwd+bwd' if backward else 'fwd'} | {T} | {1000 * statistics.median(times['ours']):.1f}"
                          f" | {name} | {1000 * statistics.median(times[name]):.0f} | {statistics.median(ratios):.1f}x | "
                          f"{min(ratios):.1f}-{max(ratios):.1f}x | {err} |", flush=True)


if __name__ == "__main__":
    main()
