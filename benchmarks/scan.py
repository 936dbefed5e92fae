"""CPU scans against loop baselines, measured side by side in one run (ratios, not absolute times,
are what survive a shared machine).

    python -m benchmarks.scan [--repeats 3] [--threads N] [--quick] [--device cuda]

Rows:
  selective scan, forward, (B=4, D=256, N=16, L=2048): src.ops.selective_scan with backend
      `cpu` (the C loop) and `torch` (blocked; no stored states without gradients) vs `mamba_selective_scan_ref`
      below: mamba-ssm's published `selective_scan_ref` loop (precomputed exp(delta A) and
      delta B u, one einsum per step), re-implemented here from its semantics for time-varying
      B, C of shape (B, N, L) and real A
  selective scan, forward + backward, L = 256 (the loop's backward grows ~quadratically in L),
      both backends
  linear scan, forward (B=8, D=256, L=4096) and forward + backward (L=512): linear_scan with
      backend `cpu` (the C loop) and `torch` (blocked) vs src.ops.linear_scan.reference.linear_scan
      (one step per time step)
  SSD, forward + backward, (B=4, L=1024, H=8, P=32, N=16): ssd_scan (chunked, 64) vs its loop reference
Each time is the median of `repeats` runs after one warm-up (runs over 5 s: one run, no warm-up
for the forward loop of mamba's reference). With `--device cuda` the same rows run on the GPU
(synchronised around each run) for the GPU backends: mamba-ssm's CUDA selective scan and Triton
SSD, accelerated-scan's warp and Triton linear scans, and the torch paths; a backend that is not
usable there is named with the reason and left out.
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from src.ops import linear_scan, selective_scan, ssd_scan
from src.ops.linear_scan import reference as linear_reference
from src.ops.ssd_scan import reference as ssd_reference


def mamba_selective_scan_ref(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False):
    """mamba-ssm's selective_scan_ref for B, C of shape (batch, N, L) and real A."""
    if delta_bias is not None:
        delta = delta + delta_bias[..., None]
    if delta_softplus:
        delta = F.softplus(delta)
    x = A.new_zeros((u.shape[0], A.shape[0], A.shape[1]))
    deltaA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    deltaB_u = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    ys = []
    for i in range(u.shape[2]):
        x = deltaA[:, :, i] * x + deltaB_u[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    y = torch.stack(ys, dim=2)
    out = y if D is None else y + u * D[:, None]
    return out if z is None else out * F.silu(z)


OPS = {"linear_scan": linear_scan, "selective_scan": selective_scan, "ssd_scan": ssd_scan}
BACKENDS = {  # device type: {op: [(backend, row label)]}
    "cpu": {"selective_scan": [("cpu", "C loop"), ("torch", "blocked")],
            "linear_scan": [("cpu", "C loop"), ("torch", "blocked")], "ssd_scan": [("torch", "chunked")]},
    "cuda": {"selective_scan": [("cuda", "mamba CUDA"), ("torch", "blocked")],
             "linear_scan": [("cuda", "warp CUDA"), ("triton", "Triton"), ("torch", "blocked")],
             "ssd_scan": [("triton", "mamba Triton"), ("torch", "chunked")]},
}
DEVICE = torch.device("cpu")  # set by --device


def sync():
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timed(fn, repeats, warmup=True):
    """Median of `repeats` runs; a run over 5 s is not repeated (the slow loops)."""
    if warmup:
        fn()
    times = []
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - start)
        if times[-1] > 5:
            break
    return statistics.median(times)


def selective_inputs(B, D, N, L, grad):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    tensors = [r(B, D, L), r(B, D, L) - 2.0, -torch.exp(r(D, N) * 0.5), r(B, N, L), r(B, N, L), r(D), r(B, D, L), r(D)]
    return [t.to(DEVICE).requires_grad_(grad) for t in tensors]


def run_selective(fn, inputs, backward):
    u, delta, A, B, C, D, z, bias = inputs
    out = fn(u, delta, A, B, C, D, z, bias, delta_softplus=True)
    if backward:
        torch.autograd.grad(out.sum(), inputs)
    return out


def linear_inputs(B, D, L, grad):
    g = torch.Generator().manual_seed(0)
    return [torch.rand(B, D, L, generator=g).to(DEVICE).requires_grad_(grad),
            torch.randn(B, D, L, generator=g).to(DEVICE).requires_grad_(grad)]


