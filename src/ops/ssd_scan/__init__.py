"""SSD, the scan of Mamba-2 (scalar A per head): mamba-ssm's mamba_chunk_scan_combined.

    ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False,
             initial_states=None, return_final_states=False, neg_eigval=False, backend="auto")
        h_t = a_t h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t  (then * silu(z))
        a_t = exp(dt_t A_h) in (0, 1] (A <= 0);   neg_eigval: a_t = 2 exp(dt_t A_h) - 1 in (-1, 1]

x (batch, L, H, P), dt (batch, L, H), A (H,), B, C (batch, L, G, N) with G dividing H; D (H,) or
(H, P); initial_states (batch, H, P, N); neg_eigval is ours (Grazzi et al. 2024's signed
transition, the input term unchanged). Backends: `torch` (chunked.py, the chunked matrix form,
any device), `triton` (mamba-ssm's kernels, gpu.py, CUDA only, power-of-two chunks, no
neg_eigval: `auto` then takes `torch` on CUDA). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, agrees_with, lazy
from src.ops.ssd_scan import chunked, gpu


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device)

    return (r(2, 40, 2, 4), r(2, 40, 2), -torch.rand(2, generator=g).to(device), r(2, 40, 1, 3), r(2, 40, 1, 3), 16), \
        dict(dt_softplus=True)


DISPATCH = Dispatcher("ssd_scan", {"torch": lazy("src.ops.ssd_scan.chunked.ssd_scan"),
                                   "triton": lazy("src.ops.ssd_scan.gpu.ssd_scan")},
                      {"cuda": ["triton", "torch"], "cpu": ["torch"], "default": ["torch"]},
                      agrees_with(chunked.ssd_scan, smoke_inputs), {"triton": gpu.unsupported})


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, neg_eigval=False, backend="auto"):
    """See the module docstring. -> out (batch, L, H, P) [, final states (batch, H, P, N)]."""
    args = (x, dt, A, B, C, chunk_size, D, z, dt_bias, dt_softplus, initial_states, return_final_states, neg_eigval)
    return DISPATCH.function(backend, x.device, args)(*args)
