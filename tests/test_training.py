"""The training harness: outputs, checkpoints, resume, accumulation, DDP, legacy keys, bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from lightning.pytorch import Callback

from conftest import CPU_OVERRIDES, ROOT, compose_config, run_cli, train_in_process
from src.module import SequenceLightningModule
from src.utils.errors import ConfigError

TINY = ["wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=shift", *CPU_OVERRIDES, "model.d_model=16"]


def test_run_writes_config_metrics_and_checkpoints(run_dir):
    metrics = train_in_process([*TINY, "trainer.max_epochs=2", "train.test=true"], run_dir)
    assert {"test/loss", "test/r2"} <= set(metrics)  # the best checkpoint on the test split
    assert (run_dir / "config.yaml").is_file()
    assert "val/r2" in (run_dir / "metrics.csv").read_text().splitlines()[0]
    assert {p.name for p in (run_dir / "checkpoints").iterdir()} == {"last.ckpt", "best.ckpt"}
    ckpt = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    config = ckpt["hyper_parameters"]["config"]
    assert config["dataset"]["task"] == "shift" and config["model"]["d_model"] == 16
    # The checkpoint alone rebuilds the model.
    module = SequenceLightningModule.load_from_checkpoint(run_dir / "checkpoints" / "last.ckpt")
    x, y = config_batch(compose_config(TINY), 2)
    assert module(x).shape == y.shape
    assert set(metrics) >= {"val/loss", "val/mse", "val/r2"}


def _params(run_dir):
    return torch.load(Path(run_dir) / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def _final_row(run_dir):
    rows = (Path(run_dir) / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    last_val = [r.split(",") for r in rows[1:] if r.split(",")[header.index("val/loss")]][-1]
    return {h: v for h, v in zip(header, last_val) if h.startswith("val/")}


class Crash(Exception):
    pass


class CrashAtStep(Callback):
    """Interrupts training just before optimizer step k + 1 (as a killed job would)."""

    def __init__(self, k):
        self.k = k

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.k:
            raise Crash()


@pytest.mark.parametrize(
    "k, workers", [(5, 0), (16, 0), (21, 0), (21, 2)], ids=["epoch0-mid", "epoch-end", "epoch1-mid", "workers"]
)
def test_resume_gives_the_uninterrupted_result(tmp_path, k, workers):
    """16 steps per epoch, 2 epochs, last.ckpt every step; crash after k steps, resume. CPU: bitwise.
    With workers, Lightning starts the (prefetching) train iterator before set_epoch on a restart."""
    from src.training import fit

    base = [*TINY, "trainer.max_epochs=2", "callbacks.last_checkpoint.every_n_train_steps=1",
            f"loader.num_workers={workers}"]
    train_in_process(base, tmp_path / "full")
    with pytest.raises(Crash):
        fit(compose_config(base), str(tmp_path / "cut"), [CrashAtStep(k)])
    last = tmp_path / "cut" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=True)["global_step"] == k
    train_in_process([*base, f"train.ckpt={last}"], tmp_path / "resumed")
    full, resumed = _params(tmp_path / "full"), _params(tmp_path / "resumed")
    assert full.keys() == resumed.keys()
    for name in full:
        assert torch.equal(full[name], resumed[name]), name
    assert _final_row(tmp_path / "full") == _final_row(tmp_path / "resumed")


def test_legacy_resume_key_and_bad_checkpoints(tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        train_in_process([*TINY, f"trainer.resume_from_checkpoint={tmp_path / 'nope.ckpt'}"], tmp_path / "a")
    junk = tmp_path / "junk.ckpt"
    junk.write_text("not a checkpoint")
    with pytest.raises(ConfigError, match="is not a checkpoint"):
        train_in_process([*TINY, f"train.ckpt={junk}"], tmp_path / "b")
    train_in_process(TINY, tmp_path / "c")
    with pytest.raises(ConfigError, match=r"does not match the configured model: model.d_model=8 \(checkpoint: 16\)"):
        train_in_process([*TINY, "model.d_model=8", f"train.ckpt={tmp_path / 'c/checkpoints/last.ckpt'}"], tmp_path / "d")


def test_existing_run_directory_is_never_overwritten(run_dir):
    train_in_process(TINY, run_dir)
    before = (run_dir / "metrics.csv").read_text()
    with pytest.raises(ConfigError, match="already holds a run"):
        train_in_process(TINY, run_dir)
    assert (run_dir / "metrics.csv").read_text() == before


def test_gradient_accumulation_equals_the_large_batch(tmp_path):
    """2 micro-batches of b with accumulate_grad_batches=2 == one batch of 2b (SGD, one step)."""
    from lightning import Trainer
    from torch.utils.data import DataLoader

    config = compose_config([*TINY, "optimizer=sgd", "optimizer.momentum=0", "optimizer.lr=0.1"])
    x, y = config_batch(config, 8)

    def one_step(batches, accumulate):
        torch.manual_seed(0)
        module = SequenceLightningModule(_container(config))
        trainer = Trainer(
            accelerator="cpu", max_steps=1, accumulate_grad_batches=accumulate, logger=False,
            enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
            limit_val_batches=0, default_root_dir=tmp_path,
        )
        trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
        return module.state_dict()

    big = one_step([(x, y)], 1)
    small = one_step([(x[:4], y[:4]), (x[4:], y[4:])], 2)
    for name in big:
        # float32 sums in a different order: a few ulps of the update
        assert torch.allclose(big[name], small[name], rtol=1e-5, atol=1e-7), name


def _container(config):
    from omegaconf import OmegaConf

    return OmegaConf.to_container(config, resolve=True)


def config_batch(config, batch_size):
    from src.dataloaders.synthetic import sample

    d = {k: v for k, v in config.dataset.items() if k not in ("_name_", "eval_sets")}
    return sample(d.pop("task"), batch_size, torch.Generator().manual_seed(0), **d)


class RecordBatches(Callback):
    """Writes, per rank, a fingerprint of every training batch it sees."""

    def __init__(self, out):
        self.out = str(out)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        with open(f"{self.out}.{trainer.global_rank}", "a") as f:
            f.write(json.dumps(batch[0].sum(dim=(1, 2)).tolist()) + "\n")


def test_ddp_two_cpu_processes_see_disjoint_samples(tmp_path):
    from src.training import build_trainer

    config = compose_config([*TINY, "trainer.devices=2", "trainer.strategy=ddp_spawn"])
    trainer = build_trainer(config, tmp_path)
    trainer.callbacks.append(RecordBatches(tmp_path / "seen"))
    trainer.fit(SequenceLightningModule(_container(config)))
    seen = [[s for line in open(f"{tmp_path / 'seen'}.{r}") for s in json.loads(line)] for r in (0, 1)]
    assert len(seen[0]) == len(seen[1]) == 32  # 64 samples per epoch, split in two
    assert not set(seen[0]) & set(seen[1])


@pytest.mark.slow  # 2 processes through python -m train; test_ddp_two_cpu_processes_see_disjoint_samples keeps DDP in the default tier
def test_ddp_from_the_command_line(tmp_path):
    """The real `python -m train` DDP launch (Lightning re-runs the command for rank 1)."""
    run_dir = tmp_path / "ddp"
    result = run_cli([*TINY, "trainer.devices=2", f"hydra.run.dir={run_dir}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert "final metrics" in result.stdout and (run_dir / "checkpoints" / "last.ckpt").is_file()


@pytest.mark.slow  # a multirun through python -m train; test_sweeps keeps multiruns in the default tier
def test_multirun_gives_each_job_its_own_directory(tmp_path):
    result = run_cli(["-m", *TINY, "dataset.task=shift,reverse", f"hydra.sweep.dir={tmp_path}"])
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.count("final metrics") == 2
    assert (tmp_path / "1" / "config.yaml").read_text().count("task: reverse") == 1


def test_legacy_keys_are_translated_with_a_notice(capsys):
    config = compose_config([
        *TINY, "trainer.gpus=2", "trainer.accelerator=cpu", "trainer.find_unused_parameters=false",
        "trainer.save_val_outputs=true", "trainer.weights_summary=full", "trainer.progress_bar_refresh_rate=5",
        "trainer.track_grad_norm=2", "trainer.resume_from_checkpoint=x.ckpt",
    ])
    assert config.trainer.devices == 2 and config.trainer.accelerator == "cpu"
    assert config.trainer.strategy == "ddp_find_unused_parameters_false"
    assert config.train.save_val_outputs is True and config.train.ckpt == "x.ckpt"
    assert config.callbacks.rich_model_summary.max_depth == -1
    assert config.callbacks.rich_progress_bar.refresh_rate == 5
    assert config.callbacks.grad_norm.norm_type == 2.0
    assert not {"gpus", "find_unused_parameters", "weights_summary"} & set(config.trainer)
    notices = [line for line in capsys.readouterr().err.splitlines() if line.startswith("notice: trainer.")]
    assert len(notices) == 7


def test_save_val_outputs_and_grad_norm(run_dir):
    train_in_process([*TINY, "trainer.save_val_outputs=true", "trainer.track_grad_norm=2"], run_dir)
    saved = torch.load(run_dir / "val_outputs" / "epoch=000.pt", weights_only=True)
    assert saved["x"].shape[0] == saved["y"].shape[0] == saved["preds"].shape[0] == 6
    assert saved["preds"].shape == saved["y"].shape
    assert "grad_norm/total" in (run_dir / "metrics.csv").read_text().splitlines()[0]


def test_wandb_logger_offline(run_dir, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    for i in range(2):  # each run gets its own wandb run (wandb's global run is finished)
        train_in_process([t for t in TINY if t != "wandb=null"], run_dir / str(i))
        assert len(list((run_dir / str(i) / "wandb").glob("offline-run-*"))) == 1


@pytest.mark.parametrize(
    "override, message",
    [
        ("dataset.task=shfit", "dataset.task='shfit' is not valid; choose one of:.*shift"),
        ("model.layer.kernel_type=atn", "model.layer.kernel_type='atn' is not valid; choose one of: 'attn', 'dlr'"),
        ("model.layer.version=v2", "model.layer.version='v2' is not valid"),
        ("model.layer.Lambda_init=zeros", "model.layer.Lambda_init='zeros' is not valid"),
        ("dataset.num_shifts=100", "num_shifts"),
    ],
)
def test_bad_values_fail_at_start(override, message, run_dir):
    with pytest.raises(ConfigError, match=message):
        train_in_process([*TINY, override], run_dir)


def test_cli_errors_are_one_line(tmp_path):
    result = run_cli([*TINY, "dataset.task=shfit", f"hydra.run.dir={tmp_path / 'x'}"])
    assert result.returncode == 2
    assert result.stderr.strip().splitlines()[-1].startswith("error: dataset.task='shfit' is not valid")
    assert "Traceback" not in result.stderr
    result = run_cli([*TINY, "model.layer.no_such_key=1", f"hydra.run.dir={tmp_path / 'y'}"])
    assert result.returncode != 0 and "no_such_key" in result.stderr and "Traceback" not in result.stderr
    result = run_cli([*TINY, "model=lstn", f"hydra.run.dir={tmp_path / 'z'}"])  # Hydra lists the models
    assert result.returncode == 2 and "model=lstn: no such model config; did you mean lstm" in result.stderr


def test_train_puts_large_tensors_on_huge_pages():
    """train.py sets THP_MEM_ALLOC_ENABLE where the user has not (torch reads it once, at its
    first allocation), before anything it imports brings torch in."""
    env = {k: v for k, v in os.environ.items() if k != "THP_MEM_ALLOC_ENABLE"}
    code = ("import os; given = os.environ.get('THP_MEM_ALLOC_ENABLE'); import train; "
            "print(given, train.os.environ['THP_MEM_ALLOC_ENABLE'])")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.stdout.split() == ["None", "1"], done.stderr
    source = (ROOT / "train.py").read_text()
    assert source.index('os.environ.setdefault("THP_MEM_ALLOC_ENABLE", "1")') < source.index("from src")
