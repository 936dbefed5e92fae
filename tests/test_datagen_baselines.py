"""benchmarks/dlr_loader.py, the per-sample baseline of `benchmarks.datagen --families dlr`: the
same shapes as our generators and the labels docs/tasks.md defines."""

import numpy as np
import pytest
import torch

from benchmarks import dlr_loader
from src.dataloaders.sequence1d import TASKS, Sequence1D

L, B = 64, 3


@pytest.mark.parametrize("task", TASKS)
def test_baseline_batch_has_our_shapes_and_labels(task):
    ours = Sequence1D(task=task, L=L, M=8).generate(B, torch.Generator().manual_seed(0))
    x, y = dlr_loader.batch(task, B, torch.Generator().manual_seed(0), L, M=8)
    assert [t.shape for t in ours] == [x.shape, y.shape] and x.dtype == y.dtype == torch.float32
    torch.testing.assert_close(x[..., -2:], ours[0][..., -2:])  # the pos channels
    x, y = x.double(), y.double()
    for seq, target, marker in zip(x[..., 0], y, x[..., 1]):
        if task == "shift":
            for j, s in enumerate(np.linspace(0, L - L / 8, 8).astype(int)):
                torch.testing.assert_close(target[:, j], torch.cat((seq.new_zeros(s), seq[: L - s])), atol=1e-6, rtol=0)
        elif task == "sort":
            order = sorted(range(L), key=lambda i: (abs(seq[i] - seq[0]), i))
            torch.testing.assert_close(target[:, 0], seq[order], atol=1e-7, rtol=0)
        elif "masked_select" in task:
            assert marker.sum() == 8 and torch.equal(target[:, 0], seq[marker == 1])
        elif "solve" in task:
            N = 7  # 7^2 + 14 <= 64
            AB = seq[: N * N + N].reshape(N, N + 1)
            torch.testing.assert_close(AB[:, :N] @ AB[:, :N].T, torch.eye(N, dtype=AB.dtype), atol=1e-5, rtol=0)
            torch.testing.assert_close(AB[:, :N] @ target[:, 0], AB[:, N], atol=1e-5, rtol=0)
