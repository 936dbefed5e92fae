"""The mesa_net and log_linear ops' CPU paths against the originals' reference functions, on CPU,
measured side by side, interleaved round by round.

    python -m benchmarks.mesa_log_linear [--rounds 3] [--threads N] [--ops NAME ...] [--quick]

mesa_net: ours (backend auto, on CPU the C loop, with fla's 30 CG steps, the layer's default)
against fla's naive_mesa_net_exact (its per-token state loop and one batched torch.linalg.solve;
loaded by path from the fla-core wheel), B 2, H 2, K = V = 64, unit q, k; mesa_net_torch: the same
call on the chunked torch path (backend torch: other devices' path); mesa_net_exact: ours with the
exact solve (cg_steps=None: the C loop's Cholesky) against the same, the same algorithm.
log_linear_attn (Mamba-2 inside): ours (backend cpu: log_linear.c's loop) against fla's
naive_log_linear_attn (the (T, T) matrix of level weights), B 2, H 2, K 128 (d_state), V 64
(headdim), 15 levels, as the log_linear_mamba2 layer at d_model 64; log_linear_attn_torch: the same
call on chunked.py's dense form in matmuls (backend torch: other devices' path).
log_linear_delta_rule (Gated DeltaNet inside): ours (backend cpu: delta_rule's C loop per level)
against our Fenwick loop (reference.py; the original's hattention_recurrent does not import without
its package), B 2, H 2, K 16, V 32 (log_linear_gdn at d_model 32).
Forward and forward + backward (every input's gradient) at two lengths. The table gives the median
wall time over the rounds, the median ratio original / ours and its range, and the relative error
||y - y_64|| / ||y_64|| of the float32 forwards (ours / the original) against the reference in float64.
"""

import argparse
import importlib.util
import statistics
from pathlib import Path

import torch
import torch.nn.functional as F

from benchmarks.timing import relative_error, timed
from src.ops.log_linear import log_linear_attn, log_linear_delta_rule
from src.ops.log_linear import reference as log_linear_reference
from src.ops.mesa_net import mesa_net
from src.ops.mesa_net import reference as mesa_reference


def fla_naive(relative):
    spec = importlib.util.find_spec("fla")
    path = Path(spec.submodule_search_locations[0]) / "ops" / relative
    module_spec = importlib.util.spec_from_file_location(f"fla_{relative.replace('/', '_')[:-3]}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def mesa_inputs(T, B=2, H=2, K=64):
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1) for _ in range(2))
    return [q, k, torch.randn(B, T, H, K, generator=g), F.logsigmoid(torch.randn(B, T, H, generator=g) + 3),
            torch.rand(B, T, H, generator=g), 0.25 + F.softplus(torch.randn(H, K, generator=g))]


def log_linear_inputs(T, delta, B=2, H=2):
    K, V = (16, 32) if delta else (128, 64)
    g = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(B, T, H, K, generator=g), dim=-1) for _ in range(2))
    x = [q, k, torch.randn(B, T, H, V, generator=g)]
    if delta:
        x.append(torch.rand(B, T, H, generator=g))
    return x + [F.logsigmoid(torch.randn(B, T, H, generator=g) + 3), torch.rand(B, T, H, 15, generator=g)]


def cases():
    """(name, inputs(T), ours, original, reference in float64 or None, lengths, the longest T timed
    forward + backward). MesaNet's original backward is autograd through its per-token loop: 76 s a
    call at T 1024 (900x ours), and five rounds of it grew the process to this machine's 24 GB; T 256."""
    naive_mesa = fla_naive("mesa_net/naive.py").naive_mesa_net_exact
    naive_log = fla_naive("log_linear_attn/naive.py").naive_log_linear_attn
    return [
        ("mesa_net", mesa_inputs, lambda *a: mesa_net(*a)[0],
         lambda q, k, v, g, beta, lamb: naive_mesa(q, k, v, g, lamb, beta)[0],
         lambda *a: mesa_reference.mesa_net(*a)[0], (256, 1024), 256),
        ("mesa_net_torch", mesa_inputs, lambda *a: mesa_net(*a, backend="torch")[0],
         lambda q, k, v, g, beta, lamb: naive_mesa(q, k, v, g, lamb, beta)[0],
         lambda *a: mesa_reference.mesa_net(*a)[0], (256, 1024), 256),
        ("mesa_net_exact", mesa_inputs, lambda *a: mesa_net(*a, cg_steps=None)[0],
         lambda q, k, v, g, beta, lamb: naive_mesa(q, k, v, g, lamb, beta)[0],
         lambda *a: mesa_reference.mesa_net(*a)[0], (256, 1024), 256),
        ("log_linear_attn", lambda T: log_linear_inputs(T, False), lambda *a: log_linear_attn(*a, backend="cpu")[0],
         naive_log, naive_log, (512, 2048), 2048),
        ("log_linear_attn_torch", lambda T: log_linear_inputs(T, False),
         lambda *a: log_linear_attn(*a, backend="torch")[0], naive_log, naive_log, (512, 2048), 2048),
        ("log_linear_delta_rule", lambda T: log_linear_inputs(T, True),
         lambda *a: log_linear_delta_rule(*a, backend="cpu")[0],
         lambda *a: log_linear_reference.log_linear_delta_rule(*a)[0], None, (256, 1024), 1024),
    ]


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="T 64 / 128, 1 round (a smoke run)")
    names = [case[0] for case in cases()]
    parser.add_argument("--ops", nargs="+", default=names, choices=names, help="the rows to run (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rounds = 1 if args.quick else args.rounds
    print(f"float32, {torch.get_num_threads()} threads, {rounds} interleaved rounds")
    print("| op | pass | T | original ms | ours ms | ratio (median) | ratio range | rel. error ours / original |")
    print("|---|---|---:|---:|---:|---:|---:|---|")
    for name, make, ours, original, ref64, lengths, longest_backward in cases():
        if name not in args.ops:
            continue
        for T in ((64, 128) if args.quick else lengths):
            x = make(T)
            y64 = None
            with torch.no_grad():
                y64 = (ref64 or original)(*[t.double() for t in x])
            err = f"{relative_error(ours, x, y64):.1e} / {relative_error(original, x, y64):.1e}"
            for backward in (False, True) if T <= longest_backward else (False,):
                x = [t.detach().requires_grad_(backward) for t in x]
                timed(ours, x, backward)  # warm-up (and the C loops' compile)
                t_orig, t_ours = [], []
                for _ in range(rounds):
                    t_orig.append(timed(original, x, backward))
                    t_ours.append(timed(ours, x, backward))
                ratios = [a / b for a, b in zip(t_orig, t_ours)]
                print(f"| {name} | {'fwd+bwd' if backward else 'fwd'} | {T} | {1000 * statistics.median(t_orig):.0f} | "
                      f"{1000 * statistics.median(t_ours):.1f} | {statistics.median(ratios):.1f}x | "
                      f"{min(ratios):.1f}-{max(ratios):.1f}x | {err if not backward else ''} |", flush=True)


if __name__ == "__main__":
    main()
