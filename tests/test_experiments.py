"""The ListOps and Pathfinder experiments, and the README's commands for them, train on tiny
generated data on CPU; `python -m src.results.predictions` draws their saved validation outputs.

The data are generated once per module into a temporary DATA_PATH: ListOpsSubTrees and LRA
ListOps trees of 50-200 tokens, and 40 Pathfinder pictures at 32x32 (which serve both the
segmentation and the image-level experiments)."""

import re

import pytest

from conftest import command_overrides, readme_commands, train_on_data, write_listops_and_pathfinder
from src.results.predictions import main as plot

TINY = [
    "model.layer.d_state=16", "model.d_model=16", "model.n_layers=2", "loader.batch_size=4", "trainer.max_epochs=1",
    "trainer.limit_train_batches=2", "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.devices=1",
    "loader.num_workers=0", "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
]
LISTOPS = ["dataset.l_min=50", "dataset.l_max=256"]
PATHFINDER = ["dataset.resolution=32"]
EXPERIMENTS = {  # experiment: (size overrides, the metric its pipeline monitors)
    "dss-listops-subtrees": (LISTOPS, "val/accuracy"),
    "s4-lra-listops": (LISTOPS, "val/accuracy"),
    "dss-pathfinder-segmentation": (PATHFINDER, "val/f1_macro"),
    "dss-pathfinder-segmentation-256": (PATHFINDER, "val/f1_macro"),
    "dss-pathfinder-segmentation-512": (PATHFINDER, "val/f1_macro"),
    "s4-lra-pathfinder": (PATHFINDER, "val/accuracy"),
    "s4-lra-pathx": (PATHFINDER, "val/accuracy"),
}


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_listops_and_pathfinder(tmp_path_factory.mktemp("data"))


_train = train_on_data


@pytest.mark.slow  # trains; the default tier composes them (test_config_fixtures, test_docs) and fits one per pipeline (test_training_matrix)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_experiment_trains_two_steps(experiment, tmp_path, monkeypatch, data_path):
    sizes, metric = EXPERIMENTS[experiment]
    metrics = _train([f"experiment={experiment}", "wandb=null", *sizes, *TINY], tmp_path, monkeypatch, data_path)
    assert metric in metrics and "val/loss" in metrics


COMMANDS = readme_commands("docs/experiments.md", "DLR paper experiments: ListOps and Pathfinder")


def test_readme_has_the_dlr_listops_and_pathfinder_commands():
    assert len(COMMANDS) == 10  # Pathfinder 128, 256, 512: 3 + 2 + 2; ListOpsSubTrees: 3
    assert {re.search(r"experiment=(\S+)", c).group(1) for c in COMMANDS} == {
        "dss-pathfinder-segmentation", "dss-pathfinder-segmentation-256", "dss-pathfinder-segmentation-512",
        "dss-listops-subtrees"}


@pytest.mark.slow  # trains; the default tier composes them (test_config_fixtures, test_docs) and fits one per pipeline (test_training_matrix)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"cmd{COMMANDS.index(c)}")
def test_readme_command_runs(command, tmp_path, monkeypatch, data_path):
    """As written, with `CUDA_VISIBLE_DEVICES` dropped, `trainer.gpus=N` turned into the
    Lightning 1.x way of asking for the CPU (`trainer.gpus=0`), and tiny sizes appended."""
    overrides = [re.sub(r"^trainer\.gpus=\d+$", "trainer.gpus=0", o) for o in command_overrides(command)]
    sizes = LISTOPS if "listops" in command else PATHFINDER
    _train([*overrides, *sizes, *TINY], tmp_path, monkeypatch, data_path)


@pytest.mark.parametrize("experiment, picture", [("dss-pathfinder-segmentation", "pathfinder-epoch=000.png"),
                                                 ("dss-listops-subtrees", "listops-epoch=000.png")])
def test_plot_draws_the_validation_outputs(experiment, picture, tmp_path, monkeypatch, data_path, capsys):
    _train([f"experiment={experiment}", "wandb=null", "train.save_val_outputs=8", *EXPERIMENTS[experiment][0], *TINY],
           tmp_path, monkeypatch, data_path)
    plot([str(tmp_path / "run"), "--samples", "3"])
    out = tmp_path / "run" / "plots" / picture
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
    assert f"wrote {out}" in capsys.readouterr().out


def test_plot_refuses_a_dataset_without_pictures(tmp_path, monkeypatch, data_path):
    _train(["experiment=dss-sequence1d", "wandb=null", "dataset.L=16", "dataset.samples_per_epoch=16",
            "train.save_val_outputs=true", *TINY], tmp_path, monkeypatch, data_path)
    with pytest.raises(SystemExit, match="no pictures for dataset 'sequence1d'; valid: listops_subtrees, pathfinder_segmentation"):
        plot([str(tmp_path / "run")])
