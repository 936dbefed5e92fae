"""The scorecard of registered models on a suite of task cells.

    python -m src.scorecard suite=lite model=attn,lstm [OVERRIDE ...] [hydra.sweep.dir=DIR] [hydra/launcher=pool]
    python -m src.scorecard suite=lite model=all
    python -m src.scorecard --from DIR [--check]

A suite (configs/suite/<name>.yaml) names its cells, each a task config (configs/cell/<config>.yaml,
added to a run as `+cell=<config>`) with its family and the metrics that score it, the model size
every run gets (`size`), the learning rates and the seeds. The runs (models x cells x learning
rates x seeds) are one Hydra multirun of `python -m train` (src/utils/sweep.py), through whatever
launcher the command line configures: a finished run is skipped and an unfinished one resumed
when the same command runs again, and a failing run is recorded without stopping the others.
Each run's directory is <sweep dir>/<model>/<cell config>/lr=<lr>,seed=<seed>; the sweep
directory defaults to scorecards/<suite>, so that a second command with more models adds their
runs to the same scorecard. Other `key=value` arguments go to every run (e.g.
`trainer.accelerator=cpu`).

The sweep directory gets scorecard.json (the suite, models, cells and runs: src/scorecard/score.py
reads it), then the scores: scorecard.csv, scorecard.md, scorecard.png and cards/<model>.png
(src/scorecard/report.py). `--from DIR` writes the scores again from DIR's runs, running nothing.
Each cell's row names the `python -m train` command that reproduces its chosen run alone.
`--from DIR --check` writes nothing: it composes each finished run's command with the current
configs and code and names, one line each, the runs whose saved config differs (a default or a
preset changed since they ran), exiting 1 if any does. A live sweep refuses such runs itself;
`--from` alone rescores whatever the runs hold.
"""

import json
import shlex
import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.config import CONFIGS
from src.utils.errors import ConfigError

SUBDIR = "${hydra:runtime.choices.model}/${hydra:runtime.choices.cell}/lr=${optimizer.lr},seed=${train.seed}"
SUITE_KEYS = {"size", "lr", "seeds", "overrides", "cells", "match", "targets"}
MATCH = {"none": None, "params": "num_parameters", "state": "state_size"}
WIDTHS = range(16, 1025, 16)  # the model.d_model a match chooses from (multiples of every head count used here)
CELL_KEYS = {"config", "family", "select", "in_dist", "unseen"}


