"""The scorecard: every registered layer trained on a suite of task cells, and scored.

`python -m src.scorecard` runs a suite's cells (`configs/suite/`) as one Hydra multirun (a small lr
grid and a few seeds per cell) and writes the sweep's manifest, `scorecard.json`; `score.py` turns
the manifest and the jobs' results.json into scores (best over the lr grid, means over seeds, cells,
families), and `report.py` writes them as a table, a leaderboard, a heatmap and one card per layer.
"""
