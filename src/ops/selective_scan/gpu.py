"""mamba-ssm's CUDA kernel behind the selective_scan signature, imported only when called:
backend `cuda`, mamba_ssm.ops.selective_scan_interface.selective_scan_fn (it needs mamba-ssm's
CUDA extension selective_scan_cuda; install: see requirements-gpu.txt).
"""

from src.ops.dispatch import real_on_cuda


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
                   initial_state=None):
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), D,
                             z if z is None else z.contiguous(), delta_bias, delta_softplus, return_last_state)


def unsupported(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
                initial_state=None):
    """Why the kernel cannot take this call (None if it can)."""
    if initial_state is not None:
        return "selective_scan_fn takes no initial state"
    return real_on_cuda(u, delta, A, B, C, D, z, delta_bias)
