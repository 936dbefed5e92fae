"""Faults during a run: signals, non-finite losses, failed writes, unsafe checkpoints, resuming
and evaluating. In-process (seconds); the subprocess versions (kill -9, SIGTERM to a real
`python -m train`, train.resume=auto across a kill) are in test_reliability_cli.py (slow)."""

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from conftest import compose_config, train_in_process
from runs import TINY, TWO, assert_same_training_state, final_val, fit, last
from src.module import SequenceLightningModule
from src.utils.checkpoint_io import load_checkpoint, save_atomically
from src.utils.errors import ConfigError, RunError

def metric_rows(run_dir):
    """metrics.csv as {step: {metric: value}} (rows of one step merged), without wall-clock columns."""
    import csv

    merged = {}
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        for row in csv.DictReader(f):
            merged.setdefault(int(row["step"]), {}).update({k: v for k, v in row.items() if v != "" and k != "step"})
    return merged


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    """An uninterrupted 2-epoch run (its directory)."""
    run_dir = tmp_path_factory.mktemp("full") / "run"
    fit(TWO, run_dir)
    return run_dir


class Signal(Callback):
    """Sends `signum` to this process after optimizer step k."""

    def __init__(self, k, signum=signal.SIGTERM):
        self.k, self.signum = k, signum

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.k:
            os.kill(os.getpid(), self.signum)


