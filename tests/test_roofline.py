"""benchmarks/roofline.py's product counts: the formulas it adds to torch's FlopCounterMode count
what the solves and the CPU flash attention multiply, and a C loop's count is its products."""

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import roofline


def counted(fn, *args):
    with FlopCounterMode(display=False) as counter:
        fn(*args)
    return counter.get_total_flops()


def test_triangular_and_lu_solves_count_their_multiply_adds():
    A = torch.eye(8).expand(3, 8, 8) + torch.randn(3, 8, 8).tril(-1)
    assert counted(lambda: torch.linalg.solve_triangular(A, torch.randn(3, 8, 5), upper=False)) == 3 * 8 * 8 * 5
    right = torch.randn(3, 5, 8)
    assert counted(lambda: torch.linalg.solve_triangular(A, right, upper=False, left=False)) == 3 * 8 * 8 * 5
    A = torch.randn(2, 6, 6) + 6 * torch.eye(6)
    assert counted(lambda: torch.linalg.solve(A, torch.randn(2, 6))) == 2 * (2 * 6**3 // 3 + 2 * 6 * 6)
    assert counted(lambda: torch.linalg.solve(A, torch.randn(2, 6, 4))) == 2 * (2 * 6**3 // 3 + 2 * 6 * 6 * 4)


def test_cpu_flash_attention_counts_the_pairs_it_computes():
    q, k, v = (torch.randn(2, 3, 20, d, requires_grad=True) for d in (8, 8, 8))
    pairs = {True: 20 * 21 // 2, False: 20 * 20}
    for causal in (True, False):
        with FlopCounterMode(display=False) as counter:
            F.scaled_dot_product_attention(q, k, v, is_causal=causal).sum().backward()
        per_op = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
        assert per_op["aten._scaled_dot_product_flash_attention_for_cpu"] == 2 * 6 * pairs[causal] * 16
        assert per_op["aten._scaled_dot_product_flash_attention_for_cpu_backward"] == 2 * 6 * pairs[causal] * 40
    assert roofline.causal_attention_bound(20, B=2, H=3, K=8) == 2 * 6 * pairs[True] * 16


def test_log_linear_loop_count_by_hand():
    """T 40 in chunks of 16 (16, 16, 8 rows), K = V = 1: the triangles by blocks of 16 rows, 256 +
    256 + 64 multiply-adds each way (and as many transposed); the states of the first two chunks (16
    rows each); level 1's first block read by its 16 second-half rows (its second block has none),
    level 2's by 8."""
    forward = (256 + 256 + 64) * 2 + (16 + 16) + (16 + 8)
    backward = (256 + 256 + 64) * 2 * 2 + 2 * ((16 + 16) + (16 + 8))
    count = lambda backward: roofline.log_linear_loop_flops(40, backward, B=1, H=1, K=1, V=1, C=16)  # noqa: E731
    assert (count(False), count(True)) == (2 * forward, 2 * (forward + backward))


def test_mesa_loop_count_by_hand():
    """T 8 (two groups of 4 tokens), K = V = 2, one CG step: a token's update (4 + 4), matvec (4),
    dots and axpys (5 x 2) and read (4); token j of its group has j + 1 rank-one terms (1 + 2 + 3 + 4
    = 10 a group), each a dot and an axpy of K a step and a dot of K and an axpy of V in the read."""
    per_token = (4 + 4) + (4 + 5 * 2) + 4
    terms = 2 * 10
    assert roofline.mesa_loop_flops(8, B=1, H=1, K=2, V=2, steps=1) == 2 * (8 * per_token + terms * (2 * 2 + 2 + 2))
