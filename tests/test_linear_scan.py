"""src/ops/linear_scan: the blocked torch path, the C loop (cpu.py) and the GPU kernels (gpu.py)
against reference.py, forward and backward, at awkward shapes; the dispatcher's choices.

Tolerances: float64 paths vs the float64 loop agree to rounding (1e-10: the blocked form only
reorders products and sums). float32 paths vs a float64 reference: errors of a few float32
ulps times the number of accumulated terms (L <= 70 here, values O(1)), so 1e-4 relative/absolute.
"""

import pytest
import torch

from conftest import need_c_loop
from op_backends import compare, gen, need, needs_cuda

from src.ops import _cpu
from src.ops.linear_scan import DISPATCH, chunked, linear_scan, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # same arithmetic up to reordering
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding accumulated over <= 70 steps


LINEAR_SHAPES = [(3, 1), (2, 5, 7), (1, 64), (4, 70), (2, 1, 3, 33), (5,)]


def linear_inputs(shape, dtype, h0, seed=0):
    g = gen(seed)
    a = torch.rand(shape, generator=g, dtype=torch.float64) * 1.2 - 0.1  # includes negative a and |a| > 1
    b = torch.randn(shape, generator=g, dtype=torch.float64)
    h = torch.randn(shape[:-1], generator=g, dtype=torch.float64) if h0 else None
    if dtype.is_complex:
        a = torch.polar(a.abs(), torch.randn(shape, generator=g, dtype=torch.float64))
        b = torch.complex(b, torch.randn(shape, generator=g, dtype=torch.float64))
        h = None if h is None else torch.complex(h, torch.randn(shape[:-1], generator=g, dtype=torch.float64))
    cast = lambda t: None if t is None else t.to(dtype)  # noqa: E731
    return cast(a), cast(b), cast(h)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("shape", LINEAR_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.complex128, torch.complex64])
