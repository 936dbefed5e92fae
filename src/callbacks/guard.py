"""RunGuard: stops a run cleanly on a signal or at the first non-finite training loss.

Signals. SIGTERM (what schedulers send) and SIGINT (Ctrl-C) are recorded by a handler, and the
run stops after the optimizer step in progress: last.ckpt is written at that step (a mid-epoch
checkpoint, resumed bitwise), and RunError says the step and the command that resumes the run in
place; the exit status is 128 + the signal (143, 130). On SLURM (Lightning's SLURMEnvironment
with auto_requeue, the default when launched by srun/sbatch), the environment's requeue signal
(SIGUSR1; `#SBATCH --signal=SIGUSR1@90`) does the same and then requeues the job with
`scontrol requeue`; the requeued job continues from last.ckpt with `train.resume=auto` and a
fixed `hydra.run.dir`. The handlers replace Lightning's (which would exit 0 without a checkpoint)
from the start of training; Lightning restores the previous handlers at its teardown.

Non-finite loss. The first training loss that is nan or inf on any rank stops the run
(RunError, status 1) naming the step and the last good checkpoint; nothing is written.

Under DDP the ranks agree on both decisions with one all-reduce of two flags per batch.
"""

import os
import signal
import subprocess

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch import Callback

from src.callbacks.checkpoints import LastCheckpoint, completes_a_step
from src.utils.errors import RunError
from src.utils.notice import notice


class RunGuard(Callback):
    def __init__(self, resume_command):
        self.resume_command = resume_command  # a shell command line
        self.received = None  # the signal number, once one arrived
        self.requeue_signal = None
        self.previous = {}

    def on_train_start(self, trainer, pl_module):
        environment = trainer._accelerator_connector.cluster_environment
        signals = [signal.SIGTERM, signal.SIGINT]
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            self.requeue_signal = environment.requeue_signal
            signals.append(self.requeue_signal)
        for signum in signals:
            self.previous[signum] = signal.signal(signum, self._record)

    def _record(self, signum, frame):
        self.received = signum

    def teardown(self, trainer, pl_module, stage):
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
        self.previous = {}

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        flags = torch.tensor(
            [loss is not None and not bool(torch.isfinite(loss).all()), self.received is not None],
            dtype=torch.float32, device=pl_module.device,
        )
        if trainer.world_size > 1:
            flags = trainer.strategy.reduce(flags, reduce_op="sum")
        nonfinite, stop = bool(flags[0] > 0), bool(flags[1] > 0)
        last = next((c for c in trainer.callbacks if isinstance(c, LastCheckpoint)), None)
        if nonfinite:
            value = loss.item() if loss is not None and loss.numel() == 1 else "nan/inf"
            good = last.describe() if last else "none (callbacks.last_checkpoint is off)"
            raise RunError(
                f"non-finite training loss ({value}) in step {trainer.global_step} (epoch {trainer.current_epoch}, "
                f"batch {batch_idx}); stopped; last good checkpoint: {good}"
            )
        if stop and completes_a_step(trainer, batch_idx):  # never between the micro-batches of a step
            self._stop(trainer, last)

    def _stop(self, trainer, last):
        signum = self.received or signal.SIGTERM
        name = signal.Signals(signum).name
        if last is None:
            raise RunError(f"stopped by {name} after step {trainer.global_step}; no last.ckpt (callbacks.last_checkpoint "
                           "is off)", 128 + signum)
        path = last.save(trainer)
        if signum == self.requeue_signal:
            job = requeue() if trainer.is_global_zero else None
            raise RunError(f"{name} after step {trainer.global_step}: wrote {path} and requeued SLURM job {job}", 0)
        raise RunError(f"stopped by {name} after step {trainer.global_step}; wrote {path}; resume with: "
                       f"{self.resume_command}", 128 + signum)


def requeue():
    """`scontrol requeue` this SLURM job (array task); returns its id."""
    array = os.environ.get("SLURM_ARRAY_JOB_ID")
    job = f"{array}_{os.environ['SLURM_ARRAY_TASK_ID']}" if array else os.environ["SLURM_JOB_ID"]
    done = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if done.returncode != 0:
        notice(f"warning: scontrol requeue {job} failed: {done.stderr.strip()}")
    return job
