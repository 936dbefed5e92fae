"""The layer contract (src/models/sequence/layers/base.py), checked for every registered layer.

Cases: every configs/model/layer/*.yaml at a tiny size (conftest.TINY), and the option variants
whose contract may differ (conftest.VARIANTS). A new layer is covered by adding its config: no
edit here. Parameters are moved off their init before the checks (zero-initialised projections,
as RWKV-7's, would hide most of a layer from them). Float64 checks use 1e-10: the same ops in
another order (a chunked scan against its step loop), not another precision.
"""

import dataclasses
import re

import pytest
import torch

from conftest import CASES, D_TINY, LAYER_CONFIGS, floats, layer_options, run_steps, tiny_layer
from src.models.sequence.layers.base import SequenceLayer
from src.utils import registry
from src.utils.errors import ConfigError

B = 2
L_STEP, SPLIT = 70, 33  # past a 64-position chunk of the chunked ops, split off a chunk boundary


def make(case, dtype=torch.float64):
    layer = tiny_layer(case, dtype=dtype, max_length=L_STEP)
    with torch.no_grad():
        for p in layer.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return layer


def same_state(a, b):
    """Nested states equal to float64 rounding."""
    if isinstance(a, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    elif isinstance(a, dict):
        for key in a:
            same_state(a[key], b[key])
    elif isinstance(a, (tuple, list)):
        for x, y in zip(a, b, strict=True):
            same_state(x, y)
    else:
        assert a == b


def inputs(L, dtype=torch.float64, seed=1):
    return torch.randn(B, L, D_TINY, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def test_every_registered_layer_has_a_config():
    names = {layer_options(stem)["_name_"] for stem in LAYER_CONFIGS}
    assert set(registry.layer) == names, set(registry.layer) ^ names


@pytest.mark.parametrize("name", sorted(registry.layer))
def test_every_layer_is_a_sequence_layer_with_typed_options(name):
    cls = registry.resolve(registry.layer, name)
    assert issubclass(cls, SequenceLayer)
    fields = {f.name for f in dataclasses.fields(cls.options())}
    assert fields == set(cls.option_parameters()) and "d_model" not in fields


@pytest.mark.parametrize("case", CASES)
@pytest.mark.parametrize("L", [1, 7, 40])
def test_shapes(case, L):
    layer = tiny_layer(case, max_length=40)
    y, _ = layer(inputs(L, torch.float32))
    assert y.shape == (B, L, D_TINY) and torch.isfinite(y).all()
    size = layer.state_size(L)
    assert isinstance(size, int) and size > 0


@pytest.mark.parametrize("case", CASES)
def test_every_parameter_gets_a_gradient(case):
    layer = make(case)  # at its longest input: every scale of a multiscale kernel is read
    y, _ = layer(inputs(L_STEP))
    (y**2).sum().backward()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing


@pytest.mark.parametrize("case", CASES)
def test_causal_layers_do_not_read_the_future(case):
    """Changing x_t leaves y_{<t} unchanged; a non-causal layer's y_{<t} changes."""
    layer, t = make(case), 5
    x = inputs(12)
    x2 = x.clone()
    x2[:, t:] += inputs(12 - t, seed=2)  # not a constant: a LayerNorm in front would cancel that
    y, y2 = layer(x)[0], layer(x2)[0]
    if layer.causal:
        torch.testing.assert_close(y2[:, :t], y[:, :t], rtol=1e-10, atol=1e-10)
    else:
        assert not torch.allclose(y2[:, :t], y[:, :t])


@pytest.mark.parametrize("case", CASES)
def test_step_equals_forward_or_refuses_with_the_reason(case):
    layer = make(case)
    x = inputs(L_STEP)
    why = layer.why_no_step()
    if why is not None:
        with pytest.raises(ConfigError, match=r"has no step\(\): " + re.escape(why)):
            layer.default_state(B)  # the only source of a state for step
        if type(layer).step is SequenceLayer.step:
            with pytest.raises(ConfigError, match=r"has no step\(\): " + re.escape(why)):
                layer.step(x[:, 0], None)
        return
    assert layer.recurrent and layer.causal
    y, final = layer(x)
    steps, state = run_steps(layer, x)
    torch.testing.assert_close(steps, y, rtol=1e-10, atol=1e-10)
    assert floats(state) == layer.state_size(L_STEP)  # the state after L steps is what state_size counts
    if final is not None:  # stepping ends in the state the forward returns
        same_state(state, final)


@pytest.mark.parametrize("case", CASES)
def test_forward_continues_from_its_state_or_refuses_one(case):
    """A forward that returns a state continues from it; one that returns None refuses one."""
    layer = make(case)
    x = inputs(L_STEP)
    y, state = layer(x)
    y1, state1 = layer(x[:, :SPLIT])
    if state is None:
        assert state1 is None
        given = layer.default_state(B) if layer.why_no_step() is None else torch.zeros(B, D_TINY)
        with pytest.raises(ConfigError, match="does not continue from a state"):
            layer(x[:, SPLIT:], given)
        return
    y2, state2 = layer(x[:, SPLIT:], state1)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-10, atol=1e-10)
    same_state(state2, state)
    assert floats(state) == layer.state_size(L_STEP)  # what state_size reports is what it keeps


CUDA = pytest.param("cuda", marks=[pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(),
                                                                         reason="needs a CUDA device")])