def run_linear(fn, inputs, backward):
    out = fn(*inputs)
    if backward:
        torch.autograd.grad(out.sum(), inputs)
    return out


def ssd_inputs(B, L, H, P, N):
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g)  # noqa: E731
    return [t.to(DEVICE).requires_grad_() for t in (r(B, L, H, P), r(B, L, H) - 2.0, -torch.exp(r(H) * 0.5),
                                                    r(B, L, 1, N), r(B, L, 1, N))]


def run_ssd(fn, inputs):
    out = fn(*inputs)
    torch.autograd.grad(out.sum(), inputs)


def usable(backend, op):
    """True for torch; for the kernels, whether they load and run on the device (printing why not)."""
    why = None if backend == "torch" else OPS[op].DISPATCH.why_unusable(backend, DEVICE)
    if why:
        print(f"{op}, backend {backend}: not usable here ({why})")
    return why is None


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="smaller sizes, to check the script runs")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    args = parser.parse_args()
    global DEVICE
    DEVICE = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    k = 8 if args.quick else 1
    rows = []

    def row(name, ours, baseline):
        rows.append((name, ours, baseline))
        print(f"{name:<62} {ours * 1e3:10.1f} {baseline * 1e3:12.1f} {baseline / ours:8.1f}x", flush=True)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {DEVICE.type}")
    print(f"{'':<62} {'ours (ms)':>10} {'baseline (ms)':>12} {'speedup':>8}")
    L = 2048 // k
    x = selective_inputs(4, 256, 16, L, False)
    with torch.no_grad():
        loop = timed(lambda: run_selective(mamba_selective_scan_ref, x, False), args.repeats, warmup=False)
    x_grad = selective_inputs(4, 256, 16, 256 // k, True)
    loop_grad = timed(lambda: run_selective(mamba_selective_scan_ref, x_grad, True), args.repeats)
    for backend, name in BACKENDS[DEVICE.type]["selective_scan"]:
        if not usable(backend, "selective_scan"):
            continue
        fast = lambda *a, backend=backend, **kw: selective_scan.selective_scan(*a, **kw, backend=backend)  # noqa: E731
        with torch.no_grad():
            torch.testing.assert_close(run_selective(fast, x, False), run_selective(mamba_selective_scan_ref, x, False),
                                       rtol=1e-3, atol=1e-3)
            row(f"selective scan fwd     B=4 D=256 N=16 L={L} {name} vs mamba ref",
                timed(lambda: run_selective(fast, x, False), args.repeats), loop)
        row(f"selective scan fwd+bwd B=4 D=256 N=16 L={256 // k} {name} vs mamba ref",
            timed(lambda: run_selective(fast, x_grad, True), args.repeats), loop_grad)

    for backend, name in BACKENDS[DEVICE.type]["linear_scan"]:
        if not usable(backend, "linear_scan"):
            continue
        ours = lambda a, b, backend=backend: linear_scan.linear_scan(a, b, backend=backend)  # noqa: E731
        L = 4096 // k
        x = linear_inputs(8, 256, L, False)
        with torch.no_grad():
            row(f"linear scan fwd        B=8 D=256 L={L} {name} vs loop",
                timed(lambda: run_linear(ours, x, False), args.repeats),
                timed(lambda: run_linear(linear_reference.linear_scan, x, False), args.repeats))
        L = 512 // k  # the loop's backward re-zeroes a (B, D, L) gradient per step: O(L^2)
        x = linear_inputs(8, 256, L, True)
        row(f"linear scan fwd+bwd    B=8 D=256 L={L} {name} vs loop",
            timed(lambda: run_linear(ours, x, True), args.repeats),
            timed(lambda: run_linear(linear_reference.linear_scan, x, True), args.repeats))

    L = 1024 // k
    x = ssd_inputs(4, L, 8, 32, 16)
    loop = timed(lambda: run_ssd(lambda *a: ssd_reference.ssd_scan(*a, dt_softplus=True), x), args.repeats)
    for backend, name in BACKENDS[DEVICE.type]["ssd_scan"]:
        if not usable(backend, "ssd_scan"):
            continue
        ours = lambda *a, backend=backend: ssd_scan.ssd_scan(  # noqa: E731
            *a, chunk_size=64, dt_softplus=True, backend=backend)
        row(f"SSD fwd+bwd            B=4 L={L} H=8 P=32 N=16 {name} vs loop", timed(lambda: run_ssd(ours, x), args.repeats),
            loop)


if __name__ == "__main__":
    main()
