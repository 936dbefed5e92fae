"""A scorecard sweep's scores: a pure function of its manifest and its jobs' results.json.

The sweep directory holds the manifest, scorecard.json (written by `python -m src.scorecard`):

    {"suite": "lite", "models": ["attn", "lstm"],
     "cells": {"parity": {"family": "formal", "select": "val/accuracy", "in_dist": "test/accuracy",
                          "unseen": ["test/L128/accuracy", "test/L256/accuracy"],   # may be []
                          "command": "python -m train ... model={model} optimizer.lr={lr} train.seed={seed}"}},
     "jobs": [{"model": "attn", "cell": "parity", "lr": 0.001, "seed": 0, "dir": "attn/parity/lr=0.001,seed=0"}]}

A job finished when SWEEP/DIR/results.json (src/utils/run_results.py) has status "finished"; any other
job failed (it crashed, timed out, was stopped, or has not run). A run's metrics are those of its
results.json, with its monitored metric (train.monitor) taken at the best checkpoint (best_score),
which the test split scored, rather than at the last epoch. Every metric is higher-is-better.
v_r(m) is run r's metric m when it is a finite number, else 0 (NaN, inf, or not logged), and 0
where it is negative: an r2 below 0 (worse than predicting the mean) scores as 0, so that every
score lies in [0, 1] and one diverged regression cannot outweigh a family.

Per (model, cell c, seed s), over R_s, the seed's finished runs (one per learning rate):

    r*     = argmax_{r in R_s} r[c.select]       a non-finite value loses to any finite one;
                                                 ties (and all non-finite): the smaller lr
    in(s)  = v_r*(c.in_dist)
    un(s)  = (1/|U|) sum_{m in U} v_r*(m)        U = c.unseen; absent when U is empty

and in(s) = un(s) = 0 when R_s is empty: the pair (model, cell) is then failed. Then, with S the
seeds of the pair's jobs, F_c the cells of family f and F_u those of them with unseen sets:

    in(model, c) = (1/|S|) sum_s in(s)                       un(model, c) likewise
    in(model, f) = (1/|F_c|) sum_{c in F_c} in(model, c)     un(model, f) = mean over F_u (absent if empty)
    in(model)    = mean over families of in(model, f)        un(model)    = mean over families with un
    score(model) = (in(model) + un(model)) / 2, or in(model) when it has no unseen score

The leaderboard ranks the models by score, highest first, ties by name. A pair's reported lr is its
r* per seed; its num_parameters, state_size and command (the cell's command with {model}, {lr},
{seed} filled in) are those of the r* of its smallest seed that has one; a pair with no finished
run reports the command of its first job. A (model, cell) pair the manifest lists no job for scores
0 and is failed (with 0 failed runs), so a layer cannot gain by skipping a cell.
"""

import json
import math
from dataclasses import dataclass
from pathlib import Path

from src.utils import run_results
from src.utils.errors import ConfigError

MANIFEST = "scorecard.json"
CELL_KEYS = {"family": str, "select": str, "in_dist": str, "unseen": list, "command": str}
JOB_KEYS = {"model": str, "cell": str, "lr": (int, float), "seed": int, "dir": str}


@dataclass(frozen=True)
class CellScore:
    """One (model, cell): its scores (means over seeds) and the chosen runs."""

    model: str
    cell: str
    family: str
    failed: bool  # some seed has no finished run
    seeds: tuple  # the seeds of its jobs, ascending
    lrs: tuple  # the chosen lr per seed (None where no run finished)
    in_dist: float
    unseen: float | None  # None: the cell has no unseen sets
    num_parameters: float | None
    state_size: float | None
    failed_runs: int  # its jobs that did not finish, over every lr and seed
    command: str | None

    @property
    def status(self):
        return "failed" if self.failed else "ok"


@dataclass(frozen=True)
class ModelScore:
    """One model's means: per family {family: (in_dist, unseen or None)}, and over families."""

    model: str
    families: dict
    in_dist: float
    unseen: float | None
    score: float


