"""Checkpoint files: atomic writes and loading that runs no code.

Writing: the checkpoint goes to a temporary file in the target's own directory, is flushed to
disk (fsync), and then replaces the target with `os.replace`, which is atomic within one
filesystem. A kill, a full disk or a read-only directory at any moment leaves either the
previous file or the new one, never a truncated one. A failed write removes the temporary file
and raises RunError naming the directory.

Loading: `torch.load(..., weights_only=True)` only, which unpickles tensors and plain containers
and refuses anything else (a crafted pickle cannot run code). Every checkpoint this repository
writes (model, optimizer and scheduler states, Lightning's loop and callback states) is made of
such values, so no extra safe globals are needed; tests/test_reliability.py checks that for every
optimizer and scheduler.
"""

import os
import tempfile

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from src.utils.errors import RunError


def load_checkpoint(path, map_location="cpu"):
    """The checkpoint at `path`, unpickled with weights_only=True."""
    return torch.load(path, map_location=map_location, weights_only=True)


def save_atomically(obj, path):
    """torch.save(obj, path) via a temporary file in path's directory and os.replace."""
    directory, name = os.path.split(os.path.abspath(path))
    tmp = None
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)
        kept = f"the previous {name} is kept" if os.path.exists(path) else f"no {name} was written"
        raise RunError(f"cannot write checkpoints in {directory} ({e.strerror or e}); {kept}") from None


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint IO with atomic writes and weights_only loading (module docstring)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        save_atomically(checkpoint, path)

    def load_checkpoint(self, path, map_location=lambda storage, loc: storage, weights_only=None):
        return load_checkpoint(path, map_location)
