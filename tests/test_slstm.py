"""src/ops/slstm: the C loop (cpu.py) against reference.py (forward, final state, every input's
gradient, R and the bias included), and reference.py and the C loop against xlstm's own vanilla
slstm_forward (when xlstm is installed), forward and gradients.

Tolerances. float64: the same sums in another order (1e-10). float32: both loops round each step
and feed the rounding back through R and the gates; measured against float64 at SHAPES, the C loop
and the float32 reference are off by <= 4e-6 in the outputs and states and <= 6e-6 in the
gradients (the largest at 70 steps and at d = 64): 1e-4 relative and absolute leaves a margin of 15.
"""

import pytest
import torch

from conftest import need_c_loop, xlstm_slstm_vanilla
from op_backends import compare

from src.ops.slstm import DISPATCH, cpu, reference, slstm
from src.utils.errors import ConfigError

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 through up to 70 recurrent steps, see the module docstring
# (B, T, H, d): T = 1, odd T, d not a power of two (4 d not a multiple of the C loop's 64-byte column
# blocks: its column-by-column tail), one head, B = 5 (its four-row blocks and one row), d = 64
SHAPES = [(2, 1, 2, 8), (2, 7, 1, 5), (1, 33, 3, 6), (5, 70, 2, 9), (4, 20, 2, 64)]


def inputs(B, T, H, d, dtype=torch.float64, seed=0, scale=1.0):
    """x, R, b, h0, c0, n0, m0: gates about xlstm's initial range, R of spectral norm ~1 per gate,
    a positive normaliser n0 (as a state from a run: n_t > 0); `scale` multiplies x."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    x, R, b = scale * r(B, T, 4, H, d), r(H, d, 4, d) / d**0.5, r(4, H, d)
    h0, c0, n0, m0 = r(B, H, d), r(B, H, d), r(B, H, d).abs() + 0.5, r(B, H, d)
    return [t.to(dtype) for t in (x, R, b, h0, c0, n0, m0)]


def with_state(fn):
    return lambda x, R, b, h0, c0, n0, m0: (lambda h, S: (h, *S))(*fn(x, R, b, (h0, c0, n0, m0), True))


def from_zero(fn):
    return lambda x, R, b: (lambda h, S: (h, *S))(*fn(x, R, b, None, True))


@pytest.fixture
def c_loop():
    need_c_loop("slstm")
    return cpu.slstm


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_the_c_loop_matches_the_reference(c_loop, shape, dtype, tol):
    compare(with_state(c_loop), with_state(reference.slstm), inputs(*shape, dtype), tol)


@pytest.mark.parametrize("shape", SHAPES[:4])
def test_the_c_loop_matches_the_reference_from_no_state(c_loop, shape):
    compare(from_zero(c_loop), from_zero(reference.slstm), inputs(*shape)[:3], F64)


def test_the_c_loop_on_two_threads(c_loop, two_threads):
    """Heads split over threads (enough work to cross _cpu.PARALLEL_FROM)."""
    compare(with_state(c_loop), with_state(reference.slstm), inputs(2, 40, 3, 16), F64)


@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_large_gates_stay_finite(c_loop, dtype, tol):
    """Preactivations ~ 60 (x scaled by 60): exp(r_i) would be e^60 (exp(100) overflows float32);
    with the stabiliser every exponent is <= 0, and m follows the input gate up."""
    x = inputs(2, 40, 2, 6, dtype, scale=60.0)
    for fn in (c_loop, reference.slstm):
        h, *S = with_state(fn)(*x)
        assert all(torch.isfinite(t).all() for t in (h, *S)) and S[3].max() > 40
    compare(with_state(c_loop), with_state(reference.slstm), x, tol)


@pytest.mark.parametrize("name", ["torch", "cpu"])
def test_splitting_the_sequence_passes_the_state_on(name):
    if name == "cpu":
        need_c_loop("slstm")
    x, R, b = inputs(2, 45, 2, 5)[:3]
    h, S = slstm(x, R, b, None, True, backend=name)
    h1, S1 = slstm(x[:, :19], R, b, None, True, backend=name)
    h2, S2 = slstm(x[:, 19:], R, b, S1, True, backend=name)
    torch.testing.assert_close(torch.cat((h1, h2), 1), h, **F64)
    torch.testing.assert_close(S2, S, **F64)


def xlstm_forward(x, R, b, h0=None, c0=None, n0=None, m0=None):
    """xlstm's vanilla slstm_forward with its slstm pointwise step, in our layout (its internal
    one: x (T, B, 4 H d) gate-major, R (H, 4 d, d), b (4 H d), states (4, B, H d)); from zeros
    where no state is given. -> h, h_T, c_T, n_T, m_T."""
    vanilla = xlstm_slstm_vanilla()
    B, T, _, H, d = x.shape
    state = torch.zeros(4, B, H * d, dtype=x.dtype) if h0 is None else \
        torch.stack([s.flatten(1) for s in (h0, c0, n0, m0)])
    states, last, _ = vanilla.slstm_forward(x.flatten(2).transpose(0, 1), state, R.permute(0, 2, 3, 1).flatten(1, 2),
                                            b.flatten(), vanilla.slstm_pointwise_function_registry["slstm"])
    return (states[0, 1:].transpose(0, 1).unflatten(-1, (H, d)), *(s.unflatten(-1, (H, d)) for s in last))


@pytest.mark.parametrize("shape", [(2, 1, 2, 8), (2, 33, 3, 6), (1, 50, 2, 9)])
def test_the_loops_are_xlstms_vanilla_forward_from_zeros(c_loop, shape):
    """xlstm starts at zeros and takes m_1 = r_i while n is all zero: our m_0 = -inf."""
    x = inputs(*shape)[:3]
    compare(from_zero(reference.slstm), xlstm_forward, x, F64)
    compare(from_zero(c_loop), xlstm_forward, x, F64)


def test_the_loops_are_xlstms_vanilla_forward_from_a_state(c_loop):
    x = inputs(2, 37, 2, 7)
    compare(with_state(reference.slstm), xlstm_forward, x, F64)
    compare(with_state(c_loop), xlstm_forward, x, F64)


def test_the_public_function_runs_the_c_loop_on_cpu(c_loop):
    x, R, b, *state = inputs(2, 30, 2, 8)
    torch.testing.assert_close(slstm(x, R, b, state, True), reference.slstm(x, R, b, state, True), **F64)
    assert DISPATCH.resolve("auto", torch.device("cpu"), (x, R, b)) == "cpu"
    assert DISPATCH.resolve("auto", torch.device("cpu"), (x.half(), R.half(), b.half())) == "cpu"  # float16, widened
    with pytest.raises(ConfigError, match="backend='triton' is not valid; choose one of: 'auto', 'torch', 'cpu'"):
        slstm(x, R, b, backend="triton")


def test_inputs_of_the_wrong_shape_are_refused():
    x, R, b = inputs(1, 4, 2, 3)[:3]
    with pytest.raises(ValueError, match=r"R \(2, 3, 12\).*\(H, d, 4, d\) = \(2, 3, 4, 3\)"):
        slstm(x, R.flatten(2), b)
