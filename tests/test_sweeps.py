"""Sweeps through `python -m train -m` (subprocesses): 2 models x 2 learning rates on a tiny
shift task through the basic launcher (and, marked slow, the pool and submitit's local
executor); a sweep with a bad job; a rerun that skips finished jobs and changes none of their
files; a refused start that changes no file; `python -m src.results` on the sweep."""

import csv
import hashlib
import json
import os
from pathlib import Path

import pytest

from conftest import CPU_OVERRIDES, run_cli
from src.results.__main__ import main as results_main
from src.utils import devices

SIZES = {"dataset.L": 16, "model.layer.d_state": 4, "dataset.samples_per_epoch": 16}
TINY = ["wandb=null", *[o for o in CPU_OVERRIDES if o.split("=")[0] not in SIZES],
        *[f"{k}={v}" for k, v in SIZES.items()], "model.d_model=8"]
GRID = ["model=dlr,dss", "optimizer.lr=0.01,0.001"]


def sweep(sweep_dir, *args):
    return run_cli(["-m", *TINY, *args, f"hydra.sweep.dir={sweep_dir}"])


def files(root):
    """{path: (size, mtime_ns, sha1)} of every file below `root`."""
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns, hashlib.sha1(p.read_bytes()).hexdigest())
            for p in sorted(Path(root).rglob("*")) if p.is_file()}


def final(run_dir, metric):
    """The last value of `metric` in run_dir/metrics.csv."""
    with open(Path(run_dir) / "metrics.csv", newline="") as f:
        return [float(r[metric]) for r in csv.DictReader(f) if r.get(metric)][-1]


