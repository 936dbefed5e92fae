"""A Scorecard (score.py) as files: `write(scorecard, out_dir)` writes

    scorecard.csv      one row per (model, cell): model, family, cell, status (ok | failed), lr,
                       in_dist, unseen, num_parameters, state_size, failed_runs, command
    scorecard.md       the leaderboard (rank, model, score, in-dist, unseen, then in-dist and unseen
                       per family), then the per-cell table; a failed cell reads `0.000 (failed)`
    scorecard.png      heatmaps of models x cells, in-distribution and unseen, values in the cells,
                       failed cells framed in red; the colour scale is fixed at [0, 1]
    cards/<model>.png  one card per model: in-dist beside unseen per family, its scores in the title

A cell's lr is its chosen lr, one value when every seed chose it, else one per seed (`;`, `-` for a
seed with no finished run). Writing is idempotent: a file whose bytes would not change is left alone
(its mtime too), and the PNGs are byte-identical for the same scores (no Software/date metadata), so
scoring a finished sweep again touches no file.
"""

import csv
import io
import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from src.results.figures import short  # noqa: E402

COLUMNS = ("model", "family", "cell", "status", "lr", "in_dist", "unseen", "num_parameters", "state_size",
           "failed_runs", "command")


def write(scorecard, out_dir):
    """Write the scorecard's files into `out_dir`; the paths whose content changed (written)."""
    out = Path(out_dir)
    ranked = list(enumerate(scorecard.leaderboard, 1))
    files = {out / "scorecard.csv": table(scorecard).encode(), out / "scorecard.md": markdown(scorecard).encode(),
             out / "scorecard.png": heatmap(scorecard)}
    for rank, model in ranked:
        cells = [c for c in scorecard.cells if c.model == model.model]
        files[out / "cards" / f"{model.model}.png"] = card(model, rank, cells)
    return [path for path, data in files.items() if put(path, data)]


def put(path, data):
    """Write `data` (bytes) to `path` atomically unless it already holds them; whether it wrote."""
    if path.is_file() and path.read_bytes() == data:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    partial.write_bytes(data)
    os.replace(partial, path)
    return True


def lr_text(lrs):
    """The chosen lr per seed as text: one value when the seeds agree, else `a;b` (`-`: none)."""
    if len(set(lrs)) == 1:
        return "" if lrs[0] is None else short(lrs[0])
    return ";".join("-" if lr is None else short(lr) for lr in lrs)


def number(value):
    """A CSV value: integers as integers, other numbers to 6 significant digits, None empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def table(scorecard):
    """scorecard.csv's text."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for c in scorecard.cells:
        writer.writerow([c.model, c.family, c.cell, c.status, lr_text(c.lrs), number(c.in_dist), number(c.unseen),
                         number(c.num_parameters), number(c.state_size), c.failed_runs, c.command or ""])
    return out.getvalue()


def score_text(value, failed=False):
    """A score in the Markdown tables: 3 decimals, `-` when absent, `(failed)` after a failed cell's."""
    text = "-" if value is None else f"{value:.3f}"
    return f"{text} (failed)" if failed else text


def md_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return "\n".join(lines + ["| " + " | ".join(str(v).replace("|", "\\|") for v in row) + " |" for row in rows])


