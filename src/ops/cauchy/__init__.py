"""Cauchy kernels K[..., l] = sum_n v[..., n] / (z[l] - w[..., n]), S4's DPLR kernel.

`cauchy(v, z, w, backend="auto")`: complex v and w broadcast over their leading dimensions,
z of shape (L,); returns the complex kernel of shape broadcast(v.shape[:-1], w.shape[:-1]) + (L,),
differentiable in v, z and w. Backends (src/ops/dispatch.py picks and logs one):
    torch   blocked.py: blocks of positions, memory O(B N block), blocked backward
    dense   reference.py's broadcast form (memory O(B N L), autograd)
    keops   keops.py: pykeops reductions (pip install pykeops==2.3)
    cuda    cuda.py: the extension in extensions/kernels
`auto` is torch on CPU and cuda, then keops, then torch on a GPU. All agree with reference.py to
float32 rounding (tests/test_cauchy.py gives the tolerances).
"""

import torch

from src.ops.dispatch import Dispatcher, lazy


def smoke_inputs(device):
    v = torch.randn(2, 3, dtype=torch.complex64, device=device, requires_grad=True)
    w = torch.complex(-torch.rand(3, device=device), torch.randn(3, device=device)).requires_grad_()
    z = torch.complex(torch.zeros(5, device=device), torch.linspace(0, 3, 5, device=device))
    return v, z, w


def _smoke(fn, device):
    """Runs forward and backward."""
    fn(*smoke_inputs(device)).abs().sum().backward()


DISPATCH = Dispatcher(
    "cauchy",
    {
        "torch": lazy("src.ops.cauchy.blocked.cauchy"),
        "dense": lazy("src.ops.cauchy.reference.cauchy"),
        "keops": lazy("src.ops.cauchy.keops.cauchy"),
        "cuda": lazy("src.ops.cauchy.cuda.cauchy"),
    },
    {"cuda": ["cuda", "keops", "torch"], "default": ["torch"]},
    _smoke,
)


def cauchy(v, z, w, backend="auto"):
    """K[..., l] = sum_n v[..., n] / (z[l] - w[..., n]) (see the module docstring)."""
    args = (v, z, w)
    return DISPATCH.function(backend, z.device, args)(*args)
