"""src/ops/scan: every path against reference.py, forward and backward, at awkward shapes.

Tolerances: float64 paths vs the float64 loop agree to rounding (1e-10: the blocked form only
reorders products and sums). float32 paths vs a float64 reference: errors of a few float32
ulps times the number of accumulated terms (L <= 70 here, values O(1)), so 1e-4 relative/absolute.
"""

import importlib.util
import math

import pytest
import torch

from conftest import need_c_loop
from src.ops import scan
from src.ops.scan import chunked, cpu, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # same arithmetic up to reordering
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding accumulated over <= 70 steps


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grads(out, inputs, seed=1):
    """Gradients of <out, w> for a fixed random w (also over the last state if out is a tuple)."""
    outs = out if isinstance(out, tuple) else (out,)
    g = gen(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]  # same draws for any dtype
    loss = sum((o * w.conj()).real.sum() for o, w in zip(outs, weights))
    return torch.autograd.grad(loss, [i for i in inputs if i is not None])


def compare(fast, ref, inputs, tol):
    """fast(*inputs) vs ref(*inputs in float64): outputs and the gradients of every input."""
    x64 = [None if x is None else x.detach().to(torch.complex128 if x.is_complex() else torch.float64)
           .requires_grad_() for x in inputs]
    xs = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    got, want = fast(*xs), ref(*x64)
    for o, r in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(o.to(r.dtype), r, **tol)
    for gx, gr in zip(grads(got, xs), grads(want, x64)):
        torch.testing.assert_close(gx.to(gr.dtype), gr, **tol)


# ---------------------------------------------------------------- linear scan
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
    compare(lambda a, b, h: scan.linear_scan(a, b, h, reverse=reverse, backend=backend),
            lambda a, b, h: reference.linear_scan(a, b, h, reverse=reverse), linear_inputs(shape, dtype, h0), tol)


@pytest.mark.parametrize("reverse", [False, True])
def test_cpu_linear_scan_splits_rows_over_threads(reverse):
    """15 rows (odd: a row group of the C loop is left over) of 4500 steps: above the size where
    the rows are split over threads. float64 against the float64 loop, gradients included."""
    need_c_loop()
    assert 15 * 4500 >= cpu.PARALLEL_FROM and torch.get_num_threads() >= 1
    a, b, h = linear_inputs((3, 5, 4500), torch.float64, True)
    compare(lambda a, b, h: scan.linear_scan(a * 0.9, b, h, reverse=reverse, backend="cpu"),
            lambda a, b, h: reference.linear_scan(a * 0.9, b, h, reverse=reverse), [a, b, h], F64)


def test_cpu_linear_scan_leaves_gradients_of_constants_alone():
    """Only b needs a gradient: the C backward skips grad_a and grad_h0 and still gets b's."""
    need_c_loop()
    a, b, h = linear_inputs((2, 3, 9), torch.float64, True)
    b.requires_grad_()
    (got,) = torch.autograd.grad(scan.linear_scan(a, b, h, backend="cpu").sum(), b)
    (want,) = torch.autograd.grad(reference.linear_scan(a, b, h).sum(), b)
    torch.testing.assert_close(got, want, **F64)


def test_linear_scan_broadcasts_and_handles_zero_gates():
    g = gen()
    a = torch.rand(1, 37, generator=g, dtype=torch.float64)
    a[0, 5] = 0.0  # a reset: h_5 = b_5 exactly
    b = torch.randn(4, 37, generator=g, dtype=torch.float64)
    h = scan.linear_scan(a, b)
    torch.testing.assert_close(h, reference.linear_scan(a.expand(4, 37), b), **F64)
    torch.testing.assert_close(h[:, 5], b[:, 5], rtol=0, atol=0)


def test_linear_scan_long_decay_stays_finite_in_float32():
    """a = 1e-3 everywhere: products over a chunk underflow to 0 (no division, so no inf/nan)."""
    a = torch.full((2, 4096), 1e-3)
    b = torch.randn(2, 4096, generator=gen())
    h = scan.linear_scan(a, b)
    torch.testing.assert_close(h[:, 1:], b[:, 1:] + 1e-3 * h[:, :-1], rtol=1e-6, atol=1e-6)  # one step, float32