@dataclass(frozen=True)
class Scorecard:
    suite: str
    models: tuple  # the manifest's order
    families: tuple  # in the order of their first cell
    cells: tuple  # of CellScore, per model (manifest order), per cell (manifest order)
    leaderboard: tuple  # of ModelScore, best first


def score(sweep_dir):
    """The Scorecard of the sweep in `sweep_dir` (its manifest and its jobs' results.json)."""
    manifest = load(sweep_dir)
    return tally(manifest, [outcome(sweep_dir, job) for job in manifest["jobs"]])


def load(sweep_dir):
    """The checked manifest, sweep_dir/scorecard.json."""
    path = Path(sweep_dir) / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except OSError:
        raise ConfigError(f"{path}: no scorecard manifest (python -m src.scorecard writes it)") from None
    except ValueError as e:
        raise ConfigError(f"{path}: not JSON ({e})") from None
    return check(manifest, str(path))


def check(manifest, where=MANIFEST):
    """`manifest` itself, or a ConfigError naming its first bad key."""
    need(manifest, {"suite": str, "models": list, "cells": dict, "jobs": list}, "", where)
    for key in ("models", "cells"):
        if not manifest[key]:
            raise ConfigError(f"{where}: {key} is empty")
    for i, model in enumerate(manifest["models"]):
        if not isinstance(model, str):
            raise ConfigError(f"{where}: models[{i}] should be a name, got {model!r}")
    for name, cell in manifest["cells"].items():
        need(cell, CELL_KEYS, f"cells.{name}.", where)
        if not all(isinstance(m, str) for m in cell["unseen"]):
            raise ConfigError(f"{where}: cells.{name}.unseen should be a list of metric names, got {cell['unseen']!r}")
    for i, job in enumerate(manifest["jobs"]):
        need(job, JOB_KEYS, f"jobs[{i}].", where)
        for key, known in (("model", manifest["models"]), ("cell", list(manifest["cells"]))):
            if job[key] not in known:
                raise ConfigError(f"{where}: jobs[{i}].{key}={job[key]!r} is not in the manifest's {key}s: "
                                  f"{', '.join(known)}")
    return manifest


def need(node, keys, prefix, where):
    """A ConfigError unless `node` is a dict holding each of `keys` ({key: type}) with a value of its type."""
    if not isinstance(node, dict):
        raise ConfigError(f"{where}: {prefix[:-1] or 'the manifest'} should be a JSON object, got {node!r}")
    for key, kind in keys.items():
        if key not in node:
            raise ConfigError(f"{where}: {prefix}{key} is missing")
        if not isinstance(node[key], kind) or isinstance(node[key], bool):
            raise ConfigError(f"{where}: {prefix}{key} has the wrong type: {node[key]!r}")


def outcome(sweep_dir, job):
    """The metrics of `job` when it finished, else None. The monitored metric is the best checkpoint's
    value (results.json's best_score), not the last epoch's: the test split scored that checkpoint."""
    results = run_results.read(Path(sweep_dir) / job["dir"])
    if not (isinstance(results, dict) and results.get("status") == "finished"):
        return None
    metrics = dict(results.get("metrics", {}))
    if finite(results.get("best_score")) and isinstance(results.get("monitor"), str):
        metrics[results["monitor"]] = results["best_score"]
    return metrics


def tally(manifest, outcomes):
    """The Scorecard of a checked manifest, given each job's metrics (None: failed), in job order."""
    runs = {}  # (model, cell) -> [(job, metrics or None)]
    for job, metrics in zip(manifest["jobs"], outcomes):
        runs.setdefault((job["model"], job["cell"]), []).append((job, metrics))
    for name, cell in manifest["cells"].items():
        check_metrics(name, cell, [m for (_, c), pairs in runs.items() if c == name for _, m in pairs if m is not None])
    models, cells = manifest["models"], manifest["cells"]
    scores = tuple(cell_score(model, name, cells[name], runs.get((model, name), []))
                   for model in models for name in cells)
    families = tuple(dict.fromkeys(cell["family"] for cell in cells.values()))
    totals = [model_score(model, [s for s in scores if s.model == model], families) for model in models]
    return Scorecard(manifest["suite"], tuple(models), families, scores, leaderboard(totals))


