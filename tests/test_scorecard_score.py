"""The scorecard's arithmetic and reports (src/scorecard/score.py, report.py) on fabricated sweeps:
a manifest and results.json files written by hand, checked against values computed by hand."""

import csv
import json
import math
import os

import pytest

from src.scorecard import report
from src.scorecard.score import ModelScore, best, check, leaderboard, model_score, outcome, score, seed_score, tally
from src.utils.errors import ConfigError

COMMAND = "python -m train +cell=lite/{cell} model={model} optimizer.lr={lr} train.seed={seed}"
CELLS = {
    "parity": {"family": "formal", "select": "val/accuracy", "in_dist": "test/accuracy",
               "unseen": ["test/L128/accuracy", "test/L256/accuracy"]},
    "dyck": {"family": "formal", "select": "val/accuracy", "in_dist": "test/accuracy", "unseen": []},
    "recall": {"family": "recall", "select": "val/accuracy", "in_dist": "test/accuracy",
               "unseen": ["test/L512/accuracy"]},
}
UNSEEN = {"parity": ("test/L128/accuracy", "test/L256/accuracy"), "dyck": (), "recall": ("test/L512/accuracy",)}
NAN, INF = float("nan"), float("inf")
# (model, cell, lr, seed) -> (val/accuracy, test/accuracy, unseen values), "missing" (no results.json)
# or "stopped" (results.json with status "stopped").
RUNS = {
    # attn parity, seed 0: a NaN select value never wins (its test accuracy would); seed 1: a tie, the smaller lr
    ("attn", "parity", 0.001, 0): (NAN, 0.99, (1.0, 1.0)),
    ("attn", "parity", 0.01, 0): (0.8, 0.7, (0.5, 0.3)),
    ("attn", "parity", 0.001, 1): (0.9, 0.9, (0.6, INF)),  # inf counts 0
    ("attn", "parity", 0.01, 1): (0.9, 0.1, (1.0, 1.0)),
    ("attn", "dyck", 0.001, 0): (0.5, 0.5, ()),
    ("attn", "dyck", 0.01, 0): (0.6, 0.6, ()),
    ("attn", "dyck", 0.001, 1): (0.7, 0.7, ()),
    ("attn", "dyck", 0.01, 1): (0.2, 0.2, ()),
    # attn recall: one of two lrs failed in each seed, scored from the other
    ("attn", "recall", 0.001, 0): "missing",
    ("attn", "recall", 0.01, 0): (0.9, 0.9, (0.5,)),
    ("attn", "recall", 0.001, 1): "stopped",
    ("attn", "recall", 0.01, 1): (0.8, 0.8, (0.7,)),
    # lstm parity: seed 0 failed at both lrs (0 for that seed), seed 1 scored
    ("lstm", "parity", 0.001, 0): "missing",
    ("lstm", "parity", 0.01, 0): "stopped",
    ("lstm", "parity", 0.001, 1): (0.6, 0.6, (0.4, 0.2)),
    ("lstm", "parity", 0.01, 1): (0.5, 0.5, (0.5, 0.5)),
    ("lstm", "dyck", 0.001, 0): (0.9, 0.9, ()),
    ("lstm", "dyck", 0.01, 0): (0.8, 0.8, ()),
    ("lstm", "dyck", 0.001, 1): (0.7, 0.7, ()),
    ("lstm", "dyck", 0.01, 1): (0.95, 0.95, ()),
    ("lstm", "recall", 0.001, 0): (0.5, 0.5, (0.5,)),
    ("lstm", "recall", 0.01, 0): (0.4, 0.4, (0.4,)),
    ("lstm", "recall", 0.001, 1): (0.5, 0.5, (0.1,)),
    ("lstm", "recall", 0.01, 1): (0.6, 0.6, (0.3,)),
}
PARAMETERS = {"attn": 1000.0, "lstm": 2000.0}