# ---------------------------------------------------------------- selective scan
def selective_inputs(batch, D, N, L, B_kind, seed=0, dtype=torch.float32):
    g = gen(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u, delta = r(batch, D, L), r(batch, D, L) * 0.5
    A = -torch.exp(r(D, N) * 0.5)
    shapes = {"time": (batch, N, L), "grouped": (batch, 2, N, L), "fixed": (D, N)}
    B, C = r(*shapes[B_kind]), r(*shapes[B_kind])
    Dp, z, bias = r(D), r(batch, D, L), r(D) * 0.1
    return [t.to(dtype) for t in (u, delta, A, B, C, Dp, z, bias)]


SELECTIVE = [(2, 4, 3, 1), (1, 6, 1, 9), (2, 4, 5, 33), (3, 2, 2, 70)]


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("batch, D, N, L", SELECTIVE + [(2, 38, 16, 300)])
@pytest.mark.parametrize("B_kind", ["time", "grouped", "fixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("h0", [False, True])
def test_selective_scan_matches_reference(backend, batch, D, N, L, B_kind, dtype, h0):
    """Outputs, last state and the gradients of every input (the last state's included);
    (2, 38, 16, 300) is large enough for the C loop to split channels over threads, whose
    gradients of the shared B and C are then summed."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    tol = F32 if dtype == torch.float32 else F64
    if L == 300 and dtype == torch.float32:
        tol = dict(rtol=3e-4, atol=3e-4)  # float32 sums over 300 steps and 38 channels: a few more ulps
    inputs = selective_inputs(batch, D, N, L, B_kind, dtype=dtype)
    inputs.append(torch.randn(batch, D, N, generator=gen(4), dtype=torch.float64).to(dtype) if h0 else None)
    kw = dict(delta_softplus=True, return_last_state=True)
    compare(lambda u, d, A, B, C, Dp, z, bias, h: scan.selective_scan(u, d, A, B, C, Dp, z, bias, initial_state=h,
                                                                      backend=backend, **kw),
            lambda u, d, A, B, C, Dp, z, bias, h: reference.selective_scan(u, d, A, B, C, Dp, z, bias, initial_state=h,
                                                                           **kw), inputs, tol)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("batch, D, N, L", SELECTIVE + [(2, 38, 16, 300)])
@pytest.mark.parametrize("B_kind", ["time", "grouped", "fixed"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_selective_scan_without_gradients_matches_reference(backend, batch, D, N, L, B_kind, dtype):
    """The no-grad paths (no materialised states: torch's blocked loop, the C loop) with an
    initial state; (2, 38, 16, 300) is large enough for the C loop to split channels over threads."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    u, delta, A, B, C, Dp, z, bias = selective_inputs(batch, D, N, L, B_kind, dtype=torch.float64)
    h0 = torch.randn(batch, D, N, dtype=torch.float64, generator=gen(4))
    kw = dict(delta_softplus=True, return_last_state=True)
    with torch.no_grad():
        want = reference.selective_scan(u, delta, A, B, C, Dp, z, bias, initial_state=h0, **kw)
        inputs = [x.to(dtype) for x in (u, delta, A, B, C, Dp, z, bias, h0)]
        got = scan.selective_scan(*inputs[:-1], initial_state=inputs[-1], backend=backend, **kw)
    for g, w in zip(got, want):
        assert g.dtype == dtype
        torch.testing.assert_close(g.double(), w, **(F64 if dtype == torch.float64 else F32))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_selective_scan_gradients_arriving_as_views(backend):
    """Gradients that reach the scan as views: a transposed y (as a layer's (B, L, D) output
    gives it) and an expanded one for the last state (from .sum()). The C loop reads
    contiguous copies of them, which must stay alive while it runs."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    inputs = selective_inputs(2, 6, 4, 20, "time", dtype=torch.float64)

    def loss(fn, xs):
        u, d, A, B, C, Dp, z, bias = xs
        y, last = fn(u, d, A, B, C, Dp, z, bias, delta_softplus=True, return_last_state=True)
        w = torch.arange(y.numel(), dtype=y.dtype).reshape(y.transpose(1, 2).shape).cos()
        return (y.transpose(1, 2) * w).sum() + last.sum()

    xs = [x.clone().requires_grad_() for x in inputs]
    got = torch.autograd.grad(loss(lambda *a, **k: scan.selective_scan(*a, **k, backend=backend), xs), xs)
    x64 = [x.clone().requires_grad_() for x in inputs]
    want = torch.autograd.grad(loss(reference.selective_scan, x64), x64)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **F64)


def test_auto_takes_the_c_loop_for_the_selective_scan_on_cpu_with_or_without_gradients():
    need_c_loop("selective_scan")
    u, delta, A, B, C, *_ = selective_inputs(1, 2, 3, 5, "time")
    dispatcher = scan.DISPATCH["selective_scan"]
    assert dispatcher.resolve("auto", u.device, (u.requires_grad_(), delta, A, B, C)) == "cpu"
    with torch.no_grad():
        assert dispatcher.resolve("auto", u.device, (u, delta, A, B, C)) == "cpu"
    assert dispatcher.resolve("auto", u.device, (u.half(), delta.half(), A.half(), B.half(), C.half())) == "torch"


def test_c_loop_exponential_is_within_float32_rounding():
    """selective_scan.c's own float32 exp, read through one step: h_0 = exp(delta A) h0 with
    delta = 1, u = 0, so the last state is exp(A). ~2 ulp of the float64 exp over the whole
    range; 0 below -86.5 (true value < 3e-38), inf above 88.7 (overflow), NaN kept."""
    need_c_loop("selective_scan")
    x = torch.cat((torch.linspace(-100, 100, 400001), torch.tensor([float("nan"), float("-inf"), float("inf")])))
    one = torch.ones(1, x.numel(), 1)
    _, last = scan.selective_scan(one * 0, one, x[:, None], torch.zeros(1, 1, 1), torch.zeros(1, 1, 1),
                                  initial_state=one[..., 0, None], return_last_state=True, backend="cpu")
    got, want = last.flatten()[:-3].double(), torch.exp(x[:-3].double())
    inside = (x[:-3] > -86.5) & (x[:-3] < 88.7)
    assert ((got - want).abs() / want)[inside].max() < 2.5 * 2.0**-23
    assert (got[x[:-3] < -86.5] == 0).all() and torch.isinf(got[x[:-3] > 88.7]).all()
    assert torch.isnan(last.flatten()[-3]) and last.flatten()[-2] == 0 and torch.isinf(last.flatten()[-1])


@pytest.mark.parametrize("L", [1, 13])
def test_selective_scan_initial_state_and_plain_options(L):
    u, delta, A, B, C, *_ = selective_inputs(2, 3, 4, L, "time", dtype=torch.float64)
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen(3))
    compare(lambda u, d, A, B, C, h: scan.selective_scan(u, d.abs(), A, B, C, initial_state=h, return_last_state=True),
            lambda u, d, A, B, C, h: reference.selective_scan(u, d.abs(), A, B, C, initial_state=h,
                                                              return_last_state=True),
            [u, delta, A, B, C, h0], F64)


def mamba_selective_scan_ref(u, delta, A, B, C, D):
    """mamba-ssm's published selective_scan_ref semantics for (batch, N, L) B and C, written as
    it reads (one einsum per step): the two loops must agree."""
    dA = torch.exp(torch.einsum("bdl,dn->bdln", delta, A))
    dBu = torch.einsum("bdl,bnl,bdl->bdln", delta, B, u)
    x, ys = A.new_zeros(u.shape[0], A.shape[0], A.shape[1]), []
    for i in range(u.shape[2]):
        x = dA[:, :, i] * x + dBu[:, :, i]
        ys.append(torch.einsum("bdn,bn->bd", x, C[:, :, i]))
    return torch.stack(ys, dim=2) + u * D[:, None]


def test_reference_matches_mamba_semantics():
    u, delta, A, B, C, Dp, *_ = selective_inputs(2, 3, 4, 11, "time", dtype=torch.float64)
    torch.testing.assert_close(reference.selective_scan(u, delta, A, B, C, Dp),
                               mamba_selective_scan_ref(u, delta, A, B, C, Dp), **F64)


# ---------------------------------------------------------------- SSD
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
    compare(lambda x, dt, A, B, C, D, z, bias, h0: scan.ssd_scan(x, dt, A, B, C, chunk, D, z, bias,
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
    got = scan.ssd_scan(*(t.float() for t in (x, dt, A, B, C)), chunk_size=256, backend="torch")
    assert (got.double() - want).abs().max() < 3e-6 * want.abs().max()


def test_ssd_is_the_selective_scan_with_scalar_a_per_head():
    """H heads of P channels with A shared by a head's channels and B, C shared by all: S6."""
    x, dt, A, B, C, *_ = ssd_inputs(2, 17, 3, 2, 1, 4, torch.float64)
    dt = dt.abs()
    out = scan.ssd_scan(x, dt, A, B, C, chunk_size=8)  # (b, L, H, P)
    u = x.flatten(2).transpose(1, 2)  # (b, H P, L)
    delta = dt.repeat_interleave(2, dim=2).transpose(1, 2)
    A_full = A.repeat_interleave(2)[:, None].expand(6, 4)
    want = reference.selective_scan(u, delta, A_full, B[:, :, 0].transpose(1, 2), C[:, :, 0].transpose(1, 2))
    torch.testing.assert_close(out.flatten(2).transpose(1, 2), want, **F64)


def test_segsum():
    x = torch.tensor([1.0, 2.0, 3.0])
    inf = float("-inf")
    expected = torch.tensor([[0.0, inf, inf], [2.0, 0.0, inf], [5.0, 3.0, 0.0]])
    torch.testing.assert_close(chunked.segsum(x), expected)


# ---------------------------------------------------------------- causal conv
@pytest.mark.parametrize("L, K", [(1, 4), (9, 4), (5, 2), (3, 7), (6, 1)])
@pytest.mark.parametrize("activation", [None, "silu"])
@pytest.mark.parametrize("initial", [False, True])
def test_causal_conv1d_matches_reference(L, K, activation, initial):
    g = gen()
    x, w, b = torch.randn(2, 3, L, generator=g), torch.randn(3, K, generator=g), torch.randn(3, generator=g)
    s = torch.randn(2, 3, K - 1, generator=g) if initial else None
    compare(lambda x, w, b, s: scan.causal_conv1d(x, w, b, activation, s),
            lambda x, w, b, s: reference.causal_conv1d(x, w, b, activation, s), [x, w, b, s], F32)


def test_causal_conv1d_is_torch_conv1d():
    g = gen()
    x, w, b = torch.randn(2, 3, 11, generator=g), torch.randn(3, 4, generator=g), torch.randn(3, generator=g)
    want = torch.nn.functional.conv1d(torch.nn.functional.pad(x, (3, 0)), w[:, None], b, groups=3)
    torch.testing.assert_close(scan.causal_conv1d(x, w, b), want)


# ---------------------------------------------------------------- dispatcher
def test_auto_uses_torch_without_a_kernel_and_logs_once(caplog):
    dispatcher = scan.DISPATCH["causal_conv1d"]
    dispatcher.reset()
    x, w = torch.randn(1, 2, 3), torch.randn(2, 4)
    with caplog.at_level("INFO", logger="src.ops.dispatch"):
        assert dispatcher.resolve("auto", x.device, (x, w)) == "torch"
        scan.causal_conv1d(x, w)
        scan.causal_conv1d(x, w)
    assert [r.getMessage() for r in caplog.records] == ["causal_conv1d: backend=auto -> torch on cpu"]


def test_auto_takes_the_c_loop_for_the_linear_scan_on_cpu(caplog):
    need_c_loop()
    dispatcher = scan.DISPATCH["linear_scan"]
    dispatcher.reset()
    a, b = torch.rand(2, 5), torch.randn(2, 5)
    with caplog.at_level("INFO", logger="src.ops.dispatch"):
        assert dispatcher.resolve("auto", a.device, (a, b)) == "cpu"
        assert dispatcher.resolve("auto", a.device, (a.half(), b.half())) == "torch"  # no float16 C loop
    assert [r.getMessage() for r in caplog.records] == [
        "linear_scan: backend=auto -> cpu on cpu",
        "linear_scan: backend=auto -> torch on cpu (cpu not usable (dtype torch.float16 (the C loop takes "
        "torch.float32, torch.float64, torch.complex64, torch.complex128)))"]


def test_without_a_compiler_the_c_loop_is_unusable_and_auto_says_why(monkeypatch, tmp_path, caplog):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SCAN_CPU_CACHE", str(tmp_path))
    dispatcher = scan.DISPATCH["linear_scan"]
    cpu.library.cache_clear()
    dispatcher.reset()
    try:
        a, b = torch.rand(2, 5), torch.randn(2, 5)
        with caplog.at_level("INFO", logger="src.ops.dispatch"):
            torch.testing.assert_close(scan.linear_scan(a, b), reference.linear_scan(a, b))
        assert caplog.records[0].getMessage().startswith(
            f"linear_scan: backend=auto -> torch on cpu (cpu not usable (RuntimeError: no C compiler "
            f"({tmp_path / 'no-such-cc'}: ")
        with pytest.raises(ConfigError, match=r"backend='cpu' does not run on cpu here \(RuntimeError: no C compiler"):
            scan.linear_scan(a, b, backend="cpu")
    finally:
        cpu.library.cache_clear()
        dispatcher.reset()


def test_explicit_gpu_backends_say_why_they_cannot_run():
    a, b = torch.rand(2, 5), torch.randn(2, 5)
    with pytest.raises(ConfigError, match=r"backend='cuda' does not run on cpu here \(inputs are not on a CUDA"):
        scan.linear_scan(a, b, backend="cuda")
    u = torch.randn(1, 2, 3)
    with pytest.raises(ConfigError, match="backend='triton' is not valid; choose one of: 'auto', 'torch', 'cuda', "
                                          "'cpu'"):
        scan.selective_scan(u, u, -torch.ones(2, 1), torch.ones(1, 1, 3), torch.ones(1, 1, 3), backend="triton")
    with pytest.raises(ConfigError, match="backend='keops' is not valid; choose one of: 'auto', 'torch', 'cuda', "
                                          "'triton', 'cpu'"):
        scan.linear_scan(a, b, backend="keops")


def test_a_kernel_that_disagrees_with_torch_is_not_usable():
    """The smoke call compares with the torch path: a kernel that runs but computes something
    else (a stale build, a changed convention) is refused, with the size of the difference."""
    wrong = lambda a, b, h0=None, reverse=False: chunked.linear_scan(a, b, h0, not reverse)  # noqa: E731
    with pytest.raises(RuntimeError, match="its smoke call differs from the torch path by"):
        scan._smoke("linear_scan")(wrong, torch.device("cpu"))
    scan._smoke("linear_scan")(chunked.linear_scan, torch.device("cpu"))


def test_a_layer_backend_maps_to_each_ops_kernel_of_that_family():
    assert [scan.backend_of("ssd_scan", b) for b in ("auto", "torch", "cuda", "triton", "cpu")] == \
        ["auto", "torch", "triton", "triton", "torch"]
    assert [scan.backend_of("causal_conv1d", b) for b in ("cuda", "triton", "cpu")] == ["cuda", "cuda", "torch"]
    assert [scan.backend_of("linear_scan", b) for b in ("cuda", "triton", "cpu")] == ["cuda", "triton", "cpu"]
    with pytest.raises(ConfigError, match="model.layer.backend='keops' is not valid; choose one of: 'auto', 'torch'"):
        scan.backend_of("causal_conv1d", "keops")


def test_kernels_are_offered_only_on_their_device():
    assert scan.DISPATCH["selective_scan"].preference == {"cuda": ["cuda", "torch"], "cpu": ["cpu", "torch"],
                                                          "default": ["torch"]}
    assert scan.DISPATCH["linear_scan"].preference["cuda"] == ["cuda", "triton", "torch"]
    with pytest.raises(ConfigError, match=r"backend='cpu' does not run on meta here \(inputs are not on the CPU\)"):
        scan.linear_scan(torch.rand(2, 5, device="meta"), torch.rand(2, 5, device="meta"), backend="cpu")


# ---------------------------------------------------------------- GPU kernels (need CUDA and the packages)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def need(module, why=None):
    """Skips unless `module` is installed (found, not imported: an import error is the test's to report)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(why or f"{module} is not installed (see requirements-gpu.txt)")


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("backend", ["cuda", "triton"])
@pytest.mark.parametrize("L", [1, 33, 1000])
def test_gpu_linear_scan_matches_reference(backend, L):
    need("accelerated_scan")
    a, b, h = (t.cuda() for t in linear_inputs((2, 3, L), torch.float32, True))
    compare(lambda a, b, h: scan.linear_scan(a, b, h, backend=backend),
            lambda a, b, h: reference.linear_scan(a, b, h), [a, b, h], dict(rtol=1e-3, atol=1e-3))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("batch, D, N, L", SELECTIVE)
def test_gpu_selective_scan_matches_reference(batch, D, N, L):
    need("selective_scan_cuda", "mamba-ssm's CUDA extension selective_scan_cuda is not built (a MAMBA_SKIP_CUDA_BUILD "
         "install, as benchmarks/gpu carries it, has only the Triton kernels)")
    inputs = [t.cuda() for t in selective_inputs(batch, D, N, L, "time")]
    kw = dict(delta_softplus=True, return_last_state=True)
    # the kernel accumulates in float32 with its own order; backward recomputes: 1e-3
    compare(lambda u, d, A, B, C, Dp, z, bias: scan.selective_scan(u, d, A, B, C, Dp, z, bias, backend="cuda", **kw),
            lambda u, d, A, B, C, Dp, z, bias: reference.selective_scan(u, d, A, B, C, Dp, z, bias, **kw), inputs,
            dict(rtol=1e-3, atol=1e-3))


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("batch, L, H, P, G, N, chunk", [(2, 33, 2, 8, 1, 16, 16), (1, 70, 4, 16, 2, 8, 64)])
def test_gpu_ssd_scan_matches_reference(batch, L, H, P, G, N, chunk):
    need("mamba_ssm")
    inputs = [t.cuda() for t in ssd_inputs(batch, L, H, P, G, N, torch.float32)]
    kw = dict(dt_softplus=True, return_final_states=True)
    compare(lambda x, dt, A, B, C, D, z, bias, h0: scan.ssd_scan(x, dt, A, B, C, chunk, D, z, bias, initial_states=h0,
                                                                 backend="triton", **kw),
            lambda x, dt, A, B, C, D, z, bias, h0: reference.ssd_scan(x, dt, A, B, C, D, z, bias, initial_states=h0,
                                                                      **kw),
            inputs, dict(rtol=2e-3, atol=2e-3))  # Triton kernels use tf32 matmuls in places


@pytest.mark.gpu
@cuda
@pytest.mark.parametrize("L", [1, 9, 1000])
def test_gpu_causal_conv1d_matches_reference(L):
    need("causal_conv1d")
    g = gen()
    x, w, b = (torch.randn(*s, generator=g).cuda() for s in ((2, 8, L), (8, 4), (8,)))
    compare(lambda x, w, b: scan.causal_conv1d(x, w, b, "silu", backend="cuda"),
            lambda x, w, b: reference.causal_conv1d(x, w, b, "silu"), [x, w, b], dict(rtol=1e-3, atol=1e-3))


def test_mamba_ssm_triton_kernels_import_without_its_cuda_extension(tmp_path, monkeypatch):
    """A MAMBA_SKIP_CUDA_BUILD install: mamba_ssm/__init__.py fails on selective_scan_cuda, and
    gpu._mamba_ssm() still makes mamba_ssm.ops.triton.* importable (a stand-in package here)."""
    import sys

    from src.ops.scan import gpu

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
    from src.ops.scan import gpu

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    monkeypatch.delitem(__import__("sys").modules, "mamba_ssm", raising=False)
    with pytest.raises(ImportError, match="mamba-ssm is not installed"):
        gpu._mamba_ssm()


def test_chunk_length_is_about_the_square_root():
    assert [chunked._chunk_length(L) for L in (1, 2, 70, 4096)] == [1, 1, 8, 64] and math.isqrt(4096) == 64
