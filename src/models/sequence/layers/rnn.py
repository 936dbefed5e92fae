"""Classic recurrent layers: `model=lstm|gru|rnn`, the layer `rnn` with `cell` lstm | gru | rnn
(one recurrent layer per backbone block).

    RNN:   h_t = tanh(W_x x_t + W_h h_{t-1} + b)
    GRU:   r, z = sigmoid(.),  n = tanh(W_n x_t + r * (U_n h_{t-1}) + b),  h_t = (1 - z) n + z h_{t-1}
    LSTM:  i, f, o = sigmoid(.),  g = tanh(.),  c_t = f c_{t-1} + i g,  h_t = o tanh(c_t)
    y_t = Linear(d_hidden -> d_model, postact)(dropout(h_t))

torch's nn.LSTM / nn.GRU / nn.RNN (cuDNN on a GPU). Depth comes from the backbone
(`model.n_layers`), so every layer sits in its own residual block. The state is explicit:
h (B, d_hidden), and c for the LSTM; state_size = d_hidden floats (2 d_hidden for the LSTM).
"""

import torch
from torch import nn

from src.models.sequence.layers.activation import OutputLinear
from src.models.sequence.layers.base import SequenceLayer
from src.utils.errors import check_choice

CELLS = {"lstm": nn.LSTM, "gru": nn.GRU, "rnn": nn.RNN}


class RNN(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, cell="lstm", d_hidden: int | None = None, postact: str | None = None, dropout=0.0):
        super().__init__()
        self.cell = check_choice("model.layer.cell", cell, list(CELLS))
        self.d_hidden = d_hidden or d_model
        self.rnn = CELLS[cell](d_model, self.d_hidden, batch_first=True)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = OutputLinear(self.d_hidden, d_model, postact)

    def _to_torch(self, state):  # ours (B, d) tensors -> torch's (1, B, d)
        if state is None:
            return None
        return tuple(s[None] for s in state) if self.cell == "lstm" else state[None]

    def _from_torch(self, state):
        return tuple(s[0] for s in state) if self.cell == "lstm" else state[0]

    def forward(self, x, state=None, positions=None):  # x: (B, L, D) -> (B, L, D), final state
        h, state = self.rnn(x, self._to_torch(state))
        return self.output_linear(self.dropout(h)), self._from_torch(state)

    def default_state(self, batch_size, device=None):
        zeros = torch.zeros(batch_size, self.d_hidden, device=device, dtype=self.rnn.weight_hh_l0.dtype)
        return (zeros, zeros.clone()) if self.cell == "lstm" else zeros

    def step(self, x_t, state):  # x_t: (B, D) -> (B, D), state
        y, state = self.forward(x_t[:, None], state)
        return y[:, 0], state

    def state_size(self, L):
        return self.d_hidden * (2 if self.cell == "lstm" else 1)
