"""Cauchy kernel, the obvious way (the oracle for every other path).

    K[..., l] = sum_n v[..., n] / (z[l] - w[..., n])

Materialises the [..., N, L] matrix; use complex128 inputs for exact checks.
"""


def cauchy(v, z, w):  # v, w: (..., N) complex; z: (L,) complex -> (..., L)
    return (v.unsqueeze(-1) / (z - w.unsqueeze(-1))).sum(dim=-2)
