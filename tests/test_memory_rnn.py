"""src/ops/memory_rnn: the C loop (cpu.py) against reference.py, on stacks and tapes (forward, final
state, and the gradient of every input: u, every weight and bias, the initial state), and
reference.py on hand-made actions (a push, a pop, a tape move).

Tolerances. float64: the same sums in another order (1e-10). float32: each step's rounding is fed
back through W_h and the memory; measured against float64 at SHAPES, the C loop and the float32
reference are off by <= 6e-7 in the outputs and states and <= 7e-6 in the gradients (sums over up
to 70 steps): 1e-4 relative and absolute leaves a margin of 14.
"""

import pytest
import torch

from conftest import need_c_loop
from op_backends import compare

from src.ops.memory_rnn import DISPATCH, cpu, memory_rnn, reference

F64 = dict(rtol=1e-10, atol=1e-10)  # the same sums, reordered
F32 = dict(rtol=1e-4, atol=1e-4)  # float32 through up to 70 recurrent steps, see the module docstring
# (B, T, H, C, K, write widths, shifts (empty: a stack)): T = 1, odd T and H, a one-cell tape, a
# two-cell stack, jumps past the tape's end, a one-Linear and a three-Linear write
SHAPES = [(2, 1, 4, 3, 5, (), ()), (3, 17, 7, 2, 2, (5,), ()), (1, 33, 9, 5, 30, (), ()),
          (2, 70, 6, 3, 7, (4, 3), (0, -1, 1, -9, 9)), (3, 9, 5, 2, 1, (3,), (0, -1, 1)),
          (2, 25, 8, 4, 6, (), (0, -1, 1))]


def inputs(B, T, H, C, K, widths, shifts, dtype=torch.float64, seed=0):
    """u, W_h, W_r, W_a, b_a, h0, M0, then the write layers' (W, b) flat; weights of std 1/sqrt(fan_in)."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    A = len(shifts) or 3
    dims = [H, *widths, C]
    write = [t for a, b in zip(dims, dims[1:]) for t in (r(b, a) / a**0.5, r(b))]
    xs = [r(B, T, H), r(H, H) / H**0.5, r(H, C) / H**0.5, r(A, H) / H**0.5, r(A), r(B, H).relu(), r(B, K, C), *write]
    return [t.to(dtype) for t in xs]


def call(fn, B, T, H, C, K, widths, shifts, state=True):
    """fn as a function of the inputs' tensors -> (h, h_T, M_T)."""
    kind = "tape" if shifts else "stack"

    def run(u, W_h, W_r, W_a, b_a, h0, M0, *write):
        pairs = tuple(zip(write[::2], write[1::2]))
        h, (hT, MT) = fn(u, W_h, W_r, pairs, W_a, b_a, kind, K, shifts, (h0, M0) if state else None, True)
        return h, hT, MT
    return run


@pytest.fixture
def c_loop():
    need_c_loop("memory_rnn")
    return cpu.memory_rnn


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, F64), (torch.float32, F32)])
def test_the_c_loop_matches_the_reference(c_loop, shape, dtype, tol):
    compare(call(c_loop, *shape), call(reference.memory_rnn, *shape), inputs(*shape, dtype), tol)


@pytest.mark.parametrize("shape", SHAPES)
def test_the_c_loop_matches_the_reference_from_no_state(c_loop, shape):
    x = inputs(*shape)
    x[5] = x[6] = None
    compare(call(c_loop, *shape, state=False), call(reference.memory_rnn, *shape, state=False), x, F64)


def test_the_c_loop_on_two_threads(c_loop, two_threads):
    """Rows split over threads, each summing its own weight gradients (enough work for _cpu.PARALLEL_FROM)."""
    shape = (5, 40, 24, 4, 9, (6,), (0, -1, 1, -3, 3))
    compare(call(c_loop, *shape), call(reference.memory_rnn, *shape), inputs(*shape), F64)


