"""Evaluating a checkpoint in a fresh process: `python -m train train.eval_only=true train.ckpt=PATH`
takes its config from the checkpoint (nothing of the training command repeated), refuses an override
its weights cannot take, naming the key, and resolves each op's backend there for the first time
under Lightning's inference_mode (the dispatcher's smoke call runs a backward pass)."""

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT, tiny, train_in_process

# The default experiment (`python -m train`: a DLR on shift), tiny.
SMALL = ["wandb=null", "model.d_model=16", "dataset.L=64", "dataset.samples_per_epoch=64", "trainer.max_epochs=1",
         "trainer.accelerator=cpu", "loader.num_workers=0", "trainer.enable_progress_bar=false",
         "callbacks.rich_model_summary=null"]
# One model per op family besides DLR's vandermonde: the op its layer dispatches.
FAMILIES = {"s4": "cauchy", "mamba": "selective_scan", "gla": "gla", "deltanet": "delta_rule", "rwkv4": "wkv"}


def start_eval(ckpt, run_dir, *overrides):
    """`python -m train train.eval_only=true train.ckpt=ckpt *overrides` into run_dir, started."""
    command = [sys.executable, "-m", "train", "train.eval_only=true", f"train.ckpt={ckpt}", f"hydra.run.dir={run_dir}",
               *overrides]
    return subprocess.Popen(command, cwd=ROOT, env={**os.environ, "WANDB_MODE": "offline"}, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def finish(process):
    stdout, stderr = process.communicate(timeout=600)
    return process.returncode, stdout, stderr


def assert_same_val_metrics(run_dir, trained):
    saved = json.loads((run_dir / "results.json").read_text())
    assert saved["status"] == "evaluated"
    for key, value in trained.items():
        if key.startswith("val/"):
            assert saved["metrics"][key] == pytest.approx(value, rel=1e-5, abs=1e-7), key
    assert any(key.startswith("test/") for key in saved["metrics"])
    return saved


@pytest.fixture(scope="module")
def dlr_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("dlr") / "run"
    return run_dir, train_in_process(SMALL, run_dir)


def test_eval_only_takes_the_checkpoints_config(dlr_run, tmp_path):
    run_dir, trained = dlr_run
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    started = {
        "alone": start_eval(ckpt, tmp_path / "alone"),
        "another set": start_eval(ckpt, tmp_path / "another set", "dataset.eval_sets={short:{L:32}}"),
        "wider": start_eval(ckpt, tmp_path / "wider", "model.d_model=32"),
    }
    done = {name: finish(process) for name, process in started.items()}

    status, stdout, stderr = done["alone"]
    assert status == 0, stderr[-3000:]
    saved = assert_same_val_metrics(tmp_path / "alone", trained)
    assert saved["config"]["model"]["d_model"] == 16 and saved["config"]["dataset"]["L"] == 64

    status, stdout, stderr = done["another set"]  # an override the checkpoint does not contradict is taken
    assert status == 0, stderr[-3000:]
    saved = assert_same_val_metrics(tmp_path / "another set", trained)
    assert "val/short/loss" in saved["metrics"]

    status, stdout, stderr = done["wider"]  # one it contradicts is refused, naming the key
    lines = stderr.strip().splitlines()
    assert status == 2 and len(lines) == 1, stderr[-3000:]
    assert "does not match the configured model: model.d_model=32 (checkpoint: 16)" in lines[0]
    assert not (tmp_path / "wider").exists()


@pytest.mark.slow
def test_eval_only_in_a_fresh_process_for_every_op_family(tmp_path):
    """The training command repeated, as before: what fails here is the first use of each op under
    inference_mode."""
    trained, started = {}, {}
    for model in FAMILIES:
        overrides = [*SMALL, f"model={model}", *tiny(model, d_model=16)]
        trained[model] = train_in_process(overrides, tmp_path / model)
        ckpt = tmp_path / model / "checkpoints" / "best.ckpt"
        started[model] = start_eval(ckpt, tmp_path / f"{model}-eval", *overrides)
    for model, process in started.items():
        status, stdout, stderr = finish(process)
        assert status == 0, (model, FAMILIES[model], stderr[-3000:])
        assert_same_val_metrics(tmp_path / f"{model}-eval", trained[model])


def test_a_run_from_a_checkpoint_records_the_group_choices_of_the_run_that_wrote_it(tmp_path, monkeypatch):
    """results.json's choices (the `model` column of src.results' tables): those of the training run,
    not the defaults this command line composed, with the groups it names on top."""
    from src.utils import run_results

    (tmp_path / "results.json").write_text(json.dumps({"choices": {"model": "mamba", "experiment": "base",
                                                                   "dataset": "sequence1d"}}))
    ran = {"model": "dlr", "experiment": "base", "dataset": "count_mod"}
    monkeypatch.setattr(run_results, "hydra_context", lambda: (ran, ["train.eval_only=true", "dataset=count_mod"]))
    assert run_results.choices_of(tmp_path / "checkpoints" / "best.ckpt") == {
        "model": "mamba", "experiment": "base", "dataset": "count_mod"}
    assert run_results.choices_of(tmp_path / "elsewhere" / "checkpoints" / "best.ckpt") == ran  # none recorded
