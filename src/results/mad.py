"""The MAD score (Poli et al. 2024; mad/analysis.py and benchmark.py of athms/mad-lab) of runs of
`experiment=mad-grid`, from the rows `src.results.reduce` keeps with `--best-over optimizer.lr
optimizer.weight_decay` (one per setting and model, the best over the optimiser grid):

    task score  = the mean over the task's settings of the setting's best metric
    MAD score   = the mean over the tasks of their task scores

per model (the runs' `model` choice, or model.layer._name_), with the number of settings each
task score averages (MAD's full grid: 66; a partial grid scores what it holds).
"""

from src.results import mean, render
from src.utils.errors import ConfigError


def scores(rows, metric):
    """[{model, <task>: task score, ..., settings: n, mad_score}] (columns: model, tasks, settings, mad_score)."""
    by_model = {}
    for row in rows:
        model = row.config.get("model") or row.config.get("model.layer._name_")
        task = row.config.get("dataset.task")
        by_model.setdefault(model, {}).setdefault(task, []).append(row.metrics.get(metric))
    tasks = sorted({task for per_task in by_model.values() for task in per_task})
    out = []
    for model, per_task in sorted(by_model.items(), key=lambda item: str(item[0])):
        task_scores = {task: mean(values) for task, values in per_task.items()}
        out.append({"model": model, **task_scores, "settings": sum(len(v) for v in per_task.values()),
                    "mad_score": mean(list(task_scores.values()))})
    return out, ["model", *tasks, "settings", "mad_score"]


def table(rows, metric, fmt="text"):
    """The MAD scores of `rows` as a table (text, md or csv)."""
    other = [row for row in rows if row.config.get("dataset._name_") != "mad"]
    if other:
        raise ConfigError(f"--score mad reads runs of experiment=mad (dataset=mad); {other[0].dir} has "
                          f"dataset._name_={other[0].config.get('dataset._name_')}")
    return render(*scores(rows, metric), fmt)
