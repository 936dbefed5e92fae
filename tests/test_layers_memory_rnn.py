"""The stack_rnn and tape_rnn layers against the Chomsky hierarchy's own haiku models
(google-deepmind/neural_networks_chomsky_hierarchy: models/rnn.py's make_rnn around
models/stack_rnn.py's StackRNNCore and models/tape_rnn.py's TapeInputLengthJumpCore, inner core
hk.VanillaRNN, as experiments/constants.py builds `stack_rnn` and `tape_rnn`), in float64 (jax's
x64), with our parameters copied into theirs: the outputs over every step and the gradients of
every parameter, on both backends. Needs jax and dm-haiku (CPU) and a checkout of the hierarchy
named by CHOMSKY_HIERARCHY; skipped, saying which is missing, where either is absent.
"""

import importlib
import os
import sys
import types

import numpy as np
import pytest
import torch

from src.models.sequence.layers.memory_rnn import StackRNN, TapeRNN
from src.utils.errors import ConfigError

INSTALL = "pip install jax dm-haiku einshape chex"
TOL = dict(rtol=1e-10, atol=1e-10)


def hierarchy():
    """(jax, haiku, rnn, stack_rnn, tape_rnn) of the hierarchy's checkout at $CHOMSKY_HIERARCHY."""
    try:
        jax, hk = importlib.import_module("jax"), importlib.import_module("haiku")
        importlib.import_module("einshape")
    except ImportError as e:
        pytest.skip(f"no oracle from the Chomsky hierarchy's haiku cores: {e.name} is not installed ({INSTALL})")
    root = os.environ.get("CHOMSKY_HIERARCHY")
    if not root or not os.path.exists(os.path.join(root, "models", "stack_rnn.py")):
        pytest.skip("no oracle from the Chomsky hierarchy's haiku cores: set CHOMSKY_HIERARCHY to a checkout of "
                    "github.com/google-deepmind/neural_networks_chomsky_hierarchy")
    jax.config.update("jax_enable_x64", True)
    package = "neural_networks_chomsky_hierarchy"  # its modules import each other by this name
    if package not in sys.modules:
        sys.modules[package] = types.ModuleType(package)
        sys.modules[package].__path__ = [root]
    models = [importlib.import_module(f"{package}.models.{m}") for m in ("rnn", "stack_rnn", "tape_rnn")]
    return jax, hk, *models


def haiku_params(layer, core):
    """Our layer's parameters under the names of the hierarchy's make_rnn(core) (haiku's w is (in, out))."""
    t = lambda p: np.asarray(p.detach().T.numpy())  # noqa: E731
    b = lambda p: np.asarray(p.detach().numpy())  # noqa: E731
    rnn = f"{core}/~/vanilla_rnn"
    params = {"linear": {"w": t(layer.output.weight), "b": b(layer.output.bias)},
              f"{rnn}/linear": {"w": t(torch.cat([layer.W_x, layer.W_r], 1)), "b": b(layer.bias)},
              f"{rnn}/linear_1": {"w": t(layer.W_h), "b": np.zeros(layer.d_hidden)}}
    if core == "stack_rnn_core":  # push value, then actions
        params[f"{core}/linear"] = {"w": t(layer.write[0].weight), "b": b(layer.write[0].bias)}
        params[f"{core}/linear_1"] = {"w": t(layer.actions.weight), "b": b(layer.actions.bias)}
    else:
        params[f"{core}/linear"] = {"w": t(layer.actions.weight), "b": b(layer.actions.bias)}
        for i, w in enumerate(layer.write):
            params[f"{core}/mlp/~/linear_{i}"] = {"w": t(w.weight), "b": b(w.bias)}
    return params


def ours_against_theirs(layer, model, core, x, w, **kwargs):
    """y and every parameter's gradient of <y, w> from our layer and from their transformed model."""
    jax, hk = hierarchy()[:2]
    params = haiku_params(layer, core)
    theirs = hk.without_apply_rng(hk.transform(lambda x: model(x, **kwargs)))
    loss = lambda p: (theirs.apply(p, x.numpy()) * w.numpy()).sum()  # noqa: E731
    y_theirs, g_theirs = theirs.apply(params, x.numpy()), jax.grad(loss)(params)
    y, _ = layer(x)
    (y * w).sum().backward()
    torch.testing.assert_close(y, torch.from_numpy(np.array(y_theirs)), **TOL)
    expected = haiku_params(_GradView(layer), core)
    rnn = f"{core}/~/vanilla_rnn"
    expected[f"{rnn}/linear_1"]["b"] = expected[f"{rnn}/linear"]["b"]  # their two biases: one here, the same gradient
    assert expected.keys() == g_theirs.keys()
    for name, leaf in expected.items():
        for key, want in leaf.items():
            np.testing.assert_allclose(np.asarray(g_theirs[name][key]), want, **TOL, err_msg=f"{name}/{key}")


