"""IGNORE_INDEX: the label of a position where nothing is scored (specs/token-tasks.md), torch's
cross_entropy default. The datasets write it (src/dataloaders); the losses and metrics skip it
(src/tasks/metrics.py)."""

IGNORE_INDEX = -100
