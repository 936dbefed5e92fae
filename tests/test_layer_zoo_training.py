"""Every model=... (configs/model/*.yaml, by glob) trains 2 steps on each atomic task (CPU, tiny sizes).

The default run trains each model on one task (the tasks rotate, so every task is covered);
`-m slow` runs the whole model x task matrix.
"""

import pytest

from conftest import ROOT, train_in_process
from test_readme_commands import TASKS
from test_registry import SMALL

MODELS = sorted(p.stem for p in (ROOT / "configs" / "model").glob("*.yaml") if p.stem != "base")  # base: dlr
TWO_STEPS = [
    "wandb=null", "experiment=dss-sequence1d", "dataset.L=64", "dataset.samples_per_epoch=8", "dataset.val_split=0.5",
    "loader.batch_size=4", "trainer.max_epochs=1", "trainer.accelerator=cpu", "loader.num_workers=0",
    "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null", "model.d_model=16", "model.n_layers=2",
]


def _train(model, task, tmp_path):
    metrics = train_in_process([*TWO_STEPS, f"model={model}", f"dataset.task={task}", *SMALL.get(model, [])],
                               tmp_path / "run")
    assert {"val/loss", "val/mse", "val/r2"} <= set(metrics)
    assert all(v == v for v in metrics.values())  # no NaN


@pytest.mark.parametrize("model", MODELS)
def test_every_model_trains(model, tmp_path):
    _train(model, TASKS[MODELS.index(model) % len(TASKS)], tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
@pytest.mark.parametrize("model", MODELS)
def test_model_task_matrix(model, task, tmp_path):
    _train(model, task, tmp_path)
