"""train.threads (src/utils/threads.py): the rule as a pure function, the run's cores under a pool,
DDP and OMP_NUM_THREADS, and the choice set and logged once."""

import logging

import pytest
import torch

from src.utils import threads
from src.utils.errors import ConfigError

SMALL = 64**2 * 1  # the default run's model: d_model 64, 1 layer
LARGE = threads.LARGE


def test_auto_gives_small_models_one_thread_and_large_ones_the_run_s_cores():
    assert threads.choose("auto", SMALL, 16)[0] == 1
    assert threads.choose("auto", LARGE - 1, 16)[0] == 1
    assert threads.choose("auto", LARGE, 16)[0] == 16
    assert threads.choose(None, SMALL, 2)[0] == 1  # a config without the key: auto


def test_a_number_wins_and_a_gpu_run_keeps_torch_s_default():
    assert threads.choose(3, SMALL, 2) == (3, "train.threads=3")
    assert threads.choose(1, LARGE, 16)[0] == 1
    assert threads.choose("auto", LARGE, 16, on_gpu=True)[0] is None
    assert threads.choose(2, SMALL, 16, on_gpu=True)[0] == 2


@pytest.mark.parametrize("bad", ["four", 0, -2, 1.5, True])
def test_a_bad_setting_is_one_line(bad):
    with pytest.raises(ConfigError, match=r"^train.threads=.* is not valid: use auto or a number of threads \(>= 1\)$"):
        threads.choose(bad, SMALL, 2)


def test_the_run_s_cores_a_pool_share_ddp_processes_and_omp_num_threads():
    cores = threads.cores({})
    assert threads.budget(1, {})[0] == cores
    assert threads.budget(2, {})[0] == max(1, cores // 2)  # DDP on CPU: 2 processes
    assert threads.budget(1, {"SLURM_CPUS_PER_TASK": "8"})[0] == 8
    assert threads.budget(1, {"SLURM_CPUS_PER_TASK": "8", "POOL_THREADS": "3"}) == (
        3, "this pool job's share of the cores, 3")  # the pool's cores // n_jobs
    assert threads.budget(1, {"POOL_THREADS": "3", "OMP_NUM_THREADS": "1"}) == (1, "OMP_NUM_THREADS=1")
    assert threads.budget(1, {"POOL_THREADS": "3", "OMP_NUM_THREADS": "8"})[0] == 3  # a cap, not a floor


def test_select_sets_torch_threads_and_logs_the_choice_once(monkeypatch, caplog):
    from omegaconf import OmegaConf

    monkeypatch.setattr(threads, "_LOGGED", [])
    monkeypatch.setattr(threads, "budget", lambda processes=1: (2, "2 cores"))
    before = torch.get_num_threads()
    config = OmegaConf.create({"model": {"d_model": 64, "n_layers": 1}, "trainer": {"accelerator": "cpu"},
                               "train": {"threads": "auto"}})
    caplog.set_level(logging.INFO, logger="src.notice")
    logging.getLogger("src.notice").addHandler(caplog.handler)
    try:
        assert threads.select(config) == 1 and torch.get_num_threads() == 1
        threads.select(config)  # the same choice again (the next job of a sweep): not logged again
        config.train.threads = 2
        assert threads.select(config) == 2 and torch.get_num_threads() == 2
    finally:
        logging.getLogger("src.notice").removeHandler(caplog.handler)
        torch.set_num_threads(before)
    lines = [r.getMessage() for r in caplog.records if r.name == "src.notice"]
    assert lines == [
        "threads: torch uses 1 intra-op thread(s) on CPU (train.threads=auto: a model of d_model^2 x n_layers = "
        f"4,096 < {LARGE:,} runs fastest on one; the run's cores: 2 cores)",
        "threads: torch uses 2 intra-op thread(s) on CPU (train.threads=2; the run's cores: 2 cores)"]


def test_the_key_is_declared_and_reaches_the_run():
    from conftest import compose_config

    assert compose_config([]).train.threads == "auto"
    assert compose_config(["train.threads=4"]).train.threads == 4