def write_job(sweep, model, cell, lr, seed, run):
    """The manifest's entry of a job, its results.json written as `run` says."""
    job = {"model": model, "cell": cell, "lr": lr, "seed": seed, "dir": f"{model}/{cell}/lr={lr},seed={seed}"}
    if run == "missing":
        return job
    path = sweep / job["dir"]
    path.mkdir(parents=True)
    metrics = {"num_parameters": PARAMETERS[model], "state_size": 64.0 * seed + lr * 1000}
    if run != "stopped":
        select, in_dist, unseen = run
        metrics.update({"val/accuracy": select, "test/accuracy": in_dist, **dict(zip(UNSEEN[cell], unseen))})
    status = "stopped" if run == "stopped" else "finished"
    (path / "results.json").write_text(json.dumps({"status": status, "metrics": metrics}))
    return job


def manifest(jobs, cells=None):
    cells = cells or {name: {**cell, "command": COMMAND.replace("{cell}", name)} for name, cell in CELLS.items()}
    return {"suite": "lite", "models": ["attn", "lstm"], "cells": cells, "jobs": jobs}


@pytest.fixture
def sweep(tmp_path):
    jobs = [write_job(tmp_path, *key, run) for key, run in RUNS.items()]
    (tmp_path / "scorecard.json").write_text(json.dumps(manifest(jobs)))
    return tmp_path


def cell_of(card, model, cell):
    return next(c for c in card.cells if (c.model, c.cell) == (model, cell))


def test_best_over_lr_grid_skips_nan_and_breaks_ties_by_the_smaller_lr(sweep):
    card = score(sweep)
    parity = cell_of(card, "attn", "parity")
    assert parity.lrs == (0.01, 0.001)  # seed 0: NaN at 1e-3 loses; seed 1: the tie goes to 1e-3
    assert parity.in_dist == pytest.approx((0.7 + 0.9) / 2)
    assert parity.unseen == pytest.approx(((0.5 + 0.3) / 2 + (0.6 + 0) / 2) / 2)  # inf counts 0
    assert parity.command == "python -m train +cell=lite/parity model=attn optimizer.lr=0.01 train.seed=0"
    assert (parity.num_parameters, parity.state_size, parity.status) == (1000.0, 10.0, "ok")


def test_best_alone():
    runs = [({"lr": 0.01}, {"s": NAN}), ({"lr": 0.001}, {"s": INF}), ({"lr": 0.1}, {"s": 0.2}), ({"lr": 0.03}, {})]
    assert best(runs, "s")[0]["lr"] == 0.1
    assert best(runs[:2], "s")[0]["lr"] == 0.001  # no finite value: the smaller lr
    assert best([({"lr": 0.1}, {"s": 0.5}), ({"lr": 0.01}, {"s": 0.5})], "s")[0]["lr"] == 0.01
    assert best([], "s") is None


def test_the_monitored_metric_is_the_best_checkpoints(tmp_path):
    """The run is selected on the validation value of the checkpoint the test split scored
    (results.json's best_score), not the last epoch's; other metrics are as logged."""
    job = {"dir": "run"}
    (tmp_path / "run").mkdir()
    results = {"status": "finished", "monitor": "val/accuracy", "best_score": 0.9,
               "metrics": {"val/accuracy": 0.4, "val/loss": 2.0, "test/accuracy": 0.88}}
    (tmp_path / "run" / "results.json").write_text(json.dumps(results))
    assert outcome(tmp_path, job) == {"val/accuracy": 0.9, "val/loss": 2.0, "test/accuracy": 0.88}
    results["best_score"] = None  # no checkpoint kept (every monitored value was NaN): the last value
    (tmp_path / "run" / "results.json").write_text(json.dumps(results))
    assert outcome(tmp_path, job)["val/accuracy"] == 0.4
    results["status"] = "stopped"
    (tmp_path / "run" / "results.json").write_text(json.dumps(results))
    assert outcome(tmp_path, job) is None


