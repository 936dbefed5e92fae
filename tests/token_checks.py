"""Shared checks of the counting and formal-language tasks (tests/test_counting.py, test_formal.py)."""

from pathlib import Path

import torch
from omegaconf import OmegaConf

from src.dataloaders import synthetic
from src.dataloaders.base import batch_seed
from src.dataloaders.synthetic import dataset_class
from src.module import build_datasets

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "dataset"


def samples(task, batch_size=64, seed=0, **params):
    """[(tokens, labels, padded labels)] of a batch of `synthetic.sample`, unpadded, as lists."""
    dataset = dataset_class(task)(**params)
    x, y = synthetic.sample(task, batch_size, torch.Generator().manual_seed(seed), **params)
    assert x.shape == y.shape == (batch_size, dataset.L) and x.dtype == y.dtype == torch.int64
    assert ((0 <= x) & (x < dataset.n_tokens)).all() and ((y == -100) | ((0 <= y) & (y < dataset.d_output))).all()
    lengths = (x != dataset.pad_id).sum(-1)
    out = []
    for b, length in enumerate(lengths.tolist()):
        assert (x[b, length:] == dataset.pad_id).all(), "<pad> only after the sample"
        assert (y[b, length:] == -100).all(), "padding is unscored"
        out.append((x[b, :length].tolist(), y[b, :length].tolist()))
    return out


def check_labels(task, reference, batch_size=64, **params):
    """Every label of a batch equals the per-sample definition's, from the tokens alone."""
    batch = samples(task, batch_size, **params)
    options = {k: v for k, v in params.items() if k not in ("L", "L_min")}
    for tokens, labels in batch:
        assert labels == reference.labels(task, tokens, **options), (task, params, tokens)
    return batch


def check_sample_is_the_datasets_batch(task):
    """synthetic.sample(task) draws the batch the dataset draws from the same generator."""
    seed = batch_seed(3, "train", 0, 0)
    x, y = synthetic.sample(task, 4, torch.Generator().manual_seed(seed))
    x2, y2 = dataset_class(task)(seed=3).batch("train", 0, 0, range(4))
    assert torch.equal(x, x2) and torch.equal(y, y2), task


def check_eval_sets_unseen(task):
    """The default eval sets of configs/dataset/<task>.yaml hold only samples longer than every
    training sample (so none is a training sample), from seeds of their own split."""
    config = OmegaConf.load(CONFIGS / f"{task}.yaml")
    config.seed = 0
    train, eval_sets = build_datasets(config)
    assert eval_sets, task
    for name, dataset in eval_sets.items():
        x, _ = dataset.batch("val", 0, 0, range(64))
        assert ((x != dataset.pad_id).sum(-1) > train.L).all(), (task, name)
    assert config._name_ == task