@pytest.fixture(scope="module")
def grid(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("grid") / "sweep"
    done = sweep(sweep_dir, *GRID)
    assert done.returncode == 0, done.stderr[-2000:]
    return sweep_dir, done.stdout


def test_basic_launcher_runs_every_job_and_summarises(grid):
    sweep_dir, out = grid
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert (summary["jobs"], summary["done"], summary["failed"], summary["skipped"]) == (4, 4, 0, 0)
    losses = {str(sweep_dir / str(j)): final(sweep_dir / str(j), "val/loss") for j in range(4)}
    assert summary["best"]["dir"] == min(losses, key=losses.get)
    assert "sweep: 4 jobs: 4 done, 0 failed, 0 skipped" in out
    for j in range(4):
        results = json.loads((sweep_dir / str(j) / "results.json").read_text())
        assert results["status"] == "finished" and results["metrics"]["val/loss"] == losses[str(sweep_dir / str(j))]
        assert results["config"]["results"]["metric"] == "val/loss"  # src.results' default: train.monitor
        assert results["config"]["trainer"]["num_sanity_val_steps"] == 0 and results["train_seconds"] > 0


def test_results_table_and_best_over_lr(grid, capsys):
    sweep_dir, _ = grid
    results_main([str(sweep_dir), "--format", "csv", "--metric", "val/loss"])
    rows = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert len(rows) == 4 and {(r["model"], r["optimizer.lr"]) for r in rows} == {
        (m, lr) for m in ("dlr", "dss") for lr in ("0.01", "0.001")}
    assert all(float(r["val/loss"]) == final(r["dir"], "val/loss") for r in rows)

    results_main([str(sweep_dir), "--format", "csv", "--metric", "val/loss", "--best-over", "optimizer.lr"])
    best = list(csv.DictReader(capsys.readouterr().out.splitlines()))
    assert sorted(r["model"] for r in best) == ["dlr", "dss"]
    for r in best:
        mine = [x for x in rows if x["model"] == r["model"]]
        assert r["dir"] == min(mine, key=lambda x: final(x["dir"], "val/loss"))["dir"]
        assert r["runs"] == "2"


def test_figures_of_the_sweep_are_written(grid, tmp_path):
    sweep_dir, _ = grid
    results_main([str(sweep_dir), "--best-over", "optimizer.lr", "--figures", str(tmp_path), "--plot",
                  "line:x=model", "heatmap:x=model,y=optimizer.lr"])
    pictures = sorted(tmp_path.glob("*.png"))
    assert [p.name for p in pictures] == ["heatmap-val_loss-model-optimizer.lr.png", "line-val_loss-model.png"]
    assert all(p.stat().st_size > 5000 for p in pictures)  # axes, lines and labels, not an empty canvas


def test_rerun_skips_finished_jobs_and_changes_none_of_their_files(grid):
    sweep_dir, _ = grid
    runs = {j: files(sweep_dir / str(j)) for j in range(4)}
    again = sweep(sweep_dir, *GRID)
    assert again.returncode == 0, again.stderr[-2000:]
    assert "sweep: 4 jobs: 0 done, 0 failed, 4 skipped" in again.stdout
    assert {j: files(sweep_dir / str(j)) for j in range(4)} == runs


def test_refused_start_changes_no_file(grid):
    sweep_dir, _ = grid
    before = files(sweep_dir)
    refused = sweep(sweep_dir, "model=dlr,nosuch")
    assert refused.returncode == 2
    lines = refused.stderr.strip().splitlines()  # one line, before the sweep starts
    assert len(lines) == 1 and lines[0].startswith("error: model=nosuch: no such model config; the choices are: attn, ")
    assert " base," not in lines[0]  # the backbone's keys (configs/backbone/base.yaml) are not a model
    assert files(sweep_dir) == before  # multirun.yaml included


def test_a_bad_job_is_reported_the_others_finish_and_a_rerun_resumes(tmp_path):
    sweep_dir = tmp_path / "sweep"
    done = sweep(sweep_dir, "model.layer.d_state=4,0")
    assert done.returncode == 1
    summary = json.loads((sweep_dir / "summary.json").read_text())
    assert (summary["done"], summary["failed"]) == (1, 1)
    assert summary["failures"][0]["error"] == "error: model.layer.d_state=0 must be an integer >= 1"
    assert "failed: job 1 (model.layer.d_state=0): error: model.layer.d_state=0" in done.stdout
    assert json.loads((sweep_dir / "0" / "results.json").read_text())["status"] == "finished"

    # Started again with one more epoch: job 0 continues from its last.ckpt, job 1 is run (and fails) again.
    again = sweep(sweep_dir, "model.layer.d_state=4,0", "trainer.max_epochs=2")
    assert again.returncode == 1
    assert "sweep: 2 jobs: 1 done, 1 failed, 0 skipped" in again.stdout
    assert f"Restoring states from the checkpoint path at {sweep_dir / '0' / 'checkpoints' / 'last.ckpt'}" in (
        again.stdout + again.stderr)
    with open(sweep_dir / "0" / "metrics.csv", newline="") as f:
        epochs = sorted({int(r["epoch"]) for r in csv.DictReader(f) if r.get("val/loss")})
    assert epochs == [0, 1]
    assert json.loads((sweep_dir / "0" / "results.json").read_text())["steps"] == 8  # 4 per epoch, continued


def test_a_job_skips_its_finished_run_continues_an_unfinished_one_and_refuses_another(tmp_path):
    from omegaconf import OmegaConf

    from conftest import compose_config
    from src.utils import run_results, sweep as sweeps
    from src.utils.errors import ConfigError

    config = compose_config(TINY)
    OmegaConf.save(config, tmp_path / "config.yaml", resolve=True)  # started, not finished
    assert sweeps.start(config, tmp_path) == "run" and config.train.resume == "auto"
    run_results.write(tmp_path, config, {"val/loss": 0.5})
    assert sweeps.start(compose_config(TINY), tmp_path) == "skip"
    assert sweeps.start(compose_config([*TINY, "trainer.max_epochs=3"]), tmp_path) == "run"  # trains on
    with pytest.raises(ConfigError, match=r"holds a run of another config \(optimizer.lr differ\)"):
        sweeps.start(compose_config([*TINY, "optimizer.lr=0.5"]), tmp_path)


@pytest.mark.slow  # 40-70 s on the 2-core CPU: each worker process imports torch and Lightning
@pytest.mark.parametrize("launcher", ["pool", "local"])
def test_pool_and_submitit_local_launchers(launcher, tmp_path, capsys):
    pytest.importorskip({"pool": "hydra_plugins.hydra_joblib_launcher",
                         "local": "hydra_plugins.hydra_submitit_launcher"}[launcher],
                        reason="pip install -r requirements-sweep.txt")
    sweep_dir = tmp_path / "sweep"
    # a DataLoader worker in each job: a loky worker's default multiprocessing context cannot start one
    done = sweep(sweep_dir, *GRID, f"hydra/launcher={launcher}", "loader.num_workers=1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "sweep: 4 jobs: 4 done, 0 failed, 0 skipped" in done.stdout
    if launcher == "pool":  # 2 jobs at once (the CPU default), each within half the cores (1 thread: a tiny model)
        share = max(1, devices.cores() // 2)
        assert "1 intra-op thread(s) on CPU (train.threads=auto: " in done.stderr
        capped = int(os.environ.get("OMP_NUM_THREADS", share)) < share  # the environment's cap wins
        assert ("the run's cores: OMP_NUM_THREADS=" if capped else f"this pool job's share of the cores, {share})") in done.stderr
    results_main([str(sweep_dir), "--format", "csv"])
    assert len(capsys.readouterr().out.splitlines()) == 5  # header and 4 runs


def test_each_process_claims_its_own_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "HELD", {})
    assert devices.claim(["0", "1"], tmp_path) == "0"
    assert devices.claim(["0", "1"], tmp_path) == "0"  # a process keeps its GPU
    held = devices.HELD["lock"]
    monkeypatch.setattr(devices, "HELD", {})  # another process: GPU 0 is locked
    assert devices.claim(["0", "1"], tmp_path) == "1"
    held.close()


@pytest.mark.parametrize("launcher, plugin", [
    ("pool", "hydra_joblib_launcher"), ("slurm", "hydra_submitit_launcher"), ("local", "hydra_submitit_launcher"),
    ("ray_cluster", "hydra_ray_launcher")])
def test_launcher_configs_compose(launcher, plugin):
    from hydra import compose, initialize_config_dir

    from conftest import ROOT

    pytest.importorskip(f"hydra_plugins.{plugin}", reason=f"{plugin} is not installed (requirements-sweep / -ray.txt)")
    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        config = compose("config", overrides=[f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert plugin in config.hydra.launcher._target_
    if launcher == "slurm":
        assert config.hydra.launcher.max_num_timeout > 0 and config.hydra.launcher.signal_delay_s > 0


@pytest.fixture
def hydra_job(tmp_path):
    """The config and Hydra config of job 3 of a sweep in tmp_path/sweep (as a launcher sets it)."""
    from omegaconf import OmegaConf

    from conftest import compose_config

    hydra = OmegaConf.create({"job": {"num": 3}, "overrides": {"task": ["optimizer.lr=0.5"]},
                              "sweep": {"dir": str(tmp_path / "sweep")},
                              "runtime": {"output_dir": str(tmp_path / "sweep" / "3")}})
    return compose_config(TINY), hydra


def test_a_crashing_job_is_recorded_and_a_signalled_one_stops_the_sweep(hydra_job, capsys, monkeypatch):
    from src.utils import sweep as sweeps
    from src.utils.errors import RunError

    config, hydra = hydra_job
    run_dir = Path(hydra.runtime.output_dir)

    def crash(config, run_dir):
        raise ValueError("boom\nsecond line")

    outcome = sweeps.job(config, hydra, lambda c: c, crash)
    assert (outcome["status"], outcome["error"]) == ("failed", "ValueError: boom")
    assert json.loads((run_dir.parent / "jobs" / "3.json").read_text())["error"] == "ValueError: boom"
    assert "Traceback" in capsys.readouterr().err  # an unexpected error keeps its traceback in the job's log

    def stopped(config, run_dir):
        raise RunError("stopped by SIGTERM after step 5; wrote last.ckpt; resume with: ...", 143)

    monkeypatch.setenv("SWEEP_PID", "1")  # in a worker process: recorded, the worker goes on
    assert sweeps.job(config, hydra, lambda c: c, stopped)["status"] == "failed"
    monkeypatch.setenv("SWEEP_PID", str(os.getpid()))  # in the sweep's process: the sweep stops
    with pytest.raises(SystemExit) as exit_:
        sweeps.job(config, hydra, lambda c: c, stopped)
    assert exit_.value.code == 143
    assert json.loads((run_dir.parent / "jobs" / "3.json").read_text())["error"].startswith("error: stopped by SIGTERM")
