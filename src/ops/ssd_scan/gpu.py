"""mamba-ssm's Triton kernels behind the ssd_scan signature, imported only when called:
backend `triton`, mamba_ssm.ops.triton.ssd_combined.mamba_chunk_scan_combined. Install: see
requirements-gpu.txt.

mamba-ssm installed with MAMBA_SKIP_CUDA_BUILD=TRUE (its Triton kernels alone, as
benchmarks/gpu/ carries it) cannot run its own `mamba_ssm/__init__.py`, which imports the CUDA
extension selective_scan_cuda; `_mamba_ssm()` makes its submodules importable without it.
The kernels form exp(dt A) themselves: they have no signed transitions (neg_eigval), which
`auto` then runs on `torch`.
"""

import importlib
import importlib.util
import sys

from src.ops.dispatch import real_on_cuda


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


NO_NEG_EIGVAL = "mamba-ssm's kernels have no signed transitions (neg_eigval)"


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, neg_eigval=False):
    if neg_eigval:
        raise ValueError(NO_NEG_EIGVAL)
    _mamba_ssm()
    from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

    return mamba_chunk_scan_combined(x, dt, A, B, C, chunk_size, D=D, z=z, dt_bias=dt_bias,
                                     initial_states=initial_states, dt_softplus=dt_softplus,
                                     return_final_states=return_final_states)


def unsupported(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
                return_final_states=False, neg_eigval=False):
    """Why the kernels cannot take this call (None if they can)."""
    if neg_eigval:
        return NO_NEG_EIGVAL
    if chunk_size & (chunk_size - 1):
        return f"chunk_size={chunk_size} is not a power of two"
    return real_on_cuda(x, dt, A, B, C, D, z, dt_bias, initial_states)
