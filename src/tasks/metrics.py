"""Losses and metrics by name (`task.loss=mse`, `task.metrics=[mse, r2]`).

Shapes: regression preds and targets (B, L, D); classification logits (B, L, C) or (B, C) with
integer targets (B, L) or (B,), where the target -100 marks an unlabelled position.

    mse       mean over every output element of (y_hat - y)^2            (torchmetrics)
    r2        1 - MSE / max(var(y), 1e-5), MSE and var(y) over every element of the epoch
    accuracy           argmax(logits) == y over labelled positions        (torchmetrics)
    f1_macro           F1 per class, averaged over classes                (torchmetrics)
    accuracy_balanced  recall per class, averaged over classes            (torchmetrics)
    example_accuracy   per example, the fraction of its labelled positions that are right,
                       averaged over examples with a label (zoology's accuracy)
    sequence_accuracy  the fraction of examples (with a label) whose every labelled position is right
    accuracy_by_position  a curve: accuracy at each position t over the set, written as CSV
                       (position, accuracy, count) with each evaluation, not logged as a scalar
    accuracy_by_length a curve: accuracy over the labelled positions of the examples of each
                       length, written as CSV (length, accuracy, count). An example's length: the
                       batch's "task_lengths" (B,) where the dataset gives one (the Chomsky
                       sequence-to-sequence tasks: the input length, the hierarchy's `length`),
                       else its last labelled position + 1 (the input length of the other token tasks)
    unseen_accuracy    accuracy over labelled positions t >= the longest training input (0-indexed;
                       the counting paper's "unseen length accuracy"); eval sets only
    chomsky_score      the mean over example lengths (as accuracy_by_length keys them) of the
                       accuracy at that length (the Chomsky-hierarchy score; solved at >= 0.9)
    dfa_accuracy       greedy next-token validity (in-context language learning, seq_icl's
                       dfa_accuracy): over labelled positions, the fraction whose argmax is a
                       token the batch's "valid_next" (B, L) bitmask allows (bit v: token v may follow)
    dfa_tv             total variation 1/2 sum_v |p_v - q_v| between the model's next-token
                       distribution p = softmax(logits) and q, uniform over the valid tokens, averaged
                       over every position with a valid token (seq_icl's model_dfa_diff is the L1
                       distance, 2x this, averaged over the same positions)
All are accumulated over the epoch (the DLR repo averaged per-batch F1 scores instead), and are
exact under DDP: their states are sums, reduced over ranks. `SplitMetrics` holds one split's
(or one eval set's) loss, metrics, per-category accuracies and curves.

Losses: mse; cross_entropy (targets -100 ignored); class_weighted_cross_entropy, which weights
class c by 1 / (its number of labelled positions in the batch), so each class present in the
batch counts equally: sum_c mean_{i: y_i = c} CE_i / (number of classes present).
"""

import torch
import torch.nn.functional as F
import torchmetrics
from torchmetrics import Metric

from src.utils.errors import ConfigError, check_choice
from src.utils.labels import IGNORE_INDEX


def mse(preds, target):
    return F.mse_loss(preds, target)


def cross_entropy(logits, target):
    return F.cross_entropy(logits.flatten(0, -2), target.flatten(), ignore_index=IGNORE_INDEX)


def class_weighted_cross_entropy(logits, target):
    logits, target = logits.flatten(0, -2), target.flatten()
    labelled = target[target != IGNORE_INDEX]
    weight = torch.zeros(logits.shape[-1], dtype=logits.dtype, device=logits.device)
    classes, counts = labelled.unique(return_counts=True)
    weight[classes] = 1 / counts.to(logits.dtype)
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


LOSSES = {"mse": mse, "cross_entropy": cross_entropy, "class_weighted_cross_entropy": class_weighted_cross_entropy}


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


def _flat(metric):
    """A torchmetrics classification metric over labelled positions (targets -100 ignored), that
    takes logits (..., C) and targets (...)."""

    class Flat(metric):
        def __init__(self, num_classes, average="micro"):
            super().__init__(num_classes=num_classes, average=average, ignore_index=IGNORE_INDEX)

        def update(self, preds, target):
            super().update(preds.flatten(0, -2), target.flatten())

    Flat.__name__ = metric.__name__
    return Flat


Accuracy = _flat(torchmetrics.classification.MulticlassAccuracy)
F1 = _flat(torchmetrics.classification.MulticlassF1Score)


