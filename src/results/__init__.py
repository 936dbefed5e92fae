"""Runs into one table: `python -m src.results DIR... [--metric M] [--best-over KEY...] [--by KEY...]`.

A run is a directory below DIR holding results.json (src/utils/run_results.py: its final
metrics, resolved config and Hydra group choices); directories with a config.yaml but no
results.json are runs that have not finished (or failed) and are counted, not tabulated.

A row holds a run's keys and its metrics. The key columns are the keys of the runs' command-line
overrides (dotted config keys, `optimizer.lr`, and group choices, `model`) whose values differ
between the runs (the resolved value is shown); then one column per metric, every eval set's
included (`val/NAME/accuracy`), but not the learning-rate monitor's `lr-*`; last, the run's `dir`.
The rows are ranked by `--metric`, best first (`rank`), or with `--sort keys` ordered by the key
columns (`by_keys`).

Reductions (zoology's figures): `--best-over optimizer.lr` keeps, in each group of runs equal on
the other key columns (or on `--by`), the run with the best `--metric` (its mode: `--mode`, else
the runs' train.mode when it is their train.monitor, else min for a loss / mse and max for
anything else). `--by` alone averages each group's metrics (a `runs` column counts them).

With no options the runs' `results` config block (configs/config.yaml; an experiment sets its
paper's) gives the metric, best_over, by and plots, and `score` (`--score mad`: MAD's score of
the reduced rows, src/results/mad.py; experiment=mad-grid sets it).
"""

import json
import math
import os
import re
import sys
from pathlib import Path

from src.utils.errors import ConfigError
from src.utils.run_results import flat

SKIP_DIRS = {"checkpoints", "curves", "val_outputs", "wandb", "jobs", "devices", ".submitit", "figures"}
NOT_KEYS = ("results.", "wandb.", "train.resume", "train.ckpt")
BLOCK = ("metric", "best_over", "by", "plots", "score")  # the config's `results` options (score: mad)


def natural(path):
    return [(0, int(part), "") if part.isdigit() else (1, 0, part) for part in re.split(r"(\d+)", path)]


class Run(dict):
    """A row: {key or metric: value}, with .dir, .config (flat), .metrics and .results."""


def find(dirs):
    """(finished run directories, unfinished ones) below `dirs`, in walk order."""
    finished, unfinished = [], []
    for top in dirs:
        if not Path(top).is_dir():
            raise ConfigError(f"{top}: no such directory")
        stack = [str(top)]
        while stack:
            path = stack.pop()
            names = {e.name: e for e in os.scandir(path)}
            if "results.json" in names:
                finished.append(path)
            elif "config.yaml" in names:
                unfinished.append(path)
            else:
                subdirs = [e.path for n, e in names.items() if e.is_dir() and n not in SKIP_DIRS]
                stack += sorted(subdirs, key=natural, reverse=True)  # popped in natural order: 2 before 10
    return finished, unfinished


def read(path):
    results = json.loads((Path(path) / "results.json").read_text())
    run = Run()
    run.dir, run.results = str(path), results
    run.config = {**flat(results.get("config", {})), **results.get("choices", {})}
    run.metrics = results.get("metrics", {})
    return run


def overridden(run):
    """{key: value} of the run's command-line overrides (`+`/`~` dropped; hydra.* left out)."""
    pairs = (o.lstrip("+~").split("=", 1) for o in run.results.get("overrides", []))
    return {p[0]: p[1] if len(p) > 1 else None for p in pairs if not p[0].startswith("hydra")}


def key_columns(runs):
    """The keys whose values differ between the runs: those of their command-line overrides
    (group choices first); for runs without recorded overrides, the config keys every run has."""
    if not runs:
        return []
    given = [overridden(r) for r in runs]
    if any(given):
        values = {}
        for g in given:
            for k in g:
                values.setdefault(k, set())
        for g in given:
            for k, seen in values.items():
                seen.add(g.get(k))
        keys = {k for k, seen in values.items() if len(seen) > 1}
        for r, g in zip(runs, given):  # a key only overridden, or a dict merged into a config group
            # (`dataset={task:compression}`, not the group's choice): its value from the override
            r.config.update({k: v for k, v in g.items()
                             if k in keys and (k not in r.config or str(v).startswith("{"))})
    else:
        shared = set(runs[0].config).intersection(*(r.config for r in runs[1:]))
        keys = {k for k in shared if len({repr(r.config[k]) for r in runs}) > 1}
    return sorted((k for k in keys if not k.startswith(NOT_KEYS)), key=lambda k: ("." in k, k))


def metric_columns(runs):
    names = {m for r in runs for m in r.metrics if not m.startswith("lr-")}  # lr-*: the lr monitor's
    order = {"val": 0, "test": 1, "train": 2}
    return sorted(names, key=lambda m: (order.get(m.split("/")[0], 3), m.count("/"), m))


