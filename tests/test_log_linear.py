"""src/ops/log_linear: the per-level path (chunked.py, on gla's and delta_rule's torch path and C
loop) and, with Mamba-2 inside, the dense-in-chunks path and its C loop (cpu.py, from position 0),
against reference.py's Fenwick loop
(forward, final levels, every input's gradient, from zeros and from a state), the loop against
fla's naive_log_linear_attn (loaded by path; float64, every gradient) and, for Gated DeltaNet
inside, against the definition written out with the delta rule's attention matrix; unit lambdas
give the inner model back.

Tolerances. float64: the same sums reordered (1e-10). float32: the inner ops' float32 products
and decays (their own tests' 1e-4).
"""

import pytest
import torch
import torch.nn.functional as F

from conftest import fla_naive, need_c_loop
from op_backends import compare

from src.ops.delta_rule import reference as delta_reference
from src.ops.gla import reference as gla_reference
from src.ops.log_linear import DISPATCH, chunked, cpu, log_linear_attn, log_linear_delta_rule, reference, torch_path

F64 = dict(rtol=1e-10, atol=1e-10)
F32 = dict(rtol=1e-4, atol=1e-4)
# (B, T, G, H, K, V, t0): T = 1 (from a state: from zeros g is not read at all), odd T, T across
# several powers of two, groups, K and V not powers of two, starts from states at odd positions
# and at a power of two
SHAPES = [(2, 1, 1, 2, 4, 3, 3), (2, 13, 2, 2, 5, 3, 0), (1, 37, 1, 2, 6, 5, 5), (2, 9, 1, 1, 3, 7, 8),
          (1, 20, 1, 3, 4, 4, 13), (1, 1, 2, 2, 3, 2, 7)]
N_LEVELS = 8


def inputs(B, T, G, H, K, V, t0, dtype=torch.float64, seed=0):
    """q, k unit rows, v, beta in (0, 1), g mostly near 0, lambdas in (0, 1), and the buckets of a
    state at t0 (one at each set bit of t0)."""
    gen = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=gen, dtype=torch.float64)  # noqa: E731
    q, k = F.normalize(r(B, T, G, K), dim=-1), F.normalize(r(B, T, G, K), dim=-1)
    beta = torch.rand(B, T, H, generator=gen, dtype=torch.float64)
    lam = torch.rand(B, T, H, N_LEVELS, generator=gen, dtype=torch.float64)
    buckets = r(B, H, t0.bit_count(), K, V)
    return [t.to(dtype) for t in (q, k, r(B, T, H, V), beta, F.logsigmoid(r(B, T, H) + 2), lam, buckets)]


def levels(buckets, t0):
    """The levels of a state at t0: the buckets at the set bits of t0, zeros at the others (no
    gradient reaches those: they are no inputs)."""
    bits = [i for i in range(t0.bit_length()) if (t0 >> i) & 1]
    out = buckets.new_zeros(*buckets.shape[:2], t0.bit_length(), *buckets.shape[3:])
    out[:, :, bits] = buckets
    return out


def with_state(fn, t0, delta, **kw):
    """fn on (q, k, v, [beta,] g, lam, [buckets]) (beta for the delta rule) from the state at t0
    (its buckets only for t0 > 0)."""
    def run(*args):
        q, k, v, *beta, g, lam = args[: len(args) - (t0 > 0)]
        state = (levels(args[-1], t0), t0) if t0 else None
        o, (S, t) = fn(q, k, v, beta[0] if delta else None, g, lam, state, True, **kw)
        assert t == t0 + q.shape[1] and S.shape[2] == t.bit_length()
        return o, S
    return run


def inner(name):
    if name == "cpu":
        need_c_loop("gla")
        need_c_loop("delta_rule")
    return name


def dense(q, k, v, beta, g, lam, state, final, inner, chunk):  # inner: the per-level form's only
    return chunked.log_linear_attn(q, k, v, g, lam, state, final, chunk)


