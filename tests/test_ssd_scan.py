"""src/ops/ssd_scan: the chunked torch path and mamba-ssm's Triton kernels (gpu.py) against
reference.py, forward and backward, at awkward shapes; SSD as the selective scan with a scalar A
per head; signed transitions (neg_eigval), also exactly 0 and -1.

Tolerances: float64 paths vs the float64 loop agree to rounding (1e-10: the blocked form only
reorders products and sums). float32 paths vs a float64 reference: errors of a few float32
ulps times the number of accumulated terms (L <= 70 here, values O(1)), so 1e-4 relative/absolute.
"""

import importlib.util
import math

import pytest
import torch

from op_backends import compare, gen, need, needs_cuda

from src.ops.selective_scan import reference as selective_reference
from src.ops.ssd_scan import DISPATCH, chunked, gpu, reference, ssd_scan
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # same arithmetic up to reordering
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding accumulated over <= 70 steps


def ssd_inputs(batch, L, H, P, G, N, dtype, seed=0):
    g = gen(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, dt, A = r(batch, L, H, P), r(batch, L, H), -torch.exp(r(H) * 0.5)
    B, C, D, z, bias, h0 = r(batch, L, G, N), r(batch, L, G, N), r(H), r(batch, L, H, P), r(H), r(batch, H, P, N)
    return [t.to(dtype) for t in (x, dt, A, B, C, D, z, bias, h0)]


SSD = [(2, 1, 2, 3, 1, 4, 8), (1, 13, 4, 2, 2, 3, 4), (2, 33, 2, 5, 1, 1, 8), (1, 70, 3, 2, 3, 2, 64), (1, 9, 1, 1, 1, 2, 16)]


@pytest.mark.parametrize("batch, L, H, P, G, N, chunk", SSD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ssd_scan_matches_reference(batch, L, H, P, G, N, chunk, dtype):
    tol = F32 if dtype == torch.float32 else F64
    kw = dict(dt_softplus=True, return_final_states=True)
    compare(lambda x, dt, A, B, C, D, z, bias, h0: ssd_scan(x, dt, A, B, C, chunk, D, z, bias,
                                                                 initial_states=h0, backend="torch", **kw),
            lambda x, dt, A, B, C, D, z, bias, h0: reference.ssd_scan(x, dt, A, B, C, D, z, bias, initial_states=h0,
                                                                      **kw),
            ssd_inputs(batch, L, H, P, G, N, dtype), tol)


@pytest.mark.parametrize("neg_eigval", [False, True])
def test_ssd_float32_keeps_its_precision_in_long_chunks(neg_eigval):
    """Chunks of 256 with strong decays (A down to -16): the in-chunk decays exp(cs_i - cs_j)
    come from differences of cumulative sums of up to ~400, whose leading digits cancel; taken
    in float32 they would cost ~10x the error (measured 9.6e-6 of max |y| against 8.1e-7).
    The signed transitions' float32 products (56% of them negative here) cancel nothing
    (measured 1.1e-7)."""
    g = gen()
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, B, C = r(1, 512, 2, 8), r(1, 512, 1, 8), r(1, 512, 1, 8)
    dt = torch.nn.functional.softplus(r(1, 512, 2) - 1)
    A = -torch.tensor([1.0, 16.0], dtype=torch.float64)
    want = reference.ssd_scan(x, dt, A, B, C, neg_eigval=neg_eigval)
    got = ssd_scan(*(t.float() for t in (x, dt, A, B, C)), chunk_size=256, neg_eigval=neg_eigval, backend="torch")
    assert (got.double() - want).abs().max() < 3e-6 * want.abs().max()


def test_ssd_is_the_selective_scan_with_scalar_a_per_head():
    """H heads of P channels with A shared by a head's channels and B, C shared by all: S6."""
    x, dt, A, B, C, *_ = ssd_inputs(2, 17, 3, 2, 1, 4, torch.float64)
    dt = dt.abs()
    out = ssd_scan(x, dt, A, B, C, chunk_size=8)  # (b, L, H, P)
    u = x.flatten(2).transpose(1, 2)  # (b, H P, L)
    delta = dt.repeat_interleave(2, dim=2).transpose(1, 2)
    A_full = A.repeat_interleave(2)[:, None].expand(6, 4)
    want = selective_reference.selective_scan(u, delta, A_full, B[:, :, 0].transpose(1, 2), C[:, :, 0].transpose(1, 2))
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), want, **F64)


def test_segsum():
    x = torch.tensor([1.0, 2.0, 3.0])
    inf = float("-inf")
    expected = torch.tensor([[0.0, inf, inf], [2.0, 0.0, inf], [5.0, 3.0, 0.0]])
    torch.testing.assert_close(chunked.segsum(x), expected)


