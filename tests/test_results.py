"""`python -m src.results` on synthetic run directories (results.json as src/utils/run_results.py
writes it): reductions, the experiment's defaults, every figure, and one-line refusals."""

import csv
import json
from pathlib import Path

import pytest

from src.results.__main__ import main
from src.results.figures import legend_keys
from src.utils.errors import ConfigError


def write_run(path, model, lr, d_model, accuracy, results=None, eval_sets=None, state_size=None):
    """A finished run of `model` at (lr, d_model) whose final val/accuracy is `accuracy`."""
    path.mkdir(parents=True)
    metrics = {"val/accuracy": accuracy, "val/loss": 1 - accuracy, "num_parameters": 1000.0 * d_model}
    if state_size is not None:
        metrics["state_size"] = float(state_size)
    config = {"model": {"d_model": d_model, "layer": {"_name_": model}}, "optimizer": {"lr": lr},
              "dataset": {"L": 64, "task": "shift", "eval_sets": {}}, "train": {"monitor": "val/loss", "mode": "min"}}
    for name, (L, value) in (eval_sets or {}).items():
        config["dataset"]["eval_sets"][name] = {"L": L}
        metrics[f"val/{name}/accuracy"] = value
    if results:
        config["results"] = results
    (path / "results.json").write_text(json.dumps({
        "status": "finished", "metrics": metrics, "monitor": "val/loss", "mode": "min", "choices": {"model": model},
        "overrides": [f"model={model}", f"optimizer.lr={lr}", f"model.d_model={d_model}"], "config": config}))


@pytest.fixture
def grid(tmp_path):
    """2 models x 2 d_model x 3 lr; accuracy peaks at lr 1e-3 for "a" and 1e-2 for "b"."""
    best = {"a": 1e-3, "b": 1e-2}
    for i, (model, d, lr) in enumerate((m, d, lr) for m in "ab" for d in (16, 64) for lr in (1e-4, 1e-3, 1e-2)):
        accuracy = round(d / 100 - abs(lr - best[model]) * 10 + (0.1 if model == "b" else 0), 4)
        write_run(tmp_path / "sweep" / str(i), model, lr, d, accuracy, state_size=d * 4 * (1 if model == "a" else 8))
    return tmp_path / "sweep"


def table(capsys, *args):
    main([*map(str, args), "--format", "csv"])
    return list(csv.DictReader(capsys.readouterr().out.splitlines()))


def test_best_over_lr_per_model_and_width(grid, capsys):
    rows = table(capsys, grid, "--metric", "val/accuracy", "--best-over", "optimizer.lr")
    assert {(r["model"], r["model.d_model"], r["optimizer.lr"]) for r in rows} == {
        ("a", "16", "0.001"), ("a", "64", "0.001"), ("b", "16", "0.01"), ("b", "64", "0.01")}
    assert list(rows[0])[:4] == ["model", "model.d_model", "optimizer.lr", "runs"]
    # val/loss is the runs' train.monitor (mode min): the same runs are the best by it
    by_loss = table(capsys, grid, "--best-over", "optimizer.lr")
    assert {r["dir"] for r in by_loss} == {r["dir"] for r in rows}


def test_by_averages_the_groups(grid, capsys):
    rows = table(capsys, grid, "--metric", "val/accuracy", "--by", "model")
    assert [(r["model"], r["runs"]) for r in rows] == [("b", "6"), ("a", "6")]  # b's mean accuracy is higher
    mine = [json.loads(p.read_text())["metrics"]["val/accuracy"] for p in sorted(grid.glob("[0-5]/results.json"))]
    assert float(rows[1]["val/accuracy"]) == pytest.approx(sum(mine) / 6)


def test_by_a_key_that_only_some_runs_have(tmp_path, capsys):
    """A layer's option is a key of that layer's runs alone; here the first run read lacks it."""
    for i, (model, w1_std) in enumerate((("a", None), ("b", 0.02), ("b", 0.25))):
        write_run(tmp_path / "s" / str(i), model, 1e-3, 16, 0.5 + i / 10)
        if w1_std is not None:
            path = tmp_path / "s" / str(i) / "results.json"
            run = json.loads(path.read_text())
            run["config"]["model"]["layer"]["w1_std"] = w1_std
            path.write_text(json.dumps(run))
    rows = table(capsys, tmp_path / "s", "--metric", "val/accuracy", "--by", "model", "model.layer.w1_std")
    assert [(r["model"], r["model.layer.w1_std"], r["val/accuracy"]) for r in rows] == [
        ("b", "0.25", "0.7"), ("b", "0.02", "0.6"), ("a", "", "0.5")]


