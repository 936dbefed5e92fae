"""Optimizer groups from `_optim` and the schedulers."""

import math

import pytest
import torch
from torch import nn

from src.utils import registry
from src.utils.optim import build_optimizer, param_groups


def _module(order):
    m = nn.Module()
    for name in order:
        p = nn.Parameter(torch.zeros(2))
        if name != "plain":
            p._optim = {"lr": {"a": 0.1, "b": 0.01}[name[0]], "weight_decay": 0.0}
        m.register_parameter(name, p)
    return m


def test_groups_are_ordered_by_hyperparameters_not_construction():
    g1 = param_groups(_module(["a1", "plain", "b1", "a2"]))
    g2 = param_groups(_module(["b1", "a2", "plain", "a1"]))
    assert [(len(g["params"]), g.get("lr")) for g in g1] == [(1, None), (1, 0.01), (2, 0.1)]
    assert [(len(g["params"]), g.get("lr")) for g in g1] == [(len(g["params"]), g.get("lr")) for g in g2]


def test_optimizer_gets_group_lrs_and_default_lr():
    opt = build_optimizer(_module(["plain", "a1"]), {"_name_": "adamw", "lr": 0.5, "weight_decay": 0.1})
    assert [(g["lr"], g["weight_decay"]) for g in opt.param_groups] == [(0.5, 0.1), (0.1, 0.0)]


SCHEDULERS = {
    "constant": {},
    "constant_warmup": {"num_warmup_steps": 4},
    "linear_warmup": {"num_warmup_steps": 4, "num_training_steps": 12},
    "cosine_warmup": {"num_warmup_steps": 4, "num_training_steps": 12},
    "cosine": {"T_max": 12},
    "step": {"step_size": 2, "gamma": 0.5},
    "multistep": {"milestones": [3, 6], "gamma": 0.5},
    "plateau": {"mode": "min", "factor": 0.5, "patience": 0},
}


def _lrs(name, steps=12):
    opt = torch.optim.SGD([nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = registry.build(registry.scheduler, {"_name_": name, **SCHEDULERS[name]}, opt)
    lrs = []
    for _ in range(steps):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step(1.0) if name == "plateau" else sched.step()
    return lrs


def test_warmup_schedules_follow_their_formulas():
    assert _lrs("constant") == [1.0] * 12
    assert _lrs("constant_warmup")[:6] == [0, 0.25, 0.5, 0.75, 1.0, 1.0]
    assert _lrs("linear_warmup")[4:] == pytest.approx([1 - i / 8 for i in range(8)])
    assert _lrs("cosine_warmup")[4:] == pytest.approx([(1 + math.cos(math.pi * i / 8)) / 2 for i in range(8)])


@pytest.mark.parametrize("name", ["cosine", "step", "multistep", "plateau"])
def test_epoch_schedules_decay(name):
    lrs = _lrs(name)
    assert lrs[0] == 1.0 and lrs[-1] < 1.0
