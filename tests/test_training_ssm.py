"""Every new `model=...` (mamba, mamba2, s6, ssd, qlstm, lru) trains on the atomic tasks on CPU.

Default run: each layer on one task; `-m slow`: every layer on every task of the DLR experiment.
"""

import pytest

from conftest import CPU_OVERRIDES, train_in_process

TASKS = ["shift", "cumsum", "cummax", "sort", "reverse", "masked_select_fixed", "masked_select",
         "solve_fixed", "solve", "context_shift"]
# Small layers: d_model 16, d_state 64 from CPU_OVERRIDES (mamba2: 4 heads of 8).
MODELS = {
    "mamba": [],
    "mamba2": ["model.layer.headdim=8", "model.layer.chunk_size=16"],
    "s6": [],
    "ssd": [],
    "qlstm": [],
    "lru": [],
}
DEFAULT_TASK = {"mamba": "cumsum", "mamba2": "shift", "s6": "cummax", "ssd": "reverse", "qlstm": "cumsum",
                "lru": "sort"}


def overrides(model, task):
    return ["wandb=null", "experiment=dss-sequence1d", f"model={model}", f"dataset.task={task}", *CPU_OVERRIDES,
            "model.d_model=16", "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", *MODELS[model]]


def _run(model, task, tmp_path):
    metrics = train_in_process(overrides(model, task), tmp_path / "run")
    assert {"val/loss", "val/mse", "val/r2"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(model, tmp_path):
    _run(model, DEFAULT_TASK[model], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_model_task_matrix(model, task, tmp_path):
    _run(model, task, tmp_path)