def test_a_legend_names_what_tells_the_lines_apart():
    class Row(dict):
        config = {"model.layer.d_state": 4}

    rows = [Row(model="a", lr=1e-3), Row(model="b", lr=1e-3)]
    assert legend_keys(rows, ["model", "lr", "model.layer.d_state"]) == ["model"]
    assert legend_keys(rows[:1], ["model", "lr"]) == ["model", "lr"]  # one line: every key


def test_formats(grid, capsys, tmp_path):
    main([str(grid), "--format", "md", "--output", str(tmp_path / "t.csv")])
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| model | model.d_model | optimizer.lr | val/loss |") and len(md) == 14
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 13  # the csv beside the markdown shown
    main([str(grid)])
    text = capsys.readouterr().out.splitlines()
    assert text[0].split()[:4] == ["model", "model.d_model", "optimizer.lr", "val/loss"] and len(text) == 13


def test_every_figure_is_drawn(grid, tmp_path, capsys):
    runs = tmp_path / "lengths"
    for i, lr in enumerate((1e-3, 1e-2)):
        write_run(runs / str(i), "a", lr, 16, 0.9, eval_sets={"L128": (128, 0.7 - i / 10), "L256": (256, 0.5)})
    curve = runs / "2" / "curves" / "val" / "accuracy_by_position"
    write_run(runs / "2", "b", 1e-3, 16, 0.8)
    curve.mkdir(parents=True)
    (curve / "epoch=000.csv").write_text("position,value,count\n" + "".join(f"{t},{t / 64},{9}\n" for t in range(64)))
    out = tmp_path / "figures"
    main([str(grid), "--metric", "val/accuracy", "--best-over", "optimizer.lr", "--figures", str(out), "--plot",
          "line:x=model.d_model", "state", "heatmap:x=model.d_model,y=model"])
    main([str(runs), "--metric", "val/accuracy", "--figures", str(out), "--plot", "length"])
    (runs / "2" / "metrics.csv").write_text("epoch,step,val/accuracy\n0,99,0.5\n1,199,0.8\n")
    main([str(runs), "--metric", "val/accuracy", "--figures", str(out), "--plot", "curve"])
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["curve-val_accuracy.png", "heatmap-val_accuracy-model.d_model-model.png", "length-val_accuracy.png",
                     "line-val_accuracy-model.d_model.png", "state-val_accuracy.png"]
    assert all((out / n).stat().st_size > 5000 for n in names)


def test_length_points_from_the_eval_sets(tmp_path):
    from src.results import load
    from src.results.figures import by_length

    write_run(tmp_path / "r", "a", 1e-3, 16, 0.9, eval_sets={"long": (256, 0.4), "mid": (128, 0.6)})
    runs, *_ = load([tmp_path])
    assert by_length(runs[0], "val/accuracy", "L") == [(64.0, 0.9), (128.0, 0.6), (256.0, 0.4)]


def test_the_experiment_results_block_is_the_default(tmp_path, capsys):
    block = {"metric": "val/accuracy", "best_over": ["optimizer.lr"], "by": [],
             "plots": [{"kind": "heatmap", "x": "model", "y": "optimizer.lr"}]}
    for i, (model, lr) in enumerate((m, lr) for m in "ab" for lr in (1e-3, 1e-2)):
        write_run(tmp_path / "s" / str(i), model, lr, 16, 0.5 + i / 10, results=block)
    rows = table(capsys, tmp_path / "s")
    assert [(r["model"], r["optimizer.lr"]) for r in rows] == [("b", "0.01"), ("a", "0.01")]  # ranked: 0.8, 0.6
    assert list(rows[0])[3] == "val/accuracy"
    assert (tmp_path / "s" / "figures" / "heatmap-val_accuracy-model-optimizer.lr.png").stat().st_size > 5000


def test_an_unknown_results_option_is_refused(tmp_path):
    write_run(tmp_path / "r", "a", 1e-3, 16, 0.9, results={"metrics": "val/accuracy"})
    with pytest.raises(ConfigError, match="^results.metrics .* is not a results option; options: metric, best_over"):
        main([str(tmp_path)])


