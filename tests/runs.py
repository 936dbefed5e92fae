"""Helpers for the tests of runs that are stopped, resumed and evaluated (test_reliability.py and
its subprocess versions in test_reliability_cli.py): a tiny DLR run, fit in-process, and readers
of what a run leaves (checkpoints, metrics.csv)."""

from pathlib import Path

import torch

from conftest import CPU_OVERRIDES, compose_config
from src.utils.checkpoint_io import load_checkpoint

TINY = ["wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=shift", *CPU_OVERRIDES, "model.d_model=16"]
TWO = [*TINY, "trainer.max_epochs=2"]  # 16 steps per epoch


def fit(overrides, run_dir, *callbacks):
    from src.training import fit

    return fit(compose_config(overrides), str(run_dir), list(callbacks))


def last(run_dir, name="last.ckpt"):
    return load_checkpoint(Path(run_dir) / "checkpoints" / name)


def assert_same_training_state(a, b):
    """Bitwise: parameters, optimizer state and step."""
    assert a["global_step"] == b["global_step"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for name in a["state_dict"]:
        assert torch.equal(a["state_dict"][name], b["state_dict"][name]), name
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for key in sa:
            assert torch.equal(torch.as_tensor(sa[key]), torch.as_tensor(sb[key])), key


def final_val(run_dir):
    rows = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    row = [r.split(",") for r in rows[1:] if r.split(",")[header.index("val/loss")]][-1]
    return {h: v for h, v in zip(header, row) if h.startswith("val/")}
