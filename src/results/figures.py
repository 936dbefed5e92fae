"""The papers' figures from a results table (PNG, matplotlib). `--plot KIND[:option=value,...]`:

    line      metric against key `x`, one line per `hue` (default: model), one panel per value
              of `facet` (zoology's figure 2: best accuracy over lr against d_model, per model,
              one panel per sequence length)
    state     metric against the state size (the `state_size` column, log scale), one line per
              `hue` (zoology's and DSF's recall against state size)
    heatmap   metric over two keys, `x` and `y` (DSF's width x state expansion), a cell the mean of
              its rows, one panel per value of `facet`, every panel on one colour scale
    depth     the least `depth` (default model.n_layers) whose metric reaches `threshold` (default 0.9)
              against `x` (default dataset.L), one line per `hue`, one panel per value of `facet`
              (Merrill et al.'s depth against length on group word problems); a length no depth
              reached is drawn as x above the deepest tried. The values go to a CSV beside the PNG
    length    metric against evaluation length, one line per run: the main validation set at
              dataset.`length_key` (L) and each eval set NAME at dataset.eval_sets.NAME.L; for
              runs without such eval sets, accuracy against position (the last
              curves/val/accuracy_by_position/ CSV); titled with the runs' directory, models and tasks
    curve     metric against training `x` (step, the default, or epoch), one line per run, from
              every row of the run's metrics.csv that logged it (learning curves); titled as length

A figure whose x, y, hue or facet is a `--best-over` key is drawn from every run, not from the
best one per group (which would leave one value of that key per group: a one-row heatmap).
A log axis (values spanning a factor of 8 or more) reads 64 for sizes and 1e-3 for rates.
Each figure is written to `<figures dir>/<kind>-<metric>[-<keys>].png`.
"""

import csv
import math
import os
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402

from src.results.length import curve_files, read_curve, title  # noqa: E402
from src.utils.errors import ConfigError  # noqa: E402

KINDS = ("line", "state", "heatmap", "depth", "length", "curve")
OPTIONS = {"line": ("x", "hue", "facet"), "state": ("x", "hue", "facet"), "heatmap": ("x", "y", "facet"),
           "depth": ("x", "depth", "threshold", "hue", "facet"), "length": ("length_key",), "curve": ("x",)}


def parse(spec):
    """'line:x=model.d_model,facet=dataset.L' -> ('line', {'x': ..., 'facet': ...})."""
    if isinstance(spec, dict):
        spec = dict(spec)
        kind, options = spec.pop("kind", None), spec
    else:
        kind, _, rest = spec.partition(":")
        options = dict(item.split("=", 1) for item in rest.split(",") if "=" in item)
        if rest and any("=" not in item for item in rest.split(",")):
            raise ConfigError(f"--plot {spec}: options are option=value, separated by commas")
    if kind not in KINDS:
        raise ConfigError(f"--plot {kind!r} is not a figure; choose one of: {', '.join(KINDS)}")
    bad = sorted(set(options) - set(OPTIONS[kind]))
    if bad:
        raise ConfigError(f"--plot {kind}: no option {bad[0]!r}; options: {', '.join(OPTIONS[kind])}")
    return kind, options


def number(value):
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def is_number(value):
    return isinstance(value, float) and math.isfinite(value)


def sort_key(value):
    n = number(value)
    return (0, n, "") if n is not None else (1, 0.0, str(value))


def spread(values):
    """Whether positive numbers span a factor of 8 or more (then a log axis)."""
    numbers = [number(v) for v in values]
    return all(n is not None and n > 0 for n in numbers) and len(numbers) > 1 and max(numbers) >= 8 * min(numbers)


def short(value):
    """A tick label: a number >= 1 as it is (64, 1.5), a smaller one as researchers write a
    learning rate (1e-3, 2.15e-3); anything else as text."""
    v = number(value)
    if v is None:
        return str(value)
    if v == 0 or abs(v) >= 1:
        return str(int(v)) if v.is_integer() else f"{v:g}"
    mantissa, exponent = f"{v:.2e}".split("e")
    return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"


def log_axis(axis, values):
    """A log scale on `axis` (ax.xaxis): base 2 for integers (sizes), else 10, labelled by `short`."""
    integral = all(number(v) is not None and float(number(v)).is_integer() for v in values)
    axis.axes.set_xscale("log", base=2 if integral else 10)
    axis.set_major_formatter(FuncFormatter(lambda v, _: short(v)))
    axis.set_minor_formatter(NullFormatter())


