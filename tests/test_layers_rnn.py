"""LSTM, GRU, RNN layers (`rnn` with `cell`): each is its textbook recurrence, written out from the
cell's weights (the contract checks of every layer are in test_layer_contract.py)."""

import pytest
import torch

from src.models.sequence.layers.rnn import RNN
from src.utils.errors import ConfigError

D, H = 6, 5


def recurrence(cell, rnn, x):
    """h_t of the cell by its definition (torch's gate order: i, f, g, o and r, z, n)."""
    W, U, b, c = rnn.weight_ih_l0, rnn.weight_hh_l0, rnn.bias_ih_l0, rnn.bias_hh_l0
    h = x.new_zeros(x.shape[0], H)
    c_t, out = h.clone(), []
    for t in range(x.shape[1]):
        a, r = x[:, t] @ W.T + b, h @ U.T + c
        if cell == "rnn":
            h = torch.tanh(a + r)
        elif cell == "gru":
            (ar, az, an), (rr, rz, rn) = a.chunk(3, -1), r.chunk(3, -1)
            reset, update = torch.sigmoid(ar + rr), torch.sigmoid(az + rz)
            h = (1 - update) * torch.tanh(an + reset * rn) + update * h
        else:
            i, f, g, o = (a + r).chunk(4, -1)
            c_t = torch.sigmoid(f) * c_t + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c_t)
        out.append(h)
    return torch.stack(out, 1)


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_each_cell_is_its_recurrence(cell):
    torch.manual_seed(0)
    layer = RNN(D, cell=cell, d_hidden=H).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    want = layer.output_linear(recurrence(cell, layer.rnn, x))
    torch.testing.assert_close(layer(x)[0], want, rtol=1e-12, atol=1e-12)
    assert layer.state_size(9) == H * (2 if cell == "lstm" else 1)


def test_bad_cell_name():
    with pytest.raises(ConfigError, match=r"model.layer.cell='lstn' is not valid; choose one of: 'lstm', 'gru', 'rnn'"):
        RNN(D, cell="lstn")
