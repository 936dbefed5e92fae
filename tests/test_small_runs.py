"""What keeps a small run cheap, and that it still computes and writes what it did: one composition
per run, an exit that skips the interpreter's teardown, a progress bar that stops at once,
training metrics scored on the logged steps, eval sets validated every n epochs, no sanity check
in a sweep's jobs (benchmarks/train_loop.py measures the costs)."""

import csv
import gc
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import lightning as L
import pytest

from conftest import ROOT
from runs import TINY, fit, last
from src.utils.errors import ConfigError

PARITY = ["wandb=null", "experiment=modern-rnns", "dataset=parity", "model=lstm", "model.d_model=8",
          "dataset.samples_per_epoch=32", "dataset.val_split=0.25", "loader.batch_size=8", "trainer.accelerator=cpu",
          "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null"]


def rows(run_dir):
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return list(csv.DictReader(f))


class Losses(L.Callback, list):
    """The training loss of every batch."""

    def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
        self.append(float(outputs["loss"]))


def epochs_with(run_dir, metric):
    return sorted({int(r["epoch"]) for r in rows(run_dir) if r.get(metric)})


def test_the_progress_bar_stops_without_waiting_for_its_next_draw():
    from src.callbacks.progress import ProgressBar

    bar = ProgressBar(refresh_rate=0.001)  # Lightning's own thread would sleep 1000 s between draws
    trainer = L.Trainer(callbacks=[bar], logger=False, enable_checkpointing=False, accelerator="cpu")
    bar._init_progress(trainer)
    drawing = bar.progress.live._refresh_thread
    assert drawing.is_alive()
    stop = threading.Thread(target=bar._stop_progress, daemon=True)
    stop.start()
    stop.join(timeout=60)
    assert not stop.is_alive() and not drawing.is_alive()


@pytest.fixture
def in_process():
    """train.launch runs main in this process, which freezes the collector's objects: thaw them."""
    yield
    gc.unfreeze()
    gc.enable()


def test_a_run_composes_its_config_once_and_an_unknown_key_once_more(tmp_path, monkeypatch, in_process):
    from hydra._internal.hydra import Hydra

    import train

    calls, compose = [], Hydra.compose_config
    monkeypatch.setattr(Hydra, "compose_config", lambda self, *a, **k: calls.append(1) or compose(self, *a, **k))
    monkeypatch.setattr(train, "STARTED", [])
    train.launch([*TINY, "trainer.max_steps=1", f"hydra.run.dir={tmp_path / 'a'}"], multirun=False)
    assert len(calls) == 1 and (tmp_path / "a" / "results.json").is_file()
    calls.clear()
    monkeypatch.setattr(train, "STARTED", [])
    train.launch([*TINY, "trainer.max_steps=1", "trainer.detect_anomaly=false", f"hydra.run.dir={tmp_path / 'b'}"],
                 multirun=False)  # a Trainer argument configs/trainer/default.yaml does not name: `+` added
    assert len(calls) == 2
    assert json.loads((tmp_path / "b" / "results.json").read_text())["config"]["trainer"]["detect_anomaly"] is False


def test_a_run_that_exits_at_once_leaves_every_file_whole(tmp_path):
    """stdout to a file (block-buffered, unlike a terminal): the last line still arrives."""
    run = tmp_path / "run"
    with open(tmp_path / "out.txt", "w") as out:
        done = subprocess.run([sys.executable, "-m", "train", *TINY, "trainer.max_epochs=2", f"hydra.run.dir={run}"],
                              cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "WANDB_MODE": "offline"},
                              timeout=600)
    text = (tmp_path / "out.txt").read_text()
    assert done.returncode == 0, text[-2000:]
    assert text.splitlines()[-1] == f"run written to: {run}"
    results = json.loads((run / "results.json").read_text())
    assert results["status"] == "finished" and results["epochs"] == 2 and results["train_seconds"] > 0
    assert epochs_with(run, "val/loss") == [0, 1]
    assert last(run)["global_step"] == results["steps"] == 32
    val = [float(r["val/loss"]) for r in rows(run) if r.get("val/loss")]  # best.ckpt's (train.mode min): the lower
    assert results["best_score"] == pytest.approx(min(val))


def test_training_metrics_are_means_over_the_logged_steps_and_the_last(tmp_path):
    """16 batches, trainer.log_every_n_steps=3: steps 3, 6, .., 15 are written, and the epoch's
    values average those batches and the last (16th)."""
    losses = Losses()
    fit([*TINY, "trainer.log_every_n_steps=3"], tmp_path / "run", losses)
    assert len(losses) == 16
    logged = [2, 5, 8, 11, 14]
    written = [(int(r["step"]), float(r["train/loss_step"])) for r in rows(tmp_path / "run") if r.get("train/loss_step")]
    assert [s for s, _ in written] == logged
    assert [v for _, v in written] == pytest.approx([losses[i] for i in logged], rel=1e-6)
    epoch = [float(r["train/loss_epoch"]) for r in rows(tmp_path / "run") if r.get("train/loss_epoch")]
    assert epoch == pytest.approx([sum(losses[i] for i in [*logged, 15]) / 6], rel=1e-5)


def test_every_step_is_scored_with_log_every_n_steps_1(tmp_path):
    losses = Losses()
    fit([*TINY, "trainer.log_every_n_steps=1"], tmp_path / "run", losses)
    epoch = [float(r["train/loss_epoch"]) for r in rows(tmp_path / "run") if r.get("train/loss_epoch")]
    assert epoch == pytest.approx([sum(losses) / 16], rel=1e-5)


def test_eval_sets_are_validated_every_n_epochs_and_in_the_last(tmp_path):
    """4 epochs, every 3: the eval sets at epochs 2 and 3 (the last); the main set and the one
    train.monitor reads (val/L128/accuracy) every epoch. Their values are those of a run that
    validates every set every epoch."""
    every = fit([*PARITY, "trainer.max_epochs=4", "train.eval_sets_every_n_epochs=3"], tmp_path / "every3")
    assert epochs_with(tmp_path / "every3", "val/L64/accuracy") == [2, 3]
    assert epochs_with(tmp_path / "every3", "val/L256/accuracy") == [2, 3]
    assert epochs_with(tmp_path / "every3", "val/L128/accuracy") == [0, 1, 2, 3]
    assert epochs_with(tmp_path / "every3", "val/accuracy") == [0, 1, 2, 3]
    full = fit([*PARITY, "trainer.max_epochs=4"], tmp_path / "every1")
    assert epochs_with(tmp_path / "every1", "val/L64/accuracy") == [0, 1, 2, 3]
    assert every == full


def test_a_bad_eval_sets_every_n_epochs_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"train.eval_sets_every_n_epochs=0 must be a positive integer"):
        fit([*PARITY, "train.eval_sets_every_n_epochs=0"], tmp_path / "run")