# (path, delta): the per-level form for both inner models; the dense-in-chunks form of Mamba-2,
# with chunks of 4 (levels above them as passes) and of 64 (every level in one chunk)
PATHS = {"levels-mamba2": (chunked.log_linear, False), "levels-gated_deltanet": (chunked.log_linear, True),
         "dense4-mamba2": (lambda *a, **kw: dense(*a, **kw, chunk=4), False),
         "dense64-mamba2": (lambda *a, **kw: dense(*a, **kw, chunk=64), False)}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("name", ["torch", "cpu"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_paths_match_the_fenwick_loop(shape, path, name, dtype):
    *dims, t0 = shape
    fn, delta = PATHS[path]
    args = inputs(*dims, t0, dtype=dtype)
    if not t0:
        del args[6]  # no buckets at position 0
    if not delta:
        del args[3]  # beta
    compare(with_state(fn, t0, delta, inner=inner(name)), with_state(reference._fenwick, t0, delta),
            args, F64 if dtype == torch.float64 else F32)


@pytest.mark.parametrize("T, t0", [(30, 0), (41, 0), (41, 5), (30, 22), (41, 63)])
def test_dense_form_over_many_chunk_levels(T, t0):
    """Chunks of 2: up to 5 levels of the tree over chunks, blocks cut by the first chunk (odd t0 //
    2) and by the last, against the Fenwick loop, every gradient."""
    args = inputs(2, T, 1, 2, 3, 2, t0)
    del args[3]  # beta
    if not t0:
        del args[5]
    fn = with_state(lambda *a, **kw: dense(*a, **kw, chunk=2), t0, False, inner="torch")
    compare(fn, with_state(reference._fenwick, t0, False), args, F64)


# (B, T, G, H, K, V, chunk): T = 1, groups and a partial chunk, 4 chunk levels with the last half
# blocks cut, K and V past a vector with tails (float32 16 lanes, float64 8), one chunk of 64 (four
# row blocks, no level above), a partial chunk of 64
C_SHAPES = [(2, 1, 1, 2, 4, 3, 4), (2, 13, 2, 2, 5, 3, 4), (1, 37, 1, 2, 6, 5, 4), (1, 100, 1, 1, 33, 40, 8),
            (2, 64, 1, 2, 16, 16, 64), (1, 120, 1, 1, 17, 24, 64)]


@pytest.mark.parametrize("shape", C_SHAPES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_c_loop_matches_the_fenwick_loop(shape, dtype):
    need_c_loop("log_linear")
    *dims, C = shape
    q, k, v, _, g, lam, _ = inputs(*dims, 0, dtype=dtype)
    compare(lambda *a: (lambda o, S: (o, S[0]))(*cpu.log_linear_attn(*a, True, chunk=C)),
            lambda *a: (lambda o, S: (o, S[0]))(*reference.log_linear_attn(*a, None, True)),
            [q, k, v, g, lam], F64 if dtype == torch.float64 else F32)


def test_cpu_backend_runs_the_c_loop_where_it_can(monkeypatch):
    """Mamba-2 inside from position 0 in float32 or float64 (or a half precision, widened): the C loop;
    from a state, Gated DeltaNet inside or another dtype: chunked.py's forms (with gla's and
    delta_rule's loops per level)."""
    need_c_loop("log_linear")
    q, k, v, beta, g, lam, buckets = inputs(1, 9, 1, 2, 4, 3, 5)
    state = (levels(buckets, 5), 5)
    calls = []
    spy = lambda q, k, v, g, lam, final: calls.append(q) or torch_path(q, k, v, None, g, lam, None, final)  # noqa: E731
    monkeypatch.setattr(cpu, "log_linear_attn", spy)
    log_linear_attn(q, k, v, g, lam, backend="cpu")
    log_linear_attn(q.half(), k.half(), v.half(), g.half(), lam.half(), backend="cpu")  # the loop, widened
    assert len(calls) == 2
    log_linear_attn(q, k, v, g, lam, state, backend="cpu")
    log_linear_delta_rule(q, k, v, beta, g, lam, backend="cpu")
    assert len(calls) == 2
    assert cpu.unsupported(q, k, v, None, g, lam, state) == "an initial state (the C loop starts at position 0)"
    assert cpu.unsupported(q, k, v, beta, g, lam) == "Gated DeltaNet inside (the C loop runs Mamba-2's)"
    assert cpu.unsupported(q.to(torch.complex64), k, v, None, g, lam) == \
        "dtype torch.complex64 (the C loop takes float32, float64, and half precisions widened to float32)"


@pytest.mark.parametrize("delta", [False, True], ids=["mamba2", "gated_deltanet"])
def test_split_sequences_continue_and_levels_merge_at_powers_of_two(delta):
    q, k, v, beta, g, lam, _ = inputs(2, 23, 2, 2, 4, 3, 0)
    b = beta if delta else None
    o, (S, t) = torch_path(q, k, v, b, g, lam, None, True)
    state, outs = None, []
    for lo, hi in ((0, 1), (1, 4), (4, 8), (8, 9), (9, 23)):
        part = (x[:, lo:hi] for x in (q, k, v))
        o_part, state = torch_path(*part, None if b is None else b[:, lo:hi], g[:, lo:hi], lam[:, lo:hi], state, True)
        assert state[1] == hi and state[0].shape[2] == hi.bit_length()  # one more level past 1, 2, 4, 8, 16
        outs.append(o_part)
    torch.testing.assert_close(torch.cat(outs, 1), o, **F64)
    torch.testing.assert_close(state[0], S, **F64)


@pytest.mark.parametrize("T", [2, 7, 16, 37])  # T = 1 reads no decay: no gradient to compare
def test_loop_matches_fla_naive_log_linear_attn_with_every_gradient(T):
    naive = fla_naive("log_linear_attn/naive.py")
    q, k, v, _, g, lam, _ = inputs(2, T, 2, 2, 5, 3, 0)
    compare(lambda *a: reference.log_linear_attn(*a)[0], naive.naive_log_linear_attn, [q, k, v, g, lam], F64)


def level(t, s):
    return 0 if s == t else (t ^ s).bit_length()


def test_delta_rule_loop_is_the_definition():
    """o_t = sum_s lambda_t[l(t, s)] A_ts v_s with Gated DeltaNet's A_ts = q_t^T P_t ... P_{s+1}
    beta_s k_s, read from the delta rule's loop run on one-hot values (o is linear in v)."""
    B, T, H = 2, 19, 2
    q, k, v, beta, g, lam, _ = inputs(B, T, H, H, 4, 3, 0)
    eye = torch.eye(T, dtype=torch.float64)[None, :, None, :].expand(B, T, H, T)  # v_s = e_s
    A = delta_reference.delta_rule(q, k, eye, beta, g, scale=1.0)[0]  # A[b, t, h, s]
    weights = torch.stack([torch.stack([lam[:, t, :, level(t, s)] for s in range(T)], -1) for t in range(T)], 1)
    want = torch.einsum("bths,bshv->bthv", A * weights * torch.ones(T, T).tril()[None, :, None, :], v)
    torch.testing.assert_close(reference.log_linear_delta_rule(q, k, v, beta, g, lam)[0], want, **F64)


def test_unit_lambdas_give_the_inner_model():
    q, k, v, beta, g, lam, _ = inputs(2, 21, 2, 2, 4, 3, 0)
    ones = torch.ones_like(lam)
    torch.testing.assert_close(log_linear_attn(q, k, v, g, ones)[0], gla_reference.gla(q, k, v, g, scale=1.0)[0], **F64)
    torch.testing.assert_close(log_linear_delta_rule(q, k, v, beta, g, ones)[0],
                               delta_reference.delta_rule(q, k, v, beta, g, scale=1.0)[0], **F64)


def test_dispatch_and_its_errors():
    q, k, v, beta, g, lam, _ = inputs(1, 9, 1, 2, 4, 4, 0, dtype=torch.float32)
    assert DISPATCH.resolve("auto", torch.device("cpu"), (q, k, v, None, g, lam, None, False)) in ("cpu", "torch")
    torch.testing.assert_close(log_linear_attn(q, k, v, g, lam, backend="torch")[0],
                               chunked.log_linear(q, k, v, None, g, lam, None, False, inner="torch")[0])
    with pytest.raises(ValueError, match="position 9 needs 5 levels; level_scales has 4"):
        log_linear_attn(q, k, v, g, lam[..., :4])
    with pytest.raises(ValueError, match="G | H"):
        log_linear_delta_rule(q, k, v[:, :, :1].expand(-1, -1, 3, -1), beta, g, lam)


def test_strong_decays_over_many_chunks_keep_gradients_finite():
    """Every decay between chunks runs from an earlier chunk's end to a later start (exponent <= 0):
    the reverse's exp would overflow."""
    q, k, v, _, g, lam, _ = inputs(1, 120, 1, 1, 3, 2, 0, dtype=torch.float32)
    g = (20 * g - 10).requires_grad_()
    o, _ = chunked.log_linear_attn(q, k, v, g, lam, None, True, chunk=4)
    (grad,) = torch.autograd.grad(o.sum(), g)
    assert torch.isfinite(o).all() and torch.isfinite(grad).all()
