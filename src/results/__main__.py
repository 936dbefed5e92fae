"""`python -m src.results DIR... [options]`: the runs below DIR as one table, and figures.

    python -m src.results multirun/sweep                                # every run, every metric
    python -m src.results multirun/sweep --metric val/accuracy --best-over optimizer.lr --format md
    python -m src.results multirun/sweep --sort keys          # rows by the swept keys (default: best --metric first)
    python -m src.results multirun/sweep --best-over optimizer.lr --plot line:x=model.d_model,facet=dataset.L
    python -m src.results multirun/mad-grid --score mad     # MAD's score per model (experiment=mad-grid: the default)

Options left out come from the runs' `results` config block (an experiment's defaults).

One run's pictures (into RUN_DIR/plots/):

    python -m src.results.length RUN_DIR [--curve accuracy_by_length]   # accuracy against position or length
    python -m src.results.predictions RUN_DIR [--samples K]              # its saved validation outputs
"""

import argparse
import sys
from pathlib import Path

from src import results
from src.utils.errors import ConfigError


def parser():
    p = argparse.ArgumentParser(prog="python -m src.results", description=__doc__.splitlines()[0])
    p.add_argument("dirs", nargs="+", metavar="DIR", help="directories holding runs (searched below)")
    p.add_argument("--metric", help="the metric to rank and plot (default: results.metric, i.e. train.monitor)")
    p.add_argument("--mode", choices=("min", "max"), help="whether lower or higher --metric is better")
    p.add_argument("--best-over", nargs="+", default=None, metavar="KEY", help="keep the best run over these keys")
    p.add_argument("--by", nargs="+", default=None, metavar="KEY", help="group by these keys")
    p.add_argument("--sort", choices=("metric", "keys"), default="metric",
                   help="rank the rows by --metric, best first (default), or order them by the key columns")
    p.add_argument("--format", choices=("text", "md", "csv"), default="text")
    p.add_argument("--output", help="also write the table here (.csv or .md)")
    p.add_argument("--plot", nargs="+", default=None, metavar="KIND[:opt=val,...]",
                   help="figures: line, state, heatmap, depth, length, curve (src/results/figures.py)")
    p.add_argument("--figures", help="the figures' directory (default: DIR/figures of the first DIR)")
    p.add_argument("--score", choices=("mad",), help="also print a benchmark's score of the rows (default: results.score)")
    return p


def main(argv=None):
    args = parser().parse_args(argv)
    runs, keys, metrics, unfinished = results.load(args.dirs)
    if not runs:
        raise ConfigError(f"no finished run (results.json) below {', '.join(args.dirs)}"
                          + (f"; {len(unfinished)} unfinished" if unfinished else ""))
    block = results.defaults(runs)
    metric = args.metric or block.get("metric") or runs[0].results.get("monitor")
    if metric not in metrics:
        raise ConfigError(f"--metric {metric}: no run logged it; metrics: {', '.join(metrics)}")
    best_over = args.best_over if args.best_over is not None else list(block.get("best_over") or [])
    by = args.by if args.by is not None else list(block.get("by") or [])
    rows, row_keys = results.reduce(runs, keys, metric, best_over, by, args.mode)
    if args.sort == "metric":
        rows = results.rank(rows, metric, results.mode_of(metric, runs, args.mode))
    else:
        rows = results.by_keys(rows, row_keys)
    columns = row_keys + [metric] + [m for m in metrics if m != metric] + ["dir"]
    table = results.render(rows, columns, args.format)
    sys.stdout.write(table)
    sys.stdout.flush()  # before the figures' lines on stderr
    score = args.score or block.get("score")
    if score == "mad":
        from src.results import mad

        sys.stdout.write(f"\nMAD score ({metric}, best over {', '.join(best_over) or 'nothing'}):\n")
        sys.stdout.write(mad.table(rows, metric, args.format))
    elif score is not None:
        raise ConfigError(f"results.score={score!r} is not a score; choose one of: mad")
    if args.output:
        fmt = "md" if args.output.endswith(".md") else "csv"
        Path(args.output).write_text(table if fmt == args.format else results.render(rows, columns, fmt))
    out = Path(args.figures or Path(args.dirs[0]) / "figures")
    specs = args.plot if args.plot is not None else list(block.get("plots") or [])
    if specs:
        from src.results import figures  # matplotlib: only to draw
    for spec in specs:
        path = figures.draw(spec, rows, row_keys, metric, out, runs=runs, best_over=best_over)
        print(f"figure written to: {path}", file=sys.stderr)
    if unfinished:
        print(f"{len(unfinished)} runs without results.json (unfinished or failed) left out, e.g. {unfinished[0]}",
              file=sys.stderr)


if __name__ == "__main__":
    try:
        main()
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
