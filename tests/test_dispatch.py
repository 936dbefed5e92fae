"""src/ops/dispatch.py: auto skips backends that import but fail at run time, logs once; one layer key
serves several ops."""

import logging
from pathlib import Path

import pytest
import torch

from src.ops.dispatch import Dispatcher
from src.utils.errors import ConfigError


def make():
    def broken():  # imports fine, fails when called (an extension built for another GPU)
        def fn(v):
            raise RuntimeError("no kernel image is available for execution on the device")

        return fn

    def missing():
        raise ImportError("No module named 'fancy_kernels'")

    loaders = {"fast": broken, "fancy": missing, "torch": lambda: (lambda v: v + 1)}
    return Dispatcher("demo", loaders, {"default": ["fast", "fancy", "torch"]}, lambda fn, device: fn(torch.zeros(1)))


def test_auto_takes_the_first_backend_that_runs_and_logs_once(caplog):
    d = make()
    cpu = torch.device("cpu")
    with caplog.at_level(logging.INFO, logger="src.ops.dispatch"):
        assert d.resolve("auto", cpu) == "torch"
        assert d.function("auto", cpu)(torch.ones(1)).item() == 2
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and lines[0].startswith("demo: backend=auto -> torch on cpu")
    assert "fast not usable (RuntimeError: no kernel image" in lines[0] and "fancy not usable (ImportError" in lines[0]


def test_an_unusable_backend_asked_for_by_name_says_why():
    with pytest.raises(ConfigError, match=r"backend='fast' does not run on cpu here \(RuntimeError: no kernel image.*"
                                          r"use model.layer.backend=auto"):
        make().resolve("fast", torch.device("cpu"))


def test_unknown_backend():
    with pytest.raises(ConfigError, match=r"backend='cuda' is not valid; choose one of: 'auto', 'fast', 'fancy', 'torch'"):
        make().resolve("cuda", torch.device("cpu"))


def bf16_autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


@pytest.mark.parametrize("context", [torch.no_grad, torch.inference_mode, bf16_autocast])
def test_first_use_under_no_grad_inference_mode_or_autocast_still_finds_the_backends(context):
    """The smoke call runs forward and backward, so it must not inherit the caller's no_grad, nor
    Lightning's inference_mode (validate and test: an eval-only process resolves each op there first),
    nor autocast (bf16-mixed), which would mix its inputs' dtypes: the verdict is kept for every call."""
    from src.ops.dispatch import Dispatcher as D

    def smoke(fn, device):
        assert not torch.is_autocast_enabled("cpu")
        x = torch.ones(1, requires_grad=True)
        fn(x).sum().backward()

    d = D("demo", {"torch": lambda: (lambda v: 2 * v)}, {"default": ["torch"]}, smoke)
    with context():
        assert d.resolve("auto", torch.device("cpu")) == "torch"
        assert d.function("auto", torch.device("cpu"))(torch.ones(1)).item() == 2


def test_a_layer_backend_maps_to_each_ops_kernel_of_that_family():
    from src.ops import causal_conv1d, linear_scan, ssd_scan

    assert [ssd_scan.DISPATCH.backend_of(b) for b in ("auto", "torch", "cuda", "triton", "cpu")] == \
        ["auto", "torch", "triton", "triton", "torch"]
    assert [causal_conv1d.DISPATCH.backend_of(b) for b in ("cuda", "triton", "cpu")] == ["cuda", "cuda", "torch"]
    assert [linear_scan.DISPATCH.backend_of(b) for b in ("cuda", "triton", "cpu")] == ["cuda", "triton", "cpu"]
    with pytest.raises(ConfigError, match="model.layer.backend='keops' is not valid; choose one of: 'auto', 'torch'"):
        causal_conv1d.DISPATCH.backend_of("keops")


OPS = sorted(p.parent.name for p in (Path(__file__).resolve().parents[1] / "src" / "ops").glob("*/__init__.py")
             if "DISPATCH = Dispatcher(" in p.read_text())


@pytest.mark.parametrize("context", [torch.inference_mode, bf16_autocast])
@pytest.mark.parametrize("op", OPS)
def test_every_ops_torch_path_passes_its_smoke_call_under_inference_mode_or_autocast(op, context):
    """Each op's own smoke call (forward and backward on inputs it makes) under inference_mode, and
    under bfloat16 autocast (mesa_net's and path_attn's failed there, and were refused for good)."""
    import importlib

    dispatch = importlib.import_module(f"src.ops.{op}").DISPATCH
    dispatch.reset()
    try:
        with context():
            assert dispatch.why_unusable("torch", torch.device("cpu")) is None
    finally:
        dispatch.reset()
