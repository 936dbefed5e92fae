"""Cauchy kernel in blocks of positions: memory O(B N block) instead of O(B N L).

    K[b, l] = sum_n v[b, n] r[b, n, l],   r = 1 / (z[l] - w[b, n])
Backward (torch's convention grad = sum conj(dK/dinput) gK), block by block:
    grad_v[b, n] = sum_l gK[b, l] conj(r),    grad_w[b, n] = conj(v[b, n]) sum_l gK[b, l] conj(r)^2,
    grad_z[l]    = -sum_b gK[b, l] conj(sum_n v[b, n] r^2)
"""

import torch


def block_length(B, N, budget):
    return max(1, budget // max(1, B * N))


class BlockedCauchy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, z, w, budget):  # v, w (B, N); z (L,) -> (B, L)
        ctx.save_for_backward(v, z, w)
        ctx.budget = budget
        (B, N), L = v.shape, z.shape[0]
        K = v.new_empty(B, L)
        lb = block_length(B, N, budget)
        for l0 in range(0, L, lb):
            r = 1 / (z[l0 : l0 + lb] - w[:, :, None])  # (B, N, lb)
            K[:, l0 : l0 + lb] = (v[:, None, :] @ r).squeeze(1)
        return K

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):
        v, z, w = ctx.saved_tensors
        need_v, need_z, need_w = ctx.needs_input_grad[:3]
        (B, N), L = v.shape, z.shape[0]
        grad_v, grad_w = torch.zeros_like(v), torch.zeros_like(w)
        grad_z = torch.zeros_like(z) if need_z else None
        lb = block_length(B, N, ctx.budget)
        for l0 in range(0, L, lb):
            rc = (1 / (z[l0 : l0 + lb] - w[:, :, None])).conj()  # (B, N, lb)
            g = gK[:, l0 : l0 + lb, None]  # (B, lb, 1)
            if need_v:
                grad_v += (rc @ g).squeeze(-1)
            if need_w or need_z:
                rc2 = rc * rc
                if need_w:
                    grad_w += (rc2 @ g).squeeze(-1)
                if need_z:
                    grad_z[l0 : l0 + lb] = -(gK[:, l0 : l0 + lb] * (v.conj()[:, None, :] @ rc2).squeeze(1)).sum(0)
        return grad_v if need_v else None, grad_z, grad_w * v.conj() if need_w else None, None


def cauchy(v, z, w, budget=1 << 20):
    """K[..., l] = sum_n v[..., n] / (z[l] - w[..., n]); `budget`: complex numbers per block."""
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    N = v.shape[-1]
    v2 = v.to(dtype).expand(*batch, N).reshape(-1, N)
    w2 = w.to(dtype).expand(*batch, N).reshape(-1, N)
    return BlockedCauchy.apply(v2, z.to(dtype), w2, budget).reshape(*batch, z.shape[0])
