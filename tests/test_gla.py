"""src/ops/gla: the chunked path and the C loop (cpu.py) against reference.py (forward, final state, every input gradient),
against fla's naive loops (when fla-core is installed), and the recurrence's identities.

Tolerances: float64 chunked vs the float64 loop agree to rounding (1e-10). float32 chunked vs the
float64 loop: float32 rounding over <= 80 steps of O(1) values with in-chunk decays as
differences of float32 cumulative sums (off by ~eps |b|, |b| <= 80 here), so 1e-4 relative and
absolute. The C loop in float32: float32 rounding over <= 80 steps of O(1) values, 1e-4 too.
fla's naive loops compute in float32: 1e-4 against ours in float64.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive
from op_backends import compare

from src.ops import _cpu
from src.ops.gla import DISPATCH, chunked, cpu, gla, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding, see the module docstring
# (B, T, H, K, V, chunk): T = 1, odd T, T not a multiple of the chunk, several chunks, K != V, H = 1
SHAPES = [(2, 1, 2, 8, 8, 64), (2, 7, 1, 5, 3, 64), (1, 77, 2, 8, 6, 16), (2, 33, 3, 4, 4, 8), (1, 64, 1, 6, 9, 32)]
GATES = ["key", "head", "none"]


def inputs(B, T, H, K, V, gate, bonus, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    decay = {"key": F.logsigmoid(r(B, T, H, K)), "head": F.logsigmoid(r(B, T, H)), "none": None}[gate]
    u = r(H, K) if bonus else None
    return [None if t is None else t.to(dtype) for t in (q, k, v, decay, u, r(B, H, K, V))]


def call(fn, chunk=None):
    extra = {} if chunk is None else {"chunk": chunk}
    return lambda q, k, v, g, u, S0: fn(q, k, v, g, u, None, S0, True, **extra)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("bonus", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_chunked_matches_the_loop(shape, gate, bonus, dtype, tol):
    *dims, chunk = shape
    compare(call(chunked.gla, chunk), call(reference.gla), inputs(*dims, gate, bonus, dtype), tol)


# (B, T, H, K, V): as SHAPES (several checkpoint segments of cpu.CHECKPOINT = 32 steps, a partial
# last one), V = 16 (blocks of 8 steps in the forward, float32 and float64, T not a multiple of 8,
# K not of 4) and K = V = 64 (the sizes the C loop has a specialised step for)
CPU_SHAPES = [shape[:5] for shape in SHAPES] + [(2, 45, 2, 5, 16), (1, 70, 2, 64, 64)]


@pytest.mark.parametrize("shape", CPU_SHAPES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("bonus", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_cpu_loop_matches_the_loop(shape, gate, bonus, dtype, tol):
    compare(call(cpu.gla), call(reference.gla), inputs(*shape, gate, bonus, dtype), tol)


@pytest.mark.parametrize("bonus", [False, True])
def test_cpu_loop_splits_heads_over_threads_within_a_batch_row(bonus, two_threads):
    """6 heads (B 3, H 2) over 2 threads: the second thread starts at head 1 of batch row 1, so
    each thread advances a partial row of heads together (above cpu's PARALLEL_FROM work)."""
    assert _cpu.ranges(6, 1, 3 * 48 * 2 * 16 * 16) == [(0, 3), (3, 6)]
    compare(call(cpu.gla), call(reference.gla), inputs(3, 48, 2, 16, 16, "key", bonus), F64)


def test_the_public_function_runs_the_c_loop_on_cpu():
    x = inputs(2, 70, 2, 8, 4, "key", True)
    torch.testing.assert_close(gla(*x[:5], initial_state=x[5], output_final_state=True),
                               reference.gla(*x[:5], initial_state=x[5], output_final_state=True), **F64)
    assert DISPATCH.resolve("auto", torch.device("cpu"), x) == "cpu"
    assert DISPATCH.resolve("auto", torch.device("cpu"), [t.half() for t in x[:3]]) == "torch"  # float16: no C loop
    with pytest.raises(ConfigError, match="does not run on cpu"):
        gla(*x[:3], backend="triton")
    with pytest.raises(ConfigError, match="backend='keops' is not valid; choose one of: 'auto', 'torch', 'cpu', 'triton'"):
        gla(*x[:3], backend="keops")


def test_a_g_of_the_wrong_shape_is_refused():
    q = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match=r"g has shape \(1, 4, 2, 2\)"):
        gla(q, q, q, g=torch.zeros(1, 4, 2, 2))


