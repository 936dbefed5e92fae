"""Named eval sets (`dataset.eval_sets`) and evaluation under DDP."""

import csv

import pytest
import torch
from lightning import Trainer
from omegaconf import OmegaConf

from conftest import CPU_OVERRIDES, compose_config, run_cli, train_in_process
from src.module import SequenceLightningModule
from src.utils.errors import ConfigError

BASE = ["wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=cumsum", *CPU_OVERRIDES,
        "dataset.L=32", "model.d_model=16", "model.layer.d_state=16"]
SETS = "dataset.eval_sets={L64:{L:64},L128:{L:128}}"


def last_validation(run_dir):
    with open(run_dir / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/loss")]
    return {k: float(v) for k, v in rows[-1].items() if v and k.startswith("val/")}


def validate(overrides, state_dict):
    module = SequenceLightningModule(OmegaConf.to_container(compose_config(overrides), resolve=True))
    module.load_state_dict(state_dict)
    trainer = Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    return trainer.validate(module, verbose=False)[0]


def test_eval_sets_equal_a_separate_evaluation_of_the_checkpoint(run_dir):
    metrics = train_in_process([*BASE, SETS, "train.monitor=val/L128/loss", "train.test=true"], run_dir)
    assert {"test/L64/mse", "test/L128/r2", "test/mse"} <= set(metrics)  # the test split of every set too
    logged = last_validation(run_dir)
    assert {"val/L64/loss", "val/L64/mse", "val/L64/r2", "val/L128/r2", "val/r2"} <= set(logged)
    state = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name, L in (("L64", 64), ("L128", 128)):
        alone = validate([*BASE, f"dataset.L={L}"], state)
        for metric in ("loss", "mse", "r2"):
            assert logged[f"val/{name}/{metric}"] == pytest.approx(alone[f"val/{metric}"], rel=1e-6), (name, metric)
    assert logged["val/L128/mse"] != logged["val/L64/mse"]


def test_bad_eval_sets_are_named():
    config = OmegaConf.to_container(compose_config([*BASE, "dataset.eval_sets={long:{LL:64}}"]), resolve=True)
    with pytest.raises(ConfigError, match=r"dataset.eval_sets.long \(Sequence1D\) does not take LL"):
        SequenceLightningModule(config)


def test_learned_positions_and_sgconv_cover_the_longest_eval_set():
    sets = "dataset.eval_sets={L128:{L:128}}"
    config = compose_config([*BASE, sets, "model.pos_emb=learned"])
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    assert module.model.positions.embedding.shape[0] == 128
    with pytest.raises(ConfigError, match="model.pos_max_len=64 is shorter than the longest input, 128"):
        SequenceLightningModule(OmegaConf.to_container(compose_config([*BASE, sets, "model.pos_emb=learned",
                                                                       "model.pos_max_len=64"]), resolve=True))
    sgconv = [*BASE, "model=sgconv", sets]
    module = SequenceLightningModule(OmegaConf.to_container(compose_config(sgconv), resolve=True))
    assert module.model.blocks[0].layer.kernel.multiscale().shape[-1] >= 128
    with pytest.raises(ConfigError, match="model.layer.l_max=64 is shorter than the longest input, 128"):
        SequenceLightningModule(OmegaConf.to_container(compose_config([*sgconv, "model.layer.l_max=64"]), resolve=True))


def test_sgconv_covers_masked_select_inputs_by_default():
    """masked_select inputs are 2M + L long: l_max follows the input, not dataset.L."""
    config = compose_config([*BASE, "model=sgconv", "dataset.task=masked_select", "dataset.M=8"])
    module = SequenceLightningModule(OmegaConf.to_container(config, resolve=True))
    assert module.dataset.L_input == 48
    x, _ = module.dataset.generate(2, torch.Generator().manual_seed(0))
    assert module(x).shape == (2, 8, 1)


@pytest.mark.parametrize("batch_size_eval", [16, pytest.param(4, marks=pytest.mark.slow)],  # one DDP run is enough
                         ids=["one-batch-split-by-rows", "uneven-batches"])  # for the default tier
def test_ddp_validation_equals_one_process(tmp_path, batch_size_eval):
    """6 validation samples on 2 CPU processes: one batch split by rows, or batches of 4 and 2.
    Learning rates of 0 keep the initial weights, so both runs validate the same model."""
    args = [*BASE, "dataset.samples_per_epoch=60", "dataset.val_split=0.1", "loader.batch_size=6",
            f"loader.batch_size_eval={batch_size_eval}", "optimizer.lr=0", "model.layer.lr.Lambda=0", "model.layer.lr.W=0"]
    train_in_process(args, tmp_path / "one")
    result = run_cli([*args, "trainer.devices=2", f"hydra.run.dir={tmp_path / 'two'}"])
    assert result.returncode == 0, result.stderr[-3000:]
    one, two = last_validation(tmp_path / "one"), last_validation(tmp_path / "two")
    assert set(one) == set(two) == {"val/loss", "val/mse", "val/r2"}
    for key in one:  # float32 sums in another order
        assert two[key] == pytest.approx(one[key], rel=1e-6), key


def test_fewer_validation_samples_than_devices_is_refused():
    from src.dataloaders.sequence1d import Sequence1D

    data = Sequence1D("cumsum", L=8, samples_per_epoch=10, val_split=0.1)
    with pytest.raises(ConfigError, match="the val set has 1 samples, fewer than the 2 devices"):
        data.val_dataloader(batch_size=4, rank=0, world_size=2)
