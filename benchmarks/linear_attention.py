"""The gla, delta_rule and mlstm ops (backend auto) against the originals' per-step loops (fla's
naive loops, xlstm's recurrent mLSTM step), on CPU, measured side by side in one run, interleaved
round by round.

    python -m benchmarks.linear_attention [--rounds 5] [--threads N] [--quick] [--ops delta_rule kda ...]

Rows (float32, q k v (B, T, H, K), K = V = 64), each op forward at T 2048 and forward + backward
at T 512 (autograd through fla's loop):
  delta_rule: src.ops.delta_rule.delta_rule vs fla's delta_rule_recurrence (fla/ops/delta_rule/naive.py)
  kda: delta_rule with a per-key decay vs fla's naive_recurrent_kda (fla/ops/kda/naive.py)
  delta_product: delta_product, 2 steps a token, per-head decays, vs fla's
      naive_recurrent_gated_delta_product (fla/ops/gated_delta_product/naive.py)
  gla (per-key decay) vs fla's naive_recurrent_gla (fla/ops/gla/naive.py)
  mlstm: src.ops.mlstm.mlstm vs xlstm's recurrent_step_stabilized_simple (xlstm/blocks/mlstm/
      backends.py) stepped over T from the state (0, 0, m = -inf), in its (B, H, T, K) layout
fla's naive.py files are loaded by path from the installed fla-core wheel (pure Python; importing
fla.ops would pull Triton); without fla-core the baselines are our own per-step loops
(src/ops/*/reference.py, the same recurrences) and the header says so; xlstm's backends.py is
loaded by path from the installed xlstm wheel likewise (pip install --no-deps xlstm). Each round times the
baseline, then ours; the table gives the median time of each, the median ratio and its range
over the rounds, and the same ratio of CPU times (time.process_time: this process's own CPU time,
the steadier figure on a shared machine). Inputs as the layers make them: unit q, k for the delta
rule, beta in (0, 1), decays logsigmoid(x) (GLA's / 16); mLSTM gate preactivations
i ~ N(0, 1), f ~ N(3, 1) (xlstm's forget biases are 3..6). The error column is ||o - o_64|| / ||o_64||
for the float32 outputs against src/ops/*/reference.py in float64 (forward rows). The backend
column is what `auto` ran: `cpu` (the C loops) or `torch` (the chunked paths); --backend torch
times the chunked paths everywhere.
"""

import argparse
import importlib.util
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from src.ops.delta_rule import DISPATCH as DELTA_DISPATCH
from src.ops.delta_rule import delta_product, delta_rule
from src.ops.delta_rule import reference as delta_reference
from src.ops.gla import DISPATCH as GLA_DISPATCH
from src.ops.gla import gla
from src.ops.gla import reference as gla_reference
from src.ops.mlstm import DISPATCH as MLSTM_DISPATCH
from src.ops.mlstm import mlstm
from src.ops.mlstm import reference as mlstm_reference

N_STEPS = 2  # delta_product's steps a token


