"""Vandermonde kernel in blocks of positions, as batched matrix products, memory O(N * block).

    K[r, g, l] = sum_n v[r, g, n] exp(x[g, n] l),     l = 0 .. L-1
(x is shared by the R rows of a group g: DLR has G = 1, DSS has one group per feature h.)

Split l = a c + b with 0 <= b < c and 0 <= a < ceil(L / c). Since exp(x (a c + b)) =
exp(x a c) exp(x b),
    K[r, g, a c + b] = sum_n (v[r, g, n] P[g, a, n]) E[g, n, b],
    P[g, a, n] = exp(x[g, n] a c),   E[g, n, b] = exp(x[g, n] b):
for each group a GEMM [(a, r), n] x [n, b], with only G N (L/c + c) table entries instead of
G N L exponentials (each table is itself the product of two short ones, see exp_progression).
c ~ sqrt(R L) balances the tables against the products v P; blocks of a few a at a time keep
the memory at O(G R N block) beyond the output, at most `budget` complex numbers per buffer.

Phases: Im(x) l is reduced modulo 2 pi in float64 for both tables, so float32 kernels keep
their phase at l ~ 1e6 (Im(x) a c in float32 is off by ~0.05 rad there).

Backward (blocked as well, torch's convention grad = conj(dK/dinput) * grad_K):
    T0[r, g, n] = sum_l conj(gK[r, g, l]) exp(x l)       ->  grad_v = conj(T0)
    T1[r, g, n] = sum_l conj(gK[r, g, l]) l exp(x l)     ->  grad_x = conj(sum_r v T1)
with l = a c + b: T0 = sum_a P[a] M0[a], T1 = sum_a P[a] M1[a], where
M0[a, n] = sum_b conj(gK[a c + b]) E[n, b] and M1 the same with weights l: one GEMM per block.
"""

import math

import torch


def exp_at(x, positions):
    """exp(x[..., n] p) for p in positions -> (..., N, P), the phase reduced mod 2 pi in float64."""
    real = x.real.dtype
    magnitude = torch.exp(x.real.unsqueeze(-1) * positions.to(real))
    phase = torch.remainder(x.imag.double().unsqueeze(-1) * positions.double(), 2 * math.pi).to(real)
    return torch.polar(magnitude, phase)


def exp_progression(x, step, count):
    """exp(x[..., n] step j) for j < count -> (..., N, count): for long progressions, a product
    exp(x step k j1) exp(x step j0) of two short tables (j = k j1 + j0, k ~ sqrt(count)), so
    2 sqrt(count) exponentials per n and one complex product per entry (2 roundings more)."""
    if count <= 64:
        return exp_at(x, torch.arange(count, device=x.device) * step)
    k = math.isqrt(count - 1) + 1
    high = exp_at(x, torch.arange(-(-count // k), device=x.device) * (step * k))  # (..., N, count/k)
    low = exp_at(x, torch.arange(k, device=x.device) * step)  # (..., N, k)
    return (high.unsqueeze(-1) * low.unsqueeze(-2)).flatten(-2)[..., :count]


def step_size(L, R, G, N, budget):
    """c: the exponentials cost G N (L/c + c) and the products with P cost about R G N L/c, so c
    near sqrt(R L) (a power of two, at least 32 for GEMM width, at most L), and E (G, N, c)
    within the budget."""
    c = 1 << round(math.log2(max(1, R * L)) / 2)
    c = min(c, 1 << max(0, (budget // max(1, G * N)).bit_length() - 1))
    return max(1, min(L, max(32, c)))


def tables(x, L, c):
    """E (G, N, c) = exp(x b), P (G, La, N) = exp(x a c)."""
    E = exp_progression(x, 1, c)
    P = exp_progression(x, c, -(-L // c)).transpose(-1, -2).contiguous()
    return E, P


def rows_per_block(G, R, N, c, budget):
    """How many a's to take at once so that one block holds about `budget` complex numbers."""
    return max(1, budget // (G * R * max(N, c)))


class BlockedVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, x, L, budget):  # v (R, G, N), x (G, N) -> K (R, G, L)
        R, G, N = v.shape
        c = step_size(L, R, G, N, budget)
        E, P = tables(x, L, c)
        ctx.save_for_backward(v, x)
        ctx.L, ctx.budget, ctx.tables = L, budget, (c, E, P)  # E, P: O(G N (c + L/c)), reused
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
        c, E, P = ctx.tables
        La = P.shape[1]
        Et = E.transpose(-1, -2)  # (G, c, N)
        l = torch.arange(L, device=x.device).to(x.real.dtype)
        T = v.new_zeros(G, need_v + need_x, R, N)  # T0 and/or T1
        ab = rows_per_block(G, R, N, c, ctx.budget)
        for a0 in range(0, La, ab):
            a1 = min(La, a0 + ab)
            l0, l1 = a0 * c, min(L, a1 * c)
            g = gK[:, :, l0:l1].conj()
            weighted = ([g] if need_v else []) + ([g * l[l0:l1]] if need_x else [])  # T0: g, T1: g l
            rows = torch.stack(weighted, 1)  # (R, S, G, l1 - l0)
            if l1 - l0 < (a1 - a0) * c:  # last block: pad to whole rows of c
                rows = torch.nn.functional.pad(rows, (0, (a1 - a0) * c - (l1 - l0)))
            rows = rows.view(R, -1, G, a1 - a0, c).permute(2, 3, 1, 0, 4)  # (G, a, S, R, c)
            M = (rows.reshape(G, -1, c) @ Et).view(G, a1 - a0, -1, R, N)  # sum_b g[a c + b] E[b]
            T += (M * P[:, a0:a1, None, None, :]).sum(1)  # sum_a P[a] M[a]
        T = T.transpose(0, 1)  # (S, G, R, N)
        grad_v = T[0].conj().transpose(0, 1) if need_v else None
        grad_x = (v.transpose(0, 1) * T[-1]).sum(1).conj() if need_x else None
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


def vandermonde(v, x, L, budget=1 << 23):
    """K[..., l] = sum_n v[..., n] exp(x[..., n] l), l < L; `budget`: complex numbers per block."""
    dtype = torch.promote_types(v.dtype, x.dtype)
    v3, x2, batch = groups(v.to(dtype), x.to(dtype))
    return BlockedVandermonde.apply(v3, x2, L, budget).reshape(*batch, L)
