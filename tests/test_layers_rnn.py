"""LSTM, GRU, RNN layers: shapes, gradients, explicit state, step == forward."""

import pytest
import torch

from conftest import assert_every_parameter_gets_a_gradient, run_steps

from src.models.sequence.layers.rnn import RNN
from src.utils.errors import ConfigError

D = 6
CELLS = ["lstm", "gru", "rnn"]


def make(cell, **kwargs):
    torch.manual_seed(0)
    return RNN(D, model=cell, **kwargs)


@pytest.mark.parametrize("cell", CELLS)
@pytest.mark.parametrize("L", [1, 7])
def test_shapes(cell, L):
    y, state = make(cell, d_hidden=5)(torch.randn(3, L, D))
    assert y.shape == (3, L, D) and torch.isfinite(y).all()
    for s in state if cell == "lstm" else [state]:
        assert s.shape == (3, 5)


@pytest.mark.parametrize("cell", CELLS)
def test_every_parameter_gets_a_gradient(cell):
    layer = make(cell, postact="glu").double()
    assert_every_parameter_gets_a_gradient(layer, torch.randn(2, 7, D, dtype=torch.float64))


@pytest.mark.parametrize("cell", CELLS)
def test_step_equals_forward_and_state_carries_over(cell):
    layer = make(cell, d_hidden=4).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    y, final = layer(x)
    steps, state = run_steps(layer, x, layer.default_state(2))
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-12, atol=1e-12)  # float64, same ops
    # the forward continues from an explicit state: two halves == the whole
    y1, s1 = layer(x[:, :4])
    y2, _ = layer(x[:, 4:], s1)
    torch.testing.assert_close(torch.cat((y1, y2), 1), y, rtol=1e-12, atol=1e-12)
    assert layer.state_size(9) == 4 * (2 if cell == "lstm" else 1)


def test_bad_cell_name():
    with pytest.raises(ConfigError, match=r"model.layer.model='lstn' is not valid; choose one of: 'lstm', 'gru', 'rnn'"):
        RNN(D, model="lstn")