def markdown(scorecard):
    """scorecard.md's text: the leaderboard, then the per-cell table."""
    header = ["rank", "model", "score", "in-dist", "unseen"]
    header += [f"{f} {part}" for f in scorecard.families for part in ("in-dist", "unseen")]
    board = [[rank, m.model, score_text(m.score), score_text(m.in_dist), score_text(m.unseen)]
             + [score_text(v) for f in scorecard.families for v in m.families[f]]
             for rank, m in enumerate(scorecard.leaderboard, 1)]
    cells = [[c.model, c.family, c.cell, lr_text(c.lrs), score_text(c.in_dist, c.failed),
              score_text(c.unseen, c.failed and c.unseen is not None), number(c.num_parameters),
              number(c.state_size), c.failed_runs, f"`{c.command}`" if c.command else ""] for c in scorecard.cells]
    cell_header = ["model", "family", "cell", "lr", "in-dist", "unseen", "parameters", "state size", "failed runs",
                   "command"]
    return (f"# Scorecard: suite `{scorecard.suite}`\n\n"
            "Score: the mean of in-dist and unseen (in-dist alone without unseen sets); each the mean over "
            "families of the mean over their cells of the mean over seeds of the best run over the lr grid "
            "(src/scorecard/score.py). A failed cell (a seed with no finished run) counts 0 for that seed.\n\n"
            f"## Leaderboard\n\n{md_table(header, board)}\n\n## Cells\n\n{md_table(cell_header, cells)}\n")


def png(fig):
    """The figure as PNG bytes, the same bytes for the same figure (no Software metadata)."""
    out = io.BytesIO()
    fig.savefig(out, format="png", dpi=100, metadata={"Software": None})
    return out.getvalue()


def heatmap(scorecard):
    """scorecard.png: models (leaderboard order) x cells, in-distribution and unseen panels."""
    models = [m.model for m in scorecard.leaderboard]
    names = list(dict.fromkeys(c.cell for c in scorecard.cells))
    at = {(c.model, c.cell): c for c in scorecard.cells}
    fig = Figure(figsize=(2 * (0.9 * len(names) + 1.2) + 1.0, 0.5 * len(models) + 1.8), layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="lightgrey")
    for ax, part, title in zip(axes, ("in_dist", "unseen"), ("in-distribution", "unseen lengths")):
        grid = [[getattr(at[m, n], part) for n in names] for m in models]
        image = ax.imshow([[float("nan") if v is None else v for v in row] for row in grid], cmap=cmap,
                          vmin=0.0, vmax=1.0, aspect="auto")
        for i, row in enumerate(grid):
            for j, v in enumerate(row):
                failed = at[models[i], names[j]].failed and v is not None
                text = "-" if v is None else f"{v:.2f}" + ("\nfailed" if failed else "")
                ax.text(j, i, text, ha="center", va="center", fontsize=8,
                        color="black" if v is None or v > 0.6 else "white")
                if failed:
                    ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="red", linewidth=2))
        ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
        ax.set_yticks(range(len(models)), models)
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=list(axes), label="score")
    fig.suptitle(f"scorecard: suite {scorecard.suite}", fontsize=10)
    return png(fig)


def card(model, rank, cells):
    """cards/<model>.png: the model's in-dist and unseen score per family (a family with failed
    cells says how many), its rank and overall scores in the title."""
    families = list(model.families)
    fig = Figure(figsize=(1.2 * len(families) + 2.5, 3.4), layout="constrained")
    ax = fig.subplots()
    for offset, part, label in ((-0.2, 0, "in-distribution"), (0.2, 1, "unseen")):
        xs = [i + offset for i, f in enumerate(families) if model.families[f][part] is not None]
        values = [model.families[f][part] for f in families if model.families[f][part] is not None]
        bars = ax.bar(xs, values, width=0.38, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    failed = {f: sum(c.failed for c in cells if c.family == f) for f in families}
    ax.set_xticks(range(len(families)), [f"{f}\n({failed[f]} failed)" if failed[f] else f for f in families])
    values = [v for pair in model.families.values() for v in pair if v is not None]
    ax.set_ylim(min(0.0, *values), max(1.0, *values) * 1.1)
    ax.set_ylabel("score")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1, 1))
    unseen = "-" if model.unseen is None else f"{model.unseen:.3f}"
    ax.set_title(f"#{rank} {model.model}: score {model.score:.3f} (in-dist {model.in_dist:.3f}, unseen {unseen})",
                 fontsize=9)
    return png(fig)
