"""pytest parameters for the backends of an op, with the marks and skips each one needs:
keops is slow (a ~10 s compile per formula) and skips without pykeops; cuda needs a GPU and
the built extension (pip install --no-build-isolation extensions/kernels)."""

import importlib.util

import pytest
import torch

NO_PYKEOPS = importlib.util.find_spec("pykeops") is None
NO_EXTENSION = importlib.util.find_spec("structured_kernels") is None


def backend_params(names):
    params = []
    for name in names:
        marks = []
        if name == "keops":
            marks = [pytest.mark.slow, pytest.mark.skipif(NO_PYKEOPS, reason="pykeops is not installed (pip install pykeops==2.3)")]
        elif name == "cuda":
            marks = [
                pytest.mark.gpu,
                pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
                pytest.mark.skipif(NO_EXTENSION, reason="extension not built (pip install --no-build-isolation extensions/kernels)"),
            ]
        params.append(pytest.param(name, marks=marks))
    return params


def device_for(backend):
    return torch.device("cuda" if backend == "cuda" else "cpu")