def load(dirs):
    """(runs with their key and metric columns filled in, key columns, metric columns, unfinished dirs)."""
    finished, unfinished = find(dirs)
    runs = [read(p) for p in finished]
    keys, metrics = key_columns(runs), metric_columns(runs)
    for r in runs:
        r.update({k: r.config.get(k) for k in keys})
        r.update({m: r.metrics.get(m) for m in metrics})
        r["dir"] = r.dir
    return runs, keys, metrics, unfinished


def mode_of(metric, runs, mode=None):
    if mode:
        return mode
    monitored = {(r.results.get("monitor"), r.results.get("mode")) for r in runs}
    for monitor, m in monitored:
        if monitor == metric and m in ("min", "max"):
            return m
    return "min" if any(word in metric for word in ("loss", "mse", "error")) else "max"


def check_keys(keys, known, varying, option):
    for key in keys:
        if key not in known:
            hint = ", ".join(varying) or "none"
            raise ConfigError(f"{option} {key}: not a key of these runs; keys that vary: {hint}")


def finite(value):
    return isinstance(value, (int, float)) and math.isfinite(value)


def reduce(runs, keys, metric, best_over=(), by=(), mode=None):
    """(rows, their key columns): per group of runs equal on `by` (default: on the key columns
    other than `best_over`), the run with the best `metric` over `best_over`, or with `by` alone
    the mean of the group's metrics; the runs themselves when neither is given."""
    if not best_over and not by:
        return runs, keys
    known = set().union(*(r.config for r in runs))  # a key of any run (a layer's option: only its runs)
    check_keys(best_over, known, keys, "--best-over")  # a key at one value: groups of one
    check_keys(by, known, keys, "--by")
    group_keys = list(by) or [k for k in keys if k not in best_over]
    groups = {}
    for r in runs:
        groups.setdefault(tuple(repr(r.config.get(k)) for k in group_keys), []).append(r)
    sign = 1 if mode_of(metric, runs, mode) == "min" else -1
    rows = []
    for members in groups.values():
        if best_over:
            scored = [r for r in members if finite(r.metrics.get(metric))]
            if not scored:
                group = ", ".join(f"{k}={members[0].config.get(k)}" for k in group_keys)
                print(f"note: no finite {metric} in the group {group} ({len(members)} runs, e.g. {members[0].dir}): "
                      "left out", file=sys.stderr)
                continue
            row_source = min(scored, key=lambda r: sign * r.metrics[metric])
            row = Run(row_source)
        else:
            row_source = members[0]
            row = Run({m: mean([r.metrics.get(m) for r in members]) for m in metric_columns(members)})
        row.update({k: row_source.config.get(k) for k in group_keys}, runs=len(members))
        row.dir, row.config, row.results = row_source.dir, row_source.config, row_source.results
        if not best_over:  # a mean: the folder of the group's runs
            row["dir"] = row.dir = os.path.commonpath([r.dir for r in members])
        row.metrics = {m: row.get(m) for m in metric_columns(members)}
        rows.append(row)
    return rows, group_keys + list(best_over) + ["runs"]


def rank(rows, metric, mode):
    """The rows best first by `metric` (`mode` min or max); rows without a finite value last, in
    their order."""
    sign = 1 if mode == "min" else -1
    return sorted(rows, key=lambda r: (0, sign * r[metric]) if finite(r.get(metric)) else (1, 0))


def by_keys(rows, keys):
    """The rows ordered by the key columns, numbers by value (2 before 10), then text."""
    def value(v):
        try:
            return (0, float(v), "")
        except (TypeError, ValueError):
            return (1, 0.0, str(v))

    return sorted(rows, key=lambda r: [value(r.get(k)) for k in keys if k != "runs"])


def mean(values):
    values = [v for v in values if finite(v)]
    return sum(values) / len(values) if values else None


def defaults(runs):
    """The `results` block the runs' configs share (the first run's; a note if they differ)."""
    blocks = [r.results.get("config", {}).get("results") or {} for r in runs]
    if any(b != blocks[0] for b in blocks[1:]):
        print(f"note: the runs' results blocks differ; using that of {runs[0].dir}", file=sys.stderr)
    block = blocks[0] if blocks else {}
    unknown = sorted(set(block) - set(BLOCK))
    if unknown:
        raise ConfigError(f"results.{unknown[0]} (in {runs[0].dir}/results.json) is not a results option; "
                          f"options: {', '.join(BLOCK)}")
    return block


def cell(value):
    if isinstance(value, float):
        return f"{value:.6g}"
    return "" if value is None else str(value)


def render(rows, columns, fmt):
    """The table as text (aligned), md (Markdown) or csv."""
    if fmt == "csv":
        import csv
        import io

        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(columns)
        writer.writerows([[("" if r.get(c) is None else r.get(c)) for c in columns] for r in rows])
        return out.getvalue()
    cells = [[cell(r.get(c)) for c in columns] for r in rows]
    if fmt == "md":
        lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        return "\n".join(lines + ["| " + " | ".join(row) + " |" for row in cells]) + "\n"
    widths = [max([len(c)] + [len(row[i]) for row in cells]) for i, c in enumerate(columns)]
    lines = [columns] + cells
    return "".join("  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() + "\n" for line in lines)
