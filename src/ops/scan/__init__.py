"""Scans: diagonal linear recurrences, the selective scan of S6 (Mamba) and SSD (Mamba-2).

    linear_scan(a, b, h0=None, reverse=False)       h_t = a_t h_{t-1} + b_t over the last dim
    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False)          mamba-ssm's selective_scan_fn
    ssd_scan(x, dt, A, B, C, chunk_size, D=None, z=None, dt_bias=None, dt_softplus=False,
             initial_states=None, return_final_states=False)   mamba-ssm's mamba_chunk_scan_combined
    causal_conv1d(x, weight, bias=None, activation=None, initial_states=None)   causal_conv1d_fn

each with `backend="auto"|"torch"|"cuda"|"triton"|"cpu"`. `torch` is chunked.py (blocked, any
device); `cuda`/`triton` are the field's kernels (gpu.py), usable only on CUDA tensors; `cpu` is our
compiled C loops for CPU tensors (cpu.py). src/ops/dispatch.py chooses: a kernel is usable when
it imports (or compiles) AND a smoke call on this device agrees with the torch path; `auto`
takes a usable kernel that supports the call (dtypes, gradients, no initial state where the
kernel has none), else torch; an explicit backend that cannot run the call is a ConfigError
saying why. Each choice is logged once. reference.py holds the loops every path is tested
against.
"""

import torch

from src.ops.dispatch import Dispatcher
from src.ops.scan import chunked, cpu, gpu
from src.utils.errors import check_choice

BACKENDS = ["auto", "torch", "cuda", "triton", "cpu"]
TORCH = {op: getattr(chunked, op) for op in ("linear_scan", "selective_scan", "ssd_scan", "causal_conv1d")}
KERNELS = {op: {**gpu.KERNELS.get(op, {}), **cpu.KERNELS.get(op, {})} for op in TORCH}  # {op: {name: (run, why)}}
DEVICE = {"cuda": "cuda", "triton": "cuda", "cpu": "cpu"}  # the device type each kernel runs on


def _smoke_inputs(op, device):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device)

    if op == "linear_scan":
        return (torch.rand(2, 3, 40, generator=g).to(device), r(2, 3, 40)), {}
    if op == "selective_scan":
        return (r(2, 4, 40), r(2, 4, 40), -torch.rand(4, 3, generator=g).to(device), r(2, 3, 40), r(2, 3, 40)), \
            dict(D=r(4), delta_softplus=True)
    if op == "ssd_scan":
        return (r(2, 40, 2, 4), r(2, 40, 2), -torch.rand(2, generator=g).to(device), r(2, 40, 1, 3),
                r(2, 40, 1, 3), 16), dict(dt_softplus=True)
    return (r(2, 4, 40), r(4, 4), r(4)), dict(activation="silu")


def _smoke(op):
    """A kernel is usable on a device when it runs there and agrees with the torch path."""
    def smoke(fn, device):
        args, kwargs = _smoke_inputs(op, device)
        got, want = fn(*args, **kwargs), TORCH[op](*args, **kwargs)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if not torch.allclose(got.float(), want.float(), rtol=1e-3, atol=1e-3):
            raise RuntimeError(f"its smoke call differs from the torch path by {(got - want).abs().max().item():.3g}")
    return smoke


def _dispatcher(op):
    """torch and the op's kernels; on each device type its kernels first, torch last."""
    kernels = KERNELS[op]
    loaders = {"torch": lambda: TORCH[op], **{name: (lambda run=run: run) for name, (run, _) in kernels.items()}}
    preference = {kind: [name for name in kernels if DEVICE[name] == kind] + ["torch"] for kind in ("cuda", "cpu")}
    return Dispatcher(op, loaders, {**preference, "default": ["torch"]}, _smoke(op),
                      {name: why for name, (_, why) in kernels.items()})


DISPATCH = {op: _dispatcher(op) for op in TORCH}


def backend_of(op, backend):
    """The backend `op` runs when a layer asks for `backend` (one config key covers a layer's
    scan and its causal convolution): the same name where the op has it; else the op's kernel of
    the other GPU family (cuda <-> triton: mamba-ssm's SSD is Triton, causal-conv1d is CUDA);
    else torch (`cpu` means the C loops where they exist: SSD and the convolution have none)."""
    check_choice("model.layer.backend", backend, BACKENDS)
    choices = DISPATCH[op].choices
    if backend in choices:
        return backend
    other = {"cuda": "triton", "triton": "cuda"}.get(backend)
    return other if other in choices else "torch"


def _dispatch(op, device, backend, args, kwargs):
    return DISPATCH[op].function(backend, device, args, kwargs)(*args, **kwargs)


def linear_scan(a, b, h0=None, reverse=False, backend="auto"):
    """h_t = a_t * h_{t-1} + b_t over the last dim (a, b broadcast, real or complex); h0: (...)
    or None (zeros); reverse runs from the end. -> h, of the broadcast shape."""
    return _dispatch("linear_scan", b.device, backend, (a, b, h0, reverse), {})


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, backend="auto"):
    """mamba-ssm's selective_scan_fn (real A): u, delta (batch, D, L); A (D, N); B, C (D, N),
    (batch, N, L) or (batch, G, N, L); D, delta_bias (D,); z (batch, D, L).
    -> out (batch, D, L) [, last state (batch, D, N)]. initial_state (batch, D, N) is ours."""
    kwargs = dict(D=D, z=z, delta_bias=delta_bias, delta_softplus=delta_softplus,
                  return_last_state=return_last_state, initial_state=initial_state)
    return _dispatch("selective_scan", u.device, backend, (u, delta, A, B, C), kwargs)


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, backend="auto"):
    """mamba-ssm's mamba_chunk_scan_combined: x (batch, L, H, P), dt (batch, L, H), A (H,),
    B, C (batch, L, G, N). -> out (batch, L, H, P) [, final states (batch, H, P, N)]."""
    kwargs = dict(D=D, z=z, dt_bias=dt_bias, dt_softplus=dt_softplus, initial_states=initial_states,
                  return_final_states=return_final_states)
    return _dispatch("ssd_scan", x.device, backend, (x, dt, A, B, C, chunk_size), kwargs)


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None, backend="auto"):
    """Depthwise causal convolution x (batch, C, L), weight (C, K), bias (C,); activation None|silu;
    initial_states (batch, C, K-1): the inputs before t = 0 (zeros if None)."""
    return _dispatch("causal_conv1d", x.device, backend, (x, weight, bias, activation, initial_states), {})