@pytest.mark.parametrize("device", ["cpu", CUDA])
@pytest.mark.parametrize("case", CASES)
def test_trains_under_bfloat16_autocast(case, device):
    """trainer.precision=bf16-mixed (autocast): forward and backward run (on CPU, H3's and Hyena's FFT
    convolutions, Mamba-3, MesaNet, PaTH and log-linear Gated DeltaNet failed; Titans' loop
    corrupted the heap), every output and gradient is finite, every parameter gets one, and the
    output is the float32 one's within 6% (relative norm). The largest is TTT-Linear's, 3%: its
    inner layer norm reads bfloat16 projections. The input gradients are not compared: autocast's
    bfloat16 matmuls in the backward put TTT-Linear's 45% off (measured with only its Linears in
    bfloat16), where its input and weight rounding alone gives 8%. On CUDA (the GPU check) the
    same holds for the kernels `auto` takes there, fla's among them."""
    layer = make(case, torch.float32).to(device)
    x = inputs(37, torch.float32).to(device)
    want, _ = layer(x)
    with torch.autocast(device, dtype=torch.bfloat16):
        y, _ = layer(x.requires_grad_(True))
    (y.float() ** 2).sum().backward()
    assert torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert (y.float() - want).norm() / want.norm() < 0.06


@pytest.mark.parametrize("case", CASES)
def test_runs_with_bfloat16_weights_or_says_why_not(case):
    """trainer.precision=bf16-true casts the weights: the layer in bfloat16 runs forward and
    backward, finite, every parameter with a gradient, its output within 10% of float32's (the
    largest: Titans' 6.2%, whose recurrence amplifies rounding); or why_no_half_weights says why not (the run then
    refuses at start, src/module.py) and it does fail: the declaration cannot go stale."""
    layer = make(case, torch.float32)
    x = inputs(37, torch.float32)
    want, _ = layer(x)
    layer = layer.to(torch.bfloat16)
    x = x.bfloat16().requires_grad_(True)
    if layer.why_no_half_weights() is not None:
        with pytest.raises((RuntimeError, NotImplementedError)):
            layer(x)
        return
    y, _ = layer(x)
    (y.float() ** 2).sum().backward()
    assert y.dtype == torch.bfloat16 and torch.isfinite(y).all() and torch.isfinite(x.grad).all()
    missing = [n for n, p in layer.named_parameters() if p.grad is None or not torch.isfinite(p.grad).all()]
    assert not missing
    assert (y.float() - want).norm() / want.norm() < 0.1
