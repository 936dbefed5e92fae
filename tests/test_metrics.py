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


def test_class_weighted_cross_entropy_counts_each_present_class_equally():
    torch.manual_seed(0)
    logits = torch.randn(2, 6, 3)
    target = torch.tensor([[0, 0, 0, 0, 2, -100], [0, 0, 2, -100, 0, 0]])  # class 1 absent
    ce = torch.nn.functional.cross_entropy(logits.reshape(-1, 3), target.flatten(), reduction="none",
                                           ignore_index=-100)
    per_class = [ce[target.flatten() == c].mean() for c in (0, 2)]
    expected = sum(per_class) / 2  # sum_c mean_{y_i = c} CE_i / (classes present)
    torch.testing.assert_close(build_loss("class_weighted_cross_entropy")(logits, target), expected)


def test_macro_f1_and_balanced_accuracy_match_their_formulas_over_batches():
    torch.manual_seed(1)
    logits, target = torch.randn(4, 50, 3), torch.randint(0, 3, (4, 50))
    target[0, :10] = -100
    f1, balanced = build_metric("f1_macro", 3), build_metric("accuracy_balanced", 3)
    for metric in (f1, balanced):
        metric.update(logits[:2], target[:2])
        metric.update(logits[2:], target[2:])
    pred, y = logits.argmax(-1)[target != -100], target[target != -100]
    tp = torch.stack([((pred == c) & (y == c)).sum() for c in range(3)]).double()
    recall = tp / torch.stack([(y == c).sum() for c in range(3)])
    precision = tp / torch.stack([(pred == c).sum() for c in range(3)])
    torch.testing.assert_close(f1.compute().double(), (2 * precision * recall / (precision + recall)).mean(),
                               rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(balanced.compute().double(), recall.mean(), rtol=1e-6, atol=1e-6)


def test_grouped_accuracy_per_category():
    from src.tasks.metrics import GroupedAccuracy

    logits = torch.tensor([[[0.0, 1.0], [1.0, 0.0], [1.0, 0.0], [0.0, 1.0]]])  # predicts 1, 0, 0, 1
    target = torch.tensor([[1, 1, -100, 0]])
    group = torch.tensor([[0, 0, 1, 2]])  # position 2 is unlabelled: group 1 has no positions
    metric = GroupedAccuracy(["a", "b", "c"])
    metric.update(logits, target, group)
    assert {k: v.item() for k, v in metric.compute().items()} == {"a": 0.5, "c": 0.0}
