"""Devices for the jobs of a local parallel sweep (`hydra/launcher=pool`: Hydra's joblib launcher).

The pool runs `hydra.launcher.n_jobs` jobs at once in as many worker processes. `PinDevices`, a
Hydra callback (configs/config.yaml), shares the machine between them:
  - With GPUs, each worker process takes one GPU that no other worker holds (an exclusive
    flock on <sweep dir>/devices/<gpu>.lock, held until the worker exits) and sees only it
    (CUDA_VISIBLE_DEVICES, set before the job initialises CUDA): a job with `trainer.devices=1`
    trains on its own GPU. n_jobs above the number of visible GPUs is refused at the start.
  - On CPU each job's share of the cores is cores // n_jobs (POOL_THREADS, which the workers
    inherit), and train.threads=auto chooses within it when the job starts training
    (src/utils/threads.py: 1 thread for a small model), so the jobs do not oversubscribe the cores.
Other launchers are left alone: the basic launcher runs one job at a time, SLURM gives each job
its own devices.

`${local_jobs:}`, the pool's default n_jobs: the number of visible GPUs, or 2 without one.
"""

import fcntl
import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from src.utils.threads import cores

HELD = {}  # this process's GPU: {"gpu": id, "lock": open file}


def visible_gpus():
    """The ids of the GPUs this process may use (CUDA_VISIBLE_DEVICES's entries, or 0..n-1)."""
    import torch

    count = torch.cuda.device_count()
    ids = [d for d in os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
    return ids[:count] if ids else [str(i) for i in range(count)]


OmegaConf.register_new_resolver("local_jobs", lambda: len(visible_gpus()) or 2, replace=True)


def claim(gpus, lock_dir, wait_s=1.0):
    """Hold one of `gpus` for the life of this process (waiting while all are held); its id."""
    if "gpu" in HELD:
        return HELD["gpu"]
    Path(lock_dir).mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in gpus:
            lock = open(Path(lock_dir) / f"{gpu}.lock", "w")
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                lock.close()
                continue
            HELD.update(gpu=gpu, lock=lock)
            return gpu
        time.sleep(wait_s)


def is_pool(config):
    return "joblib" in str(config.hydra.launcher.get("_target_", ""))


class PinDevices(Callback):
    def on_multirun_start(self, config, **kwargs):
        """In the launching process: which GPUs the workers share (POOL_GPUS), how many jobs."""
        if not is_pool(config):
            return
        gpus, jobs = visible_gpus(), config.hydra.launcher.n_jobs
        jobs = os.cpu_count() if jobs in (None, -1) else jobs
        if gpus and jobs > len(gpus):
            print(f"error: hydra.launcher.n_jobs={jobs} is more than the {len(gpus)} visible GPUs "
                  f"({','.join(gpus)}): one job per GPU; use hydra.launcher.n_jobs<={len(gpus)}", file=sys.stderr)
            sys.exit(2)
        os.environ["POOL_GPUS"] = ",".join(gpus)  # the workers, started after this, inherit it
        os.environ["POOL_THREADS"] = str(max(1, cores() // jobs))  # each job's share (src/utils/threads.py)

    def on_job_start(self, config, **kwargs):
        """In the worker: take a GPU (CUDA_VISIBLE_DEVICES). On CPU the job's threads are chosen by
        the run within its share of the cores, POOL_THREADS (src/utils/threads.py)."""
        if not is_pool(config) or "POOL_THREADS" not in os.environ:
            return
        gpus = [g for g in os.environ.get("POOL_GPUS", "").split(",") if g]
        if gpus:
            gpu = claim(gpus, Path(config.hydra.sweep.dir) / "devices")
            os.environ["CUDA_VISIBLE_DEVICES"] = gpu
            print(f"job {config.hydra.job.num}: GPU {gpu} (CUDA_VISIBLE_DEVICES={gpu})")
