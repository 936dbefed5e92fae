"""The selective scan of S6 (Mamba): mamba-ssm's selective_scan_fn.

    selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, neg_eigval=False, backend="auto")
        h_t = a_t * h_{t-1} + delta_t B_t u_t,    y_t = C_t . h_t + D u_t  (then * silu(z))
        a_t = exp(delta_t A) in (0, 1] (A <= 0);   neg_eigval: a_t = 2 exp(delta_t A) - 1 in (-1, 1]

u, delta (batch, D, L); A (D, N), real; B, C (D, N), (batch, N, L) or (batch, G, N, L); D,
delta_bias (D,); z (batch, D, L); initial_state (batch, D, N) and neg_eigval are ours (neg_eigval:
Grazzi et al. 2024's signed transition, the input term unchanged). Backends: `torch` (chunked.py,
blocked, any device), `cpu` (a compiled C loop, cpu.py, forward and backward, CPU tensors; first
on CPU), `cuda` (mamba-ssm's kernel, gpu.py, CUDA only, no initial state, no neg_eigval: `auto`
then takes `torch` on CUDA). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, agrees_with, lazy
from src.ops.selective_scan import chunked, cpu, gpu


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device)

    return (r(2, 4, 40), r(2, 4, 40), -torch.rand(4, 3, generator=g).to(device), r(2, 3, 40), r(2, 3, 40)), \
        dict(D=r(4), delta_softplus=True)


DISPATCH = Dispatcher("selective_scan", {"torch": lazy("src.ops.selective_scan.chunked.selective_scan"),
                                         "cuda": lazy("src.ops.selective_scan.gpu.selective_scan"),
                                         "cpu": lazy("src.ops.selective_scan.cpu.selective_scan")},
                      {"cuda": ["cuda", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]},
                      agrees_with(chunked.selective_scan, smoke_inputs),
                      {"cuda": gpu.unsupported, "cpu": cpu.unsupported})


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, neg_eigval=False, backend="auto"):
    """See the module docstring. -> out (batch, D, L) [, last state (batch, D, N)]."""
    args = (u, delta, A, B, C, D, z, delta_bias, delta_softplus, return_last_state, initial_state, neg_eigval)
    return DISPATCH.function(backend, u.device, args)(*args)