def test_segprod():
    x = torch.tensor([2.0, 3.0, -1.0, 0.0])
    expected = torch.tensor([[1.0, 0, 0, 0], [3, 1, 0, 0], [-3, -1, 1, 0], [0, 0, 0, 1]])
    torch.testing.assert_close(chunked.segprod(x), expected)


@pytest.mark.parametrize("batch, L, H, P, G, N, chunk", SSD)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_transitions_match_reference(batch, L, H, P, G, N, chunk, dtype):
    """neg_eigval: dt (before softplus) shifted up by 1.5, so that many of 2 exp(dt A) - 1 are
    negative; outputs, final state and every input's gradient."""
    tol = F32 if dtype == torch.float32 else F64
    inputs = ssd_inputs(batch, L, H, P, G, N, dtype)
    inputs[1] = inputs[1] + 1.5
    a = 2 * torch.exp(torch.nn.functional.softplus(inputs[1].double() + inputs[7].double()) * inputs[2].double()) - 1
    assert (a < 0).any()
    kw = dict(dt_softplus=True, return_final_states=True, neg_eigval=True)
    compare(lambda x, dt, A, B, C, D, z, bias, h0: ssd_scan(x, dt, A, B, C, chunk, D, z, bias, initial_states=h0,
                                                            backend="torch", **kw),
            lambda x, dt, A, B, C, D, z, bias, h0: reference.ssd_scan(x, dt, A, B, C, D, z, bias, initial_states=h0,
                                                                      **kw), inputs, tol)


def zero_transitions(L=21):
    """Inputs (float64) where head 0's transition 2 exp(dt A) - 1 is exactly 0 at t = 0, 3, 6, ...
    (dt = 1, A = -log 2), among negative and positive ones."""
    x, dt, _, B, C, *_, h0 = ssd_inputs(2, L, 2, 3, 1, 4, torch.float64)
    dt = (dt.abs() + 0.5).index_fill(1, torch.arange(0, L, 3), 1.0)
    A = torch.tensor([-math.log(2), -2.0], dtype=torch.float64)
    assert ((2 * torch.exp(dt * A) - 1)[..., 0][:, ::3] == 0).all()
    return x, dt, A, B, C, h0


def test_signed_reference_gradcheck():
    """The oracle's own gradients (autograd through its loop) against finite differences,
    with transitions exactly 0 among the signed ones."""
    inputs = [t[:1, :7] if t.dim() > 1 and t.shape[1] == 21 else t[:1] if t.dim() == 4 else t
              for t in zero_transitions()]
    assert torch.autograd.gradcheck(
        lambda x, dt, A, B, C, h0: reference.ssd_scan(x, dt, A, B, C, initial_states=h0, neg_eigval=True,
                                                      return_final_states=True),
        [t.clone().requires_grad_() for t in inputs])


@pytest.mark.parametrize("chunk", [3, 4, 8])
def test_signed_transitions_through_zero(chunk):
    """Transitions exactly 0, at chunk starts, ends and inside (chunks of 3, 4, 8): the chunked
    products are exact there, values and gradients (a log magnitude would need a floor, whose
    derivative loses the gradient of that step: chunked.py's docstring)."""
    kw = dict(return_final_states=True, neg_eigval=True)
    compare(lambda x, dt, A, B, C, h0: ssd_scan(x, dt, A, B, C, chunk, initial_states=h0, backend="torch", **kw),
            lambda x, dt, A, B, C, h0: reference.ssd_scan(x, dt, A, B, C, initial_states=h0, **kw),
            list(zero_transitions()), F64)


@pytest.mark.parametrize("L, chunk", [(1, 4), (12, 4), (35, 8)])
def test_signed_transition_minus_one_alternates_the_state(L, chunk):
    """dt A -> -inf: the signed transition is exactly -1, so with no input h_L = (-1)^L h_0 (over
    several chunks: the chunk recurrence carries the sign), where the unsigned one forgets h_0."""
    x, dt, _, B, C, *_, h0 = ssd_inputs(2, L, 2, 3, 1, 4, torch.float32)
    x, dt, A = torch.zeros_like(x), torch.ones_like(dt), torch.full((2,), -1e4)
    _, final = ssd_scan(x, dt, A, B, C, chunk, initial_states=h0, return_final_states=True, neg_eigval=True)
    assert torch.equal(final, h0 * (-1) ** L)
    _, final = ssd_scan(x, dt, A, B, C, chunk, initial_states=h0, return_final_states=True)
    assert torch.equal(final, torch.zeros_like(h0))