def column(row, key):
    if key in row:
        return row[key]
    if key in row.config:
        return row.config[key]
    return row.metrics.get(key)


def require(rows, key, option):
    if not any(column(r, key) is not None for r in rows):
        keys = sorted({k for r in rows for k in (*r.keys(), *r.config.keys())})
        near = [k for k in keys if key.split(".")[-1] in k][:6]
        raise ConfigError(f"{option}={key}: no run has it{'; did you mean ' + ', '.join(near) if near else ''}")


def default_hue(rows):
    return "model" if any("model" in r.config for r in rows) else "model.layer._name_"


def lines(rows, metric, x, hue, facet, path, log_x=None):
    for key, option in ((x, "x"), (hue, "hue")) + (((facet, "facet"),) if facet else ()):
        require(rows, key, option)
    panels = sorted({column(r, facet) for r in rows}, key=sort_key) if facet else [None]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        members = [r for r in rows if facet is None or column(r, facet) == panel]
        for name in sorted({column(r, hue) for r in members}, key=sort_key):
            points = sorted(((column(r, x), r.get(metric)) for r in members
                             if column(r, hue) == name and is_number(r.get(metric))), key=lambda p: sort_key(p[0]))
            if points:
                xs = [number(p[0]) if number(p[0]) is not None else str(p[0]) for p in points]
                ax.plot(xs, [p[1] for p in points], "o-", label=str(name))
        values = [column(r, x) for r in members if number(column(r, x)) is not None]
        if values and (log_x if log_x is not None else spread(values)):
            log_axis(ax.xaxis, values)
        ax.set_xlabel(x)
        ax.set_title(f"{facet}={panel}" if facet else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(metric)
    axes[0][-1].legend(title=hue, fontsize=8)
    return save(fig, path)


def heatmap(rows, metric, x, y, facet, path):
    for key, option in ((x, "x"), (y, "y")) + (((facet, "facet"),) if facet else ()):
        require(rows, key, option)
    xs = sorted({column(r, x) for r in rows}, key=sort_key)
    ys = sorted({column(r, y) for r in rows}, key=sort_key)
    panels = sorted({column(r, facet) for r in rows}, key=sort_key) if facet else [None]
    grids = {panel: heatmap_grid([r for r in rows if facet is None or column(r, facet) == panel], metric, x, y, xs, ys)
             for panel in panels}
    values = [v for grid in grids.values() for row in grid for v in row if not math.isnan(v)]
    low, high = (min(values), max(values)) if values else (0.0, 1.0)  # one colour scale for every panel
    fig, axes = plt.subplots(1, len(panels), figsize=((1.1 * len(xs) + 1.5) * len(panels) + 1.2, 0.7 * len(ys) + 1.8),
                             squeeze=False, layout="constrained")
    for ax, panel in zip(axes[0], panels):
        grid = grids[panel]
        image = ax.imshow(grid, cmap="viridis", aspect="auto", origin="lower", vmin=low, vmax=high)
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                if not math.isnan(v):  # dark text on the light (high) end of viridis
                    light = high > low and (v - low) / (high - low) > 0.6
                    ax.text(j, i, f"{v:.3g}", ha="center", va="center", fontsize=8, color="black" if light else "white")
        ax.set_xticks(range(len(xs)), [short(v) if spread(xs) else str(v) for v in xs])
        ax.set_yticks(range(len(ys)), [short(v) if spread(ys) else str(v) for v in ys])
        ax.set_xlabel(x)
        ax.set_ylabel(y)
        ax.set_title(f"{facet}={panel}" if facet else "", fontsize=9)
    fig.colorbar(image, ax=list(axes[0]), label=metric)
    return save(fig, path)


def heatmap_grid(members, metric, x, y, xs, ys):
    """[[the mean metric of the rows at (xs[j], ys[i]), or nan]] of one panel."""
    cells = [[[r[metric] for r in members if column(r, x) == a and column(r, y) == b and is_number(r.get(metric))]
              for a in xs] for b in ys]
    return [[sum(c) / len(c) if c else math.nan for c in row] for row in cells]


def least_depths(rows, metric, x, depth, threshold, hue, facet):
    """{(facet value, hue value): [(x, the least depth whose metric >= threshold, or None)]}, x sorted."""
    out = {}
    for r in rows:
        key = (column(r, facet) if facet else None, column(r, hue))
        out.setdefault(key, {}).setdefault(column(r, x), []).append(r)

    def least(members):
        return min((number(column(r, depth)) for r in members if is_number(r.get(metric)) and r[metric] >= threshold),
                   default=None)

    return {key: [(v, least(members)) for v, members in sorted(by_x.items(), key=lambda p: sort_key(p[0]))]
            for key, by_x in out.items()}


def depth_figure(rows, metric, x, depth, threshold, hue, facet, path):
    for key, option in ((x, "x"), (depth, "depth"), (hue, "hue")) + (((facet, "facet"),) if facet else ()):
        require(rows, key, option)
    if number(threshold) is None:
        raise ConfigError(f"--plot depth: threshold={threshold!r} is not a number")
    threshold = float(threshold)
    table = least_depths(rows, metric, x, depth, threshold, hue, facet)
    deepest = max(number(column(r, depth)) for r in rows if number(column(r, depth)) is not None)
    panels = sorted({k[0] for k in table}, key=sort_key)
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False, sharey=True)
    for ax, panel in zip(axes[0], panels):
        for (p, name), points in sorted(table.items(), key=lambda item: sort_key(item[0][1])):
            if p != panel:
                continue
            xs = [number(v) if number(v) is not None else str(v) for v, _ in points]
            line, = ax.plot(xs, [d if d is not None else math.nan for _, d in points], "o-", label=str(name))
            missed = [v for v, (_, d) in zip(xs, points) if d is None]
            ax.plot(missed, [deepest + 1] * len(missed), "x", color=line.get_color())
        ax.axhline(deepest + 0.5, color="grey", lw=0.5)
        ax.set_xlabel(x)
        ax.set_title(f"{facet}={panel}" if facet else "", fontsize=9)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"least {depth} with {metric} >= {threshold:g} (x: none)")
    axes[0][-1].legend(title=hue, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(Path(path).with_suffix(".csv"), "w") as f:
        f.write(",".join(filter(None, [facet, hue, x, "least_" + depth])) + "\n")
        for (p, name), points in table.items():
            for v, d in points:
                f.write(",".join(str(c) for c in ([p] if facet else []) + [name, v, "" if d is None else int(d)]) + "\n")
    return save(fig, path)


def last_curve(run_dir, split="val"):
    """[(position, accuracy)] of the main set's last accuracy_by_position CSV of `split`, or []."""
    files = curve_files(Path(run_dir), split, "accuracy_by_position", None)
    return list(zip(*read_curve(files["main"][1]))) if "main" in files else []


def by_length(row, metric, length_key):
    """[(eval length, metric)] of a run: its main validation set and each eval set with a length."""
    split, _, name = metric.partition("/")
    points = []
    if isinstance(row.metrics.get(metric), float) and row.config.get(f"dataset.{length_key}") is not None:
        points.append((number(row.config[f"dataset.{length_key}"]), row.metrics[metric]))
    prefix = "dataset.eval_sets."
    sets = {k[len(prefix):].rsplit(".", 1)[0] for k in row.config
            if k.startswith(prefix) and k.endswith("." + length_key)}
    for eval_set in sets:
        value = row.metrics.get(f"{split}/{eval_set}/{name}")
        if isinstance(value, float):
            points.append((number(row.config[f"{prefix}{eval_set}.{length_key}"]), value))
    return sorted(points)


def length(rows, metric, keys, path, length_key="L"):
    keys = legend_keys(rows, keys)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn, x_label = 0, None
    for r in rows:
        points = by_length(r, metric, length_key)
        x_label = x_label or (f"evaluation length (dataset.{length_key})" if len(points) > 1 else None)
        if len(points) <= 1:
            points = last_curve(r.dir)
            x_label = x_label or "position"
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-" if len(points) < 40 else "-",
                    label=run_label(r, keys))
            drawn += 1
    if not drawn:
        raise ConfigError(f"--plot length: no run has eval sets with dataset.eval_sets.NAME.{length_key} and "
                          f"{metric.replace('/', '/NAME/', 1)}, nor curves/val/accuracy_by_position (task.metrics)")
    return save(runs_axes(ax, rows, x_label, metric, drawn), path)


