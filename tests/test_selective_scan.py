"""src/ops/selective_scan: the blocked torch path, the C loop (cpu.py) and mamba-ssm's kernel
(gpu.py) against reference.py, forward and backward, at awkward shapes; the dispatcher's choices;
signed transitions (neg_eigval), also exactly 0 and -1.

Tolerances: float64 paths vs the float64 loop agree to rounding (1e-10: the blocked form only
reorders products and sums). float32 paths vs a float64 reference: errors of a few float32
ulps times the number of accumulated terms (L <= 70 here, values O(1)), so 1e-4 relative/absolute.
"""

import math

import pytest
import torch

from conftest import need_c_loop
from op_backends import compare, gen, need, needs_cuda

from src.ops.selective_scan import DISPATCH, reference, selective_scan
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # same arithmetic up to reordering
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding accumulated over <= 70 steps


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
    compare(lambda u, d, A, B, C, Dp, z, bias, h: selective_scan(u, d, A, B, C, Dp, z, bias, initial_state=h,
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
        got = selective_scan(*inputs[:-1], initial_state=inputs[-1], backend=backend, **kw)
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
    got = torch.autograd.grad(loss(lambda *a, **k: selective_scan(*a, **k, backend=backend), xs), xs)
    x64 = [x.clone().requires_grad_() for x in inputs]
    want = torch.autograd.grad(loss(reference.selective_scan, x64), x64)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, **F64)


def test_auto_takes_the_c_loop_for_the_selective_scan_on_cpu_with_or_without_gradients():
    need_c_loop("selective_scan")
    u, delta, A, B, C, *_ = selective_inputs(1, 2, 3, 5, "time")
    assert DISPATCH.resolve("auto", u.device, (u.requires_grad_(), delta, A, B, C)) == "cpu"
    with torch.no_grad():
        assert DISPATCH.resolve("auto", u.device, (u, delta, A, B, C)) == "cpu"
    assert DISPATCH.resolve("auto", u.device, (u.half(), delta.half(), A.half(), B.half(), C.half())) == "torch"


def test_c_loop_exponential_is_within_float32_rounding():
    """selective_scan.c's own float32 exp, read through one step: h_0 = exp(delta A) h0 with
    delta = 1, u = 0, so the last state is exp(A). ~2 ulp of the float64 exp over the whole
    range; 0 below -86.5 (true value < 3e-38), inf above 88.7 (overflow), NaN kept."""
    need_c_loop("selective_scan")
    x = torch.cat((torch.linspace(-100, 100, 400001), torch.tensor([float("nan"), float("-inf"), float("inf")])))
    one = torch.ones(1, x.numel(), 1)
    _, last = selective_scan(one * 0, one, x[:, None], torch.zeros(1, 1, 1), torch.zeros(1, 1, 1),
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
    compare(lambda u, d, A, B, C, h: selective_scan(u, d.abs(), A, B, C, initial_state=h, return_last_state=True),
            lambda u, d, A, B, C, h: reference.selective_scan(u, d.abs(), A, B, C, initial_state=h,
                                                              return_last_state=True),
            [u, delta, A, B, C, h0], F64)


def test_kernels_are_offered_only_on_their_device_and_name_their_backends():
    assert DISPATCH.preference == {"cuda": ["cuda", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}
    u = torch.randn(1, 2, 3)
    with pytest.raises(ConfigError, match="backend='triton' is not valid; choose one of: 'auto', 'torch', 'cuda', "
                                          "'cpu'"):
        selective_scan(u, u, -torch.ones(2, 1), torch.ones(1, 1, 3), torch.ones(1, 1, 3), backend="triton")


def signed_inputs(batch, D, N, L, B_kind, dtype, seed=0):
    """selective_inputs with delta (before softplus) shifted up by 1.5: delta A reaches ~-7, so
    most transitions 2 exp(delta A) - 1 are negative."""
    inputs = selective_inputs(batch, D, N, L, B_kind, seed, dtype)
    inputs[1] = inputs[1] + 1.5
    return inputs


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("batch, D, N, L", SELECTIVE + [(2, 38, 16, 300)])
@pytest.mark.parametrize("B_kind", ["time", "fixed"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_signed_transitions_match_reference(backend, batch, D, N, L, B_kind, dtype):
    """neg_eigval: outputs, last state and every input's gradient, with an initial state, then
    the no-grad paths (torch's carries are then products of the transitions)."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    tol = F32 if dtype == torch.float32 else F64
    if L == 300 and dtype == torch.float32:
        tol = dict(rtol=3e-4, atol=3e-4)  # as in test_selective_scan_matches_reference
    inputs = signed_inputs(batch, D, N, L, B_kind, dtype)
    a = 2 * torch.exp(torch.nn.functional.softplus(inputs[1].double() + inputs[7].double()[:, None])[..., None]
                      * inputs[2].double()[:, None]) - 1
    assert (a < 0).double().mean() > 0.3
    inputs.append(torch.randn(batch, D, N, generator=gen(4), dtype=torch.float64).to(dtype))
    kw = dict(delta_softplus=True, return_last_state=True, neg_eigval=True)
    compare(lambda u, d, A, B, C, Dp, z, bias, h: selective_scan(u, d, A, B, C, Dp, z, bias, initial_state=h,
                                                                 backend=backend, **kw),
            lambda u, d, A, B, C, Dp, z, bias, h: reference.selective_scan(u, d, A, B, C, Dp, z, bias, initial_state=h,
                                                                           **kw), inputs, tol)
    with torch.no_grad():
        got = selective_scan(*inputs[:-1], initial_state=inputs[-1], backend=backend, **kw)
        want = reference.selective_scan(*(x.double() for x in inputs[:-1]), initial_state=inputs[-1].double(), **kw)
    for g, w in zip(got, want):
        torch.testing.assert_close(g.double(), w, **tol)


def test_signed_reference_gradcheck():
    """The oracle's own gradients (autograd through its loop) against finite differences,
    with a transition exactly 0 (delta A = -log 2) among the signed ones."""
    u, delta, A, B, C, Dp, z, _ = signed_inputs(1, 2, 3, 6, "time", torch.float64)
    A = torch.cat((A[:1], torch.full((1, 3), -math.log(2), dtype=torch.float64)))
    delta = delta.abs().index_fill(2, torch.tensor([2]), 1.0)  # channel 1 at t = 2: a = 2 * 0.5 - 1 = 0
    assert (2 * torch.exp(delta[0, 1, 2] * A[1]) - 1 == 0).all()
    h0 = torch.randn(1, 2, 3, dtype=torch.float64, generator=gen(4))
    inputs = [x.clone().requires_grad_() for x in (u, delta, A, B, C, Dp, z, h0)]
    assert torch.autograd.gradcheck(
        lambda u, d, A, B, C, Dp, z, h: reference.selective_scan(u, d, A, B, C, Dp, z, initial_state=h, neg_eigval=True,
                                                                 return_last_state=True), inputs)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("grad", [True, False])
def test_signed_transitions_through_zero(backend, grad):
    """A transition exactly 0 (delta A = -log 2) forgets the state before it, and the fast paths
    still agree with the oracle there, values and gradients (their products never take a log)."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    u, delta, _, B, C, *_ = signed_inputs(2, 3, 4, 23, "time", torch.float64)
    A = torch.full((3, 4), -math.log(2), dtype=torch.float64)
    delta = delta.abs().index_fill(2, torch.arange(0, 23, 5), 1.0)  # a = 0 at t = 0, 5, ..., 20
    h0 = torch.randn(2, 3, 4, dtype=torch.float64, generator=gen(4))
    kw = dict(return_last_state=True, neg_eigval=True)
    if grad:
        compare(lambda u, d, B, C, h: selective_scan(u, d, A, B, C, initial_state=h, backend=backend, **kw),
                lambda u, d, B, C, h: reference.selective_scan(u, d, A, B, C, initial_state=h, **kw),
                [u, delta, B, C, h0], F64)
        return
    with torch.no_grad():
        y, last = selective_scan(u, delta, A, B, C, initial_state=h0, backend=backend, **kw)
        y2, last2 = selective_scan(u, delta, A, B, C, initial_state=5 * h0, backend=backend, **kw)
        torch.testing.assert_close((y, last), reference.selective_scan(u, delta, A, B, C, initial_state=h0, **kw),
                                   **F64)
    assert torch.equal(y2, y) and torch.equal(last2, last)  # a_0 = 0: h0 is forgotten at once


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("L", [1, 12, 35])
def test_signed_transition_minus_one_alternates_the_state(backend, L):
    """delta A -> -inf (exp underflows to 0): the signed transition is exactly -1, so with no
    input h_L = (-1)^L h_0, where the unsigned one forgets h_0 (a check that needs no oracle)."""
    if backend == "cpu":
        need_c_loop("selective_scan")
    h0 = torch.randn(2, 3, 4, generator=gen(4))
    u, delta, A = torch.zeros(2, 3, L), torch.ones(2, 3, L), torch.full((3, 4), -1e4)
    B = C = torch.randn(2, 4, L, generator=gen(5))
    _, last = selective_scan(u, delta, A, B, C, initial_state=h0, return_last_state=True, neg_eigval=True,
                             backend=backend)
    assert torch.equal(last, h0 * (-1) ** L)
    _, last = selective_scan(u, delta, A, B, C, initial_state=h0, return_last_state=True, backend=backend)
    assert torch.equal(last, torch.zeros_like(h0))


def test_mamba_kernel_refuses_signed_transitions_and_auto_takes_torch(monkeypatch):
    """mamba-ssm's kernel forms exp(delta A) itself: an explicit `cuda` refuses neg_eigval in one
    line, and `auto` on CUDA passes it by for `torch` (the verdicts stand in for a GPU here)."""
    u, delta, A, B, C, *_ = selective_inputs(1, 2, 3, 5, "time")
    with pytest.raises(ConfigError, match=r"backend='cuda' does .*mamba-ssm's kernel has no signed transitions"):
        selective_scan(u, delta, A, B, C, neg_eigval=True, backend="cuda")
    for name in ("cuda", "torch"):
        monkeypatch.setitem(DISPATCH._verdicts, (name, "cuda"), None)
    cuda = torch.device("cuda")
    args = (u, delta, A, B, C, None, None, None, False, False, None)
    monkeypatch.setattr("src.ops.selective_scan.gpu.real_on_cuda", lambda *tensors: None)  # as if on the GPU
    assert DISPATCH.resolve("auto", cuda, args + (False,)) == "cuda"
    assert DISPATCH.resolve("auto", cuda, args + (True,)) == "torch"


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


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("batch, D, N, L", SELECTIVE)
def test_gpu_selective_scan_matches_reference(batch, D, N, L):
    need("selective_scan_cuda", "mamba-ssm's CUDA extension selective_scan_cuda is not built (a MAMBA_SKIP_CUDA_BUILD "
         "install, as benchmarks/gpu carries it, has only the Triton kernels)")
    inputs = [t.cuda() for t in selective_inputs(batch, D, N, L, "time")]
    kw = dict(delta_softplus=True, return_last_state=True)
    # the kernel accumulates in float32 with its own order; backward recomputes: 1e-3
    compare(lambda u, d, A, B, C, Dp, z, bias: selective_scan(u, d, A, B, C, Dp, z, bias, backend="cuda", **kw),
            lambda u, d, A, B, C, Dp, z, bias: reference.selective_scan(u, d, A, B, C, Dp, z, bias, **kw), inputs,
            dict(rtol=1e-3, atol=1e-3))


@pytest.mark.gpu
@needs_cuda
def test_gpu_signed_transitions_take_the_torch_path():
    """On CUDA, `auto` with neg_eigval passes mamba-ssm's kernel by and runs the blocked torch path."""
    inputs = [t.cuda() for t in signed_inputs(2, 4, 5, 33, "time", torch.float32)]
    assert DISPATCH.resolve("auto", inputs[0].device, (*inputs[:5], None, None, None, False, False, None, True)) == \
        "torch"
    kw = dict(delta_softplus=True, return_last_state=True, neg_eigval=True)
    compare(lambda u, d, A, B, C, Dp, z, bias: selective_scan(u, d, A, B, C, Dp, z, bias, **kw),
            lambda u, d, A, B, C, Dp, z, bias: reference.selective_scan(u, d, A, B, C, Dp, z, bias, **kw), inputs, F32)
