"""The field's GPU kernels behind our scan signatures, imported only when called.

    selective_scan / cuda    mamba_ssm.ops.selective_scan_interface.selective_scan_fn
    ssd_scan / triton        mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined
    causal_conv1d / cuda     causal_conv1d.causal_conv1d_fn
    linear_scan / cuda       accelerated_scan.warp.scan      (h_t = gates_t h_{t-1} + tokens_t)
    linear_scan / triton     accelerated_scan.scalar.scan    (accelerated-scan 0.3: Triton, any length)

Each entry is `(run, unsupported)`: `run` has the torch path's signature; `unsupported(...)`
returns why a particular call cannot use the kernel (None if it can), e.g. complex inputs or an
initial state the kernel has no argument for. Install: see requirements-gpu.txt.

mamba-ssm installed with MAMBA_SKIP_CUDA_BUILD=TRUE (its Triton kernels alone, as
benchmarks/gpu/ carries it) cannot run its own `mamba_ssm/__init__.py`, which imports the CUDA
extension selective_scan_cuda; `_mamba_ssm()` makes its submodules importable without it.
"""

import importlib.util
import sys

import torch
import torch.nn.functional as F


def _cuda_float(*tensors):
    for t in tensors:
        if t is not None and not t.is_cuda:
            return "inputs are not on a CUDA device"
        if t is not None and t.is_complex():
            return "complex inputs"
    return None


# selective scan (mamba-ssm CUDA kernel)
def mamba_selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                         return_last_state=False, initial_state=None):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), D,
                             z if z is None else z.contiguous(), delta_bias, delta_softplus, return_last_state)


def mamba_selective_scan_unsupported(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                                     return_last_state=False, initial_state=None):
    if initial_state is not None:
        return "selective_scan_fn takes no initial state"
    return _cuda_float(u, delta, A, B, C, D, z, delta_bias)


def _mamba_ssm():
    """Registers the package mamba_ssm without running its __init__.py (which needs the CUDA
    extension selective_scan_cuda), so that mamba_ssm.ops.triton.* import where only the Triton
    kernels are installed. Where the full package imports, it is used as it is."""
    if "mamba_ssm" in sys.modules:
        return
    spec = importlib.util.find_spec("mamba_ssm")
    if spec is None:
        raise ImportError("mamba-ssm is not installed (see requirements-gpu.txt)")
    try:
        importlib.import_module("mamba_ssm")
    except ImportError:  # a MAMBA_SKIP_CUDA_BUILD install: the package without its __init__
        sys.modules["mamba_ssm"] = importlib.util.module_from_spec(spec)


# SSD (mamba-ssm Triton kernels)
def mamba_ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False,
                   initial_states=None, return_final_states=False):
    _mamba_ssm()
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                     initial_states=initial_states, dt_softplus=dt_softplus,
                                     return_final_states=return_final_states)


def mamba_ssd_scan_unsupported(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False,
                               initial_states=None, return_final_states=False):
    if chunk_size & (chunk_size - 1):
        return f"chunk_size={chunk_size} is not a power of two"
    return _cuda_float(x, dt, A, B, C, D, z, dt_bias, initial_states)


# causal depthwise convolution (causal-conv1d CUDA kernel)
def causal_conv1d_cuda(x, weight, bias=None, activation=None, initial_states=None):
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn(x.contiguous(), weight.contiguous(), bias, activation=activation)


def causal_conv1d_cuda_unsupported(x, weight, bias=None, activation=None, initial_states=None):
    if initial_states is not None:
        return "causal_conv1d_fn takes initial states only for channel-last inputs"
    if weight.shape[1] not in (2, 3, 4):
        return f"kernel width {weight.shape[1]} (causal_conv1d_fn takes 2, 3 or 4)"
    return _cuda_float(x, weight, bias)


# diagonal linear scan (accelerated-scan, warp CUDA or Triton)
def _accelerated(a, b, h0, reverse, kind):
    if kind == "warp":
        from accelerated_scan.warp import scan
    else:
        from accelerated_scan.scalar import scan
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    shape, L = b.shape, b.shape[-1]
    if reverse:
        a, b = a.flip(-1), b.flip(-1)
    if h0 is not None:  # fold the initial state into the first input
        b = torch.cat(((b[..., 0] + a[..., 0] * h0)[..., None], b[..., 1:]), dim=-1)
    n = max(32, 1 << (L - 1).bit_length())  # the kernels take power-of-two lengths >= 32
    a, b = F.pad(a, (0, n - L), value=1.0), F.pad(b, (0, n - L))  # padding after the end is inert
    rows = shape[-2] if len(shape) >= 2 else 1
    h = scan(a.reshape(-1, rows, n).contiguous(), b.reshape(-1, rows, n).contiguous())
    h = h.reshape(*shape[:-1], n)[..., :L]
    return h.flip(-1) if reverse else h


def accelerated_warp_scan(a, b, h0=None, reverse=False):
    return _accelerated(a, b, h0, reverse, "warp")


def accelerated_triton_scan(a, b, h0=None, reverse=False):
    return _accelerated(a, b, h0, reverse, "triton")


def accelerated_scan_unsupported(a, b, h0=None, reverse=False):
    why = _cuda_float(a, b, h0)
    if why is None and torch.promote_types(a.dtype, b.dtype) not in (torch.float32, torch.float16, torch.bfloat16):
        why = f"dtype {torch.promote_types(a.dtype, b.dtype)} (the kernels take float32, float16, bfloat16)"
    return why


KERNELS = {
    "selective_scan": {"cuda": (mamba_selective_scan, mamba_selective_scan_unsupported)},
    "ssd_scan": {"triton": (mamba_ssd_scan, mamba_ssd_scan_unsupported)},
    "causal_conv1d": {"cuda": (causal_conv1d_cuda, causal_conv1d_cuda_unsupported)},
    "linear_scan": {"cuda": (accelerated_warp_scan, accelerated_scan_unsupported),
                    "triton": (accelerated_triton_scan, accelerated_scan_unsupported)},
}
