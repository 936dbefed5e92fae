"""The on-the-fly stream contract of src/dataloaders/base.py (DESIGN.md, "Dataset")."""

import pytest
import torch

from src.dataloaders.sequence1d import Sequence1D
from src.utils.errors import ConfigError


def dataset(**kw):
    return Sequence1D(**{"task": "cumsum", "L": 16, "samples_per_epoch": 48, "val_split": 0.25, "seed": 7, **kw})


def batches(loader, epoch=0):
    if hasattr(loader.sampler, "set_epoch"):
        loader.sampler.set_epoch(epoch)
    return [x for x, _ in loader]


def fingerprints(xs):
    return {tuple(row.flatten()[:8].tolist()) for x in xs for row in x}


def test_epoch_is_exactly_samples_per_epoch():
    xs = batches(dataset().train_dataloader(batch_size=4))
    assert len(xs) == 12 and sum(len(x) for x in xs) == 48


def test_same_stream_for_any_number_of_workers():
    a = batches(dataset().train_dataloader(batch_size=4, num_workers=0), epoch=1)
    b = batches(dataset().train_dataloader(batch_size=4, num_workers=2), epoch=1)
    assert all(torch.equal(u, v) for u, v in zip(a, b)) and len(a) == len(b)


def test_ranks_are_disjoint_and_cover_the_epoch():
    one = batches(dataset().train_dataloader(batch_size=4))
    r0 = batches(dataset().train_dataloader(batch_size=2, rank=0, world_size=2))
    r1 = batches(dataset().train_dataloader(batch_size=2, rank=1, world_size=2))
    assert len(r0) == len(r1) == 12
    assert not fingerprints(r0) & fingerprints(r1)
    # With the same per-step global batch the ranks take turns over the global batches.
    r0 = batches(dataset().train_dataloader(batch_size=4, rank=0, world_size=2))
    r1 = batches(dataset().train_dataloader(batch_size=4, rank=1, world_size=2))
    assert [torch.equal(u, v) for u, v in zip(one[0::2], r0)] == [True] * 6
    assert [torch.equal(u, v) for u, v in zip(one[1::2], r1)] == [True] * 6


def test_epochs_differ_and_eval_sets_are_fixed():
    ds = dataset()
    e0, e1 = batches(ds.train_dataloader(batch_size=4), 0), batches(ds.train_dataloader(batch_size=4), 1)
    assert not fingerprints(e0) & fingerprints(e1)
    val = [x for x, _ in ds.val_dataloader(batch_size=5)]
    assert [len(x) for x in val] == [5, 5, 2]  # 12 samples, last batch partial
    assert all(torch.equal(u, v) for u, v in zip(val, [x for x, _ in dataset().val_dataloader(batch_size=5)]))
    test = [x for x, _ in ds.test_dataloader(batch_size=5)]
    assert not fingerprints(val) & fingerprints(test) and not fingerprints(val) & fingerprints(e0)


def test_eval_batches_are_dealt_to_ranks():
    ds = dataset()
    full = fingerprints(x for x, _ in ds.val_dataloader(batch_size=5))
    parts = [fingerprints(x for x, _ in ds.val_dataloader(batch_size=5, rank=r, world_size=2)) for r in (0, 1)]
    assert parts[0] | parts[1] == full and not parts[0] & parts[1]


def test_start_skips_the_first_batches_once():
    loader = dataset().train_dataloader(batch_size=4)
    full = batches(loader, 2)
    loader.sampler.start = 5
    tail = batches(loader, 2)
    assert len(tail) == 7 and all(torch.equal(u, v) for u, v in zip(full[5:], tail))
    assert len(batches(loader, 2)) == 12


def test_loader_state_round_trip():
    loader = dataset().train_dataloader(batch_size=4)
    loader.sampler.set_epoch(3)
    loader.progress = lambda: 5
    state = loader.state_dict()
    fresh = dataset().train_dataloader(batch_size=4)
    fresh.load_state_dict(state)  # mid-epoch: same epoch, skip 5
    assert (fresh.sampler.epoch, fresh.sampler.start) == (3, 5)
    fresh.load_state_dict({"epoch": 3, "batches": 12})  # epoch complete: the next one from its start
    assert (fresh.sampler.epoch, fresh.sampler.start) == (4, 0)


def test_bad_sizes():
    with pytest.raises(ConfigError, match=r"dataset.samples_per_epoch=48 is not a multiple of loader.batch_size=5"):
        dataset().train_dataloader(batch_size=5)
    with pytest.raises(ConfigError, match=r"loader.batch_size=4 x 5 device"):
        dataset().train_dataloader(batch_size=4, world_size=5)
    with pytest.raises(ConfigError, match="gives no validation samples"):
        dataset(val_split=0.0)
