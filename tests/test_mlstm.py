"""src/ops/mlstm: the torch path (chunked.py) and the C loop path (cpu.py) against reference.py
(forward, final state, every input's gradient), and reference.py against xlstm's own
parallel_stabilized_simple and recurrent_step_stabilized_simple (when xlstm is installed).

Tolerances. float64: the same sums reordered (1e-10). float32: h = num / max(|n . q|, exp(-m))
divides by |n . q|, which can be small, so h amplifies the rounding of num and z: the float32
reference loop itself is off by ~1e-5 relative to 1 + |h| here; the chunked gla path adds its
cumulative-decay rounding (see src/ops/gla/chunked.py) and is off by ~7e-5, gradients a few times
more: 2e-3 relative and absolute.
"""

import pytest
import torch

from conftest import need_c_loop, xlstm_backends
from op_backends import compare

from src.ops.mlstm import DISPATCH, chunked, cpu, mlstm, reference
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=2e-3, atol=2e-3)  # float32 through the normaliser, see the module docstring
PATHS = {"torch": chunked.mlstm, "cpu": cpu.mlstm}
# (B, T, H, K, V): T = 1, odd T, K != V and not a power of two, several gla chunks (64) and C-loop
# checkpoint segments (32) with a partial last one, V = 16 (the C loop's 8-step blocks), K = V = 64
SHAPES = [(2, 1, 2, 8, 8), (2, 7, 1, 5, 3), (1, 77, 2, 6, 9), (2, 45, 2, 5, 16), (1, 70, 2, 64, 64)]


def inputs(B, T, H, K, V, dtype=torch.float64, seed=0, i_mean=0.0):
    """q, k, v, i, f, C0, n0, m0: gates about xlstm's initial range (forget biases 3..6)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    q, k, v, i, f = r(B, T, H, K), r(B, T, H, K), r(B, T, H, V), r(B, T, H) + i_mean, r(B, T, H) + 3
    C0, n0, m0 = r(B, H, K, V), r(B, H, K), r(B, H) + i_mean
    return [t.to(dtype) for t in (q, k, v, i, f, C0, n0, m0)]


def with_state(fn):
    return lambda q, k, v, i, f, C0, n0, m0: (lambda h, S: (h, *S))(*fn(q, k, v, i, f, (C0, n0, m0), True))


def from_zero(fn):
    return lambda q, k, v, i, f: (lambda h, S: (h, *S))(*fn(q, k, v, i, f, None, True))


def path(name):
    if name == "cpu":
        need_c_loop("gla")
    return PATHS[name]


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_paths_match_the_loop(name, shape, dtype, tol):
    compare(with_state(path(name)), with_state(reference.mlstm), inputs(*shape, dtype), tol)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("shape", SHAPES[:3])
def test_paths_match_the_loop_from_no_state(name, shape):
    compare(from_zero(path(name)), from_zero(reference.mlstm), inputs(*shape)[:5], F64)


@pytest.mark.parametrize("name", PATHS)
@pytest.mark.parametrize("jumps", [False, True])
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_large_input_gates_stay_finite_and_exact(name, jumps, dtype, tol):
    """i ~ 50: the unstabilised state would grow like e^50 per step (e^100 overflows float32); held
    as exp(-m_t) times it, every exponent is <= 0. With jumps (i ~ 0, and ~ 50 at every 7th step)
    the stabiliser leaps by 50 and the state's decay exp(lf_t + m_{t-1} - m_t) falls to ~e^-50,
    below the C loop's row-scale floor (2^-60), which it folds back."""
    x = inputs(2, 40, 2, 6, 16, dtype, i_mean=0.0 if jumps else 50.0)
    if jumps:
        x[3] = x[3] + 50.0 * (torch.arange(40) % 7 == 3).to(dtype)[:, None]
    h, C, n, m = with_state(path(name))(*x)
    assert all(torch.isfinite(t).all() for t in (h, C, n, m)) and m.max() > 40
    compare(with_state(path(name)), with_state(reference.mlstm), x, tol)


def test_the_stabiliser_cancels_but_for_eps():
    """Unstabilised (float64 holds e^50): h_t = N_t / (max(|Z_t|, 1) + eps exp(m_t)), with
    N_t = sum_j w_tj (q_t . k_j / sqrt(K)) v_j, Z_t the same with v_j = 1, w_tj = exp(F_t - F_j + i_j)."""
    q, k, v, i, f = inputs(1, 30, 2, 4, 3, i_mean=50.0)[:5]
    cum = torch.nn.functional.logsigmoid(f).cumsum(1).transpose(1, 2)  # F_t (B, H, T)
    w = torch.exp(cum[..., :, None] - cum[..., None, :] + i.transpose(1, 2)[..., None, :]).tril()  # w_tj (B, H, T, T)
    s = torch.einsum("bthk,bjhk->bhtj", q, k) * 4**-0.5 * w  # K = 4
    m = torch.log(w.max(-1).values)  # the stabiliser from no state: the row max of the log weights
    h = torch.einsum("bhtj,bjhv->bthv", s, v) / (torch.maximum(s.sum(-1).abs(), torch.ones(())) +
                                                  reference.EPS * m.exp())[..., None].transpose(1, 2)
    torch.testing.assert_close(mlstm(q, k, v, i, f)[0], h, rtol=1e-9, atol=1e-10)  # e^50 scales: 1e-9 relative