class GroupedAccuracy(Metric):
    """Accuracy over labelled positions, per group: `update(logits (..., C), target (...),
    group (...))` with group ids in 0..len(groups)-1 (-1: none); `compute()` returns
    {group name: accuracy} for the groups that had labelled positions."""

    full_state_update = False

    def __init__(self, groups):
        super().__init__()
        self.groups = list(groups)
        self.add_state("correct", torch.zeros(len(self.groups), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(len(self.groups), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds, target, group):
        keep = (target != IGNORE_INDEX) & (group >= 0)
        group, hit = group[keep], preds.argmax(-1)[keep] == target[keep]
        self.count += torch.bincount(group, minlength=len(self.groups))
        self.correct += torch.bincount(group[hit], minlength=len(self.groups))

    def compute(self):
        return {name: self.correct[i] / self.count[i] for i, name in enumerate(self.groups) if self.count[i] > 0}


class ExampleAccuracy(Metric):
    """Per-example accuracy over labelled positions, averaged over examples (or, with
    `whole=True`, the fraction of examples whose labelled positions are all right)."""

    full_state_update = False

    def __init__(self, whole=False):
        super().__init__()
        self.whole = whole
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("examples", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds, target):  # preds (B, ..., C) logits, target (B, ...)
        target = target.reshape(target.shape[0], -1)  # (B, n)
        labelled = target != IGNORE_INDEX
        hit = (preds.argmax(-1).reshape(target.shape) == target) & labelled
        count = labelled.sum(-1)  # (B,)
        keep = count > 0
        per_example = (hit.sum(-1) == count) if self.whole else hit.sum(-1) / count.clamp(min=1)
        self.total += per_example[keep].double().sum()
        self.examples += keep.sum()

    def compute(self):
        return (self.total / self.examples).float()


class AccuracyByPosition(Metric):
    """Accuracy at each position t < length over labelled positions: compute() -> (accuracy (T,),
    count (T,)), NaN where a position had no label."""

    full_state_update = False

    def __init__(self, length):
        super().__init__()
        self.add_state("correct", torch.zeros(length, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros(length, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds, target):  # preds (B, T, C), target (B, T), T <= length
        T = target.shape[1]
        labelled = target != IGNORE_INDEX
        self.count[:T] += labelled.sum(0)
        self.correct[:T] += ((preds.argmax(-1) == target) & labelled).sum(0)

    def compute(self):
        return self.correct / self.count, self.count


class AccuracyByLength(AccuracyByPosition):
    """Accuracy over the labelled positions of the examples of each length n = 1..length (index
    n - 1), an example's length being `task_lengths` (B,) where given, else its last labelled
    position + 1: compute() -> (accuracy, count), NaN where no example had that length."""

    def update(self, preds, target, task_lengths=None):  # preds (B, T, C), target (B, T), T <= length
        labelled = target != IGNORE_INDEX
        if task_lengths is None:
            t = torch.arange(target.shape[1], device=target.device)
            index = torch.where(labelled, t, -1).amax(-1)  # (B,): -1 for an example without labels
        else:
            index = torch.where(labelled.any(-1), task_lengths - 1, -1)
        hit = ((preds.argmax(-1) == target) & labelled).sum(-1)
        keep = index >= 0
        self.count.index_add_(0, index[keep], labelled.sum(-1)[keep])
        self.correct.index_add_(0, index[keep], hit[keep])


class ChomskyScore(AccuracyByLength):
    """The mean over the example lengths present of the accuracy at that length."""

    def compute(self):
        accuracy, count = super().compute()
        return accuracy[count > 0].float().mean()


class UnseenAccuracy(Metric):
    """Accuracy over labelled positions t >= `seen` (the longest training input)."""

    full_state_update = False

    def __init__(self, seen):
        super().__init__()
        self.seen = seen
        self.add_state("correct", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def update(self, preds, target):  # preds (B, T, C), target (B, T)
        labelled = (target != IGNORE_INDEX) & (torch.arange(target.shape[1], device=target.device) >= self.seen)
        self.count += labelled.sum()
        self.correct += ((preds.argmax(-1) == target) & labelled).sum()

    def compute(self):
        return self.correct / self.count


class DFAAccuracy(Metric):
    """Over labelled positions, the fraction whose argmax the batch's `valid_next` bitmask allows."""

    full_state_update = False
    name = "dfa_accuracy"

    def __init__(self):
        super().__init__()
        # (state names of their own: torchmetrics merges the updates of metrics whose states are equal)
        self.add_state("valid", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("positions", torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def scored(self, target, valid_next):
        if valid_next is None:
            raise ConfigError(f"task.metrics={self.name} needs batches that carry valid_next (dataset icl_dfa)")
        return target != IGNORE_INDEX

    def update(self, preds, target, valid_next=None):  # preds (B, L, C), target (B, L), valid_next (B, L)
        keep = self.scored(target, valid_next)
        allowed = (valid_next >> preds.argmax(-1).clamp(max=63)) & 1  # (B, L) (bits 62, 63 are never set)
        self.positions += keep.sum()
        self.valid += (allowed.bool() & keep).sum()

    def compute(self):
        return self.valid / self.positions


class DFATotalVariation(DFAAccuracy):
    """Mean over the positions with a valid next token of TV(softmax(logits), uniform over them)."""

    name = "dfa_tv"

    def __init__(self):
        super().__init__()
        self.add_state("total", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, preds, target, valid_next=None):
        self.scored(target, valid_next)
        keep = valid_next != 0
        bits = (valid_next[keep][:, None] >> torch.arange(preds.shape[-1], device=preds.device)) & 1  # (n, C)
        q = bits / bits.sum(-1, keepdim=True)
        p = preds[keep].double().softmax(-1)
        self.total += (p - q).abs().sum(-1).sum() / 2
        self.positions += keep.sum()

    def compute(self):
        return (self.total / self.positions).float()


SCALARS = ("mse", "r2", "accuracy", "f1_macro", "accuracy_balanced", "example_accuracy", "sequence_accuracy",
           "unseen_accuracy", "chomsky_score", "dfa_accuracy", "dfa_tv")
METRIC_INPUTS = ("task_lengths", "valid_next")  # keys of a batch's extra that metrics take by name
CURVES = ("accuracy_by_position", "accuracy_by_length")
EVAL_SET_ONLY = ("unseen_accuracy",)  # needs positions beyond the training length


def build_metric(name, d_output, length=None, seen=None):
    check_choice("task.metrics", name, sorted(SCALARS + CURVES))
    if name in ("chomsky_score", *CURVES) and not length:
        raise ConfigError(f"task.metrics={name} needs a dataset with a known input length")
    if name == "unseen_accuracy":
        if not seen:
            raise ConfigError("task.metrics=unseen_accuracy needs a training dataset with a known input length")
        return UnseenAccuracy(seen)
    if name == "dfa_accuracy":
        return DFAAccuracy()
    if name == "dfa_tv":
        return DFATotalVariation()
    if name == "chomsky_score":
        return ChomskyScore(length)
    if name == "accuracy_by_length":
        return AccuracyByLength(length)
    if name == "accuracy_by_position":
        return AccuracyByPosition(length)
    if name in ("example_accuracy", "sequence_accuracy"):
        return ExampleAccuracy(whole=name == "sequence_accuracy")
    if name == "mse":
        return torchmetrics.MeanSquaredError()
    if name == "r2":
        return R2()
    if name == "f1_macro":
        return F1(num_classes=d_output, average="macro")
    return Accuracy(num_classes=d_output, average="macro" if name == "accuracy_balanced" else "micro")


def build_loss(name):
    return LOSSES[check_choice("task.loss", name, sorted(LOSSES))]


def scored(preds, target):
    """How many elements a batch's mean loss averages: the labelled positions for integer
    targets, every element for real ones."""
    return (target != IGNORE_INDEX).sum() if not torch.is_floating_point(target) else torch.tensor(target.numel())


class SplitMetrics(torch.nn.Module):
    """One split's (or eval set's) loss, metrics, per-category accuracies and curves.

    `loss`: the mean of the batch losses weighted by their number of scored elements, so the
    value over an epoch is the mean over every scored element of the set, whatever the batching
    and the number of ranks (exact for mse and cross_entropy; class_weighted_cross_entropy
    depends on the batches by definition)."""

    def __init__(self, names, d_output, prefix, categories=(), length=None, seen=None):
        """length: this set's longest input; seen: the training set's (for unseen_accuracy)."""
        super().__init__()
        for name in names:
            check_choice("task.metrics", name, sorted(SCALARS + CURVES))
        self.prefix = prefix
        self.loss = torchmetrics.MeanMetric()
        self.scalars = torchmetrics.MetricCollection(
            {name: build_metric(name, d_output, length, seen) for name in names if name in SCALARS}, prefix=prefix
        )
        self.grouped = torch.nn.ModuleDict({name: GroupedAccuracy(groups) for name, groups in dict(categories).items()})
        self.curves = torch.nn.ModuleDict({name: build_metric(name, d_output, length)
                                           for name in names if name in CURVES})

    def update(self, preds, target, loss, extra):
        """extra: the batch's {category: (B, L) ids, "task_lengths": (B,), "valid_next": (B, L), ...}
        (may be empty)."""
        self.loss.update(loss, weight=scored(preds, target).to(loss))
        by_length = {"task_lengths": extra["task_lengths"]} if "task_lengths" in extra else {}
        inputs = {k: extra[k] for k in METRIC_INPUTS if k in extra}
        self.scalars.update(preds, target, **inputs)  # (passed to the metrics that take them)
        for name, metric in self.grouped.items():
            metric.update(preds, target, extra[name])
        for metric in self.curves.values():
            metric.update(preds, target, **(by_length if isinstance(metric, AccuracyByLength) else {}))

    def grouped_values(self):
        """{prefix + accuracy_<category>_<group>: value}, computed over ranks; resets."""
        values = {}
        for name, metric in self.grouped.items():
            values.update({f"{self.prefix}accuracy_{name}_{group}": v for group, v in metric.compute().items()})
            metric.reset()
        return values

    def curve_values(self):
        """{name: (values (T,), counts (T,))}, computed over ranks; resets."""
        values = {}
        for name, metric in self.curves.items():
            values[name] = metric.compute()
            metric.reset()
        return values
