"""Vandermonde kernel from the CUDA extension (extensions/kernels/vandermonde.cu).

One thread per output position in the forward, one per mode n in the backward; the phase is
reduced modulo 2 pi in double inside the kernel. x is expanded to one row per row of v.
Build: pip install --no-build-isolation extensions/kernels (needs nvcc and a CUDA torch).
"""

import torch

from src.ops.vandermonde.blocked import groups

try:
    import structured_kernels
except ImportError as e:
    raise ImportError(f"the CUDA extension is not built ({e}): pip install --no-build-isolation extensions/kernels") from e


class CudaVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, x, L):  # v, x: (B, N) -> (B, L)
        ctx.save_for_backward(v, x)
        return structured_kernels.vandermonde_forward(v, x, L)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):
        v, x = ctx.saved_tensors
        grad_v, grad_x = structured_kernels.vandermonde_backward(v, x, gK.contiguous())
        return grad_v, grad_x, None


def vandermonde(v, x, L):
    if not x.is_cuda:
        raise RuntimeError("the cuda backend needs CUDA tensors")
    dtype = torch.promote_types(v.dtype, x.dtype)
    v3, x2, batch = groups(v.to(dtype), x.to(dtype))
    R, G, N = v3.shape
    rows = x2.expand(R, G, N).reshape(R * G, N).contiguous()
    return CudaVandermonde.apply(v3.reshape(R * G, N).contiguous(), rows, L).reshape(*batch, L)
