"""Long-convolution kernels: forward and forward+backward time and extra peak memory per backend.

    python -m benchmarks.kernels                    # the table (CPU: torch, dense, original)
    python -m benchmarks.kernels --keops            # also pykeops (compiles each formula once)
    python -m benchmarks.kernels --keops --cases dss cauchy --backends keops   # a subset
    python -m benchmarks.kernels --device cuda --keops --cuda   # on a GPU with the extension built
    python -m benchmarks.kernels --long             # Vandermonde L=1,048,576, N=4096, H=32 acceptance

Cases (complex64 inputs, a random gradient on the output):
    dlr      K[c,h,l] = sum_n W[c,h,n] exp(Lambda_n l), Lambda shared (H=128, N=1024, L=4096)
    dss      K[c,h,l] = sum_n W[c,h,n] exp(dt_h Lambda_n l), per-feature x (H=128, N=64, L=4096)
    cauchy   K[h,l] = sum_n v[h,n] / (z_l - w[h,n]) (H=256, N=64, L=4096)
    fftconv  causal long convolution, u (1, 32, L), k (1, 32, L) at L=262144
`original` is the dense formulation of the DLR repo, written fresh: dlr exp(Lambda l) over [N, L]
then einsum('chn,nl->chl'); dss exp over the full [H, N, L] tensor then einsum('chn,hnl->chl').
`dense` is src/ops/*'s dense path (dlr: [N, L] table and one GEMM, phase reduced in float64).

Each (case, backend) runs in its own process: time = median of --reps calls after one warm-up;
peak = the process's peak resident memory minus its resident memory just before the first call
(VmHWM - VmRSS, Linux), i.e. what the op needed beyond its inputs. GFLOP/s counts the products
of the Vandermonde ops (8 real flops per complex multiply-add): 8 R N L forward, 3x that for
forward+backward (the backward has two products, for grad v and grad x), R = C H rows.
"""

import argparse
import json
import math
import os
import subprocess
import sys
import time

import torch

CASES = {  # name: (H, N, L)
    "dlr": (128, 1024, 4096),
    "dss": (128, 64, 4096),
    "cauchy": (256, 64, 4096),
    "fftconv": (32, 0, 262144),
}
BACKENDS = {
    "dlr": ["original", "dense", "torch", "keops", "cuda"],
    "dss": ["original", "dense", "torch", "keops", "cuda"],
    "cauchy": ["dense", "torch", "keops", "cuda"],
    "fftconv": ["plain", "torch"],
}


def memory_kb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":"))


def inputs(case, H, N, L, device):
    g = torch.Generator().manual_seed(0)
    if case == "fftconv":
        return [torch.randn(1, H, L, generator=g).to(device).requires_grad_(),
                torch.randn(1, H, L, generator=g).to(device).requires_grad_()]
    v = torch.randn(1, H, N, dtype=torch.complex64, generator=g)
    if case == "dlr":
        x = torch.complex(-0.5 * torch.full((N,), 1e-3), 2 * math.pi * torch.arange(N) / N)
    elif case == "dss":
        dt = torch.exp(torch.empty(H).uniform_(math.log(1e-3), math.log(1e-1), generator=g))
        x = dt[:, None] * torch.complex(torch.full((N,), -0.5), math.pi * torch.arange(N).float())
    else:  # cauchy: S4's z on the unit circle mapped by the bilinear transform; w in the left half-plane
        v = v[0]
        x = torch.complex(-0.5 * torch.ones(H, N), math.pi * torch.arange(N).float().expand(H, N))
        omega = torch.exp(-2j * math.pi * torch.arange(L) / L)
        z = (2 * (1 - omega) / (1 + omega + 1e-4)).to(torch.complex64)
        return [v.to(device).requires_grad_(), z.to(device), x.to(device).requires_grad_()]
    return [v.to(device).requires_grad_(), x.to(device).requires_grad_()]