def names(group):
    """The configs of a config group: configs/<group>/*.yaml, sorted."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def load_suite(name, changes=None):
    """configs/suite/<name>.yaml with the command line's `suite.KEY=VALUE` `changes`, checked:
    ConfigError naming the bad key or value."""
    if name not in names("suite"):
        raise ConfigError(f"suite={name}: no such suite; the suites are: {', '.join(names('suite'))}")
    suite = OmegaConf.to_container(OmegaConf.load(CONFIGS / "suite" / f"{name}.yaml"))
    for key, value in (changes or {}).items():
        if key not in SUITE_KEYS - {"cells"}:
            raise ConfigError(f"suite.{key}: no such suite key; the keys are: {', '.join(sorted(SUITE_KEYS - {'cells'}))}")
        suite[key] = value
    if set(suite) != SUITE_KEYS:
        raise ConfigError(f"configs/suite/{name}.yaml: the keys must be {', '.join(sorted(SUITE_KEYS))} "
                          f"(it has {', '.join(sorted(suite))})")
    if suite["match"] not in MATCH:
        raise ConfigError(f"suite.match={suite['match']}: use one of {', '.join(MATCH)}")
    if suite["match"] != "none" and not isinstance(suite["targets"].get(suite["match"]), int):
        raise ConfigError(f"suite.match={suite['match']} needs configs/suite/{name}.yaml targets.{suite['match']}: "
                          "the number to match")
    for cell, spec in suite["cells"].items():
        if set(spec) != CELL_KEYS:
            raise ConfigError(f"configs/suite/{name}.yaml: cell {cell} must have the keys {', '.join(sorted(CELL_KEYS))}")
        if not (CONFIGS / "cell" / f"{spec['config']}.yaml").is_file():
            raise ConfigError(f"configs/suite/{name}.yaml: cell {cell}: no configs/cell/{spec['config']}.yaml")
    return suite


def parse(argv):
    """(suite name, models, {suite key: value} from `suite.KEY=VALUE`, the other overrides) of the
    command line."""
    suite, models, changes, rest = "lite", None, {}, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "suite":
            suite = value
        elif key.startswith("suite."):
            changes[key[len("suite."):]] = OmegaConf.create({"v": value}).v  # typed as YAML reads it
        elif key == "model":
            models = names("model") if value == "all" else value.split(",")
        else:
            rest.append(arg)
    if not models:
        raise ConfigError("model= is missing: name the models to score (model=attn,lstm) or model=all")
    unknown = [m for m in models if m not in names("model")]
    if unknown:
        raise ConfigError(f"model={','.join(unknown)}: no such model config; the models are: {', '.join(names('model'))}")
    return suite, models, changes, rest


def run_dir(model, cell_config, lr, seed):
    """The directory of one run below the sweep directory (SUBDIR, as Hydra resolves it)."""
    return f"{model}/{cell_config}/lr={float(lr)},seed={seed}"


def plan(name, suite, models, widths=None, rest=()):
    """The manifest (scorecard.json): the suite, its cells with their reproducing command (with
    the command line's overrides `rest` of the runs, not of Hydra), and every run (model, cell,
    lr, seed, dir; and width, the model.d_model of each model in `widths` that suite.match chose)."""
    size = {**suite["size"], **({"model.d_model": "{width}"} if widths else {})}
    fixed = [*[f"{k}={v}" for k, v in size.items()], *suite["overrides"],
             *[a for a in rest if not a.lstrip("+~").startswith("hydra")]]
    cells = {cell: {**spec, "command": " ".join(["python -m train", f"+cell={spec['config']}", "model={model}",
                                                 "optimizer.lr={lr}", "train.seed={seed}", *fixed])}
             for cell, spec in suite["cells"].items()}
    jobs = [{"model": model, "cell": cell, "lr": float(lr), "seed": seed, "dir": run_dir(model, spec["config"], lr, seed),
             **({"width": widths[model]} if widths else {})}
            for cell, spec in suite["cells"].items() for model in models for lr in suite["lr"] for seed in suite["seeds"]]
    return {"suite": name, "models": models, "cells": cells, "jobs": jobs}


def sweep_overrides(suite, models, rest):
    """The `python -m train -m` overrides of the suite's runs; model first, so that the runs go model
    by model (in the command line's order: its card is whole before the next model starts)."""
    configs = sorted({spec["config"] for spec in suite["cells"].values()})
    return [f"model={','.join(models)}", f"+cell={','.join(configs)}", f"optimizer.lr={','.join(map(str, suite['lr']))}",
            f"train.seed={','.join(map(str, suite['seeds']))}", *[f"{k}={v}" for k, v in suite["size"].items()],
            *suite["overrides"], f"hydra.sweep.subdir='{SUBDIR}'", *rest]


def sizes(model, suite, width):
    """{num_parameters, state_size} of `model` at model.d_model=`width` on the suite's first cell,
    built as its run builds it."""
    import train
    from src.config import prepare
    from src.module import SequenceLightningModule

    cell = next(iter(suite["cells"].values()))
    size = {**suite["size"], "model.d_model": width}
    config = prepare(train._compose([f"+cell={cell['config']}", f"model={model}", *[f"{k}={v}" for k, v in size.items()],
                                     *suite["overrides"]]))
    return SequenceLightningModule(OmegaConf.to_container(config, resolve=True)).sizes


def match_width(model, suite):
    """The width (model.d_model in WIDTHS) at which `model`'s suite.match size (parameters or state
    floats) on the suite's first cell is closest to the suite's target. Both grow with the width:
    a binary search finds the first width at or above the target, then the closer of it and the
    width below wins (the smaller on a tie); about 6 builds of the model."""
    key, target = MATCH[suite["match"]], suite["targets"][suite["match"]]
    measured = {}

    def at(i):
        if i not in measured:
            measured[i] = sizes(model, suite, WIDTHS[i])[key]
        return measured[i]

    lo, hi = 0, len(WIDTHS) - 1
    while lo < hi:
        mid = (lo + hi) // 2
        lo, hi = (mid + 1, hi) if at(mid) < target else (lo, mid)
    return WIDTHS[min({max(lo - 1, 0), lo}, key=lambda i: (abs(at(i) - target), i))]


def sweep_dir(name, rest):
    given = [a.partition("=")[2] for a in rest if a.startswith("hydra.sweep.dir=")]
    return Path(given[-1] if given else Path("scorecards") / name)


def merged(path, manifest):
    """The manifest with the runs of an earlier one at `path` kept (a scorecard grown by models), those
    of cells the suite no longer has left out."""
    if not path.is_file():
        return manifest
    old = json.loads(path.read_text())
    if old.get("suite") != manifest["suite"]:
        raise ConfigError(f"{path} is the scorecard of suite {old.get('suite')}, not {manifest['suite']}; "
                          "pass another hydra.sweep.dir")
    models = list(dict.fromkeys([*old["models"], *manifest["models"]]))
    kept = [job for job in old["jobs"] if job["cell"] in manifest["cells"]]
    known = {job["dir"] for job in kept}
    return {**manifest, "models": models, "jobs": [*kept, *(j for j in manifest["jobs"] if j["dir"] not in known)]}


def report(directory):
    from src.scorecard.report import write
    from src.scorecard.score import score

    card = score(directory)
    for path in write(card, directory):
        print(f"written: {path}")
    print((Path(directory) / "scorecard.md").read_text())


def job_overrides(manifest, job):
    """The `python -m train` overrides of one run of a manifest: its cell's command with the run's
    model, lr, seed and width filled in."""
    command = manifest["cells"][job["cell"]]["command"]
    for key in ("model", "lr", "seed", "width"):
        command = command.replace("{" + key + "}", str(job.get(key)))
    return shlex.split(command)[3:]  # after "python -m train"


def stale(directory):
    """([(run dir, the keys that differ)] of the finished runs of the scorecard in `directory` whose
    saved config is not the one their cell's command composes now, the number of finished runs).
    Keys that do not change what a run trains are left out, as a sweep leaves them out when it
    skips a finished run."""
    import train
    from src.config import prepare
    from src.utils import run_results
    from src.utils.sweep import FINISHED, SAME_RUN, differing

    manifest = json.loads((Path(directory) / "scorecard.json").read_text())
    out, finished = [], 0
    for job in manifest["jobs"]:
        done = run_results.read(Path(directory) / job["dir"])
        if not done or done.get("status") not in FINISHED:
            continue
        finished += 1
        config = prepare(train._compose(job_overrides(manifest, job)))
        keys = differing(done["config"], OmegaConf.to_container(config, resolve=True), SAME_RUN)
        if keys:
            out.append((job["dir"], keys))
    return out, finished


def check(directory):
    """Prints the stale runs of the scorecard in `directory`, one line each; 1 if there is one."""
    runs, finished = stale(directory)
    for run_dir, keys in runs:
        print(f"stale: {run_dir}: {', '.join(keys[:4])}{' ...' if len(keys) > 4 else ''} differ from the current configs")
    print(f"{len(runs)} of {finished} finished runs stale" if runs
          else f"all {finished} finished runs match the current configs")
    return 1 if runs else 0


def main(argv):
    if argv[:1] == ["--from"]:
        args = [a for a in argv[1:] if a != "--check"]
        if len(args) != 1 or not (Path(args[0]) / "scorecard.json").is_file():
            raise ConfigError(f"--from {' '.join(argv[1:])}: give one directory holding a scorecard.json, and --check or nothing")
        return check(args[0]) if "--check" in argv else report(args[0])
    import train

    name, models, changes, rest = parse(argv)
    suite = load_suite(name, changes)
    directory = sweep_dir(name, rest)
    rest = [a for a in rest if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={directory}"]
    if suite["match"] == "none":  # one multirun of every model
        sweeps = [(models, suite)]
    else:  # one multirun per model, at its own width
        sweeps = [([m], {**suite, "size": {**suite["size"], "model.d_model": match_width(m, suite)}}) for m in models]
        for (model,), matched in sweeps:
            print(f"suite.match={suite['match']}: {model} at model.d_model={matched['size']['model.d_model']}")
    manifest = plan(name, suite, models, {ms[0]: s["size"]["model.d_model"] for ms, s in sweeps}
                    if suite["match"] != "none" else None, rest)
    checked = [train.check_sweep(sweep_overrides(s, ms, rest)) for ms, s in sweeps]
    manifest = merged(directory / "scorecard.json", manifest)
    directory.mkdir(parents=True, exist_ok=True)
    text, path = json.dumps(manifest, indent=1) + "\n", directory / "scorecard.json"
    if not path.is_file() or path.read_text() != text:  # a rerun of the same scorecard changes no file
        path.write_text(text)
    for overrides in checked:
        try:
            train.launch(overrides, multirun=True)
        except SystemExit as e:  # the sweep stopped (Ctrl-C, SIGTERM, a refused start): no scores
            if e.code not in (0, None):
                raise
    return report(directory)


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
