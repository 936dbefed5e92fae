"""Vandermonde kernels K[..., l] = sum_n v[..., n] exp(x[..., n] l), l = 0 .. L-1.

`vandermonde(v, x, L, backend="auto")`: complex v and x, broadcast over their leading
dimensions; returns the complex kernel of shape broadcast(v.shape[:-1], x.shape[:-1]) + (L,),
differentiable in v and x. Backends (src/ops/dispatch.py picks and logs one):
    torch   blocked.py: batched GEMMs over blocks of positions, memory O(N block), blocked backward
    dense   dense.py: exp(x l) for every (n, l), then one broadcast GEMM (memory O(N L))
    keops   keops.py: pykeops reduction, never materialises [N, L] (pip install pykeops==2.3)
    cuda    cuda.py: the extension in extensions/kernels (see its README for the build)
`auto` is torch on CPU and cuda, then keops, then torch on a GPU. All backends agree with
reference.py to float32 rounding (tests/test_vandermonde.py gives the tolerances); all reduce
the phase Im(x) l modulo 2 pi in float64 so float32 kernels stay accurate at l ~ 1e6.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy


def smoke_inputs(device):
    v = torch.randn(2, 3, dtype=torch.complex64, device=device, requires_grad=True)
    x = torch.complex(-torch.rand(3, device=device), torch.randn(3, device=device)).requires_grad_()
    return v, x, 5


def _smoke(fn, device):
    """Runs forward and backward."""
    fn(*smoke_inputs(device)).abs().sum().backward()


DISPATCH = Dispatcher(
    "vandermonde",
    {
        "torch": lazy("src.ops.vandermonde.blocked.vandermonde"),
        "dense": lazy("src.ops.vandermonde.dense.vandermonde"),
        "keops": lazy("src.ops.vandermonde.keops.vandermonde"),
        "cuda": lazy("src.ops.vandermonde.cuda.vandermonde"),
    },
    {"cuda": ["cuda", "keops", "torch"], "default": ["torch"]},
    _smoke,
)


def vandermonde(v, x, L, backend="auto"):
    """K[..., l] = sum_n v[..., n] exp(x[..., n] l) for l = 0 .. L-1 (see the module docstring)."""
    args = (v, x, L)
    return DISPATCH.function(backend, x.device, args)(*args)