def function(case, backend, L):
    if case == "fftconv":
        from src.ops.fftconv import fftconv

        if backend == "plain":  # one rfft / irfft of everything, autograd (what LongConv did before)
            def plain(u, k):
                n = 2 * L
                return torch.fft.irfft(torch.fft.rfft(u, n=n).unsqueeze(1) * torch.fft.rfft(k, n=n), n=n)[..., :L]
            return plain
        return fftconv
    if case == "cauchy":
        from src.ops.cauchy import cauchy

        return lambda v, z, w: cauchy(v, z, w, backend)
    if backend == "original":
        pos = torch.arange(L)
        if case == "dlr":
            return lambda v, x: torch.einsum("chn,nl->chl", v, torch.exp(x[:, None] * pos.to(x.device)))
        return lambda v, x: torch.einsum("chn,hnl->chl", v, torch.exp(x[:, :, None] * pos.to(x.device)))
    from src.ops.vandermonde import vandermonde

    return lambda v, x: vandermonde(v, x, L, backend)


def run_case(case, backend, device, reps):
    H, N, L = CASES[case]
    device = torch.device(device)
    args = inputs(case, H, N, L, device)
    fn = function(case, backend, L)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    grad = None

    def forward():
        with torch.no_grad():
            fn(*args)

    def forward_backward():
        nonlocal grad
        out = fn(*args)
        grad = torch.randn_like(out) if grad is None else grad
        torch.autograd.grad(out, [a for a in args if a.requires_grad], grad)

    before = memory_kb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        before_cuda = torch.cuda.memory_allocated()
    result = {}
    for name, f in (("fwd", forward), ("fwd_bwd", forward_backward)):
        f()  # warm-up (and pykeops' compilation)
        sync()
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            f()
            sync()
            times.append(time.perf_counter() - t)
        result[name] = sorted(times)[len(times) // 2]
    if device.type == "cuda":
        result["peak_mb"] = (torch.cuda.max_memory_allocated() - before_cuda) / 2**20
    else:
        result["peak_mb"] = (memory_kb("VmHWM") - before) / 1024
    return result


def long_case(reps):
    """Vandermonde at L = 2^20, N = 4096, H = 32 (DLR's longest shift), torch backend, CPU."""
    from src.ops.vandermonde import vandermonde

    H, N, L = 32, 4096, 1 << 20
    g = torch.Generator().manual_seed(0)
    W = (torch.randn(1, H, N, dtype=torch.complex64, generator=g) / N).requires_grad_()
    Lambda = torch.complex(torch.full((N,), -0.5e-5), 2 * math.pi * torch.arange(N) / N)  # DLR init, dt = 1e-5
    Lambda = (Lambda + 1e-3j * torch.randn(N, generator=g)).to(torch.complex64).requires_grad_()
    before = memory_kb("VmRSS")
    t = time.perf_counter()
    K = vandermonde(W, Lambda, L, "torch")
    t_fwd = time.perf_counter() - t
    grad = torch.randn(K.shape, dtype=torch.complex64, generator=g)
    t = time.perf_counter()
    gW, gx = torch.autograd.grad(K, (W, Lambda), grad)
    t_bwd = time.perf_counter() - t
    peak = (memory_kb("VmHWM") - before) / 1024
    # float64 reference from the same (float32-rounded) inputs at sampled positions
    W64, x64 = W.detach().to(torch.complex128), Lambda.detach().to(torch.complex128)
    pos = torch.tensor([0, 1, 2, 4095, 65537, 524288, 777777, L - 3, L - 2, L - 1])
    terms = W64[0, :, :, None] * torch.exp(x64[None, :, None] * pos.double())  # (H, N, P)
    ref = terms.sum(1)
    err = (K[0][:, pos].to(torch.complex128) - ref).abs()
    rel_pos = (err / ref.abs()).max().item()
    rel_scale = (err / terms.abs().sum(1)).max().item()
    # gradient in W at a few modes n: conj(sum_l conj(g_l) exp(x_n l)), summed in float64 over all l
    ns = torch.tensor([0, 1, N // 2, N - 1])
    l = torch.arange(L, dtype=torch.float64)
    g64 = grad[0].to(torch.complex128)  # (H, L)
    gref = torch.stack([(g64.conj() * torch.exp(x64[n] * l)).sum(-1).conj() for n in ns], -1)  # (H, 4)
    g_rel = ((gW[0][:, ns].to(torch.complex128) - gref).abs().max() / gref.abs().max()).item()
    flops = 24 * H * N * L
    return dict(fwd=t_fwd, fwd_bwd=t_fwd + t_bwd, peak_mb=peak, rel_err_per_position=rel_pos,
                rel_err_vs_term_scale=rel_scale, grad_W_rel_err=g_rel, gflops=flops / (t_fwd + t_bwd) / 1e9)


def gflops(case, seconds, forward_only):
    H, N, L = CASES[case]
    if case not in ("dlr", "dss"):
        return ""
    return f"{8 * H * N * L * (1 if forward_only else 3) / seconds / 1e9:.1f}"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--cases", nargs="*", default=list(CASES))
    parser.add_argument("--backends", nargs="*", help="only these backends (default: all that apply)")
    parser.add_argument("--keops", action="store_true", help="include pykeops (compiles its formulas once)")
    parser.add_argument("--cuda", action="store_true", help="include the CUDA extension")
    parser.add_argument("--long", action="store_true", help="only the L = 2^20 Vandermonde acceptance case")
    parser.add_argument("--one", nargs=2, metavar=("CASE", "BACKEND"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.long:
        print(json.dumps(long_case(args.reps), indent=1))
        return
    if args.one:
        print(json.dumps(run_case(*args.one, args.device, args.reps)))
        return
    print(f"device={args.device}, torch threads={torch.get_num_threads()}, reps={args.reps} (median)")
    print(f"{'op':8} {'backend':9} {'H':>4} {'N':>5} {'L':>7} {'fwd ms':>9} {'fwd+bwd ms':>11} "
          f"{'peak MB':>8} {'GFLOP/s':>8} {'vs dense':>9} {'vs orig':>8}")
    failed = 0
    for case in args.cases:
        base = {}
        for backend in BACKENDS[case]:
            if (backend == "keops" and not args.keops) or (backend == "cuda" and not args.cuda):
                continue
            if args.backends and backend not in args.backends:
                continue
            proc = subprocess.run([sys.executable, "-m", "benchmarks.kernels", "--one", case, backend, "--device",
                                   args.device, "--reps", str(args.reps)], capture_output=True, text=True,
                                  env={**os.environ, "PYTHONWARNINGS": "ignore"})
            if proc.returncode != 0:
                print(f"{case:8} {backend:9} failed: {proc.stderr.strip().splitlines()[-1]}")
                failed += 1
                continue
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            base.setdefault(backend, r["fwd_bwd"])
            H, N, L = CASES[case]
            ref = base.get("dense", base.get("plain"))
            vs_dense = f"{ref / r['fwd_bwd']:.1f}x" if ref else ""
            vs_orig = f"{base['original'] / r['fwd_bwd']:.1f}x" if "original" in base else ""
            print(f"{case:8} {backend:9} {H:4d} {N:5d} {L:7d} {1e3 * r['fwd']:9.1f} {1e3 * r['fwd_bwd']:11.1f} "
                  f"{r['peak_mb']:8.0f} {gflops(case, r['fwd_bwd'], False):>8} {vs_dense:>9} {vs_orig:>8}",
                  flush=True)
    if failed:  # the table above names each; the exit status says so too (benchmarks/gpu/check.sh)
        sys.exit(f"{failed} case(s) failed")


if __name__ == "__main__":
    main()
