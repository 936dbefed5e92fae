"""The token-task foundation: padding, finite training sets, synthetic.sample, token metrics."""

import pytest
import torch

from conftest import compose_config, layer_options
from tiny_tasks import RunningMax

from src.dataloaders import synthetic
from src.dataloaders.base import batch_seed
from src.models.sequence.backbone import SequenceModel
from src.tasks.metrics import AccuracyByPosition, ExampleAccuracy, SplitMetrics, build_metric
from src.utils.errors import ConfigError


def one_hot_logits(predicted, n_classes):  # (B, T) class ids -> (B, T, C) logits that argmax to them
    return torch.nn.functional.one_hot(predicted, n_classes).float()


# Labels of 3 examples (-100: unscored) and predictions: example 0 gets 2 of 3, example 1 all 2,
# example 2 none of 1; position 0: 2/2 right, 1: 1/2, 2: 1/2, 3: 0/1.
TARGET = torch.tensor([[1, 2, 3, -100], [-100, 0, 1, -100], [4, -100, -100, 2]])
PREDICTED = torch.tensor([[1, 2, 0, 0], [3, 0, 1, 1], [4, 0, 0, 0]])


def test_token_metrics_against_hand_computed_values():
    logits = one_hot_logits(PREDICTED, 5)
    values = {}
    for name in ("accuracy", "example_accuracy", "sequence_accuracy"):
        metric = build_metric(name, 5)
        metric.update(logits[:2], TARGET[:2])  # two batches: accumulated over the epoch
        metric.update(logits[2:], TARGET[2:])
        values[name] = metric.compute().item()
    assert values["accuracy"] == pytest.approx(5 / 7)  # labelled positions right / labelled positions
    assert values["example_accuracy"] == pytest.approx((2 / 3 + 1 + 1 / 2) / 3)
    assert values["sequence_accuracy"] == pytest.approx(1 / 3)
    curve = AccuracyByPosition(6)
    curve.update(logits, TARGET)
    accuracy, count = curve.compute()
    assert count.tolist() == [2, 2, 2, 1, 0, 0]
    assert accuracy[:4].tolist() == pytest.approx([1.0, 1.0, 0.5, 0.0]) and accuracy[4:].isnan().all()


def test_examples_without_labels_do_not_count():
    metric = ExampleAccuracy()
    metric.update(one_hot_logits(PREDICTED[:1], 5), torch.full((1, 4), -100))
    metric.update(one_hot_logits(PREDICTED[:1], 5), TARGET[:1])
    assert metric.compute().item() == pytest.approx(2 / 3)


def test_split_loss_is_the_mean_over_scored_elements():
    """Batch losses weighted by their labelled positions: the mean over every labelled position."""
    metrics = SplitMetrics(["accuracy"], 5, "val/")
    torch.manual_seed(0)
    logits = torch.randn(3, 4, 5)
    ce = torch.nn.functional.cross_entropy
    for rows in (slice(0, 1), slice(1, 3)):
        metrics.update(logits[rows], TARGET[rows], ce(logits[rows].flatten(0, 1), TARGET[rows].flatten()), {})
    expected = ce(logits.flatten(0, 1), TARGET.flatten())
    assert metrics.loss.compute().item() == pytest.approx(expected.item(), rel=1e-6)


def test_padding_is_pad_and_unscored():
    data = RunningMax(L=12, L_min=4)
    x, y = data.generate(64, torch.Generator().manual_seed(0))
    lengths = (x != data.pad_id).sum(-1)
    assert set(lengths.tolist()) == set(range(4, 13))  # every length drawn
    pad = torch.arange(12) >= lengths[:, None]
    assert (x[pad] == data.pad_id).all() and (y[pad] == -100).all()
    assert (x[~pad] < data.V).all() and (y[~pad] == x.masked_fill(pad, 0).cummax(-1).values[~pad]).all()


@pytest.mark.parametrize("stem", ["mamba", "lstm", "mha", "dlr"])
def test_padding_leaves_a_causal_models_outputs_before_it_unchanged(stem):
    torch.manual_seed(0)
    data = RunningMax(L=12, L_min=3)
    model = SequenceModel(16, 2, layer_options(stem), encoder="embedding", n_tokens=data.n_tokens,
                          decoder={"_name_": "sequence", "mode": "last"}, d_output=data.d_output, max_length=12).double().eval()
    x, _ = data.generate(8, torch.Generator().manual_seed(1))
    with torch.no_grad():
        padded = model(x)[0]
        for b, length in enumerate((x != data.pad_id).sum(-1).tolist()):
            alone = model(x[b : b + 1, :length])[0][0]
            torch.testing.assert_close(padded[b, :length], alone, rtol=1e-9, atol=1e-9)


def test_lengths_respect_the_tasks_step():
    class Pairs(RunningMax):
        length_step = 2

    x, _ = Pairs(L=12, L_min=4).generate(64, torch.Generator().manual_seed(0))
    assert set((x != 5).sum(-1).tolist()) == {4, 6, 8, 10, 12}
    with pytest.raises(ConfigError, match="must differ by a multiple of 2"):
        Pairs(L=12, L_min=5)
    with pytest.raises(ConfigError, match="dataset.L_min=13 must be an integer in 1..dataset.L=12"):
        RunningMax(L=12, L_min=13)