def history(run_dir, metric, x):
    """[(x, metric)] of every row of the run's metrics.csv (Lightning's CSV log) that has both."""
    path = Path(run_dir) / "metrics.csv"
    if not path.exists():
        return []
    with open(path, newline="") as f:
        return [(float(r[x]), float(r[metric])) for r in csv.DictReader(f) if r.get(x) and r.get(metric)]


def curve(rows, metric, keys, path, x="step"):
    if x not in ("step", "epoch"):
        raise ConfigError(f"--plot curve: x={x!r}; choose step or epoch")
    keys = legend_keys(rows, keys)
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    drawn = 0
    for r in rows:
        points = history(r.dir, metric, x)
        if points:
            ax.plot([p[0] for p in points], [p[1] for p in points], "o-" if len(points) < 40 else "-",
                    label=run_label(r, keys))
            drawn += 1
    if not drawn:
        raise ConfigError(f"--plot curve: no run logged {metric} in its metrics.csv")
    return save(runs_axes(ax, rows, x, metric, drawn), path)


def legend_keys(rows, keys):
    """The keys whose values differ between the rows (all of them if none does): a legend names what
    tells the lines apart."""
    value = lambda r, k: str(r.get(k, r.config.get(k)))  # noqa: E731
    varying = [k for k in keys if len({value(r, k) for r in rows}) > 1]
    return varying or keys