@pytest.mark.parametrize("gate", ["key", "head"])
def test_zero_decay_is_no_decay(gate):
    q, k, v, g, _, S0 = inputs(2, 40, 2, 4, 3, gate, False)
    want = chunked.gla(q, k, v, None, None, None, S0, True, chunk=16)
    torch.testing.assert_close(chunked.gla(q, k, v, torch.zeros_like(g), None, None, S0, True, chunk=16), want, **F64)
    o = (torch.einsum("bthk,bshk->bhts", q, k).tril() @ v.transpose(1, 2)).transpose(1, 2)  # plain causal linear attention
    torch.testing.assert_close(want[0], o * 4**-0.5 + torch.einsum("bthk,bhkv->bthv", q, S0) * 4**-0.5, **F64)


@pytest.mark.parametrize("gate", ["key", "head"])
@pytest.mark.parametrize("bonus", [False, True])
def test_splitting_the_sequence_passes_the_state_on(gate, bonus):
    q, k, v, g, u, S0 = inputs(2, 45, 2, 4, 3, gate, bonus)
    o, S = chunked.gla(q, k, v, g, u, None, S0, True, chunk=16)
    o1, S1 = chunked.gla(q[:, :19], k[:, :19], v[:, :19], g[:, :19], u, None, S0, True, chunk=16)
    o2, S2 = chunked.gla(q[:, 19:], k[:, 19:], v[:, 19:], g[:, 19:], u, None, S1, True, chunk=16)
    torch.testing.assert_close(torch.cat((o1, o2), 1), o, **F64)
    torch.testing.assert_close(S2, S, **F64)


