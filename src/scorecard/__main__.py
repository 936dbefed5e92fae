"""The scorecard of registered models on a suite of task cells.

    python -m src.scorecard suite=lite model=attn,lstm [OVERRIDE ...] [hydra.sweep.dir=DIR] [hydra/launcher=pool]
    python -m src.scorecard suite=lite model=all
    python -m src.scorecard --from DIR

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
"""

import json
import sys
from pathlib import Path

from omegaconf import OmegaConf

from src.config import CONFIGS
from src.utils.errors import ConfigError

SUBDIR = "${hydra:runtime.choices.model}/${hydra:runtime.choices.cell}/lr=${optimizer.lr},seed=${train.seed}"
SUITE_KEYS = {"size", "lr", "seeds", "overrides", "cells"}
CELL_KEYS = {"config", "family", "select", "in_dist", "unseen"}


def names(group):
    """The configs of a config group: configs/<group>/*.yaml, sorted."""
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


def load_suite(name):
    """configs/suite/<name>.yaml, checked: ConfigError naming the bad key or value."""
    if name not in names("suite"):
        raise ConfigError(f"suite={name}: no such suite; the suites are: {', '.join(names('suite'))}")
    suite = OmegaConf.to_container(OmegaConf.load(CONFIGS / "suite" / f"{name}.yaml"))
    if set(suite) != SUITE_KEYS:
        raise ConfigError(f"configs/suite/{name}.yaml: the keys must be {', '.join(sorted(SUITE_KEYS))} "
                          f"(it has {', '.join(sorted(suite))})")
    for cell, spec in suite["cells"].items():
        if set(spec) != CELL_KEYS:
            raise ConfigError(f"configs/suite/{name}.yaml: cell {cell} must have the keys {', '.join(sorted(CELL_KEYS))}")
        if not (CONFIGS / "cell" / f"{spec['config']}.yaml").is_file():
            raise ConfigError(f"configs/suite/{name}.yaml: cell {cell}: no configs/cell/{spec['config']}.yaml")
    return suite


def parse(argv):
    """(suite name, models, the other overrides) of the command line."""
    suite, models, rest = "lite", None, []
    for arg in argv:
        key, _, value = arg.partition("=")
        if key == "suite":
            suite = value
        elif key == "model":
            models = names("model") if value == "all" else value.split(",")
        else:
            rest.append(arg)
    if not models:
        raise ConfigError("model= is missing: name the models to score (model=attn,lstm) or model=all")
    unknown = [m for m in models if m not in names("model")]
    if unknown:
        raise ConfigError(f"model={','.join(unknown)}: no such model config; the models are: {', '.join(names('model'))}")
    return suite, models, rest


def run_dir(model, cell_config, lr, seed):
    """The directory of one run below the sweep directory (SUBDIR, as Hydra resolves it)."""
    return f"{model}/{cell_config}/lr={float(lr)},seed={seed}"


def plan(name, suite, models):
    """The manifest (scorecard.json): the suite, its cells with their reproducing command, and
    every run (model, cell, lr, seed, dir)."""
    fixed = [*[f"{k}={v}" for k, v in suite["size"].items()], *suite["overrides"]]
    cells = {cell: {**spec, "command": " ".join(["python -m train", f"+cell={spec['config']}", "model={model}",
                                                 "optimizer.lr={lr}", "train.seed={seed}", *fixed])}
             for cell, spec in suite["cells"].items()}
    jobs = [{"model": model, "cell": cell, "lr": float(lr), "seed": seed, "dir": run_dir(model, spec["config"], lr, seed)}
            for cell, spec in suite["cells"].items() for model in models for lr in suite["lr"] for seed in suite["seeds"]]
    return {"suite": name, "models": models, "cells": cells, "jobs": jobs}


def sweep_overrides(suite, models, rest):
    """The `python -m train -m` overrides of the suite's runs."""
    configs = sorted({spec["config"] for spec in suite["cells"].values()})
    return [f"+cell={','.join(configs)}", f"model={','.join(models)}", f"optimizer.lr={','.join(map(str, suite['lr']))}",
            f"train.seed={','.join(map(str, suite['seeds']))}", *[f"{k}={v}" for k, v in suite["size"].items()],
            *suite["overrides"], f"hydra.sweep.subdir='{SUBDIR}'", *rest]


def sweep_dir(name, rest):
    given = [a.partition("=")[2] for a in rest if a.startswith("hydra.sweep.dir=")]
    return Path(given[-1] if given else Path("scorecards") / name)


def merged(path, manifest):
    """The manifest with the runs of an earlier one at `path` kept (a scorecard grown by models)."""
    if not path.is_file():
        return manifest
    old = json.loads(path.read_text())
    if old.get("suite") != manifest["suite"]:
        raise ConfigError(f"{path} is the scorecard of suite {old.get('suite')}, not {manifest['suite']}; "
                          "pass another hydra.sweep.dir")
    models = list(dict.fromkeys([*old["models"], *manifest["models"]]))
    known = {job["dir"] for job in old["jobs"]}
    return {**manifest, "models": models, "jobs": [*old["jobs"], *(j for j in manifest["jobs"] if j["dir"] not in known)]}


def report(directory):
    from src.scorecard.report import write
    from src.scorecard.score import score

    card = score(directory)
    for path in write(card, directory):
        print(f"written: {path}")
    print((Path(directory) / "scorecard.md").read_text())


def main(argv):
    if argv[:1] == ["--from"]:
        if len(argv) != 2 or not (Path(argv[1]) / "scorecard.json").is_file():
            raise ConfigError(f"--from {' '.join(argv[1:])}: give one directory holding a scorecard.json")
        return report(argv[1])
    import train

    name, models, rest = parse(argv)
    suite = load_suite(name)
    directory = sweep_dir(name, rest)
    rest = [a for a in rest if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={directory}"]
    manifest = merged(directory / "scorecard.json", plan(name, suite, models))
    overrides = train.check_sweep(sweep_overrides(suite, models, rest))
    directory.mkdir(parents=True, exist_ok=True)
    text, path = json.dumps(manifest, indent=1) + "\n", directory / "scorecard.json"
    if not path.is_file() or path.read_text() != text:  # a rerun of the same scorecard changes no file
        path.write_text(text)
    try:
        train.launch(overrides, multirun=True)
    except SystemExit as e:  # the sweep stopped (Ctrl-C, SIGTERM, a refused start): no scores
        if e.code not in (0, None):
            raise
    return report(directory)


if __name__ == "__main__":
    try:
        main(sys.argv[1:])
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
