"""The Long Range Arena experiments on tiny generated files in the real formats: the DLR README's
tuning command (in docs/experiments.md) runs as written (with CPU sizes appended), and each experiment trains 2 steps and
logs accuracy per class (slow)."""

import pytest

from conftest import ROOT, command_overrides, compose_config, train_on_data, write_lra

# The DLR README's "Tuning" command, verbatim.
TUNING = ("python -m train wandb=null model=dss experiment=s4-lra-cifar model.n_layers=6 "
          "model.layer.max_kernel_length=256 model.layer.Lambda_init=randn model.layer.d_state=32 "
          "model.layer.bidirectional=true model.layer.sep_dt_re_im=false")
TINY = [
    "model.d_model=16", "loader.batch_size=4", "trainer.max_epochs=1", "trainer.limit_train_batches=2",
    "trainer.limit_val_batches=2", "trainer.accelerator=cpu", "trainer.devices=1", "loader.num_workers=0",
    "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
]
S4_TINY = ["model.layer.d_state=16", "model.n_layers=2"]
TEXT_TINY = ["dataset.l_max=300"]


@pytest.fixture(scope="module")
def data_path(tmp_path_factory):
    return write_lra(tmp_path_factory.mktemp("data"))


_train = train_on_data


def test_the_manual_carries_the_tuning_command():
    assert TUNING in (ROOT / "docs" / "experiments.md").read_text()


def test_dlr_tuning_command_trains(tmp_path, monkeypatch, data_path):
    config = compose_config(command_overrides(TUNING))
    layer = config.model.layer
    assert (config.dataset._name_, config.dataset.grayscale, config.model.n_layers) == ("cifar", True, 6)
    assert (layer._name_, layer.max_kernel_length, layer.Lambda_init, layer.d_state) == ("dss", 256, "randn", 32)
    assert layer.bidirectional and not layer.sep_dt_re_im and config.decoder.mode == "pool"
    metrics = _train([*command_overrides(TUNING), *TINY], tmp_path, monkeypatch, data_path)
    assert "val/accuracy" in metrics and "val/loss" in metrics


@pytest.mark.parametrize("experiment, l_max", [("s4-lra-cifar", None), ("s4-lra-imdb", 4096), ("s4-lra-aan", 4000)])
def test_experiments_compose_with_s4s_settings(experiment, l_max):
    config = compose_config([f"experiment={experiment}"])
    assert config.model.layer.bidirectional and config.scheduler._name_ == "cosine_warmup"
    assert config.optimizer.lr == 0.01 and config.optimizer.weight_decay == 0.05
    assert config.decoder.mode == "pool"
    assert config.dataset.get("l_max") == l_max


CLASSES = {"s4-lra-cifar": "airplane", "s4-lra-imdb": "pos", "s4-lra-aan": "cites"}


@pytest.mark.slow
@pytest.mark.parametrize("experiment, sizes", [
    ("s4-lra-cifar", []), ("s4-lra-cifar", ["dataset.grayscale=false"]),
    ("s4-lra-imdb", TEXT_TINY), ("s4-lra-aan", TEXT_TINY),
], ids=["cifar", "cifar-rgb", "imdb", "aan"])
def test_experiment_trains_two_steps(experiment, sizes, tmp_path, monkeypatch, data_path):
    metrics = _train([f"experiment={experiment}", "wandb=null", *sizes, *S4_TINY, *TINY], tmp_path, monkeypatch, data_path)
    assert "val/accuracy" in metrics and "val/loss" in metrics
    assert any(k.startswith("val/accuracy_class_") for k in metrics)
