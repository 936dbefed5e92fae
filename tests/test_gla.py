"""src/ops/gla: the chunked path and the C loop (cpu.py) against reference.py (forward, final state, every input gradient),
against fla's naive loops (when fla-core is installed), and the recurrence's identities; signed
decays (`negative`) likewise, and the reference's gradient through a signed decay a (g = log|a|).

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
from src.ops.gla import DISPATCH, chunked, cpu, gla, gpu, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 rounding, see the module docstring
# (B, T, H, K, V, chunk): T = 1, odd T, T not a multiple of the chunk, several chunks, K != V, H = 1
SHAPES = [(2, 1, 2, 8, 8, 64), (2, 7, 1, 5, 3, 64), (1, 77, 2, 8, 6, 16), (2, 33, 3, 4, 4, 8), (1, 64, 1, 6, 9, 32)]
GATES = ["key", "head", "none", "key-signed", "head-signed"]  # -signed: about half of the decays negative


def inputs(B, T, H, K, V, gate, bonus, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V)
    decay = {"key": F.logsigmoid(r(B, T, H, K)), "head": F.logsigmoid(r(B, T, H)), "none": None}[gate.split("-")[0]]
    u = r(H, K) if bonus else None
    return [None if t is None else t.to(dtype) for t in (q, k, v, decay, u, r(B, H, K, V))]


def negative(gate, g, seed=5):
    """The sign mask of a -signed gate (g's shape, about half true), else None."""
    if not gate.endswith("-signed"):
        return None
    return torch.rand(g.shape, generator=torch.Generator().manual_seed(seed)) < 0.5


def call(fn, chunk=None, negative=None):
    extra = {} if chunk is None else {"chunk": chunk}
    return lambda q, k, v, g, u, S0: fn(q, k, v, g, u, None, S0, True, negative, **extra)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("bonus", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_chunked_matches_the_loop(shape, gate, bonus, dtype, tol):
    *dims, chunk = shape
    x = inputs(*dims, gate, bonus, dtype)
    neg = negative(gate, x[3])
    compare(call(chunked.gla, chunk, neg), call(reference.gla, None, neg), x, tol)


# (B, T, H, K, V): as SHAPES (several checkpoint segments of cpu.CHECKPOINT = 32 steps, a partial
# last one), V = 16 (blocks of 8 steps in the forward, float32 and float64, T not a multiple of 8,
# K not of 4) and K = V = 64 (the sizes the C loop has a specialised step for)
CPU_SHAPES = [shape[:5] for shape in SHAPES] + [(2, 45, 2, 5, 16), (1, 70, 2, 64, 64)]



def test_chunks_pads_only_where_the_chunk_does_not_divide_T():
    """chunks() is a view of x where C divides T (every chunked op calls it on every input; F.pad
    copies even when it pads nothing), and zero-pads the last chunk otherwise."""
    x = torch.randn(2, 48, 3, 5)
    c = chunked.chunks(x, 16)  # (B, H, N, C, K)
    assert c.shape == (2, 3, 3, 16, 5) and c.data_ptr() == x.data_ptr()
    assert torch.equal(c[:, 1, 2, 3], x[:, 2 * 16 + 3, 1])
    c = chunked.chunks(x[:, :45], 16)
    assert c.shape == (2, 3, 3, 16, 5) and torch.equal(c[:, :, 2, 13:], torch.zeros(2, 3, 3, 5))
    assert torch.equal(c[:, 0, 2, 12], x[:, 44, 0])

@pytest.mark.parametrize("shape", CPU_SHAPES)
@pytest.mark.parametrize("gate", GATES)
@pytest.mark.parametrize("bonus", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_cpu_loop_matches_the_loop(shape, gate, bonus, dtype, tol):
    x = inputs(*shape, gate, bonus, dtype)
    neg = negative(gate, x[3])
    compare(call(cpu.gla, None, neg), call(reference.gla, None, neg), x, tol)


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
    assert DISPATCH.resolve("auto", torch.device("cpu"), [t.half() for t in x[:3]]) == "cpu"  # float16, widened
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
@pytest.mark.parametrize("gate", ["key", "key-signed"])  # signed: the C loop's row scales change sign
def test_strong_decays_stay_finite(fn, V, gate):
    """Log decays of -50 per step: exp(-b) would overflow float32 after two steps; every
    exponent here is <= 0 (the C loop's row scales stay >= 2^-60 in size), so the output is finite
    and equals the loop. The chunked path's in-chunk decays are differences of float32 cumulative
    sums down to 64 * -50, off by eps 3200 ~ 2e-4 relative (with float64 sums it is off by 4e-7,
    signed or not): 5e-4 there."""
    q, k, v, _, _, S0 = inputs(1, 70, 2, 4, V, "none", False, torch.float32)
    g = torch.full((1, 70, 2, 4), -50.0)
    g[:, ::7] = -0.01
    neg = negative(gate, g)
    o, S = fn(q, k, v, g, None, None, S0, True, neg)
    want = reference.gla(*(t.double() for t in (q, k, v, g)), initial_state=S0.double(), output_final_state=True,
                         negative=neg)
    tol = F32 if fn is cpu.gla else dict(rtol=5e-4, atol=5e-4)
    torch.testing.assert_close(o.double(), want[0], **tol)
    torch.testing.assert_close(S.double(), want[1], **tol)


PATHS = {"torch": lambda *a: chunked.gla(*a, chunk=16), "cpu": cpu.gla, "reference": reference.gla}


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("gate", ["key", "head"])
def test_decays_of_minus_one_flip_the_state(path, gate):
    """g = 0, all negative: S_t = -S_{t-1} + k_t v_t^T; with k = 0 the output alternates,
    o_t = (-1)^(t+1) S_0^T (scale q_t) (parity)."""
    q, _, v, g, _, S0 = inputs(2, 40, 2, 4, 16, gate, False)
    k, g = torch.zeros_like(q), torch.zeros_like(g)
    o, S = PATHS[path](q, k, v, g, None, None, S0, True, torch.ones_like(g, dtype=torch.bool))
    sign = -((-1.0) ** torch.arange(40, dtype=torch.float64))[None, :, None, None]  # -1, 1, -1, ...
    torch.testing.assert_close(o, sign * torch.einsum("bthk,bhkv->bthv", q, S0) / 2, **F64)
    torch.testing.assert_close(S, S0, **F64)  # 40 flips


@pytest.mark.parametrize("fn", [lambda *a: chunked.gla(*a, chunk=16), cpu.gla])
@pytest.mark.parametrize("gate", ["key", "head"])
@pytest.mark.parametrize("bonus", [False, True])
def test_an_all_false_sign_mask_is_no_mask(fn, gate, bonus):
    """negative all false runs the signed code and gives the unsigned result bit for bit
    (the signs are exact multiplications by 1)."""
    q, k, v, g, u, S0 = inputs(2, 45, 2, 4, 16, gate, bonus, torch.float32)
    want = fn(q, k, v, g, u, None, S0, True)
    got = fn(q, k, v, g, u, None, S0, True, torch.zeros_like(g, dtype=torch.bool))
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def _signed_loop(q, k, v, a, S):
    """The recurrence with the signed decays a (B, T, H, K) as they are: S_t = diag(a_t) S_{t-1} + k_t v_t^T."""
    out = []
    for t in range(q.shape[1]):
        S = a[:, t, :, :, None] * S + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append((S * q[:, t, :, :, None]).sum(-2) * q.shape[-1] ** -0.5)
    return torch.stack(out, 1), S


def test_the_gradient_reaches_a_signed_decay_through_its_log_magnitude():
    """The layers pass g = log|a| and negative = a < 0; d log|a| / da = 1 / a, so the gradient in a
    through the reference is that of the loop on a itself, and gradcheck holds (float64)."""
    q, k, v, _, _, S0 = inputs(1, 9, 2, 3, 2, "none", False)
    a = torch.rand(1, 9, 2, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 1.8 - 0.9
    a = a.where(a.abs() > 0.05, 0.5).requires_grad_()  # away from 0 (finite differences cross no sign change)
    via_log = lambda a: reference.gla(q, k, v, a.abs().log(), None, None, S0, True, a < 0)  # noqa: E731
    assert torch.autograd.gradcheck(via_log, (a,))
    weights = torch.randn(1, 9, 2, 2, dtype=torch.float64), torch.randn(S0.shape, dtype=torch.float64)
    grads = [torch.autograd.grad(sum((x * w).sum() for x, w in zip(f(a), weights)), a)[0]
             for f in (via_log, lambda a: _signed_loop(q, k, v, a, S0))]
    torch.testing.assert_close(*grads, **F64)


def test_signed_decays_run_on_cpu_and_torch_not_on_fla_kernels():
    x = inputs(2, 70, 2, 8, 4, "key", False)
    neg = negative("key-signed", x[3])
    assert DISPATCH.resolve("auto", torch.device("cpu"), x[:5] + [None, x[5], False, neg]) == "cpu"
    assert gpu.unsupported(*x, negative=neg).startswith("signed decays")  # before its device check: on CUDA too
    torch.testing.assert_close(gla(*x[:4], negative=neg, backend="torch"), reference.gla(*x[:4], negative=neg), **F64)
    with pytest.raises(ConfigError, match=r"backend='triton' does not run on cpu here \(signed decays \(negative\): "
                                          r"fla's kernels take log decays only; backend=torch runs them\)"):
        gla(*x[:4], negative=neg, backend="triton")
    with pytest.raises(ValueError, match=r"must be a bool tensor of g's shape \(2, 70, 2, 8\); got torch.float64"):
        gla(*x[:4], negative=neg.double())
    with pytest.raises(ValueError, match=r"of g's shape None"):
        gla(*x[:3], negative=neg)


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


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (the dispatcher's choice on CUDA)")
def test_signed_decays_take_the_torch_path_on_cuda():
    """Not yet run on hardware here: auto skips fla's kernels for signed decays and agrees with the loop."""
    x = [t.cuda() for t in inputs(2, 70, 2, 8, 4, "key", False)]
    neg = negative("key-signed", x[3]).cuda()
    assert DISPATCH.resolve("auto", x[0].device, x[:5] + [None, x[5], False, neg]) == "torch"
    got = gla(*x[:4], initial_state=x[5], output_final_state=True, negative=neg)
    want = reference.gla(*x[:4], initial_state=x[5], output_final_state=True, negative=neg)
    torch.testing.assert_close(got, want, **F64)


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
