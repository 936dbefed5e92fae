"""The Chomsky hierarchy's memory-augmented RNNs (Deletang et al. 2023), `model=stack_rnn` and
`model=tape_rnn`: google-deepmind/neural_networks_chomsky_hierarchy's StackRNNCore
(models/stack_rnn.py; Joulin and Mikolov 2015) and TapeInputLengthJumpCore (models/tape_rnn.py),
each around its default inner core hk.VanillaRNN, with the readout of its models/rnn.py
(make_rnn), on the memory_rnn op (src/ops/memory_rnn).

    h_t = relu(W_x x_t + W_r M_{t-1}[0] + W_h h_{t-1} + b)      the RNN reads cell 0 with its input
    v_t = f(h_t),   p_t = softmax(W_a h_t + b_a)                the value to write, the actions
    M_t = the actions' mix of M_{t-1} (K cells of C floats):
        stack (push, pop, no-op):  M_t[i] = p_push M_{t-1}[i-1] + p_pop M_{t-1}[i+1] + p_noop M_{t-1}[i]
                                   (M_{t-1}[-1] = v_t pushed on top, M_{t-1}[K] = 0); f is one Linear
        tape (an action per shift s): M_t[i] = sum_s p_s W[(i - s) mod K], W = M_{t-1} with W[0] = v_t
                                   (write, then move); f an MLP (relu between its Linear layers)
    y_t = W_o relu(h_t) + b_o = W_o h_t + b_o                   make_rnn's readout, here to d_model

The controller is hk.VanillaRNN, whose nonlinearity is relu (not Elman's tanh), so the readout's
relu changes nothing.

The hierarchy's defaults: a stack of 30 cells of 8 (StackRNNCore's stack_size; the paper's cell
size), a tape of 40 cells of 8 with a write MLP of widths 64, 64 (experiments/example.py and
TapeRNNCore's mlp_layers_size), one stack or tape. Haiku's initialisation: every weight truncated
normal (2 sigma) with std 1/sqrt(fan_in) (the RNN's input weights W_x and W_r are one Linear over
[x_t; M[0]]), biases zero. State per sequence: h (d_hidden) and the memory (K C).

Departures. The hidden width is d_hidden (null: d_model; the paper's 256); the RNN's two biases
(input and hidden Linear) are one. The Tape-RNN's five actions move the head by 0, -1, +1, -n, +n,
n the input's length (TapeInputLengthJumpCore), which the original knows before its first step
and a causal backbone layer does not: here the jumps are `jump` cells, a fixed option; jump 0
(the default) keeps the three actions stay, left, right. `model.layer.jump=n` is the original's
core where every input has n tokens (its tape is circular, so n and n mod K jump alike).
n_stacks and n_tapes are 1 (the hierarchy's default; its softmax over the actions of all stacks
at once holds only for one).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep
from src.ops.memory_rnn import DISPATCH, STACK_ACTIONS, memory_rnn
from src.utils.errors import ConfigError


def haiku_linear(fan_in, fan_out, bias=True):
    """nn.Linear(fan_in, fan_out) initialised as hk.Linear: weight ~ truncated N(0, 1/fan_in) at 2 sigma, bias 0."""
    layer = nn.Linear(fan_in, fan_out, bias=bias)
    std = 1 / math.sqrt(fan_in)
    with torch.no_grad():
        nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
        if bias:
            layer.bias.zero_()
    return layer


def positive(key, value):
    if value < 1:
        raise ConfigError(f"model.layer.{key}={value} must be >= 1")
    return value


class MemoryRNN(OneTokenStep):
    """A vanilla RNN with a stack or a tape (see the module docstring); subclasses set `kind`."""

    kind = None

    def __init__(self, d_model, d_hidden, size, cell_size, write_widths, shifts, backend):
        super().__init__()
        self.backend = DISPATCH.check(backend)
        self.d_hidden = H = positive("d_hidden", d_hidden or d_model)
        self.size, self.cell_size, self.shifts = size, cell_size, tuple(shifts)
        W_in = haiku_linear(d_model + cell_size, H)  # hk.VanillaRNN's input_to_hidden over [x_t; M[0]]
        self.W_x = nn.Parameter(W_in.weight[:, :d_model].detach().clone())  # (H, d_model)
        self.W_r = nn.Parameter(W_in.weight[:, d_model:].detach().clone())  # (H, C)
        self.bias = nn.Parameter(torch.zeros(H))  # hk.VanillaRNN's two biases, summed
        self.W_h = haiku_linear(H, H, bias=False).weight  # (H, H): hidden_to_hidden
        widths = [H, *write_widths, cell_size]
        self.write = nn.ModuleList(haiku_linear(a, b) for a, b in zip(widths, widths[1:]))
        self.actions = haiku_linear(H, len(self.shifts) or STACK_ACTIONS)
        self.output = haiku_linear(H, d_model)  # make_rnn's readout Linear (after a relu, an identity on h >= 0)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        u = F.linear(x, self.W_x, self.bias)  # (B, L, H)
        h, state = memory_rnn(u, self.W_h, self.W_r, [(w.weight, w.bias) for w in self.write], self.actions.weight,
                              self.actions.bias, self.kind, self.size, self.shifts, state, True, backend=self.backend)
        return self.output(h), state

    def default_state(self, batch_size, device=None):
        w = self.W_h
        device = device or w.device
        return (torch.zeros(batch_size, self.d_hidden, dtype=w.dtype, device=device),
                torch.zeros(batch_size, self.size, self.cell_size, dtype=w.dtype, device=device))


class StackRNN(MemoryRNN):
    """The Stack-RNN (Joulin and Mikolov 2015), the hierarchy's StackRNNCore on hk.VanillaRNN.

    math: h_t = relu(W_x x_t + W_r S_{t-1}[0] + W_h h_{t-1} + b); S_t = p_push (W_p h_t + b_p pushed) + p_pop
          (S_{t-1} popped) + p_noop S_{t-1}, p = softmax(W_a h_t + b_a)
    original: Joulin and Mikolov 2015; Deletang et al. 2023 (StackRNNCore)
    """

    kind = "stack"

    def __init__(self, d_model, d_hidden: int | None = None, stack_size=30, stack_cell_size=8, backend="auto"):
        if stack_size < 2:
            raise ConfigError(f"model.layer.stack_size={stack_size} must be >= 2 (the top and the cell below it)")
        super().__init__(d_model, d_hidden, stack_size, positive("stack_cell_size", stack_cell_size), [], (), backend)


class TapeRNN(MemoryRNN):
    """The Tape-RNN, the hierarchy's TapeInputLengthJumpCore on hk.VanillaRNN, jumps of `jump` cells.

    math: h_t = relu(W_x x_t + W_r M_{t-1}[0] + W_h h_{t-1} + b); write MLP(h_t) under the head, then move:
          M_t = sum_s p_s roll(M, s), s in 0, -1, +1 (, -jump, +jump), p = softmax(W_a h_t + b_a)
    original: Deletang et al. 2023 (TapeInputLengthJumpCore)
    """

    kind = "tape"

    def __init__(self, d_model, d_hidden: int | None = None, memory_size=40, memory_cell_size=8,
                 mlp_layers_size: list[int] = [64, 64], jump=0, backend="auto"):  # noqa: B006 (an option's default)
        positive("memory_size", memory_size)
        for width in mlp_layers_size:
            positive("mlp_layers_size[]", width)
        if jump < 0:
            raise ConfigError(f"model.layer.jump={jump} must be >= 0 (0: no jump actions)")
        shifts = (0, -1, 1) + ((-jump, jump) if jump else ())
        super().__init__(d_model, d_hidden, memory_size, positive("memory_cell_size", memory_cell_size),
                         list(mlp_layers_size), shifts, backend)
