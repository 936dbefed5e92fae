"""src/ops/mesa_net: the chunked torch path and the C loop (cpu.py) against reference.py (forward,
final states, every input's gradient) with the exact solve and with fla's conjugate gradient, the
CG solve's implicit gradient against torch.linalg.solve's, and reference.py against fla's own
naive.py (naive_mesa_net_exact and naive_mesa_net_CG, loaded by path, run in float64).

Tolerances. float64: the same sums reordered (1e-10), also for CG: the chunked path runs the same
CG steps on the same matrices, applied in another order (the C loop: a group's systems applied as
the state before the group plus the group's rank-one terms; its exact solve a Cholesky
factorisation where reference.py takes torch's LU). float32: 1e-4 for the exact solve
(condition numbers ~10 at lambda >= 0.25); 1e-3 for CG, whose steps divide by residuals that
shrink to ~1e-3 (cg.py).
"""

import contextlib

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive
from op_backends import compare

from src.ops.mesa_net import DISPATCH, cg, chunked, cpu, mesa_net, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-4, atol=1e-4)
F32_CG = dict(rtol=1e-3, atol=1e-3)
# (B, T, H, K, V, chunk): T = 1, odd T over several chunks with a partial last one, K and V not
# powers of two, V > K, one chunk longer than T
SHAPES = [(2, 1, 2, 4, 3, 8), (2, 13, 1, 5, 3, 4), (1, 37, 2, 6, 5, 8), (2, 9, 1, 3, 7, 64)]


def inputs(B, T, H, K, V, dtype=torch.float64, seed=0):
    """q, k unit rows, v, g in (-inf, 0) mostly near 0, beta in (0, 1), lamb in (0.25, 1.25), and
    initial states (H_kk positive semi-definite)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k = F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, T, H, K), dim=-1)
    g = F.logsigmoid(r(B, T, H) + 2)
    beta, lamb = torch.rand(B, T, H, generator=gen, dtype=torch.float64), 0.25 + torch.rand(H, K, generator=gen,
                                                                                            dtype=torch.float64)
    S = r(B, H, K, K)
    return [t.to(dtype) for t in (q, k, r(B, T, H, V), g, beta, lamb, S @ S.transpose(-1, -2) / K, r(B, H, K, V))]


def with_state(fn, **kw):
    def run(q, k, v, g, beta, lamb, Hkk0, Hkv0):
        o, (Hkk, Hkv) = fn(q, k, v, g, beta, lamb, (Hkk0, Hkv0), True, **kw)
        return o, Hkk, Hkv
    return run


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("cg_steps", [None, 3, 30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_chunked_matches_the_loop(shape, cg_steps, dtype):
    *dims, chunk = shape
    tol = F64 if dtype == torch.float64 else F32 if cg_steps is None else F32_CG
    compare(with_state(chunked.mesa_net, cg_steps=cg_steps, chunk=chunk), with_state(reference.mesa_net,
            cg_steps=cg_steps), inputs(*dims, dtype=dtype), tol)


# 3 checkpoint segments of the C loop; its products by blocks of 4 vectors of columns (K or V 64),
# of 1 (16, and 20 and 24 with the columns left over: 20 floats, 4 doubles past the blocks) and by
# rows (K, V < 8); groups of 4 tokens with a partial last one (T 21, 23, 11, 10)
@pytest.mark.parametrize("shape", SHAPES + [(2, 70, 2, 16, 8, None), (1, 21, 2, 64, 8, None),
                                            (1, 23, 2, 5, 64, None), (1, 11, 1, 64, 64, None),
                                            (1, 10, 1, 20, 24, None)])
@pytest.mark.parametrize("cg_steps", [None, 0, 3, 30])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_the_c_loop_matches_the_loop(shape, cg_steps, dtype):
    tol = F64 if dtype == torch.float64 else F32 if cg_steps is None else F32_CG
    compare(with_state(cpu.mesa_net, cg_steps=cg_steps), with_state(reference.mesa_net, cg_steps=cg_steps),
            inputs(*shape[:5], dtype=dtype), tol)


@pytest.mark.parametrize("interval", [1, 5, 6])
def test_the_c_loop_at_any_checkpoint_interval(monkeypatch, interval):
    """Intervals that are not multiples of 4 cut the forward's groups of 4 tokens (solved together)."""
    monkeypatch.setattr(cpu, "CHECKPOINT", interval)
    for steps in (None, 3):
        compare(with_state(cpu.mesa_net, cg_steps=steps), with_state(reference.mesa_net, cg_steps=steps),
                inputs(1, 12, 2, 6, 5), F64)


@pytest.mark.parametrize("cg_steps", [None, 30])
def test_the_c_loop_without_states_in_or_out(cg_steps):
    def run(fn):
        return lambda q, k, v, g, beta, lamb: fn(q, k, v, g, beta, lamb, None, False, cg_steps=cg_steps)[0]
    compare(run(cpu.mesa_net), run(reference.mesa_net), inputs(2, 20, 2, 5, 4)[:6], F64)


def test_chunked_continues_from_its_state():
    q, k, v, g, beta, lamb, *_ = inputs(2, 23, 2, 5, 4)
    o, S = chunked.mesa_net(q, k, v, g, beta, lamb, None, True, chunk=4)
    o1, S1 = chunked.mesa_net(*(t[:, :10] for t in (q, k, v, g, beta)), lamb, None, True, chunk=4)
    o2, S2 = chunked.mesa_net(*(t[:, 10:] for t in (q, k, v, g, beta)), lamb, S1, True, chunk=4)
    torch.testing.assert_close(torch.cat((o1, o2), 1), o, **F64)
    for a, b in zip(S2, S):
        torch.testing.assert_close(a, b, **F64)


