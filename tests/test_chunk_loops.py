"""The chunked ops' loops over chunks (and the per-step loops that are the torch paths of
memory_rnn, slstm and wkv, a step being a chunk of 1) take each chunk by unbind or split, whose
backward stacks the N gradients once, not by indexing [:, :, n] or slicing, whose backward writes
a zero tensor of the whole (B, H, N, ...) size per chunk: O(N^2) memory traffic, 2x slower forward
+ backward for the delta rule at T 4096 (benchmarks/README.md). Checked by the memory that the
select and slice backwards allocate in one forward + backward at 2, 4 and 8 chunks: a + b N where
each chunk is sliced from a tensor of its own size, so that its second difference is zero
(exactly: byte counts), a + b N + c N^2 where a loop indexes the whole sequence's."""

import sys

import pytest
import torch
import torch.nn.functional as F

from src.ops.delta_rule.chunked import delta_rule
from src.ops.dplr_delta_rule.chunked import dplr_delta_rule
from src.ops.gla.chunked import gla
from src.ops.memory_rnn.reference import memory_rnn
from src.ops.mesa_net.chunked import mesa_net
from src.ops.slstm.reference import slstm
from src.ops.titans.chunked import titans
from src.ops.ttt.chunked import ttt_linear, ttt_mlp
from src.ops.wkv.reference import wkv

B, H, K, C = 1, 2, 4, 8  # C: the chunk size every call below uses


def call(op, T):
    """(the op's output, its differentiable inputs) at length T, C-sized chunks."""
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    u = lambda *s: torch.rand(*s, generator=g, dtype=torch.float64)  # noqa: E731
    if op == "memory_rnn":  # a stack of 4 cells of 3
        x = r(B, T, K).requires_grad_()
        return memory_rnn(x, r(K, K), r(K, 3), ((r(3, K), r(3)),), r(3, K), r(3), "stack", 4)[0], (x,)
    if op == "slstm":
        x = r(B, T, 4, H, K).requires_grad_()
        return slstm(x, 0.1 * r(H, K, 4, K), r(4, H, K))[0], (x,)
    if op == "wkv":
        k, v = r(B, T, K).requires_grad_(), r(B, T, K).requires_grad_()
        return wkv(-u(K), r(K), k, v), (k, v)
    q, k, v = (F.normalize(r(B, T, H, K), dim=-1).requires_grad_() for _ in range(3))
    if op == "gla":
        return gla(q, k, v, F.logsigmoid(r(B, T, H, K)), chunk=C)[0], (q, k, v)
    if op == "delta_rule":
        return delta_rule(q, k, v, u(B, T, H), F.logsigmoid(r(B, T, H)), chunk=C)[0], (q, k, v)
    if op == "dplr_delta_rule":
        a = -F.normalize(r(B, T, H, K), dim=-1)
        return dplr_delta_rule(q, k, v, a, -a * u(B, T, H, 1), F.logsigmoid(r(B, T, H, K)), chunk=C)[0], (q, k, v)
    if op == "mesa_net":
        return mesa_net(q, k, v, F.logsigmoid(r(B, T, H)), u(B, T, H), torch.ones(H, K, dtype=torch.float64),
                        cg_steps=3, chunk=C)[0], (q, k, v)
    if op.startswith("ttt"):
        W = (0.1 * r(B, H, K, K), r(B, H, K)) if op == "ttt_linear" else \
            (0.1 * r(B, H, K, 2 * K), r(B, H, 2 * K), 0.1 * r(B, H, 2 * K, K), r(B, H, K))
        state = (W, tuple(torch.zeros_like(x) for x in W))
        return (ttt_linear if op == "ttt_linear" else ttt_mlp)(
            q, k, v, u(B, T, H), torch.ones(B, T, H, dtype=torch.float64), 1 + 0.1 * r(H, K), 0.1 * r(H, K), state, 0,
            C)[0], (q, k, v)
    M = 0.1 * r(B, H, K, K)
    state = (M, torch.zeros_like(M), M)
    return titans(q, k, v, 0.1 * u(B, T, H), torch.log1p(-0.1 * u(B, T, H)), (0.5 + 0.5 * u(B, T, H)).log(),
                  1 + 0.1 * r(H, K), 0.1 * r(H, K), state, 0, C)[0], (q, k, v)


def indexing_backward_bytes(op, T):
    with torch.profiler.profile(profile_memory=True) as prof:
        y, inputs = call(op, T)
        torch.autograd.grad(y.square().sum(), inputs)
    indexing = ("aten::select_backward", "aten::slice_backward")
    return sum(e.cpu_memory_usage for e in prof.key_averages() if e.key in indexing)


@pytest.mark.parametrize("op", ["gla", "delta_rule", "dplr_delta_rule", "mesa_net", "titans", "ttt_linear", "ttt_mlp",
                                "memory_rnn", "slstm", "wkv"])
def test_chunk_loop_backward_memory_is_linear_in_chunks(op):
    unit = 2 if op in ("memory_rnn", "slstm", "wkv") else C  # the per-step loops: steps, not chunks
    f2, f4, f8 = (indexing_backward_bytes(op, n * unit) for n in (2, 4, 8))
    assert f8 - f4 == 2 * (f4 - f2)


def test_revision_benchmark_loads_an_op_and_its_imports_at_a_revision():
    """benchmarks/revision.py, which measured the change above: the op's file at HEAD, with what it
    imports from another op's file taken at HEAD too, computes what the working tree's does."""
    from benchmarks.revision import at_revision

    old = at_revision(sys.modules["src.ops.mesa_net.chunked"], "HEAD")
    assert old.pass_states.__module__ == "src.ops.gla.chunked@HEAD"
    x = [torch.randn(1, 16, 2, 4, dtype=torch.float64) for _ in range(3)]
    args = (*x, F.logsigmoid(x[0][..., 0]), torch.rand(1, 16, 2, dtype=torch.float64),
            torch.ones(2, 4, dtype=torch.float64))
    torch.testing.assert_close(old.mesa_net(*args, chunk=8)[0], mesa_net(*args, chunk=8)[0])
    # a package's function (a dispatcher's: src/ops/delta_rule/__init__.py) is taken as it is now
    old = at_revision(sys.modules["src.ops.log_linear.chunked"], "HEAD")
    assert old.chunks.__module__ == "src.ops.gla.chunked@HEAD"
    assert old.delta_rule is sys.modules["src.ops.delta_rule"].delta_rule
