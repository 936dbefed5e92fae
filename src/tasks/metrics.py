"""Losses and metrics by name (`task.loss=mse`, `task.metrics=[mse, r2]`).

Shapes: regression preds and targets (B, L, D); classification logits (B, L, C) or (B, C) with
integer targets (B, L) or (B,), where the target -100 marks an unlabelled position.

    mse       mean over every output element of (y_hat - y)^2            (torchmetrics)
    r2        1 - MSE / max(var(y), 1e-5), MSE and var(y) over every element of the epoch
    accuracy  argmax(logits) == y over labelled positions                (torchmetrics)
"""

import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics import Metric

from src.utils.errors import check_choice

IGNORE_INDEX = -100


def mse(preds, target):
    return F.mse_loss(preds, target)


def cross_entropy(logits, target):
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy}


class R2(Metric):
    """Coefficient of determination over all elements seen: 1 - MSE / max(var(y), 1e-5)."""

    full_state_update = False

    def __init__(self, eps=1e-5):
        super().__init__()
        self.eps = eps
        for name in ("sse", "sum_y", "sum_y2", "count"):
            self.add_state(name, torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds, target):
        target64 = target.double()
        self.sse += (preds.double() - target64).pow(2).sum()
        self.sum_y += target64.sum()
        self.sum_y2 += target64.pow(2).sum()
        self.count += target.numel()

    def compute(self):
        mean = self.sum_y / self.count
        var = self.sum_y2 / self.count - mean**2
        return (1 - (self.sse / self.count) / var.clamp(min=self.eps)).float()


class Accuracy(torchmetrics.classification.MulticlassAccuracy):
    """Micro accuracy over labelled positions; takes logits (..., C) and targets (...)."""

    def __init__(self, num_classes):
        super().__init__(num_classes=num_classes, average="micro", ignore_index=IGNORE_INDEX)

    def update(self, preds, target):
        super().update(preds.flatten(0, -2), target.flatten())


def build_metric(name, d_output):
    check_choice("task.metrics", name, sorted(("mse", "r2", "accuracy")))
    if name == "mse":
        return torchmetrics.MeanSquaredError()
    if name == "r2":
        return R2()
    return Accuracy(num_classes=d_output)


def build_loss(name):
    return LOSSES[check_choice("task.loss", name, sorted(LOSSES))]