@pytest.mark.parametrize("gate", ["key", "head"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
@pytest.mark.parametrize("path, V", [("torch", 3), ("cpu", 3), ("cpu", 16)])  # cpu, V = 16: in 8-step blocks
def test_a_reset_is_two_independent_calls(gate, dtype, tol, path, V):
    """g = -inf at position p forgets everything before p (S_p = k_p v_p^T); gradients stay finite."""
    run = {"torch": lambda *a: chunked.gla(*a, chunk=16), "cpu": cpu.gla}[path]
    q, k, v, g, _, S0 = inputs(2, 50, 2, 4, V, gate, False, dtype)
    for t in (q, k, v, S0):
        t.requires_grad_()
    p = 21
    g_reset = g.detach().clone()
    g_reset[:, p] = float("-inf")
    g_reset.requires_grad_()
    o, S = run(q, k, v, g_reset, None, None, S0, True)
    o1, _ = run(q[:, :p], k[:, :p], v[:, :p], g[:, :p], None, None, S0, True)
    o2, S2 = run(q[:, p:], k[:, p:], v[:, p:], g[:, p:], None, None, None, True)
    torch.testing.assert_close(o, torch.cat((o1, o2), 1), **tol)
    torch.testing.assert_close(S, S2, **tol)
    got = torch.autograd.grad(o.sum() + S.sum(), (q, k, v, S0, g_reset))
    want = torch.autograd.grad(torch.cat((o1, o2), 1).sum() + S2.sum(), (q, k, v, S0))
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, **tol)
    assert torch.isfinite(got[-1]).all() and (got[-1][:, p] == 0).all()


@pytest.mark.parametrize("fn, V", [(chunked.gla, 3), (cpu.gla, 3), (cpu.gla, 16)])
def test_strong_decays_stay_finite(fn, V):
    """Log decays of -50 per step: exp(-b) would overflow float32 after two steps; every
    exponent here is <= 0 (the C loop's row scales stay >= 2^-60), so the output is finite and
    equals the loop."""
    q, k, v, _, _, S0 = inputs(1, 70, 2, 4, V, "none", False, torch.float32)
    g = torch.full((1, 70, 2, 4), -50.0)
    g[:, ::7] = -0.01
    o, S = fn(q, k, v, g, None, None, S0, True)
    want = reference.gla(*(t.double() for t in (q, k, v, g)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(o.double(), want[0], **F32)
    torch.testing.assert_close(S.double(), want[1], **F32)


def _fla_inputs(gate, bonus):
    return inputs(2, 40, 2, 8, 6, gate, bonus, torch.float32, seed=3)


@pytest.mark.parametrize("gate", ["key", "head"])
def test_against_fla_naive_recurrent_gla(gate):
    naive = fla_naive("gla/naive.py" if gate == "key" else "simple_gla/naive.py")
    q, k, v, g, _, S0 = _fla_inputs(gate, False)
    fn = naive.naive_recurrent_gla if gate == "key" else naive.naive_recurrent_simple_gla
    want = fn(q, k, v, g, initial_state=S0, output_final_state=True)
    got = gla(*(t.double() for t in (q, k, v, g)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(got[0].float(), want[0], **F32)
    torch.testing.assert_close(got[1].float(), want[1], **F32)


def test_against_fla_naive_recurrent_rwkv6():
    naive = fla_naive("rwkv6/recurrent_naive.py")
    q, k, v, g, u, S0 = _fla_inputs("key", True)
    head_first = lambda t: t.transpose(1, 2)  # noqa: E731  fla's naive rwkv6 is (B, H, T, K)
    o, S = naive.naive_recurrent_rwkv6(*map(head_first, (q, k, v, g)), u, initial_state=S0, output_final_state=True)
    got = gla(*(t.double() for t in (q, k, v, g, u)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(got[0].float(), head_first(o), **F32)
    torch.testing.assert_close(got[1].float(), S, **F32)


def test_the_memory_recalls_every_stored_key():
    """Linear attention (g = 0) with 16 orthonormal keys stores 16 values and returns each one."""
    K, V, n = 16, 5, 16
    keys = torch.linalg.qr(torch.randn(K, K, dtype=torch.float64))[0][:n]
    values = torch.randn(n, V, dtype=torch.float64)
    zeros_k, zeros_v = torch.zeros(n, K, dtype=torch.float64), torch.zeros(n, V, dtype=torch.float64)
    q, k = torch.cat((zeros_k, keys))[None, :, None], torch.cat((keys, zeros_k))[None, :, None]
    v = torch.cat((values, zeros_v))[None, :, None]
    o, _ = gla(q, k, v, scale=1.0)
    torch.testing.assert_close(o[0, n:, 0], values, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fla's Triton kernels)")
@pytest.mark.parametrize("gate, bonus", [("key", False), ("head", False), ("none", False), ("key", True)])
def test_fla_kernels_match_the_torch_path_on_cuda(gate, bonus):
    """Not yet run on hardware here. fla's kernels compute in float32 with their own chunking: 1e-3."""
    x = [None if t is None else t.cuda() for t in inputs(2, 130, 2, 32, 16, gate, bonus, torch.float32)]
    compare(lambda *a: gla(*a[:5], initial_state=a[5], output_final_state=True, backend="triton"),
            lambda *a: reference.gla(*a[:5], initial_state=a[5], output_final_state=True), x, dict(rtol=1e-3, atol=1e-3))


def test_without_a_compiler_auto_takes_the_torch_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SCAN_CPU_CACHE", str(tmp_path))
    _cpu.library.cache_clear()
    DISPATCH.reset()
    try:
        x = inputs(2, 9, 2, 4, 3, "key", False)
        assert DISPATCH.resolve("auto", torch.device("cpu"), x[:4]) == "torch"
        torch.testing.assert_close(gla(*x[:4]), reference.gla(*x[:4]), **F64)
        with pytest.raises(ConfigError, match=r"backend='cpu' does not run on cpu here \(RuntimeError: no C compiler"):
            gla(*x[:4], backend="cpu")
    finally:
        _cpu.library.cache_clear()
        DISPATCH.reset()
