"""<run>/results.json: the marker of a finished run, and what `python -m src.results` reads.

    {"status": "finished",            # "evaluated" for train.eval_only
     "metrics": {name: final value},  # every metric logged to metrics.csv (its last value) and the
                                      # run's final val/..., val/NAME/... and test/... values
     "monitor": "val/loss", "mode": "min",
     "best_score": 0.41,              # the monitored value of checkpoints/best.ckpt, which the test
                                      # split scores (null: none kept; absent for train.eval_only)
     "epochs": 5, "steps": 640,       # trained (absent for train.eval_only)
     "choices": {"model": "dlr", "experiment": "base", ...},   # Hydra's config group choices
     "overrides": ["model=dlr", "optimizer.lr=0.001"],        # the run's command-line overrides
     "config": {...}}                 # the resolved config (as config.yaml)

A sweep started again skips a job whose directory holds results.json with status "finished"
and the same config (src/utils/sweep.py).
"""

import csv
import json
import os
from pathlib import Path

NAME = "results.json"


def last_logged(run_dir):
    """{column: its last non-empty value} of run_dir/metrics.csv (epoch and step excluded)."""
    path = Path(run_dir) / "metrics.csv"
    if not path.is_file():
        return {}
    last = {}
    with open(path, newline="") as f:
        for row in csv.DictReader(f):
            last.update({k: float(v) for k, v in row.items() if v not in ("", None) and k not in ("epoch", "step")})
    return last


def hydra_context():
    """(group choices, overrides) of the running Hydra job; empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return {}, []
    hydra = HydraConfig.get()
    choices = {k: v for k, v in hydra.runtime.choices.items() if not k.startswith("hydra/") and v is not None}
    return choices, list(hydra.overrides.task)


def write(run_dir, config, metrics, status="finished", choices=None, **extra):
    """Write run_dir/results.json (atomically: a sweep reads it to skip the run); `choices`: the group
    choices to record instead of the running Hydra job's (a run from a checkpoint: `choices_of`)."""
    from omegaconf import OmegaConf

    ran, overrides = hydra_context()
    choices = ran if choices is None else choices
    values = {**last_logged(run_dir), **metrics}
    results = {
        "status": status,
        "metrics": dict(sorted(values.items())),  # NaN / Infinity as Python's json writes them
        "monitor": config.train.monitor,
        "mode": config.train.mode,
        **extra,
        "choices": choices,
        "overrides": [o for o in overrides if not o.startswith("hydra.")],
        "config": OmegaConf.to_container(config, resolve=True),
    }
    path = Path(run_dir) / NAME
    partial = path.with_name(f".{NAME}.{os.getpid()}")
    partial.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(partial, path)
    return path


def choices_of(ckpt):
    """The group choices of a run from checkpoint `ckpt`, which takes its config from the checkpoint:
    those of the run that wrote it (its directory's results.json), with the groups this command line
    names on top; this job's own when that run recorded none."""
    choices, overrides = hydra_context()
    trained = (read(Path(ckpt).parent.parent) or {}).get("choices")
    if not trained:
        return choices
    named = {o.lstrip("+~").split("=")[0].split("@")[0] for o in overrides}
    return {**trained, **{k: v for k, v in choices.items() if k in named}}


def flat(node, prefix=""):
    """{"a.b.c": value} of a nested dict (lists are values)."""
    if not isinstance(node, dict):
        return {prefix[:-1]: node}
    out = {}
    for k, v in node.items():
        out.update(flat(v, f"{prefix}{k}."))
    return out


def read(run_dir):
    """run_dir/results.json as a dict, or None when there is none (or it cannot be read)."""
    try:
        return json.loads((Path(run_dir) / NAME).read_text())
    except (OSError, ValueError):
        return None
