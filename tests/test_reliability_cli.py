"""Faults to a real `python -m train` process: kill -9 and SIGTERM at random moments, and
train.resume=auto across a kill. Each resumed run must end bitwise equal to an uninterrupted
one (parameters, optimizer state, final validation metrics). Slow: several subprocess runs."""

import random
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import ROOT, run_cli
from runs import TINY, assert_same_training_state, final_val, fit, last

pytestmark = pytest.mark.slow

# 256 steps per epoch (seconds), 3 epochs: long enough to be killed at a random moment after epoch 1.
RUN = [*TINY, "dataset.samples_per_epoch=1024", "trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("full") / "run"
    fit(RUN, run_dir)
    return run_dir


def start(args):
    return subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def kill_after_first_epoch(args, run_dir, signum):
    """Start `python -m train *args`, wait for its first last.ckpt (end of epoch 1), then send
    `signum` at a random moment of the next epochs; returns (returncode, stderr)."""
    process = start(args)
    ckpt = Path(run_dir) / "checkpoints" / "last.ckpt"
    while not ckpt.exists():
        assert process.poll() is None, process.communicate()[1][-2000:]
        time.sleep(0.05)
    delay = random.SystemRandom().uniform(0.0, 2.0)  # not the global RNG, which the runs seed
    print(f"signal {signum} {delay:.2f} s after the first last.ckpt")
    time.sleep(delay)
    assert process.poll() is None, "the run ended before it could be killed; make it longer"
    process.send_signal(signum)
    _, stderr = process.communicate(timeout=600)
    return process.returncode, stderr


def test_kill_9_then_resume_from_last_ckpt(full, tmp_path):
    cut = tmp_path / "cut"
    status, _ = kill_after_first_epoch([*RUN, f"hydra.run.dir={cut}"], cut, signal.SIGKILL)
    assert status == -signal.SIGKILL
    resumed = run_cli([*RUN, f"train.ckpt={cut / 'checkpoints' / 'last.ckpt'}", f"hydra.run.dir={tmp_path / 'resumed'}"])
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_training_state(last(full), last(tmp_path / "resumed"))
    assert final_val(full) == final_val(tmp_path / "resumed")


def test_sigterm_then_the_printed_command_resumes(full, tmp_path):
    cut = tmp_path / "cut"
    status, stderr = kill_after_first_epoch([*RUN, f"hydra.run.dir={cut}"], cut, signal.SIGTERM)
    assert status == 143, stderr[-2000:]
    line = stderr.strip().splitlines()[-1]
    assert line.startswith("error: stopped by SIGTERM after step ") and "Traceback" not in stderr
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert command[:3] == ["python", "-m", "train"]
    resumed = run_cli(command[3:])  # continues in place, in cut/
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert_same_training_state(last(full), last(cut))
    assert final_val(full) == final_val(cut)


def test_resume_auto_twice_into_one_directory_with_a_kill_between(full, tmp_path):
    run = tmp_path / "run"
    args = [*RUN, "train.resume=auto", f"hydra.run.dir={run}"]
    status, _ = kill_after_first_epoch(args, run, signal.SIGKILL)
    assert status == -signal.SIGKILL
    again = run_cli(args)
    assert again.returncode == 0, again.stderr[-2000:]
    assert_same_training_state(last(full), last(run))
    assert final_val(full) == final_val(run)
    finished = run_cli(args)  # a third time: the run has finished
    assert finished.returncode == 0 and "nothing to do" in finished.stdout and "final metrics" not in finished.stdout
