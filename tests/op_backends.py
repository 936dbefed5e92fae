"""What the op tests share (a helper module, not a test module): `compare` (a path against the
float64 reference, outputs and every input's gradient), skips for optional GPU packages, and
pytest parameters for the backends of an op with the marks and skips each one needs: keops is
slow (a ~10 s compile per formula) and skips without pykeops; cuda needs a GPU and the built
extension (pip install --no-build-isolation extensions/kernels)."""

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


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def grads(out, inputs, seed=1):
    """Gradients of <out, w> for a fixed random w (also over the last state if out is a tuple); zeros
    for an input the output does not read (PaTH's w and beta at T = 1)."""
    outs = out if isinstance(out, tuple) else (out,)
    g = gen(seed)
    weights = [torch.randn(o.shape, generator=g, dtype=torch.float64).to(o.dtype) for o in outs]  # same draws for any dtype
    loss = sum((o * w.conj()).real.sum() for o, w in zip(outs, weights))
    return torch.autograd.grad(loss, [i for i in inputs if i is not None], materialize_grads=True)  # unused: zeros


def compare(fast, ref, inputs, tol):
    """fast(*inputs) vs ref(*inputs in float64): outputs and the gradients of every input."""
    x64 = [None if x is None else x.detach().to(torch.complex128 if x.is_complex() else torch.float64)
           .requires_grad_() for x in inputs]
    xs = [None if x is None else x.detach().clone().requires_grad_() for x in inputs]
    got, want = fast(*xs), ref(*x64)
    for o, r in zip(got if isinstance(got, tuple) else (got,), want if isinstance(want, tuple) else (want,)):
        torch.testing.assert_close(o.to(r.dtype), r, **tol)
    for gx, gr in zip(grads(got, xs), grads(want, x64)):
        torch.testing.assert_close(gx.to(gr.dtype), gr, **tol)


def need(module, why=None):
    """Skips unless `module` is installed (found, not imported: an import error is the test's to report)."""
    if importlib.util.find_spec(module) is None:
        pytest.skip(why or f"{module} is not installed (see requirements-gpu.txt)")


needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
