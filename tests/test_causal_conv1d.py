"""src/ops/causal_conv1d: the torch path and causal-conv1d's kernel (gpu.py) against
reference.py, forward and backward; the dispatcher's choice without a kernel.

float32 against the float64 reference: a few terms per output, 1e-4.
"""

import pytest
import torch

from op_backends import compare, gen, need, needs_cuda

from src.ops.causal_conv1d import DISPATCH, causal_conv1d, reference

F32 = dict(rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("L, K", [(1, 4), (9, 4), (5, 2), (3, 7), (6, 1)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("initial", [False, True])
def test_causal_conv1d_matches_reference(L, K, activation, initial):
    g = gen()
    x, w, b = torch.randn(2, 3, L, generator=g), torch.randn(3, K, generator=g), torch.randn(3, generator=g)
    s = torch.randn(2, 3, K - 1, generator=g) if initial else None
    compare(lambda x, w, b, s: causal_conv1d(x, w, b, activation, s),
            lambda x, w, b, s: reference.causal_conv1d(x, w, b, activation, s), [x, w, b, s], F32)


def test_causal_conv1d_is_torch_conv1d():
    g = gen()
    x, w, b = torch.randn(2, 3, 11, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (3, 0)), w[:, None], b, groups=3)
    torch.testing.assert_close(causal_conv1d(x, w, b), want)


def test_auto_uses_torch_without_a_kernel_and_logs_once(caplog):
    DISPATCH.reset()
    x, w = torch.randn(1, 2, 3), torch.randn(2, 4)
    with caplog.at_level("INFO", logger="src.ops.dispatch"):
        assert DISPATCH.resolve("auto", x.device, (x, w)) == "torch"
        causal_conv1d(x, w)
        causal_conv1d(x, w)
    assert [r.getMessage() for r in caplog.records] == ["causal_conv1d: backend=auto -> torch on cpu"]


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("L", [1, 9, 1000])
def test_gpu_causal_conv1d_matches_reference(L):
    need("causal_conv1d")
    g = gen()
    x, w, b = (torch.randn(*s, generator=g).cuda() for s in ((2, 8, L), (8, 4), (8,)))
    compare(lambda x, w, b: causal_conv1d(x, w, b, "silu", backend="cuda"),
            lambda x, w, b: reference.causal_conv1d(x, w, b, "silu"), [x, w, b], dict(rtol=1e-3, atol=1e-3))
