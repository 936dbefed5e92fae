"""src/ops/path_attn: the reference's loop against the definition written as explicit matrix
products; the chunked UT path against reference.py, forward and every input's gradient, with and
without the forget gate; against fla's naive_path_attn (when fla-core is installed); identities
(beta = 0 is plain causal attention, one repeated reflection alternates); the dispatcher.

Tolerances: float64 against float64 agrees to rounding (1e-10). float32 against the float64
reference: the triangular solves of the UT form with beta in (0, 2) and T products of up to 70
reflections, O(1) values: 1e-4 (measured error ~1e-6). fla's naive computes in float32: 1e-4.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive
from op_backends import compare, grads

from src.ops.path_attn import DISPATCH, chunked, path_attn, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-4, atol=1e-4)
# (B, T, H, K, V, chunk): T = 1, odd T, T not a multiple of the chunk, one chunk, K not a power of two
SHAPES = [(2, 1, 2, 8, 8, 64), (2, 7, 1, 5, 3, 4), (1, 70, 2, 6, 9, 16), (2, 33, 3, 4, 4, 8), (1, 24, 1, 3, 5, 64)]


def inputs(B, T, H, K, V, gated=True, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    w, beta = F.normalize(r(B, T, H, K), dim=-1), 2 * torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    g = F.logsigmoid(r(B, T, H)) if gated else None
    return [None if t is None else t.to(dtype) for t in (q, k, v, w, beta, g)]


def test_the_reference_is_the_product_of_householder_matrices():
    q, k, v, w, beta, g = inputs(1, 6, 1, 3, 2)
    Hs = [torch.eye(3, dtype=torch.float64) - beta[0, s, 0] * torch.outer(w[0, s, 0], w[0, s, 0]) for s in range(6)]
    logits = torch.full((6, 6), float("-inf"), dtype=torch.float64)
    for i in range(6):
        for j in range(i + 1):
            P = torch.eye(3, dtype=torch.float64)
            for s in range(i, j, -1):  # H_i H_{i-1} ... H_{j+1}
                P = P @ Hs[s]
            G = g[0, j + 1 : i + 1, 0].sum()
            logits[i, j] = (q[0, i, 0] @ P @ k[0, j, 0] + G) / 3**0.5
    want = logits.softmax(-1) @ v[0, :, 0]
    torch.testing.assert_close(reference.path_attn(q, k, v, w, beta, g)[0, :, 0], want, **F64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_chunked_matches_the_reference(shape, gated, dtype, tol):
    *dims, chunk = shape
    compare(lambda *a: chunked.path_attn(*a, chunk=chunk), reference.path_attn, inputs(*dims, gated, dtype), tol)


@pytest.mark.parametrize("shape, chunk", [((2, 1, 2, 8, 8), 16), ((2, 45, 2, 8, 6), 16)])
def test_against_fla_naive_path_attn(shape, chunk):
    naive = fla_naive("path_attn/naive.py")
    x32 = [t.requires_grad_() for t in inputs(*shape, dtype=torch.float32, seed=3)]
    x64 = [t.detach().double().requires_grad_() for t in x32]
    got = path_attn(*x64, scale=0.4)
    want = naive.naive_path_attn(*x32, scale=0.4, chunk_size=chunk)
    torch.testing.assert_close(got.float(), want, **F32)
    for gx, gy in zip(grads(got, x64), grads(want, x32)):
        torch.testing.assert_close(gx.float(), gy, **F32)


def test_beta_zero_is_causal_softmax_attention():
    q, k, v, w, beta, _ = inputs(2, 40, 2, 5, 3)
    plain = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(path_attn(q, k, v, w, torch.zeros_like(beta)), plain, **F64)


def test_one_repeated_reflection_alternates():
    """w_s = w, beta_s = 2: H_i ... H_{j+1} = (I - 2 w w^T)^(i-j), the identity when i - j is even."""
    q, k, v, w, beta, _ = inputs(1, 40, 2, 5, 3)
    w = w[:, :1].expand_as(w)
    reflected = k - 2 * (k * w).sum(-1, keepdim=True) * w
    i, j = torch.arange(40)[:, None], torch.arange(40)[None, :]
    keys = torch.where(((i - j) % 2 == 0)[None, None, :, :, None], k.transpose(1, 2)[:, :, None],
                       reflected.transpose(1, 2)[:, :, None])  # (B, H, i, j, K)
    logits = torch.einsum("bhik,bhijk->bhij", q.transpose(1, 2), keys) / 5**0.5
    want = torch.einsum("bhij,bjhv->bihv", logits.masked_fill(j > i, float("-inf")).softmax(-1), v)
    torch.testing.assert_close(path_attn(q, k, v, w, torch.full_like(beta, 2.0)), want, **F64)


def test_dispatch_on_cpu():
    x = inputs(1, 5, 1, 4, 4)
    assert DISPATCH.resolve("auto", torch.device("cpu"), x) == "torch"
    with pytest.raises(ConfigError, match="does not run on cpu"):
        path_attn(*x, backend="triton")
    with pytest.raises(ValueError, match="w .* must have k's shape"):
        path_attn(*x[:3], x[3][..., :2], *x[4:])