@pytest.mark.parametrize("h0", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_linear_scan_matches_reference(backend, shape, dtype, h0, reverse):
    if backend == "cpu":
        need_c_loop()
    tol = F64 if dtype in (torch.float64, torch.complex128) else F32
    compare(lambda a, b, h: linear_scan(a, b, h, reverse=reverse, backend=backend),
            lambda a, b, h: reference.linear_scan(a, b, h, reverse=reverse), linear_inputs(shape, dtype, h0), tol)


@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_linear_scan_splits_rows_over_threads(reverse):
    """15 rows (odd: a row group of the C loop is left over) of 4500 steps: above the size where
    the rows are split over threads. float64 against the float64 loop, gradients included."""
    need_c_loop()
    assert 15 * 4500 >= _cpu.PARALLEL_FROM and torch.get_num_threads() >= 1
    a, b, h = linear_inputs((3, 5, 4500), torch.float64, True)
    compare(lambda a, b, h: linear_scan(a * 0.9, b, h, reverse=reverse, backend="cpu"),
            lambda a, b, h: reference.linear_scan(a * 0.9, b, h, reverse=reverse), [a, b, h], F64)


@pytest.mark.parametrize("dtype", [torch.float64, torch.complex128])
@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_linear_scan_on_time_major_views(dtype, reverse):
    """(B, L, R) activations seen as (B, R, L), as the layers pass them: the C loop scans them in
    their layout, its forward in groups of 256, 128 and 64 rows and a partial one (485 = 256 +
    128 + 64 + 37 rows; 2 x 485 x 70 elements are also above the size where rows are split
    over threads, at multiples of 64). Against the float64 loop, gradients included."""
    need_c_loop()
    a, b, h = linear_inputs((2, 485, 70), dtype, True)
    a, b = (x.transpose(1, 2).contiguous().transpose(1, 2) for x in (a, b))  # (2, 485, 70) views of (2, 70, 485)
    assert b.transpose(1, 2).is_contiguous() and 2 * 485 * 70 >= _cpu.PARALLEL_FROM
    compare(lambda a, b, h: linear_scan(a, b, h, reverse=reverse, backend="cpu"),
            lambda a, b, h: reference.linear_scan(a, b, h, reverse=reverse), [a, b, h], F64)


def test_cpu_linear_scan_leaves_gradients_of_constants_alone():
    """Only b needs a gradient: the C backward skips grad_a and grad_h0 and still gets b's."""
    need_c_loop()
    a, b, h = linear_inputs((2, 3, 9), torch.float64, True)
    b.requires_grad_()
    (got,) = torch.autograd.grad(linear_scan(a, b, h, backend="cpu").sum(), b)
    (want,) = torch.autograd.grad(reference.linear_scan(a, b, h).sum(), b)
    torch.testing.assert_close(got, want, **F64)


def test_linear_scan_broadcasts_and_handles_zero_gates():
    g = gen()
    a = torch.rand(1, 37, generator=g, dtype=torch.float64)
    a[0, 5] = 0.0  # a reset: h_5 = b_5 exactly
    b = torch.randn(4, 37, generator=g, dtype=torch.float64)
    h = linear_scan(a, b)
    torch.testing.assert_close(h, reference.linear_scan(a.expand(4, 37), b), **F64)
    torch.testing.assert_close(h[:, 5], b[:, 5], rtol=0, atol=0)


def test_linear_scan_long_decay_stays_finite_in_float32():
    """a = 1e-3 everywhere: products over a chunk underflow to 0 (no division, so no inf/nan)."""
    a = torch.full((2, 4096), 1e-3)
    b = torch.randn(2, 4096, generator=gen())
    h = linear_scan(a, b)
    torch.testing.assert_close(h[:, 1:], b[:, 1:] + 1e-3 * h[:, :-1], rtol=1e-6, atol=1e-6)  # one step, float32


def test_auto_takes_the_c_loop_for_the_linear_scan_on_cpu(caplog):
    need_c_loop()
    DISPATCH.reset()
    a, b = torch.rand(2, 5), torch.randn(2, 5)
    with caplog.at_level("INFO", logger="src.ops.dispatch"):
        assert DISPATCH.resolve("auto", a.device, (a, b)) == "cpu"
        assert DISPATCH.resolve("auto", a.device, (a.half(), b.half())) == "torch"  # no float16 C loop
    assert [r.getMessage() for r in caplog.records] == [
        "linear_scan: backend=auto -> cpu on cpu",
        "linear_scan: backend=auto -> torch on cpu (cpu not usable (dtype torch.float16 (the C loop takes "
        "torch.float32, torch.float64, torch.complex64, torch.complex128)))"]


def test_without_a_compiler_the_c_loop_is_unusable_and_auto_says_why(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SCAN_CPU_CACHE", str(tmp_path))
    _cpu.library.cache_clear()
    DISPATCH.reset()
    try:
        a, b = torch.rand(2, 5), torch.randn(2, 5)
        with caplog.at_level("INFO", logger="src.ops.dispatch"):
            torch.testing.assert_close(linear_scan(a, b), reference.linear_scan(a, b))
        assert caplog.records[0].getMessage().startswith(
            f"linear_scan: backend=auto -> torch on cpu (cpu not usable (RuntimeError: no C compiler "
            f"({tmp_path / 'no-such-cc'}: ")
        with pytest.raises(ConfigError, match=r"backend='cpu' does not run on cpu here \(RuntimeError: no C compiler"):
            linear_scan(a, b, backend="cpu")
    finally:
        _cpu.library.cache_clear()
        DISPATCH.reset()


def test_explicit_gpu_backends_say_why_they_cannot_run():
    a, b = torch.rand(2, 5), torch.randn(2, 5)
    with pytest.raises(ConfigError, match=r"backend='cuda' does not run on cpu here \(inputs are not on a CUDA"):
        linear_scan(a, b, backend="cuda")
    with pytest.raises(ConfigError, match="backend='keops' is not valid; choose one of: 'auto', 'torch', 'cuda', "
                                          "'triton', 'cpu'"):
        linear_scan(a, b, backend="keops")


def test_a_kernel_that_disagrees_with_torch_is_not_usable():
    """The smoke call compares with the torch path: a kernel that runs but computes something
    else (a stale build, a changed convention) is refused, with the size of the difference."""
    wrong = lambda a, b, h0=None, reverse=False: chunked.linear_scan(a, b, h0, not reverse)  # noqa: E731
    with pytest.raises(RuntimeError, match="its smoke call differs from the torch path by"):
        DISPATCH.smoke(wrong, torch.device("cpu"))
    DISPATCH.smoke(chunked.linear_scan, torch.device("cpu"))


def test_kernels_are_offered_only_on_their_device():
    assert DISPATCH.preference == {"cuda": ["cuda", "triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}
    with pytest.raises(ConfigError, match=r"backend='cpu' does not run on meta here \(inputs are not on the CPU\)"):
        linear_scan(torch.rand(2, 5, device="meta"), torch.rand(2, 5, device="meta"), backend="cpu")


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("L", [1, 33, 1000])
def test_gpu_linear_scan_matches_reference(backend, L):
    need("accelerated_scan")
    a, b, h = (t.cuda() for t in linear_inputs((2, 3, L), torch.float32, True))
    compare(lambda a, b, h: linear_scan(a, b, h, backend=backend),
            lambda a, b, h: reference.linear_scan(a, b, h), [a, b, h], dict(rtol=1e-3, atol=1e-3))
