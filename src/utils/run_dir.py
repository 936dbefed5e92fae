"""The run directory (`hydra.run.dir`, `hydra.sweep.dir`): usable before the run starts, and
left as it was when the run is refused.

`CheckRunDir` is a Hydra callback (configs/config.yaml, `hydra.callbacks`): before Hydra creates
the directory, it stops with one line (exit 2) when the directory cannot be created or written
(a file in the way, no permission, a read-only filesystem), and it records which directories
Hydra is about to create. When the run is refused, `remove_created` removes those that are still
empty (src/training.py removes what the run wrote into them), so a refused run leaves nothing on
disk.
"""

import os
import shutil
import sys
from pathlib import Path

from hydra.experimental.callback import Callback


def unusable(path):
    """Why `path` cannot be (created and) written as a directory, or None."""
    path = Path(path).absolute()
    existing = path
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if not existing.is_dir():
        return f"{existing} is not a directory"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"{existing} is not writable"
    try:  # root passes os.access everywhere; a read-only filesystem shows only on writing
        probe = existing / f".write-test-{os.getpid()}"
        probe.mkdir()
        probe.rmdir()
    except OSError as e:
        return f"{existing} is not writable ({e.strerror})"
    return None


class CheckRunDir(Callback):
    def on_run_start(self, config, **kwargs):
        self._check("hydra.run.dir", config.hydra.run.dir)
        path = Path(config.hydra.run.dir).absolute()
        CREATED[:] = [p for p in [path, *path.parents] if not p.exists()]

    def on_multirun_start(self, config, **kwargs):
        self._check("hydra.sweep.dir", config.hydra.sweep.dir)

    @staticmethod
    def _check(key, path):
        why = unusable(path)
        if why:
            print(f"error: {key}={path} cannot be used: {why}; pass another {key}", file=sys.stderr)
            sys.exit(2)


CREATED = []  # the directories Hydra creates for this run, deepest first


def remove_created():
    """Remove the directories Hydra created for this run, where they are empty."""
    for path in CREATED:
        if path.is_dir() and not any(path.iterdir()):
            path.rmdir()


def undo_writes(run_dir, before):
    """Remove what a refused run wrote into `run_dir`: the whole directory when it did not exist
    (`before` None), else the entries not in `before` (its listing when the run started)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    for entry in [run_dir] if before is None else [run_dir / n for n in os.listdir(run_dir) if n not in before]:
        shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
