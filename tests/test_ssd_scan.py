"""src/ops/ssd_scan: the chunked torch path and mamba-ssm's Triton kernels (gpu.py) against
reference.py, forward and backward, at awkward shapes; SSD as the selective scan with a scalar A
per head.

Tolerances: float64 paths vs the float64 loop agree to rounding (1e-10: the blocked form only
reorders products and sums). float32 paths vs a float64 reference: errors of a few float32
ulps times the number of accumulated terms (L <= 70 here, values O(1)), so 1e-4 relative/absolute.
"""

import importlib.util

import pytest
import torch

from op_backends import compare, gen, need, needs_cuda

from src.ops.selective_scan import reference as selective_reference
from src.ops.ssd_scan import chunked, gpu, reference, ssd_scan

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


def test_ssd_float32_keeps_its_precision_in_long_chunks():
    """Chunks of 256 with strong decays (A down to -16): the in-chunk decays exp(cs_i - cs_j)
    come from differences of cumulative sums of up to ~400, whose leading digits cancel; taken
    in float32 they would cost ~10x the error (measured 9.6e-6 of max |y| against 8.1e-7)."""
    g = gen()
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, B, C = r(1, 512, 2, 8), r(1, 512, 1, 8), r(1, 512, 1, 8)
    dt = torch.nn.functional.softplus(r(1, 512, 2) - 1)
    A = -torch.tensor([1.0, 16.0], dtype=torch.float64)
    want = reference.ssd_scan(x, dt, A, B, C)
    got = ssd_scan(*(t.float() for t in (x, dt, A, B, C)), chunk_size=256, backend="torch")
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
