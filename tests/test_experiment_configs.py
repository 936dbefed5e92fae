"""Every experiment name resolves to the configuration it had before the experiment files were
merged and trimmed (tests/fixtures/experiment_configs.json, recorded from commit d02a796): the
families (`counting`, `chomsky`, `modern-rnns`) with `dataset=<task>`, their old per-task names
kept as aliases, and the experiments with the keys that restated a default removed.

Each experiment is recorded with its default model and each model that has a preset for it; the
record holds the resolved job config, the sweep grid (hydra.sweeper.params) and a hash of the
unresolved config (an interpolation, `${batch_by_length:${dataset.L},512,64}`, is not its value
at the default length). A deliberate
change to what an experiment resolves to is recorded again with
`python tests/test_experiment_configs.py --record`."""

import hashlib
import json
import os
import re
import sys
from pathlib import Path

import pytest

from conftest import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "tests" / "fixtures" / "experiment_configs.json"
EXPERIMENT_DIR = ROOT / "configs" / "experiment"


def preset_models(experiment):
    """The models with a preset for `experiment` (configs/preset/<E>/<model>.yaml, also through
    the experiments it includes)."""
    text = (EXPERIMENT_DIR / f"{experiment}.yaml").read_text()
    models = set()
    for preset in re.findall(r"/preset/([\w-]+)@model", text):
        models |= {p.stem for p in (ROOT / "configs" / "preset" / preset).glob("*.yaml")}
    for included in re.findall(r"^  - ([\w-]+)\s*$", text, re.M):  # another experiment
        models |= preset_models(included)
    return models


def resolved(overrides):
    """The resolved job config of `python -m train *overrides` (before legacy translation), its
    sweep grid and the hash of the unresolved config; and the model chosen."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf, open_dict

    import src.config  # noqa: F401 - registers ${not:} and ${batch_by_length:}
    import src.utils.devices  # noqa: F401 - registers ${local_jobs:}

    os.environ["WANDB_MODE"] = "offline"
    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = compose("config", overrides=list(overrides), return_hydra_config=True)
    params = config.hydra.sweeper.params
    sweep = None if params is None else OmegaConf.to_container(params, resolve=False)
    model = config.hydra.runtime.choices.model
    with open_dict(config):
        del config["hydra"]
    unresolved = json.dumps(OmegaConf.to_container(config, resolve=False), sort_keys=True).encode()
    return {"config": OmegaConf.to_container(config, resolve=True), "sweep": sweep,
            "unresolved": hashlib.sha256(unresolved).hexdigest()}, model


def record():
    """{experiment: {model: resolved}} for every experiment file."""
    out = {}
    for path in sorted(EXPERIMENT_DIR.glob("*.yaml")):
        default, model = resolved([f"experiment={path.stem}"])
        out[path.stem] = {model: default}
        for other in sorted(preset_models(path.stem) - {model}):
            out[path.stem][other] = resolved([f"experiment={path.stem}", f"model={other}"])[0]
    return out


RECORDED = json.loads(FIXTURE.read_text()) if FIXTURE.exists() else {}
CASES = [(e, m) for e in RECORDED for m in RECORDED[e]]


@pytest.mark.parametrize("experiment, model", CASES, ids=[f"{e}-{m}" for e, m in CASES])
def test_experiment_resolves_as_recorded(experiment, model):
    assert resolved([f"experiment={experiment}", f"model={model}"])[0] == RECORDED[experiment][model]


TASKS = [(f, e[len(f) + 1 :]) for e in RECORDED for f in FAMILIES if e.startswith(f"{f}-")]  # the aliases


@pytest.mark.parametrize("family, task", TASKS, ids=[f"{f}-{t}" for f, t in TASKS])
def test_a_family_with_dataset_is_its_old_per_task_experiment(family, task):
    """`experiment=counting dataset=count_same` (the group chosen on the command line replaces the
    experiment's `- /dataset: ...`) resolves as `experiment=counting-count_same` did; so does an
    alias with another task on the command line."""
    old = RECORDED[f"{family}-{task}"]
    (model,) = old
    assert resolved([f"experiment={family}", f"dataset={task}"])[0] == old[model]
    other = next(e for e in RECORDED if e.startswith(f"{family}-") and e != f"{family}-{task}")
    assert resolved([f"experiment={other}", f"dataset={task}"])[0] == old[model]


@pytest.mark.parametrize("family", FAMILIES)
def test_a_family_alone_runs_its_default_task(family):
    old = RECORDED[f"{family}-{FAMILIES[family]}"]
    (model,) = old
    assert resolved([f"experiment={family}"])[0] == old[model]


if __name__ == "__main__" and sys.argv[1:] == ["--record"]:
    sys.path.insert(0, str(ROOT))
    FIXTURE.write_text(json.dumps(record(), indent=1, sort_keys=True) + "\n")
    print(f"wrote {FIXTURE}")
