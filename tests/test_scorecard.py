"""The scorecard's runner (src/scorecard/__main__.py): suites and their cells, the runs it plans,
the command lines it gives; end to end (slow), the smoke suite for two models, a rerun that
changes no file and a cell that fails for every model while the other is scored."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_config
from src.scorecard.__main__ import load_suite, merged, names, parse, plan, sweep_overrides
from src.utils.errors import ConfigError


@pytest.mark.parametrize("name", names("suite"))
def test_every_cell_of_every_suite_composes_with_a_model(name):
    """... with the suite's size, and its best checkpoint (which the test split scores) kept by the
    metric the scorecard selects a run on (results.json's best_score is that metric's)."""
    suite = load_suite(name)
    for cell, spec in suite["cells"].items():
        config = compose_config([f"+cell={spec['config']}", "model=lstm", *[f"{k}={v}" for k, v in suite["size"].items()],
                                 *suite["overrides"]])
        assert all(OmegaConf.select(config, k) == v for k, v in suite["size"].items()), cell
        assert config.train.test is True
        assert (config.train.monitor, config.train.mode) == (spec["select"], "max"), cell
        evals = {f"test/{name}/" for name in config.dataset.get("eval_sets") or {}}
        assert all(m.startswith("test/") and m.count("/") == 1 or m[:m.rindex("/") + 1] in evals
                   for m in [spec["in_dist"], *spec["unseen"]]), cell


def test_the_plan_is_every_model_cell_lr_and_seed_with_its_directory_and_command():
    suite = load_suite("smoke")
    manifest = plan("smoke", suite, ["lstm", "attn"])
    assert len(manifest["jobs"]) == 2 * 2 * len(suite["lr"]) * len(suite["seeds"])
    job = manifest["jobs"][0]
    assert job == {"model": "lstm", "cell": "shift", "lr": 0.001, "seed": 0, "dir": "lstm/lite/shift/lr=0.001,seed=0"}
    command = manifest["cells"]["shift"]["command"].format(**job)
    assert command.startswith("python -m train +cell=lite/shift model=lstm optimizer.lr=0.001 train.seed=0 ")
    with_rest = plan("smoke", suite, ["lstm"], rest=["trainer.accelerator=cpu", "hydra/launcher=pool"])
    assert with_rest["cells"]["shift"]["command"].endswith(" trainer.accelerator=cpu")  # not Hydra's own
    overrides = sweep_overrides(suite, ["lstm", "attn"], ["trainer.accelerator=cpu"])
    assert overrides[:4] == ["model=lstm,attn", "+cell=lite/parity,lite/shift", "optimizer.lr=0.001,0.003", "train.seed=0"]
    assert overrides[-1] == "trainer.accelerator=cpu"


def test_a_grown_scorecard_keeps_the_earlier_models_runs_of_the_suites_cells(tmp_path):
    """A later command with more models keeps the earlier runs; a cell the suite has dropped since
    leaves the manifest with its runs."""
    suite = load_suite("smoke")
    earlier = plan("smoke", suite, ["lstm"])
    earlier["jobs"].append({"model": "lstm", "cell": "dropped", "lr": 0.001, "seed": 0, "dir": "lstm/lite/dropped/lr=0.001,seed=0"})
    (tmp_path / "scorecard.json").write_text(json.dumps(earlier))
    grown = merged(tmp_path / "scorecard.json", plan("smoke", suite, ["attn", "lstm"]))
    assert grown["models"] == ["lstm", "attn"]
    assert sorted(j["dir"] for j in grown["jobs"]) == sorted(j["dir"] for j in plan("smoke", suite, ["lstm", "attn"])["jobs"])


@pytest.mark.parametrize("argv, message", [
    (["suite=lite"], "model= is missing"),
    (["suite=lite", "model=lstm,mambba"], "model=mambba: no such model config"),
])
def test_a_bad_command_line_is_one_line(argv, message):
    with pytest.raises(ConfigError, match=message):
        parse(argv)


def test_a_suite_that_does_not_exist_is_refused():
    with pytest.raises(ConfigError, match="suite=heavy: no such suite; the suites are: core, lite, paper, smoke"):
        load_suite("heavy")


def scorecard(*args):
    return subprocess.run([sys.executable, "-m", "src.scorecard", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)


def files(root):
    return {str(p): (p.stat().st_mtime_ns, p.read_bytes()) for p in Path(root).rglob("*") if p.is_file()
            and p.name not in ("summary.json", "multirun.yaml") and "jobs" not in p.parts}


@pytest.mark.slow  # 8 tiny runs and 8 refused ones through python -m src.scorecard (~1 min)
def test_the_smoke_suite_end_to_end(tmp_path):
    done = scorecard("suite=smoke", "model=lstm,attn", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = (tmp_path / "scorecard.csv").read_text().splitlines()
    assert len(rows) == 1 + 2 * 2
    assert (tmp_path / "scorecard.png").is_file() and (tmp_path / "cards" / "lstm.png").is_file()
    manifest = json.loads((tmp_path / "scorecard.json").read_text())
    assert all((tmp_path / job["dir"] / "results.json").is_file() for job in manifest["jobs"])
    before = files(tmp_path)
    again = scorecard("suite=smoke", "model=lstm,attn", f"hydra.sweep.dir={tmp_path}")
    assert again.returncode == 0 and "8 skipped" in again.stdout
    assert files(tmp_path) == before
    rebuilt = scorecard("--from", str(tmp_path))
    assert rebuilt.returncode == 0 and files(tmp_path) == before
    checked = scorecard("--from", str(tmp_path), "--check")
    assert checked.returncode == 0 and "all 8 finished runs match the current configs" in checked.stdout
    assert files(tmp_path) == before


@pytest.mark.slow  # 4 tiny runs, 4 refused
def test_a_cell_that_fails_is_marked_and_the_others_scored(tmp_path):
    """model.bidirectional=true: parity (labels read causally) refuses every run; shift trains."""
    done = scorecard("suite=smoke", "model=s4d", "model.bidirectional=true", f"hydra.sweep.dir={tmp_path}")
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {r.split(",")[2]: r for r in (tmp_path / "scorecard.csv").read_text().splitlines()[1:]}
    assert ",failed," in rows["parity"] and ",ok," in rows["shift"]


def test_check_names_the_runs_whose_config_the_current_code_would_compose_otherwise(tmp_path, capsys):
    """A finished run saved with the config its cell's command composes now passes; one whose
    saved config has another value (a default changed since it ran) is named with the key."""
    from src.config import prepare
    from src.scorecard.__main__ import check, job_overrides

    suite = load_suite("smoke")
    manifest = plan("smoke", {**suite, "cells": {"shift": suite["cells"]["shift"]}}, ["lstm"])
    (tmp_path / "scorecard.json").write_text(json.dumps(manifest))
    assert job_overrides(manifest, manifest["jobs"][0])[:4] == ["+cell=lite/shift", "model=lstm", "optimizer.lr=0.001",
                                                                "train.seed=0"]
    for job in manifest["jobs"]:
        config = OmegaConf.to_container(prepare(compose_config(job_overrides(manifest, job))), resolve=True)
        if job["lr"] == 0.003:
            config["model"]["d_model"] = 32
        (tmp_path / job["dir"]).mkdir(parents=True)
        (tmp_path / job["dir"] / "results.json").write_text(json.dumps({"status": "finished", "config": config}))
    assert check(tmp_path) == 1
    assert capsys.readouterr().out.splitlines() == [
        "stale: lstm/lite/shift/lr=0.003,seed=0: model.d_model differ from the current configs",
        "1 of 2 finished runs stale"]


def test_match_chooses_the_width_whose_size_is_closest_to_the_target(monkeypatch):
    """Parameters 10 w^2, state 4 w: the target 100,000 parameters lies between w = 96 (92,160) and
    112 (125,440), nearer 96; a state target beyond the widest width takes the widest."""
    from src.scorecard import __main__ as runner

    built = []

    def sizes(model, suite, width):
        built.append(width)
        return {"num_parameters": 10 * width**2, "state_size": 4 * width}

    monkeypatch.setattr(runner, "sizes", sizes)
    suite = load_suite("smoke", {"match": "params", "targets": {"params": 100000, "state": 8192}})
    assert runner.match_width("lstm", suite) == 96
    assert len(built) <= 8  # a binary search over the 64 widths
    assert runner.match_width("lstm", {**suite, "match": "state"}) == runner.WIDTHS[-1]


def test_a_bad_suite_key_or_match_is_refused():
    with pytest.raises(ConfigError, match="suite.match=width: use one of none, params, state"):
        load_suite("smoke", {"match": "width"})
    with pytest.raises(ConfigError, match="suite.steps: no such suite key"):
        load_suite("smoke", {"steps": 3})


def test_sizes_are_those_of_the_run_at_that_width():
    from src.scorecard.__main__ import sizes

    suite = load_suite("smoke")
    small, large = sizes("lstm", suite, 16), sizes("lstm", suite, 32)
    config = compose_config(["+cell=lite/shift", "model=lstm", "model.d_model=16", "model.n_layers=1"])
    assert small["num_parameters"] < large["num_parameters"] and small["state_size"] < large["state_size"]
    assert small["state_size"] == 2 * 16 * config.model.n_layers  # an LSTM keeps (h, c) per layer


def leaderboard_rows(text):
    """The (rank, model, score, in-dist, unseen) of each ranked row of a Markdown leaderboard."""
    rows = [line.split("|")[1:6] for line in text.splitlines() if re.match(r"\| \d+ \| ", line)]
    return [tuple(cell.strip() for cell in row) for row in rows]


def test_the_leaderboard_shown_is_the_committed_scorecards():
    """docs/scorecard.md shows the whole lite leaderboard, and the README its top rows, as
    docs/leaderboard/lite/scorecard.md (written by the scorecard) has them."""
    generated = leaderboard_rows((ROOT / "docs" / "leaderboard" / "lite" / "scorecard.md").read_text())
    docs = leaderboard_rows((ROOT / "docs" / "scorecard.md").read_text())
    readme = leaderboard_rows((ROOT / "README.md").read_text().split("## Scorecard")[1].split("\n## ")[0])
    assert docs == generated
    assert 3 <= len(readme) and readme == generated[:len(readme)]

