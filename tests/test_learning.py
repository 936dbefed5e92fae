"""Learning works: a 1-layer DLR learns shift at L=256 on CPU (slow: a few minutes)."""

import pytest

from conftest import train_in_process

SHIFT_256 = [
    "wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=shift", "dataset.L=256",
    "model.n_layers=1", "model.d_model=32", "model.layer.d_state=256", "model.layer.dt_min=0.00001",
    "model.layer.dt_max=0.00001", "dataset.samples_per_epoch=4096", "loader.batch_size=16",
    "loader.num_workers=0", "optimizer.lr=0.001", "model.layer.lr.Lambda=0.001", "model.layer.lr.W=0.001",
    "trainer.max_epochs=8", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
]


@pytest.mark.slow
def test_dlr_learns_shift_at_256(run_dir):
    metrics = train_in_process(SHIFT_256, run_dir)
    assert metrics["val/r2"] >= 0.99, metrics
