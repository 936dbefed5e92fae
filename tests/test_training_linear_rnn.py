"""Every matrix-state `model=...` (deltanet, gated_deltanet, gla, retnet, hgrn2, rwkv6, rwkv7, based)
trains 2 steps on the atomic tasks on CPU (tiny sizes).

Default run: each model on one task (rotating over the tasks); `-m slow`: every model on every task.
"""

import pytest

from conftest import train_in_process
from test_layer_zoo_training import TWO_STEPS
from test_training_ssm import TASKS

# d_model 16 (TWO_STEPS): options sized for d_model >= 128 shrink.
MODELS = {
    "deltanet": [],
    "gated_deltanet": ["model.layer.head_dim=8", "model.layer.n_heads=2"],
    "gla": [],
    "retnet": ["model.layer.n_heads=2"],
    "hgrn2": ["model.layer.expand_ratio=8"],
    "rwkv6": [],
    "rwkv7": ["model.layer.head_dim=8"],
    "based": ["model.layer.n_heads=4", "model.layer.feature_dim=4"],
}


def _train(model, task, tmp_path):
    metrics = train_in_process([*TWO_STEPS, f"model={model}", f"dataset.task={task}", *MODELS[model]], tmp_path / "run")
    assert {"val/loss", "val/mse", "val/r2"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(model, tmp_path):
    _train(model, TASKS[list(MODELS).index(model) % len(TASKS)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_model_task_matrix(model, task, tmp_path):
    _train(model, task, tmp_path)
