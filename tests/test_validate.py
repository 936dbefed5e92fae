"""Bad input stops a run at start with one line naming the key (src/config.py), before
anything is written; a table of bad inputs, most checked in-process, a few through `python -m train`."""

import os
import subprocess
import sys

import pytest

from conftest import CPU_OVERRIDES, ROOT, compose_config, train_in_process
from src.utils.errors import ConfigError

TINY = ["wandb=null", "experiment=dss-sequence1d", "model=dlr", "dataset.task=shift", *CPU_OVERRIDES, "model.d_model=16"]

# (override, what the one line must say)
BAD = [
    ("+dataset.tsk=shift", "unknown key dataset.tsk: nothing reads it; did you mean dataset.task?"),
    ("+foo=bar", "unknown key foo: .*the keys of the config are: callbacks, dataset"),
    ("+train.tset=true", "unknown key train.tset: .*did you mean train.test?"),
    ("+trainer.gpuz=1", "unknown key trainer.gpuz: .*the keys of trainer are: .*accelerator"),
    ("+optimizer.lrr=1", "unknown key optimizer.lrr: .*did you mean optimizer.lr?"),
    ("+model.layer.d_stat=4", "unknown key model.layer.d_stat: .*did you mean model.layer.d_state?"),
    # the layer's typed options (SequenceLayer.check_options): nested keys and types too
    ("+model.layer.lr.Lambdaa=1e-3", r"unknown key model.layer.lr.Lambdaa: .*did you mean model.layer.lr.Lambda"),
    ("+model.layer.trainable.dt=false", r"unknown key model.layer.trainable.dt: nothing reads it; the keys of "
                                        r"model.layer.trainable \(DLR\) are: Lambda, W"),
    ("model.layer.lr.W=abc", "model.layer.lr.W='abc' has the wrong type: use a number"),
    ("model.layer.trainable.W=maybe", "model.layer.trainable.W='maybe' has the wrong type: use true or false"),
    ("model.layer.d_state=1.5", "model.layer.d_state=1.5 has the wrong type: use an integer"),
    ("model.layer.lr=3", "model.layer.lr=3 has the wrong type: use a mapping"),
    ("model.layer.postact=[1]", r"model.layer.postact=\[1\] has the wrong type: use a string"),
    ("+model.layers=[{_name_: mha, windw: 3}]", r"unknown key model.layers\[0\].windw: .*did you mean "
                                                r"model.layers\[0\].window"),
    ("+model.n_layer=2", "unknown key model.n_layer: .*did you mean model.n_layers?"),
    ("+loader.batch_sise=4", "unknown key loader.batch_sise: .*did you mean loader.batch_size"),
    ("+decoder.mod=pool", "unknown key decoder.mod: .*did you mean decoder.mode?"),
    ("+scheduler.warmup=10", "unknown key scheduler.warmup: nothing reads it"),
    ("+callbacks.last_checkpoint.every_n_minute=5", "did you mean callbacks.last_checkpoint.every_n_minutes?"),
    ("+wandb.projet=x", "unknown key wandb.projet: .*did you mean wandb.project"),
    ("+trainer.logger=false", "trainer.logger is set by the run itself"),
    ("model.layer._name_=xyz", "model.layer._name_='xyz' is not registered; choose one of: .*dlr"),
    ("dataset.L=abc", "dataset.L='abc' has the wrong type: use an integer"),
    ("loader.batch_size=2.5", "loader.batch_size=2.5 must be an integer >= 1"),
    ("optimizer.lr=abc", "optimizer.lr='abc' has the wrong type: use a number"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' has the wrong type: use an integer or null"),
    ("trainer.precision=17", "trainer.precision=17 has the wrong type: use one of 64, 32, 16"),
    ("train.seed=abc", "train.seed='abc' has the wrong type: use an integer"),
    ("train.test=maybe", "train.test='maybe' has the wrong type: use true or false"),
    ("loader.batch_size=0", "loader.batch_size=0 must be an integer >= 1"),
    ("model.n_layers=0", "model.n_layers=0 must be an integer >= 1"),
    ("model.d_model=-4", "model.d_model=-4 must be an integer >= 1"),
    ("model.layer.d_state=0", "model.layer.d_state=0 must be an integer >= 1"),
    ("dataset.samples_per_epoch=0", "dataset.samples_per_epoch=0 must be an integer >= 1"),
    ("dataset.L=0", "dataset.L=0 must be an integer >= 1"),
    ("trainer.max_epochs=0", "trainer.max_epochs=0 must be at least 1"),
    ("trainer.max_epochs=-1", "trainer.max_epochs=-1 trains forever unless trainer.max_steps is set"),
    ("trainer.max_steps=0", "trainer.max_steps=0 must be at least 1"),
    ("trainer.accumulate_grad_batches=0", "trainer.accumulate_grad_batches=0 must be an integer >= 1"),
    ("loader.num_workers=-1", "loader.num_workers=-1 must be at least 0"),
    ("optimizer.lr=-1", "optimizer.lr=-1 must be >= 0"),
    ("optimizer.weight_decay=-0.1", "optimizer.weight_decay=-0.1 must be >= 0"),
    ("model.layer.lr.W=-0.1", "model.layer.lr.W=-0.1 must be >= 0"),
    ("train.resume=yes", "train.resume='yes' is not valid; choose one of: auto, false"),
    ("train.eval_only=true", "train.eval_only=true needs train.ckpt=PATH"),
    # a config group choice that does not exist (Hydra's own refusal, in one line); `base` is the
    # backbone's keys (configs/backbone/base.yaml), not a model
    ("model=mambba", "model=mambba: no such model config; did you mean mamba, mamba3, mamba2"),
    ("model=base", "model=base: no such model config"),
    ("experiment=counting-count-mod", "experiment=counting-count-mod: no such experiment config; did you mean "
                                      "counting-count_mod"),
    ("dataset=count_mdo", "dataset=count_mdo: no such dataset config; did you mean count_mod"),
]


@pytest.mark.parametrize("override, message", BAD, ids=[b[0] for b in BAD])
def test_bad_input_is_refused_at_start(override, message):
    with pytest.raises(ConfigError, match=message) as refused:
        compose_config([*TINY, override])
    assert "\n" not in str(refused.value)


def test_new_arguments_are_accepted_once_the_code_takes_them(monkeypatch):
    """The known keys come from the consumers' signatures: a dataset that takes a new argument
    accepts it with no list to update."""
    import inspect

    from src.dataloaders.sequence1d import Sequence1D
    from src.utils import registry

    class Sequence1DWithLmin(Sequence1D):  # as if the dataset took a new argument L_min
        pass

    signature = inspect.signature(Sequence1D)
    new = inspect.Parameter("L_min", inspect.Parameter.KEYWORD_ONLY, default=None)
    Sequence1DWithLmin.__signature__ = signature.replace(parameters=[*signature.parameters.values(), new])
    with pytest.raises(ConfigError, match="unknown key dataset.L_min"):
        compose_config([*TINY, "+dataset.L_min=8"])
    monkeypatch.setitem(registry.dataset, "sequence1d", "test_validate.Sequence1DWithLmin")
    monkeypatch.setattr(sys.modules[__name__], "Sequence1DWithLmin", Sequence1DWithLmin, raising=False)
    assert compose_config([*TINY, "+dataset.L_min=8"]).dataset.L_min == 8


def test_bad_checkpoint_settings_are_refused_before_anything_is_written(tmp_path):
    with pytest.raises(ConfigError, match="callbacks.last_checkpoint.every_n_minutes=0"):
        train_in_process([*TINY, "callbacks.last_checkpoint.every_n_minutes=0"], tmp_path / "run")
    with pytest.raises(ConfigError, match="train.ckpt=.*nope.ckpt: no such file"):
        train_in_process([*TINY, "train.eval_only=true", f"train.ckpt={tmp_path / 'nope.ckpt'}"], tmp_path / "run")
    assert not (tmp_path / "run").exists()


# Through `python -m train`: Hydra's own refusals (a key without `+`, an unusable run directory)
# and ours give one line, exit status 2, no traceback, and nothing on disk. Run side by side.
CLI = [
    ("dataset.tsk=shift", "unknown key dataset.tsk: nothing reads it; did you mean dataset.task?"),
    ("trainer.max_epochs=abc", "trainer.max_epochs='abc' has the wrong type"),
    ("loader.batch_size=0", "loader.batch_size=0 must be an integer >= 1"),
    ("hydra.run.dir=/dev/null/run", "hydra.run.dir=/dev/null/run cannot be used: /dev/null is not a directory"),
    ("model=s4 +model.layer.lr.Lambda=1e-3", "unknown key model.layer.lr.Lambda: nothing reads it; the keys of "
                                             "model.layer.lr (S4) are: A, B, P, dt"),
    ("model=mambba", "model=mambba: no such model config; did you mean mamba, mamba3, mamba2?"),
    ("experiment=counting-count-mod", "experiment=counting-count-mod: no such experiment config; did you mean "
                                      "counting-count_mod"),
    ("dataset=sequence1dd", "dataset=sequence1dd: no such dataset config; did you mean sequence1d?"),
    ("model=base", "model=base: no such model config"),
]


def test_cli_refusals_are_one_line_and_leave_nothing(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    runs = []
    for i, (override, _) in enumerate(CLI):
        args = [*TINY, f"hydra.run.dir={tmp_path / f'out{i}' / 'run'}", *override.split()]
        runs.append(subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    for run, (override, message) in zip(runs, CLI):
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 2, (override, stderr[-2000:])
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (override, stderr)
        assert stdout == ""
    assert not any(p.name.startswith("out") for p in tmp_path.iterdir())


# A multirun (`-m`): an unknown key, swept or not, and a misspelt choice of a swept group are
# refused before the sweep starts, in one line (exit status 2), leaving no sweep directory.
SWEEP = [
    (["dataset.tsk=shift,cumsum"], "unknown key dataset.tsk: nothing reads it; did you mean dataset.task?"),
    (["optimizer.lrr=1e-3", "optimizer.lr=1e-3,1e-2"], "unknown key optimizer.lrr: nothing reads it; did you mean "
                                                       "optimizer.lr?"),
    (["model=dlr,mambba"], "model=mambba: no such model config; did you mean mamba, mamba3, mamba2?"),
]


def test_multirun_refusals_are_one_line_and_leave_nothing(tmp_path):
    env = {**os.environ, "WANDB_MODE": "offline"}
    base = [a for a in TINY if a != "model=dlr"]
    runs = [subprocess.Popen([sys.executable, "-m", "train", "-m", *base, f"hydra.sweep.dir={tmp_path / f'sweep{i}'}",
                              *overrides], cwd=ROOT, env=env, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            for i, (overrides, _) in enumerate(SWEEP)]
    for run, (overrides, message) in zip(runs, SWEEP):
        stdout, stderr = run.communicate(timeout=600)
        assert run.returncode == 2, (overrides, stderr[-2000:])
        lines = stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0] == f"error: {message}", (overrides, stderr)
        assert stdout == ""
    assert not any(p.name.startswith("sweep") for p in tmp_path.iterdir())
