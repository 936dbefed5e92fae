"""Length-generalisation metrics (unseen_accuracy, accuracy_by_length, chomsky_score),
train.eval_passes, and the figure of a run's curves (python -m src.results.length)."""

import csv

import pytest
import torch
from omegaconf import OmegaConf

from conftest import FAMILIES, compose_config, train_in_process
from src.results.length import main as length_figure
from src.module import SequenceLightningModule
from src.tasks.metrics import AccuracyByLength, ChomskyScore, UnseenAccuracy
from src.utils.errors import ConfigError

# 3 examples: lengths (last labelled position + 1) 3, 4 and 4; hits marked by PREDICTED == TARGET.
TARGET = torch.tensor([[1, 2, 3, -100], [-100, 0, 1, 1], [4, -100, -100, 2]])
PREDICTED = torch.tensor([[1, 2, 0, 0], [3, 0, 1, 0], [4, 0, 0, 2]])
LOGITS = torch.nn.functional.one_hot(PREDICTED, 5).float()


def test_unseen_accuracy_counts_only_positions_past_the_training_length():
    metric = UnseenAccuracy(seen=2)  # positions 2, 3: 3 -> 0 wrong, 1 right, 1 -> 0 wrong, 2 right
    metric.update(LOGITS, TARGET)
    assert metric.compute().item() == pytest.approx(2 / 4)


def test_accuracy_by_length_and_the_chomsky_score():
    curve = AccuracyByLength(5)
    curve.update(LOGITS, TARGET)
    accuracy, count = curve.compute()
    assert count.tolist() == [0, 0, 3, 5, 0]  # length 3: 3 labels; length 4: 3 + 2 labels
    assert accuracy[2].item() == pytest.approx(2 / 3) and accuracy[3].item() == pytest.approx(4 / 5)
    score = ChomskyScore(5)
    score.update(LOGITS, TARGET)
    assert score.compute().item() == pytest.approx((2 / 3 + 4 / 5) / 2)  # each length counts once


def test_task_lengths_key_the_length_metrics_where_a_batch_gives_them():
    """The Chomsky sequence-to-sequence tasks key an example by its task length (the input), not
    by its last labelled position + 1; here examples 1, 2 have length 2 and example 3 length 1."""
    lengths = torch.tensor([2, 2, 1])
    curve = AccuracyByLength(5)
    curve.update(LOGITS, TARGET, task_lengths=lengths)
    accuracy, count = curve.compute()
    assert count.tolist() == [2, 6, 0, 0, 0]  # length 1: 2 labels; length 2: 3 + 3 labels
    assert accuracy[0].item() == 1.0 and accuracy[1].item() == pytest.approx(4 / 6)
    score = ChomskyScore(5)
    score.update(LOGITS, TARGET, task_lengths=lengths)
    assert score.compute().item() == pytest.approx((1 + 4 / 6) / 2)


BASE = ["wandb=null", "experiment=counting-count_mod", "model=lstm", "trainer.accelerator=cpu", "model.d_model=16",
        "loader.num_workers=0", "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
        "dataset.samples_per_epoch=64", "dataset.val_split=0.25", "loader.batch_size=16", "dataset.L=10",
        "dataset.eval_sets.ood={L:20,L_min:11}", "trainer.max_epochs=1"]


def test_a_counting_run_logs_unseen_accuracy_per_eval_set_and_draws_its_figure(run_dir, capsys, monkeypatch):
    import matplotlib.pyplot as plt

    drawn, close = [], plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: (drawn.append(fig), close(fig)))
    metrics = train_in_process([*BASE, "+dataset.eval_sets.L30={L:30,L_min:30}"], run_dir)
    assert {"val/ood/unseen_accuracy", "val/L30/unseen_accuracy", "val/ood/accuracy"} <= set(metrics)
    assert "val/unseen_accuracy" not in metrics  # the training lengths have no unseen positions
    with open(run_dir / "curves" / "val-L30" / "accuracy_by_length" / "epoch=000.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["length"]) for r in rows] == [30] and int(rows[0]["count"]) == 16 * 30
    for curve in ("accuracy_by_position", "accuracy_by_length"):
        length_figure([str(run_dir), "--curve", curve])
        out = run_dir / "plots" / f"{curve}-val-epoch=000.png"
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 10_000
        assert f"wrote {out}" in capsys.readouterr().out
        # the run, its model (in-process there is no Hydra `model=` choice: the layer's name) and task
        assert drawn[-1].axes[0].get_title() == f"{run_dir}: model rnn, task count_mod"
    with pytest.raises(SystemExit, match="no accuracy_by_position curves of split test"):
        length_figure([str(run_dir), "--split", "test"])


def _module(overrides):
    return SequenceLightningModule(OmegaConf.to_container(compose_config([*BASE, *overrides]), resolve=True))


def test_eval_passes_redraw_the_positions_and_average():
    """With pos_aug=shift and learned positions, one pass sees positions 0..L-1; several passes
    draw shifted positions, reproducibly, and the metrics average over them."""
    from lightning import Trainer

    aug = ["model=transformer", "model.pos_emb=learned", "model.pos_aug=shift", "model.pos_max_len=64"]
    results = {}
    for passes in (1, 3, 3):
        torch.manual_seed(0)  # the same initial weights for every module
        module = _module([*aug, f"train.eval_passes={passes}"])
        trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
        torch.manual_seed(passes)  # the passes draw from their own seeds, not from the global RNG
        logged = {k: v for per_loader in trainer.validate(module, verbose=False) for k, v in per_loader.items()}
        results.setdefault(passes, []).append(logged["val/ood/loss"])
    assert results[3][0] == results[3][1]  # the passes are seeded: the same every time
    assert results[3][0] != results[1][0]


def test_eval_passes_without_augmentation_are_refused():
    with pytest.raises(ConfigError, match="train.eval_passes=3 re-draws the position augmentation at evaluation, but "
                                          "model.pos_aug=none"):
        _module(["train.eval_passes=3"])
    with pytest.raises(ConfigError, match="train.eval_passes=0 must be a positive integer"):
        _module(["train.eval_passes=0"])


def length_commands():
    """The `python -m train` lines of the length-generalisation section of docs/experiments.md."""
    from conftest import doc_section

    section = doc_section("docs/experiments.md", "Length generalisation: counting, parity, Dyck, Chomsky")
    return [line for line in section.splitlines() if line.startswith("python -m train")]


COMMANDS = length_commands()
TINY = ["trainer.accelerator=cpu", "loader.num_workers=0", "trainer.enable_progress_bar=false",
        "callbacks.rich_model_summary=null", "dataset.samples_per_epoch=256", "dataset.val_split=0.25",
        "trainer.limit_train_batches=2", "trainer.limit_val_batches=1", "trainer.max_epochs=1"]


def test_the_readme_has_a_command_for_each_claim():
    """One per family, named `experiment=counting dataset=count_mod` or by its alias `counting-count_mod`."""
    names = {c.split("experiment=")[1].split()[0] for c in COMMANDS}
    assert len(COMMANDS) == 9 and {next(f for f in FAMILIES if n == f or n.startswith(f"{f}-")) for n in names} == {
        "counting", "modern-rnns", "chomsky"}


@pytest.mark.slow  # trains; the default tier composes each command (test_docs)
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"cmd{COMMANDS.index(c)}")
def test_the_readme_commands_run(command, run_dir):
    from conftest import command_overrides

    metrics = train_in_process([*command_overrides(command), *TINY], run_dir)
    assert any(k.endswith(("unseen_accuracy", "chomsky_score")) for k in metrics), sorted(metrics)