def check_metrics(name, cell, finished):
    """A ConfigError when no finished run of cell `name` logged one of its metrics (a misspelt name)."""
    if not finished:
        return
    logged = set().union(*finished)
    for key in ("select", "in_dist", "unseen"):
        for metric in cell[key] if key == "unseen" else [cell[key]]:
            if metric not in logged:
                raise ConfigError(f"{MANIFEST}: cells.{name}.{key}: no finished run logged {metric!r}; "
                                  f"they logged: {', '.join(sorted(logged))}")


def finite(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def value(metrics, name):
    """v(m): the metric when it is finite, at least 0, else 0."""
    return max(0.0, float(metrics[name])) if finite(metrics.get(name)) else 0.0


def mean(values):
    """The mean of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def best(runs, select):
    """The (job, metrics) of `runs` (finished ones) with the highest finite `select`, ties and the
    all-non-finite case going to the smaller lr; None when `runs` is empty."""
    def rank(run):
        job, metrics = run
        v = metrics.get(select)
        return (0, -v, job["lr"]) if finite(v) else (1, 0.0, job["lr"])

    return min(runs, key=rank, default=None)


def seed_score(metrics, cell):
    """(in(s), un(s)) of the chosen run's metrics; un is None for a cell without unseen sets."""
    unseen = [value(metrics, m) for m in cell["unseen"]]
    return value(metrics, cell["in_dist"]), (sum(unseen) / len(unseen) if unseen else None)


def cell_score(model, name, cell, runs):
    """The CellScore of (model, cell `name`) from its jobs' `runs`: [(job, metrics or None)]."""
    seeds = sorted({job["seed"] for job, _ in runs})
    chosen = [best([(j, m) for j, m in runs if j["seed"] == s and m is not None], cell["select"]) for s in seeds]
    failed_seed = (0.0, 0.0 if cell["unseen"] else None)
    per_seed = [seed_score(c[1], cell) if c else failed_seed for c in chosen] or [failed_seed]
    first = next((c for c in chosen if c), None)
    shown = first[0] if first else (runs[0][0] if runs else None)
    metrics = first[1] if first else {}
    return CellScore(
        model=model, cell=name, family=cell["family"], failed=not seeds or None in chosen, seeds=tuple(seeds),
        lrs=tuple(c[0]["lr"] if c else None for c in chosen),
        in_dist=mean([s[0] for s in per_seed]), unseen=mean([s[1] for s in per_seed]),
        num_parameters=metrics.get("num_parameters"), state_size=metrics.get("state_size"),
        failed_runs=sum(m is None for _, m in runs), command=command(cell["command"], shown) if shown else None)


def command(template, job):
    """The cell's command with {model}, {lr}, {seed} (and {width}, the model.d_model a suite.match
    chose, where the job has one) filled in from `job` (other braces, Hydra's dict overrides, are
    left alone)."""
    for key in ("model", "lr", "seed", "width"):
        if key in job:
            template = template.replace("{" + key + "}", str(job[key]))
    return template


def model_score(model, cells, families):
    """The ModelScore of `model` from its CellScores."""
    per_family = {f: (mean([c.in_dist for c in cells if c.family == f]),
                      mean([c.unseen for c in cells if c.family == f])) for f in families}
    in_dist = mean([v[0] for v in per_family.values()])
    unseen = mean([v[1] for v in per_family.values()])
    total = in_dist if unseen is None else (in_dist + unseen) / 2
    return ModelScore(model, per_family, in_dist, unseen, total)


def leaderboard(models):
    """The ModelScores best first: by score, highest first, ties by name."""
    return tuple(sorted(models, key=lambda m: (-m.score, m.model)))
