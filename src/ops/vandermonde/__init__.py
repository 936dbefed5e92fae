"""Vandermonde kernels K[..., l] = sum_n v[..., n] exp(x[..., n] l), l = 0 .. L-1.

`vandermonde(v, x, L, backend="auto")`: complex v and x, broadcast over their leading
dimensions; returns the complex kernel of shape broadcast(v.shape[:-1], x.shape[:-1]) + (L,).
Backends: `torch` (dense.py, one broadcast GEMM); `auto` picks the fastest usable one and logs
its choice once. `reference.py` is the oracle the tests compare every backend with.
"""

import logging

from src.ops.vandermonde import dense
from src.utils.errors import check_choice

log = logging.getLogger(__name__)

BACKENDS = {"torch": dense.vandermonde}
_announced = set()


def choose(backend):
    """The backend `auto` resolves to (the only one, for now: the dense torch path)."""
    check_choice("model.layer.backend", backend, ["auto", *BACKENDS])
    name = "torch" if backend == "auto" else backend
    if (backend, name) not in _announced:
        _announced.add((backend, name))
        log.info(f"vandermonde: backend={backend} -> {name}")
    return name


def vandermonde(v, x, L, backend="auto"):
    return BACKENDS[choose(backend)](v, x, L)
