"""Every command of docs/cpu-tour.md, read from the page and run as written (bash, from the
repository root) with DATA_PATH a fresh folder: the generators write their small data there, and
the LRA commands, whose real data this machine cannot download, read stand-ins in the real
formats (tests/lra_files.py, as the LRA tests do, with enough samples for one batch). Each run goes to its own hydra.run.dir."""

import os
import re
import shlex
import subprocess

import pytest

from conftest import ROOT, doc_section

PAGE = "docs/cpu-tour.md"


def tour_commands():
    """The command lines of the bash blocks of the page's section `## The tour`, in order."""
    section = doc_section(PAGE, "The tour")
    blocks = re.findall(r"```bash\n(.*?)```", section, re.S)
    return [line for block in blocks for line in block.splitlines() if line.startswith("python -m ")]


COMMANDS = tour_commands()
FAMILIES = ["dss-sequence1d", "zoology-mqar", "counting", "modern-rnns", "chomsky", "dss-listops-subtrees",
            "dss-pathfinder-segmentation", "s4-lra-imdb", "s4-lra-cifar"]


def test_the_tour_has_a_command_per_family_with_its_epochs_set():
    experiments = [c.split("experiment=")[1].split()[0] for c in COMMANDS if c.startswith("python -m train")]
    assert [next(f for f in FAMILIES if e == f or e.startswith(f + "-")) for e in experiments] == FAMILIES
    assert all("trainer.max_epochs=" in c for c in COMMANDS if c.startswith("python -m train"))
    generators = [c for c in COMMANDS if c.startswith("python -m src.dataloaders.prepare")]
    assert [g.split()[2] for g in generators] == ["src.dataloaders.prepare.listops", "src.dataloaders.prepare.pathfinder"]
    assert "$DATA_PATH/" not in (ROOT / PAGE).read_text()  # `/...` when DATA_PATH is unset


def write_lra_standins(root):
    """IMDB reviews and CIFAR-10 pictures in the real formats, enough for one batch of each."""
    import numpy as np

    from lra_files import random_text, write_cifar, write_imdb

    rng = np.random.default_rng(0)
    write_cifar(root, per_batch=20)  # 90 training pictures: a batch of 50
    write_imdb(root, {(s, c): [random_text(rng, int(rng.integers(20, 600))) for _ in range(16 if s == "train" else 8)]
                      for s in ("train", "test") for c in ("neg", "pos")})
    return root


@pytest.mark.slow  # the whole tour: about 6 minutes on 2 cores
def test_every_tour_command_runs(tmp_path):
    data = write_lra_standins(tmp_path / "data")
    env = {**os.environ, "DATA_PATH": str(data), "WANDB_MODE": "offline"}
    for i, command in enumerate(COMMANDS):
        if command.startswith("python -m train"):
            command += f" hydra.run.dir={shlex.quote(str(tmp_path / f'run{i}'))}"
        done = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
        if command.startswith("python -m train"):
            assert "final metrics: " in done.stdout, done.stdout[-2000:]
