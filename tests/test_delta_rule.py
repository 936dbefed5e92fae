"""src/ops/delta_rule (with decays per head or per key, and its product form) and
src/ops/dplr_delta_rule (its generalisation): the chunked UT-form paths against reference.py
(forward, final state, every input gradient), the C loop (cpu.py) against it (the same), against
fla's naive loops (when fla-core is installed), and the identities.

Tolerances: float64 chunked vs the float64 loop agree to rounding (1e-10; the triangular solve
reorders the sums). float32 chunked vs the float64 loop: float32 rounding over <= 80 steps with
unit keys and O(1) values, through a unit-triangular solve whose inverse stays O(1) for beta in
(0, 2) (it is a product of transitions of norm <= 1): 1e-4 relative and absolute (2e-4 where
beta is near 2: I - beta k k^T has an eigenvalue near -1, so errors do not decay). The C loop
in float32 is the same loop in float32 rounding: the same tolerances.
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive
from op_backends import compare, grads

from src.ops import _cpu
from src.ops.delta_rule import DISPATCH, chunked, cpu, delta_product, delta_rule, reference
from src.ops.dplr_delta_rule import chunked as dplr_chunked
from src.ops.dplr_delta_rule import dplr_delta_rule
from src.ops.dplr_delta_rule import reference as dplr_reference

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-4, atol=1e-4)
F32_NEAR_2 = dict(rtol=2e-4, atol=2e-4)  # beta near 2, see the module docstring
SHAPES = [(2, 1, 2, 8, 8, 64), (2, 7, 1, 5, 3, 64), (1, 77, 2, 8, 6, 16), (2, 33, 3, 4, 4, 8), (1, 64, 1, 6, 9, 32)]


def inputs(B, T, H, K, V, gated, dtype=torch.float64, beta_max=2.0, seed=0, n=1):
    """Unit q and k (as the layers make them), beta in (0, beta_max), log decays in (-inf, 0): per
    head (gated True), per key (gated "key") or none; k, v, beta with n steps per token."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = F.normalize(r(B, T, H, K), dim=-1), F.normalize(r(B, T * n, H, K), dim=-1), r(B, T * n, H, V)
    beta = beta_max * torch.rand(B, T * n, H, generator=g, dtype=torch.float64)
    decay = F.logsigmoid(r(B, T, H, K) if gated == "key" else r(B, T, H)) if gated else None
    return [None if t is None else t.to(dtype) for t in (q, k, v, beta, decay, r(B, H, K, V))]


