"""qLSTM: the quasi-LSTM of the DSF paper (Sieber et al. 2024): gates read the input only, so
the cell is a diagonal linear recurrence (a linear scan), not a nonlinear RNN.

    (g, u) = W_in x_t                                   (hidden = d_state, or expand * d_model)
    u_t    = causal depthwise conv_{d_conv}(u)_t        (with bias, no activation)
    (f, i, o) = W_gates u_t + b_gates
    forget gate a_t = sigmoid(f)                        (forget_gate=sigmoid)
                    = sigmoid(-f) ** relu(alpha)        (forget_gate=reversed_sigmoid, alpha learned, init 1)
    h_t = a_t * h_{t-1} + sigmoid(i) * u_t              (linear scan over t)
    y_t = W_out (gelu(g) * sigmoid(o) * h_t)
0 < a_t < 1: the state is a gated running average, stable for any input. State per sequence:
h (hidden) and the conv window (hidden (d_conv - 1)).
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.linear_scan import DISPATCH, linear_scan
from src.utils.errors import check_choice


class QLSTM(SequenceLayer):
    recurrent = True

    FORGET_GATES = ["sigmoid", "reversed_sigmoid"]

    def __init__(self, d_model, d_state: int | None = None, expand=2, d_conv=4, forget_gate="sigmoid", backend="auto"):
        super().__init__()
        self.forget_gate = check_choice("model.layer.forget_gate", forget_gate, self.FORGET_GATES)
        self.backend = DISPATCH.backend_of(backend)
        self.hidden = hidden = int(d_state or expand * d_model)
        self.d_conv = d_conv
        self.input = nn.Linear(d_model, 2 * hidden, bias=False)
        self.conv = ShortConv(hidden, d_conv, bias=True, backend=backend)
        self.gates = nn.Linear(hidden, 3 * hidden)
        self.output = nn.Linear(hidden, d_model, bias=False)
        if forget_gate == "reversed_sigmoid":
            self.alpha = nn.Parameter(torch.tensor(1.0))
        with torch.no_grad():
            self.input.weight.normal_(std=d_model**-0.5)
            self.gates.weight.normal_(std=hidden**-0.5)
            self.output.weight.normal_(std=hidden**-0.5)

    def _gates(self, u):  # u (..., hidden) -> forget a, input-gated u, output gate
        f, i, o = self.gates(u).chunk(3, dim=-1)
        if self.forget_gate == "sigmoid":
            a = torch.sigmoid(f)
        else:  # sigmoid(-f) ** relu(alpha), in log space
            a = torch.exp(F.relu(self.alpha) * F.logsigmoid(-f))
        return a, torch.sigmoid(i) * u, torch.sigmoid(o)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, h0 = (None, None) if state is None else state
        g, u = self.input(x).chunk(2, dim=-1)
        u, conv_state = self.conv(u.transpose(1, 2), conv_state)
        a, b, o = self._gates(u.transpose(1, 2))  # (B, L, hidden)
        h = linear_scan(a.transpose(1, 2), b.transpose(1, 2), h0, backend=self.backend).transpose(1, 2)
        return self.output(F.gelu(g) * o * h), (conv_state, h[:, -1])

    def step(self, x_t, state):  # x_t (B, d_model)
        conv_state, h = state
        g, u = self.input(x_t).chunk(2, dim=-1)
        u, conv_state = self.conv.step(u, conv_state)
        a, b, o = self._gates(u)
        h = a * h + b
        return self.output(F.gelu(g) * o * h), (conv_state, h)

    def default_state(self, batch_size, device=None):
        w = self.output.weight
        return self.conv.default_state(batch_size, device), torch.zeros(batch_size, self.hidden, dtype=w.dtype,
                                                                        device=device or w.device)

    def state_size(self, L=None):
        """Floats per sequence: h (hidden) and the conv window (hidden (d_conv - 1))."""
        return self.hidden * self.d_conv