@pytest.mark.parametrize("name", PATHS)
def test_splitting_the_sequence_passes_the_state_on(name):
    fn = path(name)
    q, k, v, i, f = inputs(2, 45, 2, 5, 16)[:5]
    h, S = fn(q, k, v, i, f, None, True)
    h1, S1 = fn(q[:, :19], k[:, :19], v[:, :19], i[:, :19], f[:, :19], None, True)
    h2, S2 = fn(q[:, 19:], k[:, 19:], v[:, 19:], i[:, 19:], f[:, 19:], S1, True)
    torch.testing.assert_close(torch.cat((h1, h2), 1), h, **F64)
    torch.testing.assert_close(S2, S, **F64)


def xlstm_parallel(q, k, v, i, f):
    """xlstm's parallel_stabilized_simple in our layout."""
    xb = xlstm_backends()
    h = xb.parallel_stabilized_simple(*(t.transpose(1, 2) for t in (q, k, v)), i.transpose(1, 2)[..., None],
                                      f.transpose(1, 2)[..., None])
    return h.transpose(1, 2)


def xlstm_recurrent(q, k, v, i, f, C0, n0, m0):
    """xlstm's recurrent_step_stabilized_simple over time, in our layout; -> h, C, n, m."""
    xb = xlstm_backends()
    state, out = (C0, n0[..., None], m0[..., None, None]), []
    for t in range(q.shape[1]):
        step = [x[:, t, :, None].clone() for x in (q, k, v)] + [x[:, t, :, None, None] for x in (i, f)]  # (B, H, 1, .)
        # (clones: xlstm's step squeezes q, k, v in place)
        h, state = xb.recurrent_step_stabilized_simple(*state, *step)
        out.append(h[:, :, 0])
    C, n, m = state
    return torch.stack(out, 1), C, n[..., 0], m[..., 0, 0]


@pytest.mark.parametrize("shape", [(2, 1, 2, 8, 8), (2, 33, 3, 6, 6), (1, 70, 2, 5, 9)])
def test_the_loop_from_no_state_is_xlstms_parallel_form(shape):
    x = inputs(*shape)[:5]
    compare(lambda *a: reference.mlstm(*a)[0], xlstm_parallel, x, F64)
    compare(lambda *a: cpu.mlstm(*a)[0], xlstm_parallel, x, F64)


@pytest.mark.parametrize("start", ["given", "xlstm's zeros", "-inf"])
def test_the_loop_is_xlstms_recurrent_step(start):
    """From a given state, from xlstm's zero state (m = 0) and from ours (m = -inf)."""
    q, k, v, i, f, C0, n0, m0 = inputs(2, 37, 2, 6, 6)
    if start != "given":
        C0, n0 = torch.zeros_like(C0), torch.zeros_like(n0)
        m0 = torch.full_like(m0, -float("inf") if start == "-inf" else 0.0)
    x = [q, k, v, i, f, C0, n0, m0]
    compare(with_state(reference.mlstm), xlstm_recurrent, x, F64)
    compare(with_state(cpu.mlstm), xlstm_recurrent, x, F64)


def test_the_public_function_runs_the_c_loop_on_cpu():
    need_c_loop("gla")
    q, k, v, i, f, C0, n0, m0 = inputs(2, 50, 2, 8, 4)
    torch.testing.assert_close(mlstm(q, k, v, i, f, (C0, n0, m0), True),
                               reference.mlstm(q, k, v, i, f, (C0, n0, m0), True), **F64)
    assert DISPATCH.resolve("auto", torch.device("cpu"), (q, k, v, i, f)) == "cpu"
    assert DISPATCH.resolve("auto", torch.device("cpu"), [t.half() for t in (q, k, v, i, f)]) == "cpu"  # widened
    with pytest.raises(ConfigError, match="backend='triton' is not valid; choose one of: 'auto', 'torch', 'cpu'"):
        mlstm(q, k, v, i, f, backend="triton")


def test_gates_of_the_wrong_shape_are_refused():
    q = torch.randn(1, 4, 2, 3)
    with pytest.raises(ValueError, match=r"i and f have shapes \(1, 4, 2, 1\), \(1, 4, 2\)"):
        mlstm(q, q, q, torch.zeros(1, 4, 2, 1), torch.zeros(1, 4, 2))