@pytest.mark.parametrize("signum, status", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_signal_saves_the_current_step_and_resumes_bitwise(full, tmp_path, signum, status):
    before = signal.getsignal(signum)  # SIG_IGN where the test process was started in the background
    with pytest.raises(RunError) as stop:
        fit(TWO, tmp_path / "cut", Signal(21, signum))
    assert stop.value.status == status
    message = str(stop.value)
    assert f"stopped by {signal.Signals(signum).name} after step 21" in message and "\n" not in message
    assert "resume with: python -m train" in message and "train.resume=auto" in message
    assert last(tmp_path / "cut")["global_step"] == 21  # mid-epoch (16 steps per epoch)
    assert signal.getsignal(signum) == before  # the handlers were restored
    fit([*TWO, f"train.ckpt={tmp_path / 'cut/checkpoints/last.ckpt'}"], tmp_path / "resumed")
    assert_same_training_state(last(full), last(tmp_path / "resumed"))
    assert final_val(full) == final_val(tmp_path / "resumed")


def test_a_signal_during_gradient_accumulation_waits_for_the_step(tmp_path):
    with pytest.raises(RunError, match="after step 3;"):
        # global_step is 3 after micro-batches 6 and 7; the signal comes after batch 6
        fit([*TWO, "trainer.accumulate_grad_batches=2"], tmp_path / "cut", Signal(3))
    assert last(tmp_path / "cut")["global_step"] == 3


def test_slurm_requeue_signal_saves_and_requeues(tmp_path, monkeypatch):
    """Lightning's SLURMEnvironment (detected from srun's variables): its requeue signal (SIGUSR1)
    writes last.ckpt at the step and runs `scontrol requeue <job>` (a stand-in records it)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "scontrol").write_text(f"#!/bin/sh\necho \"$@\" > {tmp_path / 'scontrol.args'}\n")
    (bin_dir / "scontrol").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    for key, value in dict(SLURM_NTASKS="1", SLURM_JOB_ID="4242", SLURM_JOB_NAME="train", SLURM_PROCID="0",
                           SLURM_LOCALID="0", SLURM_NODEID="0", SLURM_NODELIST="node1").items():
        monkeypatch.setenv(key, value)
    with pytest.raises(RunError) as stop:
        fit(TWO, tmp_path / "run", Signal(5, signal.SIGUSR1))
    assert stop.value.status == 0 and "requeued SLURM job 4242" in str(stop.value)
    assert (tmp_path / "scontrol.args").read_text().split() == ["requeue", "4242"]
    assert last(tmp_path / "run")["global_step"] == 5


class Poison(Callback):
    """Sets a weight to nan after optimizer step k (as a diverging run would)."""

    def __init__(self, k):
        self.k = k

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.k:
            with torch.no_grad():
                next(pl_module.parameters()).fill_(float("nan"))


def test_nonfinite_loss_stops_at_once_naming_the_last_good_checkpoint(tmp_path):
    with pytest.raises(RunError) as stop:
        fit([*TWO, "trainer.max_epochs=3"], tmp_path / "run", Poison(20))
    message = str(stop.value)
    assert stop.value.status == 1 and "\n" not in message
    assert message.startswith("non-finite training loss (nan) in step 21")
    assert f"last good checkpoint: {tmp_path / 'run/checkpoints/last.ckpt'} (step 16)" in message
    assert last(tmp_path / "run")["global_step"] == 16
    best = last(tmp_path / "run", "best.ckpt")
    assert all(torch.isfinite(v).all() for v in best["state_dict"].values())


def test_nonfinite_weights_are_never_checkpointed(tmp_path):
    """Weights turn nan at the last step of epoch 2, before its validation: best.ckpt keeps epoch 1
    and last.ckpt is not overwritten; the run stops."""
    with pytest.raises(RunError, match="non-finite weights after step 32; last good checkpoint: .*last.ckpt"):
        fit(TWO, tmp_path / "run", Poison(32))
    for name in ("last.ckpt", "best.ckpt"):
        ckpt = last(tmp_path / "run", name)
        assert ckpt["global_step"] == 16, name
        assert all(torch.isfinite(v).all() for v in ckpt["state_dict"].values()), name


def test_huge_learning_rate_exits_with_one_line_and_a_finite_best(tmp_path):
    with pytest.raises(RunError, match="non-finite training loss"):
        fit([*TWO, "optimizer.lr=1e30", "model.layer.lr.Lambda=1e30", "model.layer.lr.W=1e30"], tmp_path / "run")
    best = tmp_path / "run" / "checkpoints" / "best.ckpt"
    if best.exists():
        assert all(torch.isfinite(v).all() for v in load_checkpoint(best)["state_dict"].values())


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_a_crafted_checkpoint_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    crafted = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "pytorch-lightning_version": "2.6.6", "payload": Evil(marker)}, crafted)
    with pytest.raises(ConfigError, match="is not a checkpoint this repository wrote"):
        train_in_process([*TINY, f"train.ckpt={crafted}"], tmp_path / "run")
    with pytest.raises(ConfigError):
        train_in_process([*TINY, "train.eval_only=true", f"train.ckpt={crafted}"], tmp_path / "eval")
    with pytest.raises(Exception):  # Lightning's own loading path
        from src.utils.checkpoint_io import AtomicCheckpointIO

        AtomicCheckpointIO().load_checkpoint(crafted)
    assert not marker.exists()
    assert not (tmp_path / "run").exists() and not (tmp_path / "eval").exists()


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
@pytest.mark.parametrize("scheduler", ["constant", "constant_warmup", "linear_warmup", "cosine_warmup", "cosine",
                                       "step", "multistep", "plateau"])
def test_every_optimizer_and_scheduler_state_loads_weights_only(tmp_path, optimizer, scheduler):
    module = SequenceLightningModule(
        __import__("omegaconf").OmegaConf.to_container(compose_config([*TINY, f"optimizer={optimizer}",
                                                                       f"scheduler={scheduler}"]))
    )
    setup = module.configure_optimizers()
    opt, sched = setup["optimizer"], setup["lr_scheduler"]["scheduler"]
    for p in module.parameters():
        p.grad = torch.ones_like(p)
    opt.step()
    sched.step(*([1.0] if scheduler == "plateau" else []))
    path = tmp_path / "state.ckpt"
    save_atomically({"optimizer": opt.state_dict(), "scheduler": sched.state_dict()}, path)
    assert load_checkpoint(path)["scheduler"].keys() == sched.state_dict().keys()


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "checkpoints" / "last.ckpt"
    save_atomically({"step": 1}, path)

    def full(obj, f):
        f.write(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(RunError, match=f"cannot write checkpoints in {tmp_path / 'checkpoints'} "
                                       r"\(No space left on device\); the previous last.ckpt is kept"):
        save_atomically({"step": 2}, path)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"step": 1}
    assert os.listdir(tmp_path / "checkpoints") == ["last.ckpt"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs needs root")
def test_full_disk_keeps_the_previous_last_checkpoint(tmp_path):
    """The run directory on a 2 MiB tmpfs; after epoch 1 a file fills the disk."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)]).returncode != 0:
        pytest.skip("mount -t tmpfs failed (no CAP_SYS_ADMIN in this container)")

    class FillDisk(Callback):
        def on_train_epoch_start(self, trainer, pl_module):
            if trainer.current_epoch == 1:
                with open(mount / "filler", "wb") as f:
                    try:
                        while True:
                            f.write(b"\0" * 65536)
                            f.flush()
                    except OSError:
                        pass

    try:
        with pytest.raises(RunError, match=f"cannot write .*{mount / 'run'}"):
            fit(TWO, mount / "run", FillDisk())
        assert last(mount / "run")["global_step"] == 16
    finally:
        subprocess.run(["umount", str(mount)])


def test_eval_only_gives_the_metrics_training_logged(full, tmp_path):
    ckpt = full / "checkpoints" / "last.ckpt"
    metrics = train_in_process([*TWO, "train.eval_only=true", f"train.ckpt={ckpt}"], tmp_path / "eval")
    logged = final_val(full)
    assert {k: float(v) for k, v in logged.items()} == {k: v for k, v in metrics.items() if k.startswith("val/")}
    assert {"test/loss", "test/mse", "test/r2"} <= set(metrics)
    saved = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert saved["checkpoint"] == str(ckpt) and saved["metrics"].items() >= metrics.items()
    assert not (tmp_path / "eval" / "checkpoints").exists()  # nothing trained


def test_resume_refusals(full, tmp_path):
    ckpt = f"train.ckpt={full / 'checkpoints' / 'last.ckpt'}"
    with pytest.raises(ConfigError, match="trained with optimizer=adamw.*resume with optimizer=adamw"):
        train_in_process([*TWO, "optimizer=sgd", ckpt], tmp_path / "a")
    with pytest.raises(ConfigError, match="trainer.max_epochs=1 is below the epoch .* reached \\(2\\)"):
        train_in_process([*TWO, "trainer.max_epochs=1", ckpt], tmp_path / "b")
    with pytest.raises(ConfigError, match="is a finished run .*train.eval_only=true"):
        train_in_process([*TWO, ckpt], tmp_path / "c")
    assert not any((tmp_path / d).exists() for d in "abc")  # refused runs leave nothing


def test_resume_auto_continues_in_place(full, tmp_path):
    run = tmp_path / "run"
    auto = [*TWO, "train.resume=auto"]
    with pytest.raises(RunError):
        fit(auto, run, Signal(21))
    fit(auto, run)  # continues from run/checkpoints/last.ckpt (step 21)
    assert_same_training_state(last(full), last(run))
    assert final_val(full) == final_val(run)
    # One metrics.csv, as if never stopped, except the training aggregates of the interrupted
    # epoch (row 31, its end), which cover only the batches after the resume: Lightning does not
    # checkpoint metric states mid-epoch.
    resumed, uninterrupted = metric_rows(run), metric_rows(full)
    for rows in (resumed, uninterrupted):
        rows[31] = {k: v for k, v in rows[31].items() if not (k.startswith("train/") and not k.endswith("_step"))}
    assert resumed == uninterrupted
    assert train_in_process(auto, run) == {}  # a finished run: nothing to do
    fresh = tmp_path / "fresh"
    fit(auto, fresh)  # no last.ckpt: starts fresh
    assert_same_training_state(last(full), last(fresh))


def test_a_refused_run_leaves_its_directory_as_it_was(tmp_path):
    """A run refused after it claimed its directory (here: no training batch fits) removes what it
    wrote, so the corrected command runs into the same directory."""
    run = tmp_path / "run"
    with pytest.raises(ConfigError, match="cannot fill one step|not a multiple"):
        train_in_process([*TINY, "loader.batch_size=128"], run)
    assert not run.exists()
    run.mkdir()
    (run / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError):
        train_in_process([*TINY, "loader.batch_size=128"], run)
    assert os.listdir(run) == ["notes.txt"]
    train_in_process(TINY, run)
