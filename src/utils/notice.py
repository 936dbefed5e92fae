"""One-line notices to the user (legacy keys, fallbacks, choices) through `logging`.

They go to the logger "src.notice", which writes the bare line to stderr on rank zero only (the
rank read as Lightning does, from RANK, LOCAL_RANK or SLURM_PROCID) and does not propagate, so
Hydra's job logging neither repeats nor reformats them. Silence them as any logger:
`logging.getLogger("src.notice").setLevel(logging.ERROR)`.
"""

import logging
import os
import sys

log = logging.getLogger("src.notice")


def _rank_zero(record):
    rank = next((os.environ[k] for k in ("RANK", "LOCAL_RANK", "SLURM_PROCID") if k in os.environ), "0")
    return rank == "0"


class _Stderr(logging.StreamHandler):
    """sys.stderr as it is at each line (pytest and callers may swap it)."""

    def __init__(self):
        super().__init__()
        self.setFormatter(logging.Formatter("%(message)s"))
        self.addFilter(_rank_zero)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ sets it; stderr is read at each emit instead
        pass


if not log.handlers:
    log.addHandler(_Stderr())
    log.setLevel(logging.INFO)
    log.propagate = False


def notice(line):
    log.info(line)
