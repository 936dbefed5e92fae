"""LongConv: the convolution block around a long kernel, the base of `dlr`, `dss`, `s4`, `s4d`
and `sgconv` (each a subclass naming its `Kernel`: dlr.py, s4.py, sgconv.py).

    u (B, L, H) -> k = kernel(min(L, max_kernel_length))                 (C, H, Lk)
    y[b, c, h, t] = sum_{s >= 0} k[c, h, s] u[b, h, t - s] + D[c, h] u[b, h, t]   (src/ops/fftconv)
    bidirectional: 2C kernels, the second C read backwards (lags -1 .. -Lk)
    out = Linear(C H -> H, postact)(dropout(activation(y)))

A kernel is built as Kernel(H, d_state, channels, **its options); the layer's options are its
own (channels .. max_kernel_length) and the kernel's. Kernels with a recurrent form (DLR, DSS,
S4, S4D) also run one step at a time: such a kernel implements `no_recurrence() -> None |
reason`, `default_state(B)`, `step(u_t (B, H), state) -> (y_t (B, C, H), state)` and
`state_size()`; the layer adds D u_t and the output as above. Only causal, untruncated layers
step. forward does not continue from a state (it refuses one).

state_size(L): the kernel's recurrent state where the layer steps; otherwise what a streaming
evaluation must keep, the last min(L, Lk) inputs (H floats each), or the whole input (H L) when
bidirectional.
"""

import inspect

import torch
from einops import rearrange
from torch import nn

from src.models.sequence.kernel_cache import KernelCache
from src.models.sequence.layers.activation import Activation, OutputLinear
from src.models.sequence.layers.base import SequenceLayer
from src.ops.fftconv import fftconv


class LongConv(SequenceLayer):
    Kernel = None  # a subclass's kernel class: Kernel(H, d_state, channels, **options), a module (L) -> (C, H, L)

    @classmethod
    def option_parameters(cls):
        kernel = list(inspect.signature(cls.Kernel).parameters.values())[1:]  # after H
        block = super().option_parameters()
        return {**{p.name: p for p in kernel if p.name != "channels"}, **block}

    def __init__(self, d_model, channels=1, bidirectional=False, activation="gelu", postact: str | None = None,
                 dropout=0.0,
                 max_kernel_length: int | None = None, **kernel_options):
        super().__init__()
        self.H, self.C, self.bidirectional = d_model, channels, bidirectional
        self.causal = not bidirectional
        self.max_kernel_length = max_kernel_length
        self.kernel = self.Kernel(d_model, channels=channels * (2 if bidirectional else 1), **kernel_options)
        self.kernel_cache = KernelCache()  # one kernel per optimizer step under gradient accumulation
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.activation = Activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = OutputLinear(channels * d_model, d_model, postact)
        self.recurrent = self.Kernel.recurrent  # the kernel has default_state and step

    def why_no_half_weights(self):
        return getattr(self.kernel, "no_half_weights", None)

    def forward(self, x, state=None, positions=None):  # x: (B, L, H)
        self.refuse_state(state)
        u = x.transpose(1, 2)  # (B, H, L)
        L = u.shape[-1]
        Lk = min(L, self.max_kernel_length) if self.max_kernel_length else L
        k = self.kernel_cache(self.kernel, Lk)  # (C or 2C, H, Lk)
        y = fftconv(u, k, self.bidirectional)  # (B, C, H, L)
        y = y + u.unsqueeze(1) * self.D.unsqueeze(-1)
        return self._output(rearrange(y, "b c h l -> b l (c h)")), None

    def _output(self, y):  # (..., C H) -> (..., H)
        return self.output_linear(self.dropout(self.activation(y)))

    def why_no_step(self):
        if not self.recurrent:
            return f"the {type(self.kernel).__name__} kernel is not a finite-state recurrence"
        if self.bidirectional:
            return "a bidirectional layer reads the future"
        if self.max_kernel_length:
            return "max_kernel_length truncates the kernel"
        return self.kernel.no_recurrence()

    def default_state(self, batch_size, device=None):
        self.check_step()
        return self.kernel.default_state(batch_size, device)

    def step(self, x_t, state):  # x_t: (B, H)
        y, state = self.kernel.step(x_t, state)  # (B, C, H)
        y = y + self.D * x_t[:, None]
        return self._output(y.flatten(1)), state

    def state_size(self, L):
        if self.why_no_step() is None:
            return self.kernel.state_size()
        if self.bidirectional:
            return self.H * L
        return self.H * (min(L, self.max_kernel_length) if self.max_kernel_length else L)