def test_triton_kernels_refuse_signed_transitions_and_auto_takes_torch(monkeypatch):
    """mamba-ssm's kernels form exp(dt A) themselves: an explicit `triton` refuses neg_eigval in
    one line, and `auto` on CUDA passes it by for `torch` (the verdicts stand in for a GPU here)."""
    x, dt, A, B, C, *_ = ssd_inputs(1, 9, 2, 2, 1, 3, torch.float32)
    with pytest.raises(ConfigError, match=r"backend='triton' does .*mamba-ssm's kernels have no signed transitions"):
        ssd_scan(x, dt, A, B, C, 8, neg_eigval=True, backend="triton")
    for name in ("triton", "torch"):
        monkeypatch.setitem(DISPATCH._verdicts, (name, "cuda"), None)
    monkeypatch.setattr(gpu, "real_on_cuda", lambda *tensors: None)  # as if on the GPU
    cuda = torch.device("cuda")
    args = (x, dt, A, B, C, 8, None, None, None, False, None, False)
    assert DISPATCH.resolve("auto", cuda, args + (False,)) == "triton"
    assert DISPATCH.resolve("auto", cuda, args + (True,)) == "torch"


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch, L, H, P, G, N, chunk", [(2, 33, 2, 8, 1, 16, 16), (1, 70, 4, 16, 2, 8, 64)])
def test_gpu_ssd_scan_matches_reference(batch, L, H, P, G, N, chunk):
    need("mamba_ssm")
    inputs = [t.cuda() for t in ssd_inputs(batch, L, H, P, G, N, torch.float32)]
    kw = dict(dt_softplus=True, return_final_states=True)
    compare(lambda x, dt, A, B, C, D, z, bias, h0: ssd_scan(x, dt, A, B, C, chunk, D, z, bias, initial_states=h0,
                                                                 backend="triton", **kw),
            lambda x, dt, A, B, C, D, z, bias, h0: reference.ssd_scan(x, dt, A, B, C, D, z, bias, initial_states=h0,
                                                                      **kw),
            inputs, dict(rtol=2e-3, atol=2e-3))  # Triton kernels use tf32 matmuls in places


@pytest.mark.gpu
@needs_cuda
def test_gpu_signed_transitions_take_the_torch_path():
    """On CUDA, `auto` with neg_eigval passes mamba-ssm's Triton kernels by and runs the chunked path."""
    inputs = [t.cuda() for t in ssd_inputs(2, 33, 2, 8, 1, 16, torch.float32)]
    inputs[1] = inputs[1] + 1.5
    args = (*inputs[:5], 16, None, None, None, False, None, False, True)
    assert DISPATCH.resolve("auto", inputs[0].device, args) == "torch"
    kw = dict(dt_softplus=True, return_final_states=True, neg_eigval=True)
    compare(lambda x, dt, A, B, C, D, z, bias, h0: ssd_scan(x, dt, A, B, C, 16, D, z, bias, initial_states=h0, **kw),
            lambda x, dt, A, B, C, D, z, bias, h0: reference.ssd_scan(x, dt, A, B, C, D, z, bias, initial_states=h0,
                                                                      **kw), inputs, F32)


def test_mamba_ssm_triton_kernels_import_without_its_cuda_extension(tmp_path, monkeypatch):
    """A MAMBA_SKIP_CUDA_BUILD install: mamba_ssm/__init__.py fails on selective_scan_cuda, and
    gpu._mamba_ssm() still makes mamba_ssm.ops.triton.* importable (a stand-in package here)."""
    import sys

    triton_dir = tmp_path / "mamba_ssm" / "ops" / "triton"
    triton_dir.mkdir(parents=True)
    (tmp_path / "mamba_ssm" / "__init__.py").write_text("import selective_scan_cuda_not_built\n")
    (tmp_path / "mamba_ssm" / "ops" / "__init__.py").write_text("")
    (triton_dir / "__init__.py").write_text("")
    (triton_dir / "ssd_combined.py").write_text("def mamba_chunk_scan_combined():\n    return 'ssd'\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in [m for m in sys.modules if m.split(".")[0] == "mamba_ssm"]:
        monkeypatch.delitem(sys.modules, name)
    try:
        with pytest.raises(ImportError, match="selective_scan_cuda_not_built"):
            __import__("mamba_ssm")
        gpu._mamba_ssm()
        from mamba_ssm.ops.triton.ssd_combined import mamba_chunk_scan_combined

        assert mamba_chunk_scan_combined() == "ssd"
    finally:
        for name in [m for m in sys.modules if m.split(".")[0] == "mamba_ssm"]:
            del sys.modules[name]


def test_without_mamba_ssm_the_ssd_kernel_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.delitem(__import__("sys").modules, "mamba_ssm", raising=False)
    with pytest.raises(ImportError, match="mamba-ssm is not installed"):
        gpu._mamba_ssm()