def test_a_negative_metric_scores_0():
    """An r2 below 0 (worse than the mean) is 0: scores lie in [0, 1]."""
    cell = {"in_dist": "test/r2", "unseen": ["test/L256/r2", "test/L512/r2"]}
    assert seed_score({"test/r2": -3.3, "test/L256/r2": 0.5, "test/L512/r2": -0.1}, cell) == (0.0, 0.25)


def test_cell_without_unseen_sets_has_no_unseen_score(sweep):
    dyck = cell_of(score(sweep), "attn", "dyck")
    assert dyck.unseen is None
    assert dyck.in_dist == pytest.approx((0.6 + 0.7) / 2)
    assert dyck.lrs == (0.01, 0.001)


def test_one_failed_lr_of_two_is_scored_from_the_other(sweep):
    recall = cell_of(score(sweep), "attn", "recall")
    assert (recall.status, recall.failed_runs, recall.lrs) == ("ok", 2, (0.01, 0.01))
    assert (recall.in_dist, recall.unseen) == (pytest.approx(0.85), pytest.approx(0.6))


def test_a_seed_without_a_finished_run_counts_0_and_marks_the_cell_failed(sweep):
    parity = cell_of(score(sweep), "lstm", "parity")
    assert (parity.status, parity.failed_runs, parity.lrs) == ("failed", 2, (None, 0.001))
    assert parity.in_dist == pytest.approx(0.6 / 2)
    assert parity.unseen == pytest.approx((0.4 + 0.2) / 2 / 2)
    assert parity.command == "python -m train +cell=lite/parity model=lstm optimizer.lr=0.001 train.seed=1"
    assert (parity.num_parameters, parity.state_size) == (2000.0, 65.0)  # the scored seed's run


def test_family_and_model_means_and_the_leaderboard(sweep):
    card = score(sweep)
    assert card.families == ("formal", "recall")
    attn, lstm = card.leaderboard
    assert (attn.model, lstm.model) == ("attn", "lstm")
    # attn: formal in = mean(parity 0.8, dyck 0.65), unseen = parity's alone (dyck has none)
    assert attn.families["formal"] == (pytest.approx(0.725), pytest.approx(0.35))
    assert attn.families["recall"] == (pytest.approx(0.85), pytest.approx(0.6))
    assert (attn.in_dist, attn.unseen) == (pytest.approx((0.725 + 0.85) / 2), pytest.approx((0.35 + 0.6) / 2))
    assert attn.score == pytest.approx((0.7875 + 0.475) / 2)
    # lstm: parity (0.3, 0.15) failed, dyck 0.925, recall (0.55, 0.4)
    assert lstm.families["formal"] == (pytest.approx(0.6125), pytest.approx(0.15))
    assert lstm.score == pytest.approx(((0.6125 + 0.55) / 2 + (0.15 + 0.4) / 2) / 2)


def test_leaderboard_ties_by_name_and_a_model_without_unseen_scores_by_in_dist():
    board = leaderboard([ModelScore("b", {}, 0.5, None, 0.5), ModelScore("c", {}, 0.9, 0.1, 0.5),
                         ModelScore("a", {}, 0.5, None, 0.5), ModelScore("d", {}, 0.6, None, 0.6)])
    assert [m.model for m in board] == ["d", "a", "b", "c"]
    card = tally(manifest([{"model": "attn", "cell": "dyck", "lr": 0.1, "seed": 0, "dir": "x"}],
                          cells={"dyck": {**CELLS["dyck"], "command": COMMAND}}),
                 [{"val/accuracy": 0.4, "test/accuracy": 0.3}])
    attn = next(m for m in card.leaderboard if m.model == "attn")
    assert (attn.in_dist, attn.unseen, attn.score) == (pytest.approx(0.3), None, pytest.approx(0.3))
    lstm = cell_of(card, "lstm", "dyck")  # no job for this pair: failed, 0
    assert (lstm.status, lstm.in_dist, lstm.failed_runs, lstm.command) == ("failed", 0.0, 0, None)
    assert model_score("lstm", [lstm], ("formal",)).score == 0.0
    assert [m.model for m in card.leaderboard] == ["attn", "lstm"]