def test_unfinished_runs_are_counted_not_tabulated(grid, capsys):
    (grid / "running").mkdir()
    (grid / "running" / "config.yaml").write_text("model: {}\n")
    main([str(grid), "--format", "csv"])
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 13  # the header and the 12 finished runs
    assert "1 runs without results.json (unfinished or failed) left out" in err


VARYING = "model, model.d_model, optimizer.lr"


@pytest.mark.parametrize("args, message", [
    (["--metric", "val/acc"], "--metric val/acc: no run logged it; metrics: val/accuracy, val/loss"),
    (["--best-over", "lr"], f"--best-over lr: not a key of these runs; keys that vary: {VARYING}"),
    (["--by", "dataset.l"], f"--by dataset.l: not a key of these runs; keys that vary: {VARYING}"),
    (["--plot", "bars"], "--plot 'bars' is not a figure; choose one of: line, state, heatmap, depth, length, curve"),
    (["--plot", "line"], "--plot line needs x=KEY; keys that vary: model.d_model, optimizer.lr"),
    (["--plot", "line:x=model.width"], "x=model.width: no run has it"),
    (["--plot", "heatmap:x=model"], "--plot heatmap needs x=KEY,y=KEY"),
    (["--plot", "length"], "--plot length: no run has eval sets with dataset.eval_sets.NAME.L"),
    (["--plot", "curve"], "--plot curve: no run logged val/loss in its metrics.csv"),
    (["--plot", "curve:x=time"], "--plot curve: x='time'; choose step or epoch"),
])
def test_bad_options_are_one_line_errors(grid, args, message):
    with pytest.raises(ConfigError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        main([str(grid), *args])


def test_no_runs(tmp_path):
    with pytest.raises(ConfigError, match="no finished run"):
        main([str(tmp_path)])
    with pytest.raises(ConfigError, match="no such directory"):
        main([str(Path(tmp_path) / "nowhere")])


def test_best_over_a_key_held_at_one_value_keeps_every_run(tmp_path, capsys):
    """An experiment's default `best_over: [optimizer.lr]` on a sweep at one lr (a CPU-sized grid):
    groups of one run, not a refusal."""
    for i, (model, d) in enumerate((m, d) for m in "ab" for d in (16, 64)):
        write_run(tmp_path / "sweep" / str(i), model, 1e-3, d, d / 100)
    rows = table(capsys, tmp_path / "sweep", "--metric", "val/accuracy", "--best-over", "optimizer.lr")
    assert sorted((r["model"], r["model.d_model"]) for r in rows) == [("a", "16"), ("a", "64"), ("b", "16"), ("b", "64")]


def test_the_table_is_ranked_by_the_metric_or_ordered_by_the_keys(grid, capsys):
    accuracy = [float(r["val/accuracy"]) for r in table(capsys, grid, "--metric", "val/accuracy")]
    assert accuracy == sorted(accuracy, reverse=True) and len(accuracy) == 12  # max: best first
    loss = [float(r["val/loss"]) for r in table(capsys, grid, "--metric", "val/loss")]
    assert loss == sorted(loss)  # min: best first
    best = table(capsys, grid, "--metric", "val/accuracy", "--best-over", "optimizer.lr")
    assert [float(r["val/accuracy"]) for r in best] == sorted((float(r["val/accuracy"]) for r in best), reverse=True)
    keys = table(capsys, grid, "--metric", "val/accuracy", "--sort", "keys")
    assert [(r["model"], float(r["model.d_model"]), float(r["optimizer.lr"])) for r in keys] == [
        (m, d, lr) for m in "ab" for d in (16, 64) for lr in (1e-4, 1e-3, 1e-2)]


@pytest.fixture
def drawn(monkeypatch):
    """The matplotlib figures drawn (kept when the figure code closes them)."""
    import matplotlib.pyplot as plt

    figures, close = [], plt.close

    def keep(fig=None):
        figures.append(fig)
        close(fig)

    monkeypatch.setattr(plt, "close", keep)
    return figures


def labels(axis):
    return [t.get_text() for t in axis.get_ticklabels() if t.get_text()]


def test_a_heatmap_over_a_best_over_key_is_drawn_from_every_run_on_one_colour_scale(grid, tmp_path, capsys, drawn):
    main([str(grid), "--metric", "val/accuracy", "--best-over", "optimizer.lr", "--figures", str(tmp_path), "--plot",
          "heatmap:x=model.d_model,y=optimizer.lr,facet=model"])
    assert "note: --plot heatmap:x=model.d_model,y=optimizer.lr,facet=model: optimizer.lr is a --best-over key; " \
           "drawn from every run" in capsys.readouterr().err
    (fig,) = drawn
    panels = [ax for ax in fig.axes if ax.images]
    assert len(panels) == 2 and len(fig.axes) == 3  # a panel per model and one colour bar
    images = [ax.images[0] for ax in panels]
    assert all(image.get_array().count() == 3 * 2 for image in images)  # every (lr, d_model) cell, not one row
    every = [json.loads(p.read_text())["metrics"]["val/accuracy"] for p in grid.glob("*/results.json")]
    assert {image.get_clim() for image in images} == {(min(every), max(every))}  # one colour scale
    assert labels(panels[0].yaxis) == ["1e-4", "1e-3", "1e-2"] and labels(panels[0].xaxis) == ["16", "64"]


def test_log_axes_read_1e_3_for_rates_and_64_for_sizes(grid, tmp_path, drawn):
    main([str(grid), "--metric", "val/accuracy", "--figures", str(tmp_path), "--plot",
          "line:x=optimizer.lr,facet=model.d_model", "state"])
    rates, sizes = drawn[0].axes[0], drawn[1].axes[0]
    assert rates.get_xscale() == "log" and {"1e-4", "1e-3", "1e-2"} <= set(labels(rates.xaxis))
    assert sizes.get_xscale() == "log" and labels(sizes.xaxis) and all(t.isdigit() for t in labels(sizes.xaxis))


def test_the_length_figure_is_titled_with_the_runs_models_and_tasks(tmp_path, drawn, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for i, model in enumerate("ab"):
        write_run(tmp_path / "lengths" / str(i), model, 1e-3, 16, 0.9, eval_sets={"L128": (128, 0.7)})
    main(["lengths", "--metric", "val/accuracy", "--plot", "length"])
    assert drawn[0].axes[0].get_title() == "lengths: model a, b, task shift"


def test_the_curve_figure_is_each_runs_logged_metric_against_step_or_epoch(tmp_path, drawn):
    """Lightning's metrics.csv has a row per log call; the rows without the metric (training
    steps) are left out, and each run is one line."""
    log = "epoch,step,train/loss_step,val/accuracy\n0,9,2.5,\n0,19,2.1,\n0,19,,0.4\n1,39,,0.7\n2,59,,0.9\n"
    for i, model in enumerate("ab"):
        write_run(tmp_path / "runs" / str(i), model, 1e-3, 16, 0.9)
        (tmp_path / "runs" / str(i) / "metrics.csv").write_text(log if i == 0 else log.replace("0.9", "0.6"))
    main([str(tmp_path / "runs"), "--metric", "val/accuracy", "--figures", str(tmp_path), "--plot", "curve",
          "curve:x=epoch"])
    by_step, by_epoch = drawn[0].axes[0], drawn[1].axes[0]
    assert [(list(line.get_xdata()), list(line.get_ydata())) for line in by_step.get_lines()] == [
        ([19.0, 39.0, 59.0], [0.4, 0.7, 0.9]), ([19.0, 39.0, 59.0], [0.4, 0.7, 0.6])]
    assert list(by_epoch.get_lines()[0].get_xdata()) == [0.0, 1.0, 2.0] and by_epoch.get_xlabel() == "epoch"


def test_the_depth_figure_is_the_least_depth_reaching_the_threshold_per_length(tmp_path, capsys):
    """Merrill et al.'s figure: per model and length, the fewest layers whose accuracy >= 0.9; a
    length no depth reaches is empty in the CSV beside the PNG."""
    solved = {("a", 8): 1, ("a", 16): 2, ("b", 8): 2}  # the least depth reaching 0.9; b at 16 never does
    for i, (model, L, depth) in enumerate((m, L, d) for m in "ab" for L in (8, 16) for d in (1, 2, 3)):
        accuracy = 0.95 if (model, L) in solved and depth >= solved[model, L] else 0.5
        write_run(tmp_path / "sweep" / str(i), model, 1e-3, 16, accuracy,  # the experiment's block: a float threshold
                  results={"metric": "val/accuracy", "plots": [{"kind": "depth", "threshold": 0.9}]})
        path = tmp_path / "sweep" / str(i) / "results.json"
        run = json.loads(path.read_text())
        run["config"]["dataset"]["L"], run["config"]["model"]["n_layers"] = L, depth
        run["overrides"] += [f"dataset.L={L}", f"model.n_layers={depth}"]
        path.write_text(json.dumps(run))
    main([str(tmp_path / "sweep"), "--figures", str(tmp_path / "f")])
    rows = list(csv.DictReader((tmp_path / "f" / "depth-val_accuracy-0.9.csv").read_text().splitlines()))
    assert {(r["model"], r["dataset.L"], r["least_model.n_layers"]) for r in rows} == {
        ("a", "8", "1"), ("a", "16", "2"), ("b", "8", "2"), ("b", "16", "")}
    assert (tmp_path / "f" / "depth-val_accuracy-0.9.png").stat().st_size > 5000
    with pytest.raises(ConfigError, match="threshold='high' is not a number"):
        main([str(tmp_path / "sweep"), "--metric", "val/accuracy", "--plot", "depth:threshold=high"])


def write_mad_run(path, model, setting, lr, wd, accuracy):
    """A finished run of experiment=mad-grid: `setting` the dataset dict ({task, key: value})."""
    path.mkdir(parents=True)
    dataset = {"_name_": "mad", "task": setting["task"], "vocab_size": setting.get("vocab_size")}
    override = "dataset={" + ",".join(f"{k}:{v}" for k, v in setting.items()) + "}"
    (path / "results.json").write_text(json.dumps({
        "status": "finished", "metrics": {"val/accuracy_balanced": accuracy, "val/loss": 1 - accuracy},
        "monitor": "val/accuracy_balanced", "mode": "max",
        "choices": {"model": model, "experiment": "mad-grid", "dataset": "mad"},  # the group choice under the dict
        "overrides": [f"model={model}", override, f"optimizer.lr={lr}", f"optimizer.weight_decay={wd}"],
        "config": {"dataset": dataset, "optimizer": {"lr": lr, "weight_decay": wd},
                   "results": {"metric": "val/accuracy_balanced", "best_over": ["optimizer.lr", "optimizer.weight_decay"],
                               "score": "mad"}}}))


def test_the_mad_score_is_the_mean_over_tasks_of_the_mean_over_settings_of_the_best_over_the_optimiser(tmp_path, capsys):
    """Model a: recall settings best 1.0 and 0.5 (mean 0.75), copying 0.25: score 0.5. Model b: 0.1
    everywhere. Every run but the best of its setting is lower, at another lr or weight decay."""
    settings = [{"task": "in_context_recall"}, {"task": "in_context_recall", "vocab_size": 32},
                {"task": "selective_copying"}]
    best = {"a": [1.0, 0.5, 0.25], "b": [0.1, 0.1, 0.1]}
    i = 0
    for model in "ab":
        for setting, top in zip(settings, best[model]):
            for lr, wd, drop in ((1e-4, 0.0, 0.05), (1e-3, 0.0, 0.0), (1e-3, 0.1, 0.02)):
                write_mad_run(tmp_path / "grid" / str(i), model, setting, lr, wd, top - drop)
                i += 1
    main([str(tmp_path / "grid"), "--format", "csv"])
    out = capsys.readouterr().out
    score = out[out.index("MAD score"):].splitlines()[1:]
    rows = list(csv.DictReader(score))
    assert [(r["model"], float(r["in_context_recall"]), float(r["selective_copying"]), r["settings"],
             float(r["mad_score"])) for r in rows] == [("a", 0.75, 0.25, "3", 0.5), ("b", 0.1, 0.1, "3", 0.1)]
    table_rows = list(csv.DictReader(out[: out.index("MAD score")].strip().splitlines()))
    assert len(table_rows) == 6 and {r["optimizer.lr"] for r in table_rows} == {"0.001"}  # the best per setting


def test_the_mad_score_needs_mad_runs(grid):
    with pytest.raises(ConfigError, match="--score mad reads runs of experiment=mad"):
        main([str(grid), "--score", "mad"])
