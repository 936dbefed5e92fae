"""Cauchy kernel from the CUDA extension (extensions/kernels/cauchy.cu).

One thread per (row, position) in the forward, one per (row, mode) in the backward; dK/dz uses
the same forward kernel with power 2. Build: pip install --no-build-isolation extensions/kernels.
"""

import torch

try:
    import structured_kernels
except ImportError as e:
    raise ImportError(f"the CUDA extension is not built ({e}): pip install --no-build-isolation extensions/kernels") from e


class CudaCauchy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, z, w):  # v, w (B, N); z (L,) -> (B, L)
        ctx.save_for_backward(v, z, w)
        return structured_kernels.cauchy_forward(v, z, w, 1)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):
        v, z, w = ctx.saved_tensors
        gK = gK.contiguous()
        grad_v, grad_w = structured_kernels.cauchy_backward(v, z, w, gK)
        grad_z = None
        if ctx.needs_input_grad[1]:  # dK/dz = -sum_n v / (z - w)^2
            grad_z = -(gK * structured_kernels.cauchy_forward(v, z, w, 2).conj()).sum(0)
        return grad_v, grad_z, grad_w


def cauchy(v, z, w):
    if not z.is_cuda:
        raise RuntimeError("the cuda backend needs CUDA tensors")
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    N = v.shape[-1]
    v2 = v.to(dtype).expand(*batch, N).reshape(-1, N).contiguous()
    w2 = w.to(dtype).expand(*batch, N).reshape(-1, N).contiguous()
    return CudaCauchy.apply(v2, z.to(dtype).contiguous(), w2).reshape(*batch, z.shape[0])
