"""Losses and metrics against their formulas."""

import pytest
import torch

from src.tasks.metrics import R2, Accuracy, build_loss, build_metric
from src.utils.errors import ConfigError


def test_r2_matches_formula_over_batches():
    torch.manual_seed(0)
    y, p = torch.randn(6, 5, 2), torch.randn(6, 5, 2)
    metric = R2()
    metric.update(p[:3], y[:3])
    metric.update(p[3:], y[3:])
    expected = 1 - ((p - y) ** 2).mean() / y.var(unbiased=False)
    assert torch.allclose(metric.compute(), expected, atol=1e-6)


def test_r2_clamps_constant_targets():
    metric = R2()
    metric.update(torch.full((4, 3), 0.1), torch.zeros(4, 3))
    assert torch.allclose(metric.compute(), torch.tensor(1 - 0.01 / 1e-5))


def test_accuracy_ignores_unlabelled_positions():
    logits = torch.tensor([[[2.0, 0.0], [0.0, 2.0], [2.0, 0.0]]])  # predicts 0, 1, 0
    target = torch.tensor([[0, 0, -100]])
    metric = Accuracy(num_classes=2)
    metric.update(logits, target)
    assert metric.compute().item() == pytest.approx(0.5)


def test_cross_entropy_ignores_unlabelled_positions():
    logits = torch.randn(2, 3, 4)
    target = torch.tensor([[1, -100, 2], [-100, -100, 3]])
    expected = torch.nn.functional.cross_entropy(logits[target != -100], target[target != -100])
    assert torch.allclose(build_loss("cross_entropy")(logits, target), expected)


def test_unknown_names_list_valid_choices():
    with pytest.raises(ConfigError, match="task.loss='l1'.*cross_entropy.*mse"):
        build_loss("l1")
    with pytest.raises(ConfigError, match="task.metrics='f1'.*accuracy"):
        build_metric("f1", 2)