def dplr_inputs(B, T, H, K, V, per_key, dtype=torch.float64, seed=0):
    """RWKV-7's shape: a = -kk, b = kk * a with kk a unit vector and a in (0, 1)."""
    q, k, v, beta, _, S0 = inputs(B, T, H, K, V, False, torch.float64, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    kk = F.normalize(torch.randn(B, T, H, K, generator=g, dtype=torch.float64), dim=-1)
    a_gate = torch.rand(B, T, H, K, generator=g, dtype=torch.float64)
    shape = (B, T, H, K) if per_key else (B, T, H)
    decay = -0.6065 * torch.rand(*shape, generator=g, dtype=torch.float64)  # RWKV-7's range
    return [t.to(dtype) for t in (q, k, v, -kk, kk * a_gate, decay, S0)]


def call_delta(fn, chunk=None):
    extra = {} if chunk is None else {"chunk": chunk}
    return lambda q, k, v, beta, g, S0: fn(q, k, v, beta, g, None, S0, True, **extra)


def call_dplr(fn, chunk=None):
    extra = {} if chunk is None else {"chunk": chunk}
    return lambda q, k, v, a, b, g, S0: fn(q, k, v, a, b, g, None, S0, True, **extra)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gated", [False, True, "key"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_delta_rule_chunked_matches_the_loop(shape, gated, dtype, tol):
    *dims, chunk = shape
    compare(call_delta(chunked.delta_rule, chunk), call_delta(reference.delta_rule), inputs(*dims, gated, dtype), tol)


# (B, T, H, K, V): as SHAPES (several checkpoint segments of cpu.CHECKPOINT = 32 steps, a partial
# last one) and K = V = 64 (whole vector blocks, no column tail)
@pytest.mark.parametrize("shape", [shape[:5] for shape in SHAPES] + [(1, 70, 2, 64, 64)])
@pytest.mark.parametrize("gated", [False, True, "key"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_delta_rule_cpu_loop_matches_the_loop(shape, gated, dtype, tol):
    compare(call_delta(cpu.delta_rule), call_delta(reference.delta_rule), inputs(*shape, gated, dtype), tol)


@pytest.mark.parametrize("gated", [False, True, "key"])
def test_delta_rule_cpu_loop_splits_heads_over_threads_within_a_batch_row(gated, two_threads):
    """6 heads (B 3, H 2) over 2 threads: the second thread starts at head 1 of batch row 1."""
    assert _cpu.ranges(6, 1, 3 * 48 * 2 * 16 * 16) == [(0, 3), (3, 6)]
    compare(call_delta(cpu.delta_rule), call_delta(reference.delta_rule), inputs(3, 48, 2, 16, 16, gated), F64)


def test_auto_takes_the_c_loop_on_cpu():
    x = inputs(2, 9, 2, 4, 4, True)
    assert DISPATCH.resolve("auto", torch.device("cpu"), x[:5]) == "cpu"
    assert DISPATCH.resolve("auto", torch.device("cpu"), [t.half() for t in x[:5]]) == "cpu"  # float16, widened
    torch.testing.assert_close(delta_rule(*x[:5]), reference.delta_rule(*x[:5]), **F64)


@pytest.mark.parametrize("gated", [False, True, "key"])
@pytest.mark.parametrize("fn", [chunked.delta_rule, cpu.delta_rule])
def test_delta_rule_with_beta_near_2(gated, fn):
    x = inputs(2, 70, 2, 8, 4, gated, torch.float32)
    x[3] = 1.999 - 0.001 * x[3] / 2  # beta in (1.998, 1.999)
    compare(call_delta(fn, 32) if fn is chunked.delta_rule else call_delta(fn), call_delta(reference.delta_rule), x,
            F32_NEAR_2)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("per_key", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_dplr_chunked_matches_the_loop(shape, per_key, dtype, tol):
    *dims, chunk = shape
    compare(call_dplr(dplr_chunked.dplr_delta_rule, chunk), call_dplr(dplr_reference.dplr_delta_rule),
            dplr_inputs(*dims, per_key, dtype), tol)


# (B, T, H, K, V): the C loop's vector blocks of 16 (float32) or 8 (float64) columns, with a tail
# (V 9, 20) or without (V 64), over several checkpoint segments (T 33 > CHECKPOINT / n tokens)
@pytest.mark.parametrize("shape", [(2, 1, 2, 8, 8), (2, 7, 1, 5, 3), (1, 33, 2, 6, 9), (1, 21, 2, 64, 20),
                                   (1, 20, 1, 64, 64)])
@pytest.mark.parametrize("n", [2, 3])
@pytest.mark.parametrize("gated", [False, True, "key"])
@pytest.mark.parametrize("backend, dtype, tol", [("cpu", torch.float64, F64), ("torch", torch.float64, F64),
                                                 ("cpu", torch.float32, F32), ("torch", torch.float32, F32)])
def test_delta_product_matches_its_loop(shape, n, gated, backend, dtype, tol):
    """The interleaved delta rule (C loop or chunked) against the plain loop of n steps per token."""
    compare(lambda *a: delta_product(*a[:5], None, a[5], True, num_householder=n, backend=backend),
            lambda *a: reference.delta_product(*a[:5], None, a[5], True, num_householder=n),
            inputs(*shape, gated, dtype, n=n), tol)


def test_delta_product_with_one_step_is_the_delta_rule():
    x = inputs(2, 9, 2, 4, 3, True)
    torch.testing.assert_close(delta_product(*x[:5], num_householder=1), reference.delta_rule(*x[:5]), **F64)
    torch.testing.assert_close(reference.delta_product(*x[:5], num_householder=1), reference.delta_rule(*x[:5]),
                               **F64)


def test_delta_product_refuses_keys_of_the_wrong_length():
    q, k, v, beta, g, _ = inputs(1, 5, 1, 4, 3, True, n=2)
    with pytest.raises(ValueError, match="num_householder=3 takes k, v, beta of 15 positions"):
        delta_product(q, k, v, beta, g, num_householder=3)


def test_a_per_key_decay_equal_over_keys_is_the_per_head_decay():
    q, k, v, beta, g, S0 = inputs(2, 40, 2, 4, 3, True)
    want = reference.delta_rule(q, k, v, beta, g, None, S0, True)
    for fn in (lambda *a: chunked.delta_rule(*a, chunk=16), cpu.delta_rule):
        torch.testing.assert_close(fn(q, k, v, beta, g[..., None].expand(-1, -1, -1, 4), None, S0, True), want, **F64)


def test_zero_decay_is_deltanet():
    q, k, v, beta, g, S0 = inputs(2, 40, 2, 4, 3, True)
    want = chunked.delta_rule(q, k, v, beta, None, None, S0, True, chunk=16)
    torch.testing.assert_close(chunked.delta_rule(q, k, v, beta, torch.zeros_like(g), None, S0, True, chunk=16),
                               want, **F64)


def test_dplr_runs_the_delta_rule():
    """exp(g) (I - beta k k^T) S + beta k v^T is DPLR with a = k, b = -beta exp(g) k, k' = beta k."""
    q, k, v, beta, g, S0 = inputs(2, 40, 2, 4, 3, True)
    want = reference.delta_rule(q, k, v, beta, g, None, S0, True)
    b = -(beta * g.exp())[..., None] * k
    got = dplr_chunked.dplr_delta_rule(q, beta[..., None] * k, v, k, b, g, None, S0, True, chunk=16)
    torch.testing.assert_close(got, want, **F64)


@pytest.mark.parametrize("op", ["delta_rule", "gated", "dplr"])
def test_splitting_the_sequence_passes_the_state_on(op):
    if op == "dplr":
        q, k, v, a, b, g, S0 = dplr_inputs(2, 45, 2, 4, 3, True)
        run = lambda s, S: dplr_chunked.dplr_delta_rule(  # noqa: E731
            q[:, s], k[:, s], v[:, s], a[:, s], b[:, s], g[:, s], None, S, True, chunk=16)
    else:
        q, k, v, beta, g, S0 = inputs(2, 45, 2, 4, 3, op == "gated")
        run = lambda s, S: chunked.delta_rule(q[:, s], k[:, s], v[:, s], beta[:, s],  # noqa: E731
                                             None if g is None else g[:, s], None, S, True, chunk=16)
    o, S = run(slice(None), S0)
    o1, S1 = run(slice(None, 19), S0)
    o2, S2 = run(slice(19, None), S1)
    torch.testing.assert_close(torch.cat((o1, o2), 1), o, **F64)
    torch.testing.assert_close(S2, S, **F64)


@pytest.mark.parametrize("op", ["gated", "gated-cpu", "key", "key-cpu", "dplr"])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_a_reset_is_two_independent_calls(op, dtype, tol):
    """g = -inf at position p forgets the state before p (DPLR: with b_p = 0, its low-rank term);
    every gradient stays finite and equals the gradient of the two calls."""
    p = 21
    if op == "dplr":
        q, k, v, a, b, g, S0 = dplr_inputs(2, 50, 2, 4, 3, True, dtype)
        b[:, p] = 0
        run = lambda s, g, S: dplr_chunked.dplr_delta_rule(  # noqa: E731
            q[:, s], k[:, s], v[:, s], a[:, s], b[:, s], g[:, s], None, S, True, chunk=16)
    else:
        q, k, v, beta, g, S0 = inputs(2, 50, 2, 4, 3, "key" if op.startswith("key") else True, dtype)
        fn = cpu.delta_rule if op.endswith("-cpu") else lambda *a: chunked.delta_rule(*a, chunk=16)
        run = lambda s, g, S: fn(q[:, s], k[:, s], v[:, s], beta[:, s], g[:, s], None, S, True)  # noqa: E731
    for t in (q, k, v, S0):
        t.requires_grad_()
    g_reset = g.clone()
    g_reset[:, p] = float("-inf")
    g_reset.requires_grad_()
    o, S = run(slice(None), g_reset, S0)
    o1, _ = run(slice(None, p), g, S0)
    o2, S2 = run(slice(p, None), g, None)
    torch.testing.assert_close(o, torch.cat((o1, o2), 1), **tol)
    torch.testing.assert_close(S, S2, **tol)
    got = torch.autograd.grad(o.sum() + S.sum(), (q, k, v, S0, g_reset))
    want = torch.autograd.grad(torch.cat((o1, o2), 1).sum() + S2.sum(), (q, k, v, S0))
    for x, y in zip(got, want):
        torch.testing.assert_close(x, y, **tol)
    assert torch.isfinite(got[-1]).all() and (got[-1][:, p] == 0).all()


def test_the_public_functions_run_the_torch_path_on_cpu():
    x = inputs(2, 70, 2, 8, 4, True)
    torch.testing.assert_close(delta_rule(*x[:5], initial_state=x[5], output_final_state=True),
                               reference.delta_rule(*x[:5], initial_state=x[5], output_final_state=True), **F64)
    y = dplr_inputs(2, 70, 2, 8, 4, True)
    kw = dict(initial_state=y[6], output_final_state=True)
    torch.testing.assert_close(dplr_delta_rule(*y[:6], **kw), dplr_reference.dplr_delta_rule(*y[:6], **kw), **F64)


def test_against_fla_delta_rule_recurrence():
    naive = fla_naive("delta_rule/naive.py")
    q, k, v, beta, _, S0 = inputs(2, 40, 2, 8, 6, False, torch.float32, seed=3)
    head_first = lambda t: t.transpose(1, 2)  # noqa: E731  fla's naive delta rule is (B, H, T, ...)
    o, S = naive.delta_rule_recurrence(*map(head_first, (q, k, v, beta)), initial_state=S0, output_final_state=True)
    got = delta_rule(*(t.double() for t in (q, k, v, beta)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(got[0].float(), head_first(o), **F32)
    torch.testing.assert_close(got[1].float(), S, **F32)


def test_against_fla_naive_recurrent_gated_delta_rule():
    naive = fla_naive("gated_delta_rule/naive.py")
    q, k, v, beta, g, S0 = inputs(2, 40, 2, 8, 6, True, torch.float32, seed=3)
    o, S = naive.naive_recurrent_gated_delta_rule(q, k, v, beta, g, initial_state=S0, output_final_state=True)
    got = delta_rule(*(t.double() for t in (q, k, v, beta, g)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(got[0].float(), o, **F32)
    torch.testing.assert_close(got[1].float(), S, **F32)


def fla_grads(got, want, inputs64, inputs32, tol):
    """Outputs and the gradients of every input, ours (float64) against fla's naive loop (which
    computes in float32 whatever it is given)."""
    for x, y in zip(got, want):
        torch.testing.assert_close(x.float(), y, **tol)
    for gx, gy in zip(grads(got, inputs64), grads(want, inputs32)):
        torch.testing.assert_close(gx.float(), gy, **tol)


def test_against_fla_naive_recurrent_kda():
    naive = fla_naive("kda/naive.py")
    x32 = [t.requires_grad_() for t in inputs(2, 40, 2, 8, 6, "key", torch.float32, seed=3)]
    x64 = [t.detach().double().requires_grad_() for t in x32]
    q, k, v, beta, g, S0 = x32
    want = naive.naive_recurrent_kda(q, k, v, g, beta, initial_state=S0, output_final_state=True)
    got = delta_rule(*x64[:5], initial_state=x64[5], output_final_state=True)
    fla_grads(got, want, x64, x32, F32)


@pytest.mark.parametrize("gated", [False, True])
@pytest.mark.parametrize("n", [2, 3])
def test_against_fla_naive_recurrent_gated_delta_product(gated, n):
    naive = fla_naive("gated_delta_product/naive.py")
    x32 = [None if t is None else t.requires_grad_() for t in inputs(2, 40, 2, 8, 6, gated, torch.float32, seed=3,
                                                                       n=n)]
    x64 = [None if t is None else t.detach().double().requires_grad_() for t in x32]
    q, k, v, beta, g, S0 = x32
    want = naive.naive_recurrent_gated_delta_product(q, k, v, g, beta, 8**-0.5, initial_state=S0,
                                                     output_final_state=True, num_householder=n)
    got = delta_product(*x64[:5], initial_state=x64[5], output_final_state=True, num_householder=n)
    fla_grads(got, want, x64, x32, F32)


def test_against_fla_dplr_recurrence():
    naive = fla_naive("generalized_delta_rule/dplr/naive.py")
    q, k, v, a, b, g, S0 = dplr_inputs(2, 40, 2, 8, 6, True, torch.float32, seed=3)
    head_first = lambda t: t.transpose(1, 2)  # noqa: E731  fla's naive DPLR is (B, H, T, K)
    o, S = naive.dplr_recurrence(*map(head_first, (q, k, v, a, b, g)), initial_state=S0, output_final_state=True)
    got = dplr_delta_rule(*(t.double() for t in (q, k, v, a, b, g)), initial_state=S0.double(), output_final_state=True)
    torch.testing.assert_close(got[0].float(), head_first(o), **F32)
    torch.testing.assert_close(got[1].float(), S, **F32)


def test_the_memory_recalls_every_stored_key():
    """Write 16 orthonormal keys with beta = 1, then read each back (k = 0 while reading): the whole
    (K, V) matrix is the memory, so all 16 values come back, not only what a diagonal could hold."""
    K, V, n = 16, 5, 16
    keys = torch.linalg.qr(torch.randn(K, K, dtype=torch.float64))[0][:n]  # orthonormal rows
    values = torch.randn(n, V, dtype=torch.float64)
    zeros_k, zeros_v = torch.zeros(n, K, dtype=torch.float64), torch.zeros(n, V, dtype=torch.float64)
    q = torch.cat((zeros_k, keys))[None, :, None]  # (1, 2n, 1, K)
    k = torch.cat((keys, zeros_k))[None, :, None]
    v = torch.cat((values, zeros_v))[None, :, None]
    o, _ = delta_rule(q, k, v, torch.ones(1, 2 * n, 1, dtype=torch.float64), scale=1.0)
    torch.testing.assert_close(o[0, n:, 0], values, rtol=1e-10, atol=1e-10)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (fla's Triton kernels)")
@pytest.mark.parametrize("op", ["delta_rule", "gated", "key", "dplr"])
def test_fla_kernels_match_the_loop_on_cuda(op):
    """Not yet run on hardware here. fla's kernels compute in float32 with their own chunking: 1e-3."""
    tol = dict(rtol=1e-3, atol=1e-3)
    if op == "dplr":
        x = [t.cuda() for t in dplr_inputs(2, 130, 2, 32, 16, True, torch.float32)]
        compare(lambda *a: dplr_delta_rule(*a[:6], initial_state=a[6], output_final_state=True, backend="triton"),
                call_dplr(dplr_reference.dplr_delta_rule), x, tol)
    else:
        gated = {"delta_rule": False, "gated": True, "key": "key"}[op]
        x = [None if t is None else t.cuda() for t in inputs(2, 130, 2, 32, 16, gated, torch.float32)]
        compare(lambda *a: delta_rule(*a[:5], initial_state=a[5], output_final_state=True, backend="triton"),
                call_delta(reference.delta_rule), x, tol)


def test_the_c_loop_splits_as_one_call():
    """cpu.delta_rule: two calls passing the state on equal one call."""
    q, k, v, beta, g, S0 = inputs(2, 45, 2, 4, 3, True)
    o, S = cpu.delta_rule(q, k, v, beta, g, None, S0, True)
    o1, S1 = cpu.delta_rule(q[:, :20], k[:, :20], v[:, :20], beta[:, :20], g[:, :20], None, S0, True)
    o2, S2 = cpu.delta_rule(q[:, 20:], k[:, 20:], v[:, 20:], beta[:, 20:], g[:, 20:], None, S1, True)
    torch.testing.assert_close(o, torch.cat((o1, o2), 1), **F64)
    torch.testing.assert_close(S, S2, **F64)


def test_the_c_loop_folds_strong_decays():
    """Log decays of -30 per step: the C loop's state scale c falls below 2^-60 every other step
    and is folded back into the state; the result and the gradients are the loop's (float32)."""
    q, k, v, beta, _, S0 = inputs(1, 40, 2, 8, 6, False, torch.float32)
    g = torch.full((1, 40, 2), -30.0)
    g[:, ::5] = -0.01
    compare(call_delta(cpu.delta_rule), call_delta(reference.delta_rule), [q, k, v, beta, g, S0], F32)


def test_without_a_compiler_auto_takes_the_torch_path(monkeypatch, tmp_path):
    monkeypatch.setenv("CC", str(tmp_path / "no-such-cc"))
    monkeypatch.setenv("SCAN_CPU_CACHE", str(tmp_path))
    _cpu.library.cache_clear()
    DISPATCH.reset()
    try:
        x = inputs(2, 9, 2, 4, 3, True)
        assert DISPATCH.resolve("auto", torch.device("cpu"), x[:5]) == "torch"
        torch.testing.assert_close(delta_rule(*x[:5]), reference.delta_rule(*x[:5]), **F64)
    finally:
        _cpu.library.cache_clear()
        DISPATCH.reset()
