"""sLSTM (`model=slstm`): xLSTM's scalar-memory LSTM layer (Beck et al. 2024), as NX-AI/xlstm's
`sLSTMLayer` (xlstm/blocks/slstm/layer.py) with its `sLSTMCell` (cell.py) on the slstm op
(src/ops/slstm), with xlstm's defaults.

    c      = silu(causal depthwise conv_{conv_size}(x) + b_conv)
    x_i = W_i c,  x_f = W_f c,  x_z = W_z x,  x_o = W_o x        W_* block-diagonal, one d x d block a head
    h_t    = the sLSTM cell per head (d = d_model / n_heads; src/ops/slstm), gates [i, f, z, o]:
             r_t = x_t + b + h_{t-1} R                            R block-diagonal: (H, d, 4 d)
             m_t = max(logsigmoid(r_f) + m_{t-1}, r_i)
             c_t = exp(logsigmoid(r_f) + m_{t-1} - m_t) c_{t-1} + exp(r_i - m_t) tanh(r_z)
             n_t = (the same with tanh(r_z) = 1),   h_t = sigmoid(r_o) c_t / n_t
    y      = GroupNorm_heads(h)                                   (no output projection, as xlstm)

xlstm's initialisation (as its sLSTMBlock leaves it, after reset_parameters): W_* ~ N(0, 2 / (5
d_model)) ("small init"), R = 0 (recurrent_weight_init "zeros"), the biases b_i = b_z = b_o = 0 and
("powerlaw_blockdependent", xlstm's default bias_init) per head
    b_f[j] = 5 - 12 (j / (d - 1))^(0.3 + 1.3 layer_idx / (n_layers - 1))       (j < d; 0.3 in one block)
from 5 (slow forgetting) to -7, the exponent growing with the block's depth; "small_init" is
b_f = linspace(3, 6) over d, "standard" U(-1/sqrt(d_model), 1/sqrt(d_model)) for every bias (and
"standard" recurrent_init the same for R). The norm is per head over d (xlstm's MultiHeadLayerNorm:
group_norm with a group a head, eps 1e-5, weight 1 + 0, no bias); the conv as torch's Conv1d.
State per sequence: the conv window (d_model (conv_size - 1)) and the cell's h, c, n, m (4 d_model).

Departures. The cell's state starts at m = -inf (default_state), which is xlstm's first step (it
takes m_1 = r_i while n is all zero, a test over the whole batch): forward, forward continued from
a state and step are then one computation. xlstm names the projection feeding the cell's i slot
`fgate` and the f slot `igate` (layer.py); here each is named for the gate it feeds. The dropout
on h is the backbone's (`model.dropout`, after the layer); conv_size 0 (xlstm: no conv) is refused.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep, split
from src.models.sequence.layers.mlstm import BlockDiagonal
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.slstm import DISPATCH, slstm
from src.utils.errors import ConfigError, check_choice

BIAS_INITS = ("powerlaw_blockdependent", "small_init", "standard")
RECURRENT_INITS = ("zeros", "standard")


def forget_bias(d, kind, layer_idx, n_layers):
    """xlstm's forget-gate bias of one head (d,) for bias_init `kind` ("standard" is drawn by the caller)."""
    if kind == "small_init":
        return torch.linspace(3.0, 6.0, d)
    ratio = layer_idx / (n_layers - 1) if n_layers > 1 else 0.0
    return 5.0 - 12.0 * (torch.arange(d) / max(d - 1, 1)) ** (0.3 + 1.3 * ratio)


class SLSTM(OneTokenStep):
    """xlstm's sLSTMLayer on the slstm op (see the module docstring).

    math: c_t = f_t c_{t-1} + i_t z_t, n_t = f_t n_{t-1} + i_t, h_t = o_t c_t / n_t with exponential
          i_t, sigmoid f_t (stabilised by m_t), gates fed by h_{t-1} through block-diagonal R
    """

    def __init__(self, d_model, n_heads=4, conv_size=4, bias_init="powerlaw_blockdependent",
                 recurrent_init="zeros", backend="auto", layer_idx=0, n_layers=1):
        super().__init__()
        self.backend = DISPATCH.check(backend)
        self.n_heads, self.d_head = H, d = n_heads, split(d_model, n_heads, "d_model")
        check_choice("model.layer.bias_init", bias_init, BIAS_INITS)
        check_choice("model.layer.recurrent_init", recurrent_init, RECURRENT_INITS)
        if conv_size < 1:
            raise ConfigError(f"model.layer.conv_size={conv_size} must be >= 1 (the width of the causal conv)")
        small = math.sqrt(2 / (5 * d_model))  # xlstm's small_init, with the embedding width
        self.conv = ShortConv(d_model, conv_size, bias=True, activation="silu", backend=backend)
        self.igate, self.fgate, self.zgate, self.ogate = (BlockDiagonal(d_model, d, small) for _ in range(4))
        self.R = nn.Parameter(torch.zeros(H, d, 4, d))  # h_{t-1} unit k -> gate g unit j: R[h, k, g, j]
        self.bias = nn.Parameter(torch.zeros(4, H, d))  # gates [i, f, z, o]
        self.norm_weight = nn.Parameter(torch.zeros(H, d))  # the norm's weight is 1 + this
        bound = 1 / math.sqrt(d_model)
        with torch.no_grad():  # xlstm's initialisation
            if recurrent_init == "standard":
                self.R.uniform_(-bound, bound)
            if bias_init == "standard":
                self.bias.uniform_(-bound, bound)
            else:
                self.bias[1] = forget_bias(d, bias_init, layer_idx, n_layers)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, cell_state = (None, None) if state is None else state
        c, conv_state = self.conv(x.transpose(1, 2), conv_state)
        c = c.transpose(1, 2)  # (B, L, d_model)
        gates = torch.stack((self.igate(c), self.fgate(c), self.zgate(x), self.ogate(x)), dim=2)  # (B, L, 4, d_model)
        h, cell_state = slstm(gates.unflatten(-1, (self.n_heads, self.d_head)), self.R, self.bias, cell_state, True,
                              backend=self.backend)  # h (B, L, H, d)
        h = F.layer_norm(h, h.shape[-1:], eps=1e-5) * (1 + self.norm_weight)
        return h.flatten(-2), (conv_state, cell_state)

    def default_state(self, batch_size, device=None):
        w = self.R
        device, shape = device or w.device, (batch_size, self.n_heads, self.d_head)
        cell = (*(torch.zeros(shape, dtype=w.dtype, device=device) for _ in range(3)),
                torch.full(shape, -float("inf"), dtype=w.dtype, device=device))
        return self.conv.default_state(batch_size, device), cell
