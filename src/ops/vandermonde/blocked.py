"""Vandermonde kernel in blocks of positions, as batched matrix products, memory O(N * block).

    K[r, g, l] = sum_n v[r, g, n] exp(x[g, n] l),     l = 0 .. L-1
(x is shared by the R rows of a group g: DLR has G = 1, DSS has one group per feature h.)

Split l = a c + b with 0 <= b < c and 0 <= a < ceil(L / c). Since exp(x (a c + b)) =
exp(x a c) exp(x b),
    K[r, g, a c + b] = sum_n (v[r, g, n] P[g, a, n]) E[g, n, b],
    P[g, a, n] = exp(x[g, n] a c),   E[g, n, b] = exp(x[g, n] b):
for each group a GEMM [(a, r), n] x [n, b], with only G N (L/c + c) exponentials instead of
G N L. Blocks of a few a at a time keep the memory at O(R N block) beyond the output.

Phases: Im(x) l is reduced modulo 2 pi in float64 for both tables, so float32 kernels keep
their phase at l ~ 1e6 (Im(x) a c in float32 is off by ~0.05 rad there).

Backward (blocked as well, torch's convention grad = conj(dK/dinput) * grad_K):
    T0[r, g, n] = sum_l conj(gK[r, g, l]) exp(x l)       ->  grad_v = conj(T0)
    T1[r, g, n] = sum_l conj(gK[r, g, l]) l exp(x l)     ->  grad_x = conj(sum_r v T1)
with l = a c + b: T0 = sum_a P[a] M0[a],  T1 = sum_a P[a] (a c M0[a] + M1[a]), where
M0[a, n] = sum_b conj(gK[a c + b]) E[n, b] and M1 the same with weights b: one GEMM per block.
"""

import math

import torch


def exp_at(x, positions):
    """exp(x[..., n] p) for p in positions -> (..., N, P), the phase reduced mod 2 pi in float64."""
    real = x.real.dtype
    magnitude = torch.exp(x.real.unsqueeze(-1) * positions.to(real))
    phase = torch.remainder(x.imag.double().unsqueeze(-1) * positions.double(), 2 * math.pi).to(real)
    return torch.polar(magnitude, phase)


def step_size(L):
    """c: a power of two near sqrt(L) (at least 32 so the GEMMs have some width), at most L."""
    return min(L, max(32, 1 << round(math.log2(max(L, 1)) / 2)))


def tables(x, L, c):
    """E (G, N, c) = exp(x b), P (G, La, N) = exp(x a c)."""
    La = -(-L // c)
    b = torch.arange(c, device=x.device)
    E = exp_at(x, b)
    P = exp_at(x, torch.arange(La, device=x.device) * c).transpose(-1, -2).contiguous()
    return E, P


def rows_per_block(G, R, N, c, budget):
    """How many a's to take at once so that one block holds about `budget` complex numbers."""
    return max(1, budget // (G * R * max(N, c)))


class BlockedVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, x, L, budget):  # v (R, G, N), x (G, N) -> K (R, G, L)
        ctx.save_for_backward(v, x)
        ctx.L, ctx.budget = L, budget
        R, G, N = v.shape
        c = step_size(L)
        E, P = tables(x, L, c)
        La = P.shape[1]
        vg = v.transpose(0, 1)  # (G, R, N)
        K = v.new_empty(R, G, L)
        ab = rows_per_block(G, R, N, c, budget)
        for a0 in range(0, La, ab):
            a1 = min(La, a0 + ab)
            A = (P[:, a0:a1, None, :] * vg[:, None]).reshape(G, (a1 - a0) * R, N)  # (G, (a r), N)
            out = (A @ E).view(G, a1 - a0, R, c).permute(2, 0, 1, 3).reshape(R, G, (a1 - a0) * c)
            l1 = min(L, a1 * c)
            K[:, :, a0 * c : l1] = out[:, :, : l1 - a0 * c]
        return K

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):  # gK (R, G, L)
        v, x = ctx.saved_tensors
        need_v, need_x = ctx.needs_input_grad[:2]
        L, R, G, N = ctx.L, *v.shape
        c = step_size(L)
        E, P = tables(x, L, c)
        La = P.shape[1]
        Et = E.transpose(-1, -2)  # (G, c, N)
        b = torch.arange(c, device=x.device).to(x.real.dtype)
        T0 = v.new_zeros(G, R, N) if need_v else None
        T1 = v.new_zeros(G, R, N) if need_x else None
        ab = rows_per_block(G, R, N, c, ctx.budget)
        for a0 in range(0, La, ab):
            a1 = min(La, a0 + ab)
            l1 = min(L, a1 * c)
            g = gK[:, :, a0 * c : l1].conj()
            if l1 - a0 * c < (a1 - a0) * c:  # last block: pad to whole rows of c
                g = torch.nn.functional.pad(g, (0, (a1 - a0) * c - (l1 - a0 * c)))
            g = g.reshape(R, G, a1 - a0, c).permute(1, 2, 0, 3)  # (G, a, R, c)
            rows = g if not need_x else torch.cat((g, g * b), dim=1)  # (G, a or 2a, R, c)
            M = (rows.reshape(G, -1, c) @ Et).view(G, -1, R, N)
            M0, Pa = M[:, : a1 - a0], P[:, a0:a1, None, :]  # (G, a, R, N), (G, a, 1, N)
            if need_v:
                T0 += (Pa * M0).sum(1)
            if need_x:
                ac = (torch.arange(a0, a1, device=x.device) * c).to(x.real.dtype)[None, :, None, None]
                T1 += (Pa * (ac * M0 + M[:, a1 - a0 :])).sum(1)
        grad_v = T0.conj().transpose(0, 1) if need_v else None
        grad_x = (v.transpose(0, 1) * T1).sum(1).conj() if need_x else None
        return grad_v, grad_x, None, None


def groups(v, x):
    """Lay out v (..., N) and x (..., N) as v3 (R, G, N) and x2 (G, N), x2 shared by the R rows:
    R is the product of the leading dimensions where x has size 1 (all of them when x is (N,))."""
    batch = tuple(torch.broadcast_shapes(v.shape[:-1], x.shape[:-1]))
    N, d = v.shape[-1], len(batch)
    xs = (1,) * (d - (x.dim() - 1)) + tuple(x.shape[:-1])
    k = next((i for i, s in enumerate(xs) if s != 1), d)  # leading dimensions x is broadcast over
    if xs[k:] == batch[k:]:
        R, G, x2 = math.prod(batch[:k]), math.prod(batch[k:]), x.reshape(-1, N)
    else:  # x broadcast elsewhere: one group per row
        R, G, x2 = 1, math.prod(batch), x.expand(*batch, N).reshape(-1, N)
    return v.expand(*batch, N).reshape(R, G, N), x2, batch


def vandermonde(v, x, L, budget=1 << 21):
    """K[..., l] = sum_n v[..., n] exp(x[..., n] l), l < L; `budget`: complex numbers per block."""
    dtype = torch.promote_types(v.dtype, x.dtype)
    v3, x2, batch = groups(v.to(dtype), x.to(dtype))
    return BlockedVandermonde.apply(v3, x2, L, budget).reshape(*batch, L)
