"""Hawk (`model=hawk`): the recurrent block of Hawk and Griffin (De et al. 2024), as
google-deepmind/recurrentgemma's `RecurrentBlock` (torch/modules.py), with its RG-LRU, a gated
diagonal linear recurrence (torch/layers.py).

    y_t   = gelu_tanh(W_y x_t + b_y)                                    (width W = expand d_model)
    u     = causal depthwise conv_{d_conv}(W_x x + b_x)                 (with bias)
    r_t   = sigmoid(A u_t + b_a),  i_t = sigmoid(X u_t + b_i)           A, X block-diagonal: n_heads blocks
    a_t   = exp(-c r_t softplus(lambda))                                (c = 8; a_t in (0, 1))
    h_t   = a_t * h_{t-1} + sqrt(1 - a_t^2) * (i_t * u_t)               (a linear scan, src/ops/linear_scan)
    out_t = W_o (h_t * y_t) + b_o

So a_t = a^(c r_t) with a = exp(-softplus(lambda)), drawn at initialisation uniformly in area on
the ring 0.9 <= a <= 0.999 (recurrentgemma's code); sqrt(1 - a_t^2) keeps h_t at the scale of its
inputs, and its gradient is bounded (by 1000 for sqrt itself), as in recurrentgemma. State per sequence: h (W) and
the conv window (W (d_conv - 1)).

Departure: recurrentgemma resets h at a document's first token and does not scale that token's
input (its multiplier is 1 there). Here every token is scaled by sqrt(1 - a_t^2) (recurrentgemma's
rule for every token after the first), so that forward from no state, forward continued from a
state, and `step` from `default_state` are one computation.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.matrix_memory import split, width
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.linear_scan import DISPATCH, linear_scan

C = 8.0  # the decay's exponent scale
MAX_SQRT_GRADIENT = 1000.0


class BoundedSqrt(torch.autograd.Function):
    """sqrt(x), its gradient 1 / sqrt(max(4 x, 1 / MAX_SQRT_GRADIENT^2)) (at most MAX_SQRT_GRADIENT)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return torch.sqrt(x)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad / torch.sqrt(torch.clamp(4.0 * x, min=1.0 / MAX_SQRT_GRADIENT**2))


class BlockDiagonal(nn.Module):
    """x (..., n_blocks b) -> (..., n_blocks b): one b x b matrix and bias per block."""

    def __init__(self, channels, n_blocks):
        super().__init__()
        self.n_blocks, b = n_blocks, split(channels, n_blocks, "the RG-LRU width")
        self.weight = nn.Parameter(torch.randn(n_blocks, b, b) / math.sqrt(b))
        self.bias = nn.Parameter(torch.zeros(n_blocks, b))

    def forward(self, x):
        blocks = x.unflatten(-1, (self.n_blocks, -1))
        return (torch.einsum("...hi,hij->...hj", blocks, self.weight) + self.bias).flatten(-2)


class Hawk(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, expand=1.0, n_heads=1, d_conv=4, backend="auto"):
        super().__init__()
        self.backend = DISPATCH.backend_of(backend)
        self.width = W = width(d_model, expand, "expand")
        self.d_conv = d_conv
        self.linear_y = nn.Linear(d_model, W)
        self.linear_x = nn.Linear(d_model, W)
        self.conv = ShortConv(W, d_conv, bias=True, backend=backend)
        self.input_gate = BlockDiagonal(W, n_heads)
        self.a_gate = BlockDiagonal(W, n_heads)
        self.a_param = nn.Parameter(torch.empty(W))
        self.linear_out = nn.Linear(W, d_model)
        with torch.no_grad():  # recurrentgemma's initialisation
            for linear, std in ((self.linear_y, d_model**-0.5), (self.linear_x, d_model**-0.5), (self.linear_out, W**-0.5)):
                linear.weight.normal_(std=std)
                linear.bias.zero_()
            self.conv.conv.weight.normal_(std=math.sqrt(0.01 / d_conv))
            self.conv.conv.bias.zero_()
            log_a = torch.empty(W).uniform_(0.9**2 + 1e-8, 0.999**2 + 1e-8).log() / 2  # log a, a uniform in area
            self.a_param.copy_(torch.log(torch.expm1(-log_a)))  # softplus(a_param) = -log a

    def _recurrence(self, u):  # u (..., W) -> the decay a and the input b of h_t = a_t h_{t-1} + b_t
        log_a = -C * torch.sigmoid(self.a_gate(u)) * F.softplus(self.a_param)
        b = BoundedSqrt.apply(1 - torch.exp(2 * log_a)) * torch.sigmoid(self.input_gate(u)) * u
        return torch.exp(log_a), b

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, h0 = (None, None) if state is None else state
        y = F.gelu(self.linear_y(x), approximate="tanh")
        u, conv_state = self.conv(self.linear_x(x).transpose(1, 2), conv_state)
        a, b = self._recurrence(u.transpose(1, 2))  # (B, L, W)
        h = linear_scan(a.transpose(1, 2), b.transpose(1, 2), h0, backend=self.backend).transpose(1, 2)
        return self.linear_out(h * y), (conv_state, h[:, -1])

    def step(self, x_t, state):  # x_t (B, d_model)
        conv_state, h = state
        y = F.gelu(self.linear_y(x_t), approximate="tanh")
        u, conv_state = self.conv.step(self.linear_x(x_t), conv_state)
        a, b = self._recurrence(u)
        h = a * h + b
        return self.linear_out(h * y), (conv_state, h)

    def default_state(self, batch_size, device=None):
        w = self.linear_out.weight
        return self.conv.default_state(batch_size, device), torch.zeros(batch_size, self.width, dtype=w.dtype,
                                                                        device=device or w.device)

    def state_size(self, L=None):
        """Floats per sequence: h (W) and the conv window (W (d_conv - 1))."""
        return self.width * self.d_conv