@pytest.mark.parametrize("name", ["torch", "cpu"])
@pytest.mark.parametrize("shifts", [(), (0, -1, 1, -4, 4)])
def test_splitting_the_sequence_passes_the_state_on(name, shifts):
    if name == "cpu":
        need_c_loop("memory_rnn")
    shape = (2, 45, 6, 3, 5, (4,), shifts)
    u, W_h, W_r, W_a, b_a, _, _, *write = inputs(*shape)
    write, kind = tuple(zip(write[::2], write[1::2])), "tape" if shifts else "stack"
    run = lambda u, state: memory_rnn(u, W_h, W_r, write, W_a, b_a, kind, 5, shifts, state, True, backend=name)  # noqa
    h, S = run(u, None)
    h1, S1 = run(u[:, :19], None)
    h2, S2 = run(u[:, 19:], S1)
    torch.testing.assert_close(torch.cat((h1, h2), 1), h, **F64)
    torch.testing.assert_close(S2, S, **F64)


def test_a_sure_push_and_pop_move_the_stack():
    """p = (1, 0, 0) pushes v on top and shifts the stack down, dropping the bottom; (0, 1, 0) pops,
    with a zero coming in at the bottom; (0, 0, 1) keeps it."""
    M = torch.arange(12.0).view(1, 4, 3)
    v = torch.tensor([[-1.0, -2.0, -3.0]])
    pushed = reference.update_stack(M, torch.tensor([[1.0, 0, 0]]), v)
    torch.testing.assert_close(pushed, torch.cat([v[:, None], M[:, :3]], 1))
    popped = reference.update_stack(M, torch.tensor([[0, 1.0, 0]]), v)
    torch.testing.assert_close(popped, torch.cat([M[:, 1:], torch.zeros(1, 1, 3)], 1))
    torch.testing.assert_close(reference.update_stack(M, torch.tensor([[0, 0, 1.0]]), v), M)


def test_a_sure_tape_move_writes_then_rolls():
    """The value goes into cell 0, then shift s puts cell j at j + s (mod K): +1 moves the written
    value to cell 1, -1 to the last cell, and a jump of K + 1 is a move of 1."""
    M = torch.arange(12.0).view(1, 4, 3)
    v = torch.tensor([[-1.0, -2.0, -3.0]])
    written = torch.cat([v[:, None], M[:, 1:]], 1)
    shifts = (0, 1, -1, 5)
    for a, s in enumerate(shifts):
        p = torch.nn.functional.one_hot(torch.tensor([a]), 4).float()
        torch.testing.assert_close(reference.update_tape(M, p, v, shifts), torch.roll(written, s, 1))
    assert reference.update_tape(M, torch.tensor([[0, 1.0, 0, 0]]), v, shifts)[0, 1].tolist() == [-1, -2, -3]


def test_the_public_function_runs_the_c_loop_on_cpu(c_loop):
    shape = (2, 30, 6, 3, 5, (4,), (0, -1, 1))
    u, W_h, W_r, W_a, b_a, h0, M0, *write = inputs(*shape)
    write = tuple(zip(write[::2], write[1::2]))
    args = (u, W_h, W_r, write, W_a, b_a, "tape", 5, (0, -1, 1), (h0, M0), True)
    torch.testing.assert_close(memory_rnn(*args), reference.memory_rnn(*args), **F64)
    assert DISPATCH.resolve("auto", torch.device("cpu"), args) == "cpu"
    half = (u.half(), *args[1:])
    assert DISPATCH.resolve("auto", torch.device("cpu"), half) == "cpu"  # float16, widened


@pytest.mark.parametrize("change, message", [
    (dict(kind="queue"), "kind='queue'"), (dict(shifts=(0, 1)), "one action per shift"),
    (dict(size=1, kind="stack", shifts=()), "size=1; a stack needs >= 2 cells"),
    (dict(W_h=torch.zeros(5, 5)), "they must be"),
])
def test_inconsistent_arguments_are_refused(change, message):
    u, W_h, W_r, W_a, b_a, _, _, *write = inputs(1, 4, 6, 3, 5, (), (0, -1, 1))
    args = dict(u=u, W_h=W_h, W_r=W_r, write=tuple(zip(write[::2], write[1::2])), W_a=W_a, b_a=b_a, kind="tape",
                size=5, shifts=(0, -1, 1))
    with pytest.raises(ValueError, match=message):
        memory_rnn(**{**args, **change})
