"""Shared test helpers: compose a config like `python -m train` does and train in-process."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")

# Appended to every command in tests: tiny sizes, CPU, quiet.
CPU_OVERRIDES = [
    "dataset.L=64", "model.layer.d_state=64", "dataset.samples_per_epoch=64", "loader.batch_size=4",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "loader.num_workers=0",
    "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
]


def compose_config(overrides):
    """The config `python -m train *overrides` would run, after legacy translation."""
    from src.utils.config import prepare

    with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
        config = compose("config", overrides=list(overrides))
    return prepare(config)


def train_in_process(overrides, run_dir):
    """Train as `python -m train` would, into `run_dir`; returns the final metrics."""
    from src.training import fit

    return fit(compose_config(overrides), str(run_dir))


def train_on_data(overrides, tmp_path, monkeypatch, data_path):
    """Train in-process into tmp_path/run with DATA_PATH=data_path; the final metrics (no NaN)."""
    monkeypatch.setenv("DATA_PATH", str(data_path))
    metrics = train_in_process(overrides, tmp_path / "run")
    assert all(v == v for v in metrics.values())  # no NaN
    return metrics


def command_overrides(command):
    """The overrides of a README command line `... python -m train a=b c=d`."""
    words = shlex.split(command)
    return words[words.index("train") + 1 :]


def assert_every_parameter_gets_a_gradient(layer, x):
    """Fails on a parameter left out of the graph of `layer(x)` (or whose gradient is all zero)."""
    y, _ = layer(x)
    (y**2).sum().backward()
    for name, p in layer.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def assert_forward_continues_from_its_state(layer, x, split):
    """forward(x[:, :split]) then forward(x[:, split:], state) equals forward(x) (float64)."""
    import torch

    y, _ = layer(x)
    y1, state = layer(x[:, :split])
    y2, _ = layer(x[:, split:], state)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-10, atol=1e-10)


def run_steps(layer, x, state):
    """`layer.step` over x (B, L, D) from `state`: the list of L outputs (B, D), and the last state."""
    steps = []
    for t in range(x.shape[1]):
        y_t, state = layer.step(x[:, t], state)
        steps.append(y_t)
    return steps, state


def doc_section(page, title):
    """The section `## <title>` of the manual page `page` (README.md, docs/experiments.md, ...),
    up to the next `## ` heading."""
    text = (ROOT / page).read_text()
    start = text.index(f"\n## {title}\n") + 1
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def readme_commands(page, title):
    """The `CUDA_VISIBLE_DEVICES=... python -m train ...` lines of the section `## <title>` of the
    manual page `page` (e.g. `readme_commands("docs/experiments.md", "DLR paper experiments: atomic tasks")`)."""
    section = doc_section(page, title)
    return [line for line in section.splitlines() if re.match(r"CUDA_VISIBLE_DEVICES=\S+ python -m train", line)]


def run_cli(args, cwd=ROOT, timeout=600, env=None):
    """Run `python -m train *args` in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


def need_c_loop(op="linear_scan"):
    """Skips the test, saying why, where the scans' C loop for `op` cannot run (no C compiler)."""
    import torch

    from src.ops import scan

    why = scan.DISPATCH[op].why_unusable("cpu", torch.device("cpu"))
    if why:
        pytest.skip(f"the {op} C loop is not usable here: {why}")


def write_listops_and_pathfinder(root):
    """Tiny generated data under `root` (a DATA_PATH): ListOpsSubTrees and LRA ListOps trees of
    50-200 tokens, and 40 Pathfinder pictures at 32x32."""
    from src.dataloaders.prepare.listops.__main__ import main as listops
    from src.dataloaders.prepare.pathfinder.__main__ import main as pathfinder

    sizes = ["--num_train_samples", "24", "--num_valid_samples", "8", "--num_test_samples", "8", "--min_length", "50",
             "--max_length", "200", "--max_depth", "8", "--max_args", "5"]
    listops(["--task", "subtrees", *sizes, "--no_paranthesis", "--unique_templates",
             "--output_dir", str(root / "listops_subtrees")])
    listops(["--task", "basic", *sizes, "--output_dir", str(root / "listops")])
    pathfinder(["--resolution", "32", "--num_images", "40", "--seed", "1",
                "--output_dir", str(root / "pathfinder_segmentation" / "pathfinder32_segmentation")])
    return root


def write_lra(root):
    """Tiny files in the real formats of CIFAR-10, IMDB and AAN under `root` (a DATA_PATH)."""
    import numpy as np

    from lra_files import random_text, write_aan, write_cifar, write_imdb

    rng = np.random.default_rng(0)
    write_cifar(root)
    write_imdb(root, {(s, c): [random_text(rng, rng.integers(20, 400)) for _ in range(6)]
                      for s in ("train", "test") for c in ("neg", "pos")})
    write_aan(root, {s: [(i % 2, random_text(rng, rng.integers(1, 400)), random_text(rng, rng.integers(1, 400)))
                         for i in range(12)] for s in ("train", "eval", "test")})
    return root


def fla_naive(relative):
    """The module fla/ops/<relative> (a naive.py reference) loaded by its path from the installed
    pure-Python fla-core wheel (importing fla.ops would pull Triton); skips with the reason if absent."""
    import importlib.util

    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (pip install fla-core): no oracle from fla's naive loops")
    path = Path(spec.submodule_search_locations[0]) / "ops" / relative
    if not path.exists():
        pytest.skip(f"this fla-core has no {path}")
    module_spec = importlib.util.spec_from_file_location(f"fla_naive_{relative.replace('/', '_')[:-3]}", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


@pytest.fixture
def two_threads():
    """torch on 2 threads for the test (the C loops split their heads over torch's threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)