class _GradView:
    """The layer with each parameter replaced by its gradient (for haiku_params)."""

    def __init__(self, layer):
        grad = lambda p: p.grad  # noqa: E731
        linear = lambda m: types.SimpleNamespace(weight=grad(m.weight), bias=grad(m.bias))  # noqa: E731
        self.output, self.actions = linear(layer.output), linear(layer.actions)
        self.write = [linear(m) for m in layer.write]
        self.W_x, self.W_r, self.bias, self.W_h = (grad(p) for p in (layer.W_x, layer.W_r, layer.bias, layer.W_h))
        self.d_hidden = layer.d_hidden


def data(B, L, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, L, D, generator=g, dtype=torch.float64), torch.randn(B, L, D, generator=g,
                                                                               dtype=torch.float64)


@pytest.mark.parametrize("backend", ["torch", "cpu"])
def test_the_stack_rnn_is_the_hierarchys_stack_rnn(backend):
    """40 steps on a stack of 6: pushes fall off its bottom."""
    _, hk, rnn, stack_rnn, _ = hierarchy()
    torch.manual_seed(0)
    layer = StackRNN(5, d_hidden=7, stack_size=6, stack_cell_size=4, backend=backend).double()
    model = lambda x: rnn.make_rnn(output_size=5, rnn_core=stack_rnn.StackRNNCore, return_all_outputs=True,  # noqa
                                   stack_cell_size=4, stack_size=6, inner_core=hk.VanillaRNN, hidden_size=7)(x)
    ours_against_theirs(layer, model, "stack_rnn_core", *data(3, 40, 5))


@pytest.mark.parametrize("backend", ["torch", "cpu"])
@pytest.mark.parametrize("jump, widths", [(9, [5, 4]), (3, [])])
def test_the_tape_rnn_is_the_hierarchys_tape_rnn_at_one_input_length(backend, jump, widths):
    """Their jumps are the input's length n (9 > the tape's 6 cells: it wraps; 3); ours model.layer.jump=n."""
    _, hk, rnn, _, tape_rnn = hierarchy()
    torch.manual_seed(1)
    layer = TapeRNN(5, d_hidden=7, memory_size=6, memory_cell_size=3, mlp_layers_size=widths, jump=jump,
                    backend=backend).double()
    model = lambda x, n: rnn.make_rnn(output_size=5, rnn_core=tape_rnn.TapeInputLengthJumpCore,  # noqa: E731
                                      return_all_outputs=True, memory_cell_size=3, memory_size=6,
                                      mlp_layers_size=widths, inner_core=hk.VanillaRNN, hidden_size=7)(x, n)
    ours_against_theirs(layer, model, "tape_input_length_jump_core", *data(2, 31, 5), n=jump)


def test_the_initialisation_is_haikus():
    """Weights truncated at 2 sigma, std 1/sqrt(fan_in) (the RNN's input over [x; M[0]]), biases zero."""
    torch.manual_seed(0)
    layer = TapeRNN(200, d_hidden=300, memory_cell_size=56)
    for weight, fan_in in [(layer.W_x, 256), (layer.W_r, 256), (layer.W_h, 300), (layer.write[1].weight, 64),
                           (layer.output.weight, 300)]:
        std = fan_in**-0.5
        assert weight.abs().max() <= 2 * std and 0.8 * std < weight.std() < 0.95 * std  # truncation shrinks it to 0.88
    assert all(float(b.detach().abs().max()) == 0 for b in (layer.bias, layer.actions.bias, layer.write[0].bias))


@pytest.mark.parametrize("make, message", [
    (lambda: StackRNN(8, stack_size=1), "model.layer.stack_size=1 must be >= 2"),
    (lambda: TapeRNN(8, jump=-1), "model.layer.jump=-1 must be >= 0"),
    (lambda: TapeRNN(8, memory_cell_size=0), "model.layer.memory_cell_size=0 must be >= 1"),
])
def test_bad_sizes_are_refused_in_one_line(make, message):
    with pytest.raises(ConfigError, match=message):
        make()
