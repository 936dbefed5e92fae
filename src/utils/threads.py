"""How many threads torch uses on CPU: `train.threads: auto | N`, chosen once per run, when its
checks have passed and before it trains (src/training.py).

On a CPU torch splits each large op over its intra-op threads, by default one per core. The
models of this repository are small, and each of their ops is too short to gain from a second
thread, while every op pays for waking and joining the threads; on a machine whose cores other
jobs share, a thread that the scheduler has put aside stalls every op. Measured on the 2-core
development CPU (benchmarks/threads.py, benchmarks/README.md): the default run took 245 s with
torch's default threads and 36 s with one, the machine shared with other jobs (load 6-8); on free
cores a second thread makes a step 1.7-1.8x faster instead.

`auto` (the default):
  - on a GPU run, torch's default is left alone;
  - the run's cores are those this process may use (its CPU affinity, or SLURM_CPUS_PER_TASK),
    divided among the jobs a local pool runs at once (hydra/launcher=pool: POOL_THREADS, cores //
    n_jobs, src/utils/devices.py) and among the processes of a DDP run on CPU (trainer.devices),
    and capped by OMP_NUM_THREADS when the environment sets it (as Ray does for its tasks);
  - a model of width^2 x depth (model.d_model ** 2 * model.n_layers, the size of its matrices)
    below LARGE gets 1 thread, a larger one all the run's cores.
`N`: N threads, whatever the model and the machine.

The choice is deterministic for a config and a machine (not read from the machine's load): the
thread count changes the order of torch's parallel reductions, so a resumed run must take the
same one to end bitwise equal to an uninterrupted one. It is logged once per process (again only
when it changes, e.g. between the jobs of a sweep).
"""

import os

from src.utils.errors import ConfigError
from src.utils.notice import notice

# width^2 x depth from which a model gets more than one thread: 4 layers of width 512. A judgement,
# not a crossover (benchmarks/threads.py, benchmarks/README.md#threads): on the 2 free cores two
# threads were 1.7-1.8x faster at every size measured, on the 2 cores shared with other jobs
# one thread was faster at every size, by 2.5-3.2x up to this size and 1.2x for 6 layers of width
# 512. Below it one thread is chosen because losing up to 1.8x on an idle machine is the smaller
# risk; from it the loss under load is small and the gain on free cores is kept.
LARGE = 4 * 512**2

_LOGGED = []  # the last choice logged in this process


def cores(environ=os.environ):
    """The cores this process may use: SLURM_CPUS_PER_TASK, else its CPU affinity, else cpu_count."""
    if environ.get("SLURM_CPUS_PER_TASK", "").isdigit():
        return max(1, int(environ["SLURM_CPUS_PER_TASK"]))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def budget(processes=1, environ=os.environ):
    """(the cores this run may use, why): a pool job's share, or the process's cores divided among
    `processes` (DDP on CPU), capped by OMP_NUM_THREADS."""
    if environ.get("POOL_THREADS", "").isdigit():
        n, why = int(environ["POOL_THREADS"]), f"this pool job's share of the cores, {environ['POOL_THREADS']}"
    else:
        n = max(1, cores(environ) // max(1, processes))
        why = f"{cores(environ)} cores" + (f" / {processes} processes" if processes > 1 else "")
    if environ.get("OMP_NUM_THREADS", "").isdigit() and int(environ["OMP_NUM_THREADS"]) < n:
        n, why = max(1, int(environ["OMP_NUM_THREADS"])), f"OMP_NUM_THREADS={environ['OMP_NUM_THREADS']}"
    return max(1, n), why


def parse(setting):
    """train.threads -> 'auto' or a positive int; ConfigError otherwise."""
    if setting in (None, "auto"):
        return "auto"
    if isinstance(setting, int) and not isinstance(setting, bool) and setting >= 1:
        return setting
    raise ConfigError(f"train.threads={setting!r} is not valid: use auto or a number of threads (>= 1)")


def choose(setting, size, cores_, on_gpu=False):
    """(threads or None for torch's default, why): the rule above, as a pure function of
    train.threads, the model's width^2 x depth, the run's cores and whether it runs on a GPU."""
    setting = parse(setting)
    if setting != "auto":
        return setting, f"train.threads={setting}"
    if on_gpu:
        return None, "train.threads=auto on a GPU run: torch's default"
    if size < LARGE:
        return 1, f"train.threads=auto: a model of d_model^2 x n_layers = {size:,} < {LARGE:,} runs fastest on one"
    return cores_, f"train.threads=auto: a model of d_model^2 x n_layers = {size:,} >= {LARGE:,} takes every core of the run"


def _on_gpu(trainer):
    accelerator = str(trainer.get("accelerator", "auto"))
    if accelerator in ("gpu", "cuda", "mps"):
        return True
    if accelerator == "auto":
        import torch

        return torch.cuda.is_available()
    return False


def select(config):
    """Set torch's intra-op threads for the run of `config` (train.threads), logging the choice once."""
    import torch

    model, trainer = config.get("model") or {}, config.get("trainer") or {}
    size = int(model.get("d_model") or 1) ** 2 * int(model.get("n_layers") or 1)
    devices = trainer.get("devices")
    processes = devices if isinstance(devices, int) and not isinstance(devices, bool) and devices > 1 else 1
    n, where = budget(processes)
    threads, why = choose(config.get("train", {}).get("threads", "auto"), size, n, _on_gpu(trainer))
    if threads is not None:
        torch.set_num_threads(threads)
    line = f"threads: torch uses {torch.get_num_threads()} intra-op thread(s) on CPU ({why}; the run's cores: {where})"
    if _LOGGED != [line]:
        _LOGGED[:] = [line]
        notice(line)
    return threads
