"""src/ops/forgetting_attn: the blocked path (torch's fused attention with the gate as two extra
coordinates) against reference.py, forward and every input's gradient; against fla's
naive_forgetting_attn (when fla-core is installed); the gate's limits (no forgetting is causal
softmax attention, total forgetting reads the current value only); the dispatcher.

Tolerances: float64 against float64 agrees to rounding (1e-10). float32 against the float64
reference: the gate enters as G_i - G_j, two float32 prefix sums of |G| <= ~80 here, off by ~eps
|G| ~ 1e-5, so 1e-4. fla's naive computes in float32 whatever it is given: 1e-4 too.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import FLASH, attention_kernels, fla_naive
from op_backends import compare, grads

from src.ops.forgetting_attn import DISPATCH, blocked, forgetting_attn, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-4, atol=1e-4)
# (B, T, H, K, V): T = 1, odd T, K not a power of two, K != V, H = 1
SHAPES = [(2, 1, 2, 8, 8), (2, 7, 1, 5, 3), (1, 77, 2, 6, 9), (2, 33, 3, 4, 4)]


def inputs(B, T, H, K, V, dtype=torch.float64, seed=0):
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    return [t.to(dtype) for t in (r(B, T, H, K), r(B, T, H, K), r(B, T, H, V), F.logsigmoid(r(B, T, H)))]


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_blocked_matches_the_reference(shape, dtype, tol):
    compare(blocked.forgetting_attn, reference.forgetting_attn, inputs(*shape, dtype=dtype), tol)


@pytest.mark.parametrize("K, V", [(64, 64), (6, 9)])
def test_blocked_runs_the_flash_kernel(K, V):
    """The gate's two coordinates make q, k wider than v: padded to one width, torch takes its
    flash kernel on CPU forward and backward (memory O(T)), not the dense fallback."""
    q, k, v, g = (t.float().requires_grad_() for t in inputs(2, 40, 2, K, V))
    assert attention_kernels(lambda: blocked.forgetting_attn(q, k, v, g).sum().backward()) == FLASH


def test_a_given_scale_is_used():
    x = inputs(2, 9, 2, 4, 4)
    compare(lambda *a: blocked.forgetting_attn(*a, scale=0.3), lambda *a: reference.forgetting_attn(*a, scale=0.3),
            x, F64)


@pytest.mark.parametrize("shape", [(2, 1, 2, 8, 8), (2, 40, 2, 6, 6)])
def test_against_fla_naive_forgetting_attn(shape):
    naive = fla_naive("forgetting_attn/naive.py")
    x32 = [t.requires_grad_() for t in inputs(*shape, dtype=torch.float32, seed=3)]
    x64 = [t.detach().double().requires_grad_() for t in x32]
    got, want = forgetting_attn(*x64), naive.naive_forgetting_attn(*x32)
    torch.testing.assert_close(got.float(), want, **F32)
    for gx, gy in zip(grads(got, x64), grads(want, x32)):
        torch.testing.assert_close(gx.float(), gy, **F32)


def test_no_forgetting_is_causal_softmax_attention():
    q, k, v, g = inputs(2, 20, 2, 5, 3)
    plain = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)), is_causal=True).transpose(1, 2)
    torch.testing.assert_close(forgetting_attn(q, k, v, torch.zeros_like(g)), plain, **F64)


def test_total_forgetting_reads_the_current_value_only():
    q, k, v, g = inputs(2, 20, 2, 5, 3)
    torch.testing.assert_close(forgetting_attn(q, k, v, torch.full_like(g, -1e3)), v, **F64)


def test_dispatch_on_cpu():
    x = inputs(1, 5, 1, 4, 4)
    assert DISPATCH.resolve("auto", torch.device("cpu"), x) == "torch"
    with pytest.raises(ConfigError, match="does not run on cpu"):
        forgetting_attn(*x, backend="triton")
    with pytest.raises(ValueError, match=r"g has shape \(1, 5\)"):
        forgetting_attn(*x[:3], x[3][..., 0])
