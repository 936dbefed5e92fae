"""Cauchy kernels K[..., l] = sum_n v[..., n] / (z[l] - w[..., n]), S4's DPLR kernel.

`cauchy(v, z, w, backend="auto")`: complex v and w broadcast over their leading dimensions,
z of shape (L,); returns the complex kernel of shape broadcast(v.shape[:-1], w.shape[:-1]) + (L,).
Backends: `torch` (reference.py's dense form); `auto` picks the fastest usable one and logs its
choice once. `reference.py` is the oracle the tests compare every backend with.
"""

import logging

from src.ops.cauchy import reference
from src.utils.errors import check_choice

log = logging.getLogger(__name__)

BACKENDS = {"torch": reference.cauchy}
_announced = set()


def choose(backend):
    """The backend `auto` resolves to (the only one, for now: the dense torch path)."""
    check_choice("model.layer.backend", backend, ["auto", *BACKENDS])
    name = "torch" if backend == "auto" else backend
    if (backend, name) not in _announced:
        _announced.add((backend, name))
        log.info(f"cauchy: backend={backend} -> {name}")
    return name


def cauchy(v, z, w, backend="auto"):
    return BACKENDS[choose(backend)](v, z, w)
