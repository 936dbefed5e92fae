"""A Hydra multirun (`python -m train -m ...`) that survives its jobs, and says how it went.

Each job runs in its own directory (hydra.sweep.dir/hydra.sweep.subdir) through `job`:
  - a directory that holds the finished run of the same config (results.json with status
    finished, src/utils/run_results.py) is skipped: nothing in it is written;
  - any other job continues its directory in place (train.resume=auto): from its
    checkpoints/last.ckpt when an earlier start was cut off or failed, from scratch when it has
    none; a changed trainer.max_epochs / max_steps trains a finished run on;
  - a directory holding a run of another config (e.g. the grid changed under the job numbers)
    fails that job, naming the keys that differ;
  - a job runs no sanity check (trainer.num_sanity_val_steps=0) unless the command line sets one:
    2 batches of every validation set, 0.4 s for a small Mamba on parity's sets against 3-4 s for
    a 100-step job (benchmarks/train_loop.py); the first validation checks the same;
  - a job that fails (a bad value, a non-finite loss, any exception) is recorded with its error
    in one line and the sweep goes on; a job stopped by Ctrl-C or SIGTERM (last.ckpt written) in
    the sweep's own process (the basic launcher) stops the sweep, which continues where it was
    when started again (in a pool, submitit or Ray worker it is recorded as failed).
A job writes its outcome to <sweep dir>/jobs/<num>.json.

`Sweep`, a Hydra callback (configs/config.yaml), checks at the start that every job's config
composes (Hydra would find out only after writing multirun.yaml and then stop the sweep
half-way), so a refused start writes nothing; at the end it prints and writes
<sweep dir>/summary.json: the jobs done, failed and skipped, each failure's error, and the best
run by train.monitor. `python -m train -m` then exits with status 1 if a job failed.
"""

import json
import math
import os
import signal
import sys
import time
import traceback
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf, open_dict

from src.utils import run_results
from src.utils.errors import ConfigError, RunError
from src.utils.run_results import flat

# Keys that do not change what a run trains (how it is resumed, checked, logged to wandb, tabulated), and
# those a run may also change and still be the same sweep job: a longer training continues it.
SAME_RUN = ("train.resume", "wandb", "results", "trainer.num_sanity_val_steps")
CONTINUABLE = (*SAME_RUN, "trainer.max_epochs", "trainer.max_steps")
FINISHED = ("finished", "evaluated")
FAILED = []  # the failed jobs of the last sweep in this process (train.py's exit status)


def differing(saved, config, ignore=()):
    """The keys (sorted) whose values differ between two resolved config dicts, `ignore`d
    keys and those below them left out."""
    a, b = flat(saved), flat(config)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>"))
    return [k for k in keys if not any(k == i or k.startswith(i + ".") for i in ignore)]


def one_line(error):
    """The error as one line, as train.py would print it."""
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, ConfigError):
        return f"error: {text}"
    if isinstance(error, RunError):
        return text if text.startswith("error") or not error.status else f"error: {text}"
    return f"{type(error).__name__}: {text}"


def start(config, run_dir):
    """'skip' when run_dir holds the finished run of `config` (prepared), else 'run' (after
    setting train.resume=auto); ConfigError when it holds a run of another config."""
    ours = OmegaConf.to_container(config, resolve=True)
    path = Path(run_dir) / "config.yaml"
    if path.is_file():
        other = differing(OmegaConf.to_container(OmegaConf.load(path)), ours, CONTINUABLE)
        if other:
            raise ConfigError(
                f"{run_dir} holds a run of another config ({', '.join(other[:4])} differ); pass another "
                "hydra.sweep.dir, or the overrides that run was started with"
            )
    done = run_results.read(run_dir)
    if done and done.get("status") in FINISHED and not differing(done["config"], ours, SAME_RUN):
        return "skip"
    with open_dict(config):
        config.train.resume = "auto"
    return "run"