def by_path(package, relative):
    """<package>/<relative> loaded by its path, or None without the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(spec.submodule_search_locations[0]) / relative
    module_spec = importlib.util.spec_from_file_location(f"{package}_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def references():
    """{op: loop(*inputs) -> o}: our float64 oracles (src/ops/*/reference.py)."""
    return {"delta_rule": lambda q, k, v, b: delta_reference.delta_rule(q, k, v, b)[0],
            "kda": lambda q, k, v, b, g: delta_reference.delta_rule(q, k, v, b, g)[0],
            "delta_product": lambda q, k, v, b, g: delta_reference.delta_product(q, k, v, b, g, num_householder=N_STEPS)[0],
            "gla": lambda q, k, v, g: gla_reference.gla(q, k, v, g)[0],
            "mlstm": lambda q, k, v, i, f: mlstm_reference.mlstm(q, k, v, i, f)[0]}


def xlstm_loop(backends):
    """xlstm's recurrent mLSTM step over T, from C = 0, n = 0, m = -inf, in our layout."""
    def loop(q, k, v, i, f):
        B, T, H, K = q.shape
        q, k, v = (t.transpose(1, 2).contiguous() for t in (q, k, v))  # (B, H, T, K): its layout
        i, f = (t.transpose(1, 2)[..., None, None] for t in (i, f))  # (B, H, T, 1, 1)
        state = (q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K, 1), q.new_full((B, H, 1, 1), -float("inf")))
        out = []
        for t in range(T):  # (clones: its step squeezes q, k, v in place, which autograd refuses on views)
            h, state = backends.recurrent_step_stabilized_simple(
                *state, *(x[:, :, t : t + 1].clone() for x in (q, k, v)), i[:, :, t], f[:, :, t])
            out.append(h)
        return torch.cat(out, 2).transpose(1, 2)  # (B, T, H, V)
    return loop


def baselines():
    """{op: (name, loop(*inputs) -> o)} in our (B, T, H, K) layout: fla's naive loops, or ours without fla-core."""
    files = {"delta_rule": "delta_rule/naive.py", "kda": "kda/naive.py",
             "delta_product": "gated_delta_product/naive.py", "gla": "gla/naive.py"}
    naive = {op: by_path("fla", f"ops/{path}") for op, path in files.items()}
    xlstm = by_path("xlstm", "blocks/mlstm/backends.py")
    mlstm_row = {"mlstm": ("xlstm recurrent_step_stabilized_simple", xlstm_loop(xlstm)) if xlstm else
                 ("reference.mlstm (no xlstm)", references()["mlstm"])}
    if any(m is None for m in naive.values()):
        return {op: (f"reference.{op} (no fla-core)", loop) for op, loop in references().items()} | mlstm_row
    head_first = lambda t: t.transpose(1, 2)  # noqa: E731
    return {"delta_rule": ("fla delta_rule_recurrence", lambda q, k, v, b: head_first(
                naive["delta_rule"].delta_rule_recurrence(*map(head_first, (q, k, v, b)))[0])),
            "kda": ("fla naive_recurrent_kda", lambda q, k, v, b, g: naive["kda"].naive_recurrent_kda(q, k, v, g, b)[0]),
            "delta_product": ("fla naive_recurrent_gated_delta_product",
                              lambda q, k, v, b, g: naive["delta_product"].naive_recurrent_gated_delta_product(
                                  q, k, v, g, b, q.shape[-1] ** -0.5, num_householder=N_STEPS)[0]),
            "gla": ("fla naive_recurrent_gla", lambda q, k, v, g: naive["gla"].naive_recurrent_gla(q, k, v, g)[0]),
            **mlstm_row}


def inputs(op, B, T, H, K, grad):
    gen = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=gen)  # noqa: E731
    if op == "gla":
        x = [r(B, T, H, K), r(B, T, H, K), r(B, T, H, K), F.logsigmoid(r(B, T, H, K)) / 16]
    elif op == "mlstm":
        x = [r(B, T, H, K), r(B, T, H, K), r(B, T, H, K), r(B, T, H), r(B, T, H) + 3]
    else:
        n = N_STEPS if op == "delta_product" else 1
        x = [F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, n * T, H, K), dim=-1), r(B, n * T, H, K),
             torch.sigmoid(r(B, n * T, H))]
        x += {"delta_rule": [], "kda": [F.logsigmoid(r(B, T, H, K))], "delta_product": [F.logsigmoid(r(B, T, H))]}[op]
    return [t.requires_grad_(grad) for t in x]


def timed(fn, x, backward):
    """(wall seconds, this process's CPU seconds) of one call (and its backward)."""
    start, cpu = time.perf_counter(), time.process_time()
    o = fn(*x)
    if backward:
        torch.autograd.grad(o.sum(), x)
    return time.perf_counter() - start, time.process_time() - cpu


def ours(op, backend="auto"):
    if op == "delta_rule":
        return lambda q, k, v, b: delta_rule(q, k, v, b, backend=backend)[0]
    if op == "kda":
        return lambda q, k, v, b, g: delta_rule(q, k, v, b, g, backend=backend)[0]
    if op == "delta_product":
        return lambda q, k, v, b, g: delta_product(q, k, v, b, g, num_householder=N_STEPS, backend=backend)[0]
    if op == "mlstm":
        return lambda q, k, v, i, f: mlstm(q, k, v, i, f, backend=backend)[0]
    return lambda q, k, v, g: gla(q, k, v, g, backend=backend)[0]


def resolved(op, backend, x):
    """The backend `backend` runs for these inputs (a gradient is needed where they require one)."""
    dispatch = {"gla": GLA_DISPATCH, "mlstm": MLSTM_DISPATCH}.get(op, DELTA_DISPATCH)
    return dispatch.resolve(backend, x[0].device, x)


def error(op, x, backend):
    """||o_32 - o_64|| / ||o_64|| of our float32 output, and of the baseline's."""
    ref = references()[op](*[t.detach().double() for t in x])
    with torch.no_grad():
        return [((f(*[t.detach() for t in x]).double() - ref).norm() / ref.norm()).item()
                for f in (ours(op, backend), baselines()[op][1])]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="T 256 / 128, 2 rounds (a smoke run)")
    parser.add_argument("--backend", default="auto", choices=["auto", "torch", "cpu"])
    parser.add_argument("--ops", nargs="+", default=["delta_rule", "kda", "delta_product", "gla", "mlstm"],
                        choices=["delta_rule", "kda", "delta_product", "gla", "mlstm"])
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 2 if args.quick else args.rounds
    T_fwd, T_bwd = (256, 128) if args.quick else (2048, 512)
    base = baselines()
    print(f"float32, B 4, H 4, K = V = 64, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| op | pass | T | baseline | baseline ms | backend | ours ms | ratio (median) | ratio range | CPU-time ratio "
          "| ours CPU ms | rel. error ours / baseline |")
    print("|---|---|---:|---|---:|---|---:|---:|---:|---:|---:|---|")
    for op in args.ops:
        name, loop = base[op]
        for backward, T in ((False, T_fwd), (True, T_bwd)):
            x = inputs(op, 4, T, 4, 64, backward)
            fn = ours(op, args.backend)
            timed(fn, x, backward)  # warm-up (and the C loops' compile)
            t_base, t_ours = [], []
            for _ in range(rounds):
                t_base.append(timed(loop, x, backward))
                t_ours.append(timed(fn, x, backward))
            ratios = [b[0] / o[0] for b, o in zip(t_base, t_ours)]
            cpu_ratio = statistics.median(b[1] / o[1] for b, o in zip(t_base, t_ours))
            err = "" if backward else " / ".join(f"{e:.1e}" for e in error(op, x, args.backend))
            with torch.set_grad_enabled(backward):
                used = resolved(op, args.backend, x)
            wall = [t[0] for t in t_base], [t[0] for t in t_ours]
            print(f"| {op} | {'fwd+bwd' if backward else 'fwd'} | {T} | {name} | {1000 * statistics.median(wall[0]):.0f} "
                  f"| {used} | {1000 * statistics.median(wall[1]):.1f} | {statistics.median(ratios):.1f}x | "
                  f"{min(ratios):.1f}-{max(ratios):.1f}x | {cpu_ratio:.1f}x | "
                  f"{1000 * statistics.median(t[1] for t in t_ours):.1f} | {err} |")


if __name__ == "__main__":
    main()
