"""wkv: the time-mixing recurrence of RWKV-4 (src/models/sequence/layers/rwkv4.py).

    wkv(w, u, k, v, backend="auto")   w, u (D,); k, v (batch, L, D) -> (batch, L, D)

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t})

in the running-max form (reference.py). Backends: `cpu`, the C loop (cpu.py, wkv.c; CPU
tensors, float32/float64, its own backward); `torch`, the loop of reference.py under autograd
(any device; slow: one Python step per position). src/ops/dispatch.py chooses; `auto` takes
`cpu` where it runs, else `torch`.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.wkv import cpu, reference


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)
    w, u = -torch.rand(4, generator=g).to(device), torch.randn(4, generator=g).to(device)
    k, v = torch.randn(2, 9, 4, generator=g).to(device).requires_grad_(), torch.randn(2, 9, 4, generator=g).to(device)
    return w, u, k, v


def _smoke(fn, device):
    """Runs forward and backward on a tiny input and agrees with the loop."""
    w, u, k, v = smoke_inputs(device)
    got = fn(w, u, k, v)
    got.sum().backward()
    want = reference.wkv(w, u, k, v)
    if not torch.allclose(got, want, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"its smoke call differs from the loop by {(got - want).abs().max().item():.3g}")


DISPATCH = Dispatcher("wkv", {"cpu": lazy("src.ops.wkv.cpu.wkv"), "torch": lazy("src.ops.wkv.reference.wkv")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def wkv(w, u, k, v, backend="auto"):
    """See the module doc; backend: auto | torch | cpu."""
    args = (w, u, k, v)
    return DISPATCH.function(backend, k.device, args)(*args)