def job(config, hydra, prepare, train):
    """One sweep job (`hydra`: its Hydra config, HydraConfig.get()): `train(prepare(config),
    run_dir)` unless it is finished; never raises, but exits (130, 143) when stopped by a signal
    in the sweep's own process. Returns and records the outcome."""
    run_dir = hydra.runtime.output_dir
    outcome = {"job": hydra.job.num, "dir": str(run_dir), "overrides": list(hydra.overrides.task)}
    began = time.monotonic()
    try:
        config = prepare(config)
        if not any(o.lstrip("+~").startswith("trainer.num_sanity_val_steps=") for o in outcome["overrides"]):
            with open_dict(config):  # the jobs of a sweep are one config: its first job is its check
                config.trainer.num_sanity_val_steps = 0
        outcome["status"] = {"skip": "skipped", "run": "done"}[start(config, run_dir)]
        if outcome["status"] == "done":
            train(config, run_dir)
        print(f"job {hydra.job.num} {outcome['status']}: {run_dir}")
    except Exception as e:  # noqa: BLE001 - whatever stops one job is recorded; the others run
        outcome.update(status="failed", error=one_line(e))
        if not isinstance(e, (ConfigError, RunError)):
            traceback.print_exc()
        print(f"job {hydra.job.num} failed: {outcome['error']}", file=sys.stderr)
        if Path(run_dir).is_dir() and not any(Path(run_dir).iterdir()):
            Path(run_dir).rmdir()  # a job refused before writing anything leaves no directory
        signalled = isinstance(e, RunError) and e.status in (128 + signal.SIGINT, 128 + signal.SIGTERM)
        stopped = e.status if signalled else None
    else:
        stopped = None
    done = run_results.read(run_dir) or {}
    outcome.update(monitor=done.get("monitor"), mode=done.get("mode"), seconds=round(time.monotonic() - began, 1))
    outcome["value"] = done.get("metrics", {}).get(done.get("monitor"))
    if int(os.environ.get("SLURM_PROCID", 0)) == 0 and int(os.environ.get("LOCAL_RANK", 0)) == 0:
        write_json(Path(hydra.sweep.dir) / "jobs" / f"{hydra.job.num}.json", outcome)
    if stopped and os.environ.get("SWEEP_PID") == str(os.getpid()):  # a job of the basic launcher
        raise SystemExit(stopped)  # Ctrl-C or SIGTERM stops the sweep, not only this job
    return outcome


def write_json(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_text(json.dumps(value, indent=1) + "\n")
    os.replace(partial, path)


def summarise(sweep_dir):
    """{counts, best, failed, jobs} from <sweep_dir>/jobs/*.json."""
    jobs = [json.loads(p.read_text()) for p in (Path(sweep_dir) / "jobs").glob("*.json")]
    jobs.sort(key=lambda j: j["job"])
    counts = {s: sum(j["status"] == s for j in jobs) for s in ("done", "failed", "skipped")}
    common = set.intersection(*(set(j["overrides"]) for j in jobs)) if jobs else set()
    for j in jobs:  # the overrides that tell this job from the others
        j["swept"] = [o for o in j["overrides"] if o not in common]
    scored = [j for j in jobs if j["status"] != "failed" and isinstance(j.get("value"), float)
              and math.isfinite(j["value"])]
    best = None
    if scored:
        best = (min if scored[0]["mode"] == "min" else max)(scored, key=lambda j: j["value"])
    return {"jobs": len(jobs), **counts, "best": best, "failures": [j for j in jobs if j["status"] == "failed"]}


def describe(summary):
    """The summary in a few lines."""
    lines = [f"sweep: {summary['jobs']} jobs: {summary['done']} done, {summary['failed']} failed, "
             f"{summary['skipped']} skipped"]
    best = summary["best"]
    if best:
        lines.append(f"best by {best['monitor']} ({best['mode']}): {best['monitor']}={best['value']:.6g}, job "
                     f"{best['job']} ({' '.join(best['swept'])}), {best['dir']}")
    lines += [f"failed: job {j['job']} ({' '.join(j['swept'])}): {j['error']}" for j in summary["failures"]]
    return "\n".join(lines)


def job_overrides(config):
    """Each job's overrides, as Hydra's basic sweeper will expand them (hydra.sweeper.params,
    then the command line's); None for another sweeper."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.override_parser.overrides_parser import OverridesParser

    if not config.hydra.sweeper._target_.endswith("BasicSweeper"):
        return None
    params = [f"{k}={v}" for k, v in (config.hydra.sweeper.get("params") or {}).items()]
    parser = OverridesParser.create(config_loader=GlobalHydra.instance().config_loader())
    overrides = parser.parse_overrides([*params, *config.hydra.overrides.task])
    return [job for batch in BasicSweeper.split_arguments(overrides, None) for job in batch]


class Sweep(Callback):
    def on_multirun_start(self, config, **kwargs):
        from hydra.core.global_hydra import GlobalHydra

        loader = GlobalHydra.instance().config_loader()
        jobs = job_overrides(config) or []
        common = set.intersection(*(set(j) for j in jobs)) if jobs else set()
        for num, overrides in enumerate(jobs):
            try:
                loader.load_sweep_config(config, list(overrides))
            except Exception as e:  # noqa: BLE001 - Hydra's composition errors, in one line
                why = str(e).strip().splitlines()[0]
                swept = " ".join(o for o in overrides if o not in common)
                print(f"error: sweep job {num} ({swept}) cannot be composed: {why}; nothing was started",
                      file=sys.stderr)
                sys.exit(2)
        jobs = Path(config.hydra.sweep.dir) / "jobs"
        for path in jobs.glob("*.json") if jobs.is_dir() else ():  # the previous start's outcomes
            path.unlink()
        FAILED.clear()
        os.environ["SWEEP_PID"] = str(os.getpid())  # the process that runs the basic launcher's jobs

    def on_multirun_end(self, config, **kwargs):
        summary = summarise(config.hydra.sweep.dir)
        write_json(Path(config.hydra.sweep.dir) / "summary.json", summary)
        print(describe(summary))
        print(f"sweep summary written to: {Path(config.hydra.sweep.dir) / 'summary.json'}")
        FAILED[:] = [j["job"] for j in summary["failures"]]