def test_a_finite_training_set_replays_its_examples_every_epoch():
    data = RunningMax(L=8, num_train_examples=10)
    data.setup()
    loader = data.train_dataloader(batch_size=5)
    assert len(loader) == 2

    def epoch(e):
        loader.sampler.set_epoch(e)
        return torch.cat([x for x, _ in loader])

    first, second = epoch(0), epoch(1)
    key = lambda rows: sorted(map(tuple, rows.tolist()))  # noqa: E731
    assert key(first) == key(second) == key(data.examples[0])  # the same 10 examples
    assert not torch.equal(first, second)  # in another order
    assert torch.equal(epoch(1), second)  # reproducibly
    # The first n examples do not depend on N (drawn in chunks of fixed size).
    more = RunningMax(L=8, num_train_examples=20)
    more.setup()
    assert torch.equal(more.examples[0][:10], data.examples[0])


def test_an_uneven_finite_set_says_what_each_epoch_leaves_out(capsys):
    data = RunningMax(L=8, num_train_examples=12)
    data.setup()
    assert len(data.train_dataloader(batch_size=5)) == 2
    assert "each epoch trains 10 of them" in capsys.readouterr().err


def test_sample_returns_the_datasets_batch(monkeypatch):
    monkeypatch.setitem(synthetic.TASKS, "running_max", "tiny_tasks.RunningMax")
    seed = batch_seed(3, "train", 0, 0)
    x, y = synthetic.sample("running_max", 4, torch.Generator().manual_seed(seed), L=10, L_min=2)
    x2, y2 = RunningMax(L=10, L_min=2, seed=3).batch("train", 0, 0, range(4))
    assert torch.equal(x, x2) and torch.equal(y, y2)
    from src.dataloaders.sequence1d import TASKS as ATOMIC
    from src.dataloaders.sequence1d import Sequence1D

    for task in ATOMIC:  # one class takes `task=` (the token tasks: their own tests)

        x, y = synthetic.sample(task, 2, torch.Generator().manual_seed(seed), L=16, M=4)
        x2, y2 = Sequence1D(task, L=16, M=4, seed=3).batch("train", 0, 0, range(2))
        assert torch.equal(x, x2) and torch.equal(y, y2), task
    with pytest.raises(ConfigError, match="task='mqar_' is not valid; choose one of: .*cumsum"):
        synthetic.sample("mqar_", 2)


def test_a_token_task_trains_with_its_metrics_curves_and_an_eval_set(tmp_path, monkeypatch):
    """The tiny task through the whole harness: embedding, vocabulary head, -100 labels, token
    metrics in metrics.csv for the main and the eval set, accuracy by position as CSV curves."""
    import csv

    from omegaconf import OmegaConf, open_dict

    from conftest import compose_config
    from src.training import fit
    from src.utils import registry

    monkeypatch.setitem(registry.dataset, "running_max", "tiny_tasks.RunningMax")
    config = compose_config(["wandb=null", "experiment=dss-listops-subtrees", "model=lstm", "model.d_model=16",
                             "model.n_layers=1", "trainer.max_epochs=2", "trainer.accelerator=cpu",
                             "loader.num_workers=0", "loader.batch_size=8", "trainer.enable_progress_bar=false",
                             "callbacks.rich_model_summary=null", "model.tie_embeddings=true"])
    with open_dict(config):
        config.dataset = {"_name_": "running_max", "L": 16, "L_min": 4, "num_train_examples": 32, "seed": 0,
                          "eval_sets": {"long": {"L": 24, "L_min": 24}}}
        config.task.metrics = ["accuracy", "example_accuracy", "sequence_accuracy", "accuracy_by_position"]
    metrics = fit(OmegaConf.create(OmegaConf.to_container(config, resolve=True)), str(tmp_path))
    for name in ("accuracy", "example_accuracy", "sequence_accuracy", "loss"):
        assert 0 <= metrics[f"val/{name}"] and 0 <= metrics[f"val/long/{name}"], name
    assert metrics["val/sequence_accuracy"] <= metrics["val/example_accuracy"]
    curves = sorted(p.relative_to(tmp_path).as_posix() for p in (tmp_path / "curves").rglob("*.csv"))
    assert curves == sorted(f"curves/{s}/accuracy_by_position/epoch={e:03d}.csv" for s in ("val", "val-long") for e in (0, 1))
    with open(tmp_path / "curves" / "val-long" / "accuracy_by_position" / "epoch=001.csv") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["position"]) for r in rows] == list(range(24)) and all(0 <= float(r["value"]) <= 1 for r in rows)
    assert sum(int(r["count"]) for r in rows) == 24 * 8  # every position of the 8 validation samples is labelled


@pytest.mark.parametrize("overrides", [["model=mha", "model.layer.causal=false"], ["model=dlr", "model.bidirectional=true"]])
def test_a_token_task_refuses_a_model_that_reads_the_future(overrides):
    """Token labels at t are read from x_{<=t} (TokenDataset.causal): a non-causal layer would see the answer."""
    from omegaconf import OmegaConf

    from src.module import SequenceLightningModule

    config = compose_config(["wandb=null", "experiment=zoology-mqar", "model.d_model=16", *overrides])
    with pytest.raises(ConfigError, match=r"dataset mqar labels position t from x_<=t: a non-causal layer \((DLR|Multi)"):
        SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
