"""What a successful `python -m train` prints, apart from its progress bar: its notices, the model
summary, the final metrics and its directory, and little else (no wandb banner, no Lightning
advertisements, no deprecation warnings from the libraries)."""

import os
import subprocess
import sys

from conftest import ROOT

MOST = 25  # lines


def test_a_successful_run_prints_little_besides_its_progress(tmp_path):
    """The default experiment with wandb on (offline, as by default), tiny, without the progress bar."""
    command = [sys.executable, "-m", "train", f"hydra.run.dir={tmp_path / 'run'}", "model.d_model=16", "dataset.L=64",
               "dataset.samples_per_epoch=64", "trainer.max_epochs=1", "trainer.enable_progress_bar=false",
               "trainer.log_every_n_steps=2"]  # 4 steps: the default run logs within its epoch too
    env = {k: v for k, v in os.environ.items() if k not in ("WANDB_SILENT", "WANDB_QUIET")}
    run = subprocess.run(command, cwd=ROOT, env={**env, "WANDB_MODE": "offline"}, text=True, timeout=600,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    lines = [line for line in run.stdout.splitlines() if line.strip()]
    print(f"{len(lines)} lines:", *lines, sep="\n")
    assert run.returncode == 0, run.stdout[-3000:]
    assert len(lines) <= MOST, "\n".join(lines)
    assert sum(line.startswith("wandb:") for line in lines) == 1, "\n".join(lines)  # where the offline run is
    assert not any(word in line for line in lines for word in ("Tip:", "LeafSpec", "Warning", "already configured"))
    assert lines[-2].startswith("final metrics: ") and lines[-1] == f"run written to: {tmp_path / 'run'}"
    assert (tmp_path / "run" / "wandb").is_dir()