def test_cg_solve_and_its_implicit_gradient_approach_the_exact_solve():
    """On a well-conditioned system, 2K steps of fla's CG and its implicit gradient agree with
    torch.linalg.solve to ~1e-5 (fla's eps); few steps do not."""
    gen = torch.Generator().manual_seed(0)
    K = 6
    S = torch.randn(3, K, K, generator=gen, dtype=torch.float64)
    A = (S @ S.transpose(-1, -2) / K + torch.eye(K, dtype=torch.float64)).requires_grad_()
    b = torch.randn(3, K, generator=gen, dtype=torch.float64).requires_grad_()
    w = torch.randn(3, K, generator=gen, dtype=torch.float64)
    exact = torch.linalg.solve(A, b)
    want = torch.autograd.grad((exact * w).sum(), (A, b))
    x = cg.solve(lambda p, M: (M @ p[..., None])[..., 0], b, 2 * K, A)
    torch.testing.assert_close(x, exact, rtol=2e-3, atol=2e-3)
    for got, ref in zip(torch.autograd.grad((x * w).sum(), (A, b)), want):
        torch.testing.assert_close(got, ref, rtol=2e-3, atol=2e-3)
    assert not torch.allclose(cg.conjugate_gradient(lambda p: (A @ p[..., None])[..., 0], b, 1), exact, atol=1e-2)


def test_fla_cg_at_its_default_steps_is_near_the_exact_solve():
    """fla's 30 CG steps land within ~1e-3 of the exact solve (its eps caps the accuracy: cg.py)."""
    args = inputs(2, 40, 2, 8, 8)[:6]
    exact = reference.mesa_net(*args)[0]
    errors = [(chunked.mesa_net(*args, cg_steps=n)[0] - exact).abs().max().item() for n in (2, 30)]
    assert errors[1] < 3e-3 and errors[1] < errors[0] / 10, errors


@contextlib.contextmanager
def default_dtype(dtype):
    old = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        yield
    finally:
        torch.set_default_dtype(old)


def fla_float64():
    """fla's mesa_net/naive.py with its float32 casts (.float(), default-dtype zeros) made float64:
    the same loops, run under torch.set_default_dtype(torch.float64)."""
    return fla_naive("mesa_net/naive.py", [(".float()", ".double()")])


def test_reference_matches_fla_naive_exact_with_every_gradient():
    naive = fla_float64()
    args = inputs(2, 11, 2, 5, 5)  # fla's naive takes V = K

    def fla(q, k, v, g, beta, lamb, Hkk0, Hkv0):
        with default_dtype(torch.float64):
            return naive.naive_mesa_net_exact(q, k, v, g, lamb, beta, Hkk0, Hkv0)

    compare(with_state(reference.mesa_net), fla, args, F64)


def test_reference_cg_matches_fla_naive_cg():
    """naive_mesa_net_CG runs the same CG steps (its chunks of 8 here; T a multiple of them)."""
    naive = fla_float64()
    q, k, v, g, beta, lamb, Hkk0, Hkv0 = inputs(2, 24, 2, 6, 6)
    for steps in (2, 30):
        with default_dtype(torch.float64):
            want = naive.naive_mesa_net_CG(q, k, v, g, lamb, beta, 8, steps, Hkk0, Hkv0)
        got = reference.mesa_net(q, k, v, g, beta, lamb, (Hkk0, Hkv0), True, cg_steps=steps)
        torch.testing.assert_close(got[0], want[0], **F64)
        torch.testing.assert_close(got[1][0], want[1], **F64)
        torch.testing.assert_close(got[1][1], want[2], **F64)


def test_dispatch_runs_the_c_loop_on_cpu_and_refuses_fla_there():
    args = inputs(1, 5, 1, 4, 4, dtype=torch.float32)[:6]
    torch.testing.assert_close(mesa_net(*args, backend="torch")[0], chunked.mesa_net(*args, cg_steps=30)[0])
    torch.testing.assert_close(mesa_net(*args)[0], cpu.mesa_net(*args, cg_steps=30)[0])
    assert DISPATCH.resolve("auto", torch.device("cpu"), args) == "cpu"
    with pytest.raises(ConfigError, match="model.layer.backend='triton'"):
        mesa_net(*args, backend="triton")
    with pytest.raises(ValueError, match="lamb"):
        mesa_net(*args[:5], args[5][:, :3])


def test_the_c_loops_exact_solve_refuses_a_non_symmetric_initial_state():
    """It factors the upper triangle: an H_kk that is not symmetric goes to the torch path (auto)."""
    *args, Hkk0, Hkv0 = inputs(1, 5, 1, 4, 4)
    lopsided = (Hkk0 + torch.triu(torch.ones_like(Hkk0), 1), Hkv0)
    assert DISPATCH.resolve("auto", torch.device("cpu"), (*args, lopsided, False, None)) == "torch"
    with pytest.raises(ConfigError, match="not symmetric"):
        mesa_net(*args, lopsided, cg_steps=None, backend="cpu")
    for state, steps in (((Hkk0, Hkv0), None), (lopsided, 30)):
        assert DISPATCH.resolve("auto", torch.device("cpu"), (*args, state, False, steps)) == "cpu"
