"""mamba-ssm's CUDA kernel behind the selective_scan signature, imported only when called:
backend `cuda`, mamba_ssm.ops.selective_scan_interface.selective_scan_fn (it needs mamba-ssm's
CUDA extension selective_scan_cuda; install: see requirements-gpu.txt). The kernel forms
exp(delta A) itself: it has no signed transitions (neg_eigval), which `auto` then runs on `torch`.
"""

from src.ops.dispatch import real_on_cuda


NO_NEG_EIGVAL = "mamba-ssm's kernel has no signed transitions (neg_eigval)"


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
                   initial_state=None, neg_eigval=False):
    if neg_eigval:
        raise ValueError(NO_NEG_EIGVAL)
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn

    return selective_scan_fn(u.contiguous(), delta.contiguous(), A.contiguous(), B.contiguous(), C.contiguous(), D,
                             z if z is None else z.contiguous(), delta_bias, delta_softplus, return_last_state)


def unsupported(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False, return_last_state=False,
                initial_state=None, neg_eigval=False):
    """Why the kernel cannot take this call (None if it can)."""
    if neg_eigval:
        return NO_NEG_EIGVAL
    if initial_state is not None:
        return "selective_scan_fn takes no initial state"
    return real_on_cuda(u, delta, A, B, C, D, z, delta_bias)