def run_label(row, keys):
    """A run's legend entry: its values of the table's keys (those it has), else its directory's name."""
    values = ((k, row.get(k, row.config.get(k))) for k in keys if k != "runs")
    return " ".join(f"{k}={v}" for k, v in values if v is not None) or Path(row.dir).name


def runs_axes(ax, rows, x_label, metric, drawn):
    """Labels, a title naming the runs' directory, models and tasks, and a legend up to 12 lines."""
    ax.set_xlabel(x_label)
    ax.set_ylabel(metric)
    common = os.path.commonpath([os.path.abspath(r.dir) for r in rows])
    ax.set_title(title(os.path.relpath(common) if not os.path.relpath(common).startswith("..") else common,
                       models={run_model(r) for r in rows}, tasks={run_task(r) for r in rows}), fontsize=8)
    ax.grid(alpha=0.3)
    if drawn <= 12:
        ax.legend(fontsize=7)
    return ax.figure


def run_model(row):
    """The model a run trained: its `model=` choice, else its layer's name."""
    return row.results.get("choices", {}).get("model") or row.config.get("model.layer._name_") or "?"


def run_task(row):
    """The task a run trained on: dataset.task (the atomic tasks), else the dataset's name."""
    return row.config.get("dataset.task") or row.config.get("dataset._name_") or "?"


def save(fig, path):
    if fig.get_layout_engine() is None:
        fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def draw(spec, rows, keys, metric, out_dir, runs=None, best_over=()):
    """Draw the figure `spec` (a --plot string or a results.plots entry) of the table's `rows`; its
    path. `runs`: every run, drawn instead when an axis of the figure is a `best_over` key."""
    kind, o = parse(spec)
    axes = [o.get(k) for k in ("x", "y", "hue", "facet")]
    axes += [default_hue(rows)] if kind in ("line", "state") and "hue" not in o else []
    reduced = [k for k in best_over if k in axes]
    if reduced and runs is not None and kind not in ("length", "curve"):
        print(f"note: --plot {spec if isinstance(spec, str) else kind}: {reduced[0]} is a --best-over key; "
              "drawn from every run, not the best per group", file=sys.stderr)
        rows = runs
    name = "-".join([kind, metric.replace("/", "_")] + [str(o[k]) for k in sorted(o)])
    path = Path(out_dir) / f"{name}.png"
    if kind == "heatmap":
        if "x" not in o or "y" not in o:
            raise ConfigError("--plot heatmap needs x=KEY,y=KEY")
        return heatmap(rows, metric, o["x"], o["y"], o.get("facet"), path)
    if kind == "depth":
        return depth_figure(rows, metric, o.get("x", "dataset.L"), o.get("depth", "model.n_layers"),
                            o.get("threshold", 0.9), o.get("hue", default_hue(rows)), o.get("facet"), path)
    if kind == "length":
        return length(rows, metric, keys, path, o.get("length_key", "L"))
    if kind == "curve":
        return curve(rows, metric, keys, path, o.get("x", "step"))
    hue = o.get("hue", default_hue(rows))
    if kind == "state":
        return lines(rows, metric, o.get("x", "state_size"), hue, o.get("facet"), path, log_x=True)
    if "x" not in o:
        others = [k for k in keys if k not in (hue, o.get("facet"))]
        raise ConfigError(f"--plot line needs x=KEY; keys that vary: {', '.join(others) or 'none'}")
    return lines(rows, metric, o["x"], hue, o.get("facet"), path)