@pytest.mark.parametrize("edit, message", [
    (lambda m: m["cells"]["parity"].pop("select"), "cells.parity.select is missing"),
    (lambda m: m["cells"]["dyck"].update(unseen="test/L64/accuracy"), "cells.dyck.unseen has the wrong type"),
    (lambda m: m["jobs"][1].update(cell="parit"), "jobs[1].cell='parit' is not in the manifest's cells"),
    (lambda m: m["jobs"][2].pop("seed"), "jobs[2].seed is missing"),
    (lambda m: m.pop("models"), "models is missing"),
])
def test_malformed_manifest_names_the_bad_key(edit, message):
    jobs = [{"model": "attn", "cell": c, "lr": 0.1, "seed": 0, "dir": c} for c in CELLS]
    m = manifest(jobs)
    edit(m)
    with pytest.raises(ConfigError, match="^scorecard.json: " + message.replace("[", r"\[").replace("]", r"\]")):
        check(m)


def test_a_metric_no_run_logged_is_a_config_error(sweep):
    m = json.loads((sweep / "scorecard.json").read_text())
    m["cells"]["recall"]["unseen"] = ["test/L521/accuracy"]
    (sweep / "scorecard.json").write_text(json.dumps(m))
    with pytest.raises(ConfigError, match="cells.recall.unseen: no finished run logged 'test/L521/accuracy'"):
        score(sweep)


def test_reports_mark_failed_cells(sweep, tmp_path):
    out = tmp_path / "out"
    written = report.write(score(sweep), out)
    assert sorted(p.relative_to(out).as_posix() for p in written) == [
        "cards/attn.png", "cards/lstm.png", "scorecard.csv", "scorecard.md", "scorecard.png"]
    rows = {(r["model"], r["cell"]): r for r in csv.DictReader((out / "scorecard.csv").open())}
    assert list(rows) == [(m, c) for m in ("attn", "lstm") for c in CELLS]
    assert rows["lstm", "parity"] | {"command": ""} == {
        "model": "lstm", "family": "formal", "cell": "parity", "status": "failed", "lr": "-;1e-3", "in_dist": "0.3",
        "unseen": "0.15", "num_parameters": "2000", "state_size": "65", "failed_runs": "2", "command": ""}
    assert (rows["attn", "parity"]["lr"], rows["attn", "dyck"]["unseen"], rows["attn", "recall"]["lr"]) == (
        "1e-2;1e-3", "", "1e-2")
    text = (out / "scorecard.md").read_text()
    assert "| 1 | attn | 0.631 | 0.788 | 0.475 | 0.725 | 0.350 | 0.850 | 0.600 |" in text
    assert "| lstm | formal | parity | -;1e-3 | 0.300 (failed) | 0.150 (failed) |" in text
    assert "| attn | formal | dyck | 1e-2;1e-3 | 0.650 | - |" in text


def test_a_second_write_changes_no_file(sweep, tmp_path):
    out = tmp_path / "out"
    card = score(sweep)
    paths = report.write(card, out)
    old = 1_000_000_000
    for p in paths:
        os.utime(p, ns=(old, old))
    before = {p: p.read_bytes() for p in paths}
    assert report.write(score(sweep), out) == []
    assert all(p.stat().st_mtime_ns == old and p.read_bytes() == before[p] for p in paths)
    assert report.heatmap(card) == report.heatmap(card)  # matplotlib's PNG is byte-identical for the same data
    # a job that finishes later changes the scores: the files are rewritten
    write_job(sweep, "lstm", "parity", 0.001, 0, (0.7, 0.7, (0.7, 0.7)))
    assert {p.name for p in report.write(score(sweep), out)} == {
        "scorecard.csv", "scorecard.md", "scorecard.png", "lstm.png"}  # attn.png: its scores did not change
    assert not math.isclose(cell_of(score(sweep), "lstm", "parity").in_dist, 0.3)
