"""mLSTM (`model=mlstm`): xLSTM's matrix-memory LSTM layer (Beck et al. 2024), as NX-AI/xlstm's
`mLSTMLayer` (xlstm/blocks/mlstm/layer.py) with its `mLSTMCell` (cell.py) on the mlstm op
(src/ops/mlstm), with xlstm's defaults.

    [u, z] = W_up x                                   (inner width E = proj_factor d_model, rounded
                                                       up to a multiple of proj_multiple_of)
    c      = silu(causal depthwise conv_{conv_size}(u) + b)
    q = Q c,  k = K c,  v = V u                       Q, K, V block-diagonal, blocks of qkv_blocksize
    i_t = W_i [q_t, k_t, v_t] + b_i,  f_t = W_f [q_t, k_t, v_t] + b_f      (one per head)
    h_t    = the mLSTM cell per head (d = E / n_heads; src/ops/mlstm):
             m_t = max(logsigmoid(f_t) + m_{t-1}, i_t)
             C_t = exp(logsigmoid(f_t) + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k_t v_t^T / sqrt(d)
             n_t = (the same with v_t = 1),   h_t = C_t^T q_t / (max(|n_t . q_t|, exp(-m_t)) + 1e-6)
    y      = W_down [(GroupNorm_heads(h) + skip * c) * silu(z)]

xlstm's initialisation: W_up, Q, K, V ~ N(0, 2 / (5 d_model)) ("small init"), W_down ~
N(0, (2 / n_layers / sqrt(d_model))^2) ("wang init"), W_i = W_f = 0, b_f = linspace(3, 6) over the
heads, b_i ~ N(0, 0.1^2), skip = 1, the norm's weight 1 + 0 (xlstm's residual weight), the conv as
torch's Conv1d. No biases in the projections (xlstm's bias=False). The norm is per head over d
(xlstm's MultiHeadLayerNorm: group_norm with one group a head, eps 1e-5, no bias).
State per sequence: the conv window (E (conv_size - 1)) and the cell's C, n, m (n_heads (d^2 + d + 1)).

Departures. The cell's state starts at m = -inf (default_state): then forward, forward continued
from a state and step are one computation, and equal xlstm's parallel form (its stabiliser from no
state is the row max of the log gate matrix, which is the loop's from m = -inf). xlstm's own step
starts at m = 0; it differs from its parallel forward by terms of order eps = 1e-6 in h. The
dropout after W_down is the backbone's (`model.dropout`), and xlstm's context_length (a mask
buffer of its parallel form) is not needed.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep, heads, split
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.mlstm import DISPATCH, mlstm
from src.utils.errors import ConfigError


class BlockDiagonal(nn.Module):
    """xlstm's LinearHeadwiseExpand without bias: x (..., nb b) -> (..., nb b), one b x b block each:
    out[..., h, o] = sum_d W[h, o, d] x[..., h, d]."""

    def __init__(self, width, block, std):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(width // block, block, block) * std)

    def forward(self, x):  # x (..., nb b)
        return torch.einsum("...hd,hod->...ho", x.unflatten(-1, (self.weight.shape[0], -1)), self.weight).flatten(-2)


def inner_width(d_model, proj_factor, multiple):
    """xlstm's up-projection width: proj_factor d_model rounded up to a multiple of `multiple`."""
    if proj_factor <= 0 or multiple < 1:
        raise ConfigError(f"model.layer.proj_factor={proj_factor}, model.layer.proj_multiple_of={multiple}: "
                          "both must be positive")
    return math.ceil(proj_factor * d_model / multiple) * multiple


class MLSTM(OneTokenStep):
    """xlstm's mLSTMLayer on the mlstm op (see the module docstring).

    math: C_t = f_t C_{t-1} + i_t k_t v_t^T, h_t = C_t^T q_t / max(|n_t . q_t|, 1) with exponential
          i_t, sigmoid f_t (stabilised by m_t)
    """

    def __init__(self, d_model, proj_factor=2.0, proj_multiple_of=64, n_heads=4, conv_size=4, qkv_blocksize=4,
                 backend="auto", n_layers=1):
        super().__init__()
        self.backend = DISPATCH.check(backend)
        self.inner = E = inner_width(d_model, proj_factor, proj_multiple_of)
        self.n_heads, self.d_head = n_heads, split(E, n_heads, "the inner width")
        if E % qkv_blocksize:
            raise ConfigError(f"model.layer.qkv_blocksize={qkv_blocksize} does not divide the inner width {E}; "
                              f"use a divisor of {E}")
        small = math.sqrt(2 / (5 * d_model))  # xlstm's small_init, with the embedding width
        self.proj_up = nn.Linear(d_model, 2 * E, bias=False)
        self.conv = ShortConv(E, conv_size, bias=True, activation="silu", backend=backend)
        self.q_proj, self.k_proj, self.v_proj = (BlockDiagonal(E, qkv_blocksize, small) for _ in range(3))
        self.igate, self.fgate = nn.Linear(3 * E, n_heads), nn.Linear(3 * E, n_heads)
        self.norm_weight = nn.Parameter(torch.zeros(n_heads, self.d_head))  # the norm's weight is 1 + this
        self.skip = nn.Parameter(torch.ones(E))
        self.proj_down = nn.Linear(E, d_model, bias=False)
        with torch.no_grad():  # xlstm's initialisation
            self.proj_up.weight.normal_(std=small)
            self.proj_down.weight.normal_(std=2 / n_layers / math.sqrt(d_model))
            self.igate.weight.zero_()
            self.fgate.weight.zero_()
            self.fgate.bias.copy_(torch.linspace(3.0, 6.0, n_heads))
            self.igate.bias.normal_(std=0.1)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, cell_state = (None, None) if state is None else state
        u, z = self.proj_up(x).chunk(2, dim=-1)  # (B, L, E) each
        c, conv_state = self.conv(u.transpose(1, 2), conv_state)
        c = c.transpose(1, 2)  # (B, L, E)
        q, k, v = self.q_proj(c), self.k_proj(c), self.v_proj(u)
        gates_in = torch.cat((q, k, v), dim=-1)  # (B, L, 3 E)
        h, cell_state = mlstm(heads(q, self.d_head), heads(k, self.d_head), heads(v, self.d_head),
                              self.igate(gates_in), self.fgate(gates_in), cell_state, True, backend=self.backend)
        h = F.layer_norm(h, h.shape[-1:], eps=1e-5) * (1 + self.norm_weight)  # (B, L, H, d)
        return self.proj_down((h.flatten(-2) + self.skip * c) * F.silu(z)), (conv_state, cell_state)

    def default_state(self, batch_size, device=None):
        w = self.proj_down.weight
        device, H, d = device or w.device, self.n_heads, self.d_head
        cell = (torch.zeros(batch_size, H, d, d, dtype=w.dtype, device=device),
                torch.zeros(batch_size, H, d, dtype=w.dtype, device=device),
                torch.full((batch_size, H), -float("inf"), dtype=w.dtype, device=device))
        return self.conv.default_state(batch_size, device), cell
