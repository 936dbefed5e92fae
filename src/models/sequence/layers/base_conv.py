"""BaseConv (zoology, `model=base_conv`): a gated convolution.

    y = conv(u) * (W u + b) + u                          u, y: (B, L, D)

conv is either
  - kernel_size = K > 0: a causal depthwise convolution of width K with bias (ShortConv), whose
    recurrent state is the last K-1 inputs, so the layer steps; or
  - kernel_size = -1: a long causal convolution over the whole input through src/ops/fftconv,
        conv(u) = h * u + u,
    with h (D, L) implicit (implicit_long_conv=true: a small MLP on positional features,
    implicit_filter.py) or explicit (a (D, l_max) parameter, N(0, 1) as in zoology). A long filter
    has no finite-state recurrence: the layer does not step.
use_act: SiLU on both factors of the product.

state_size(L): D (K - 1) for the short convolution, the inputs it keeps (zoology counts D K),
D L for the long one.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.implicit_filter import ImplicitFilter, check_length
from src.models.sequence.layers.short_conv import ShortConv
from src.ops.fftconv import fftconv
from src.utils.errors import ConfigError


class BaseConv(SequenceLayer):
    def __init__(self, d_model, l_max: int | None = None, kernel_size=3, implicit_long_conv=True, use_act=False,
                 d_emb=3,
                 d_hidden=16, backend="auto"):
        super().__init__()
        if not isinstance(kernel_size, int) or not (kernel_size > 0 or kernel_size == -1):
            raise ConfigError(f"model.layer.kernel_size={kernel_size!r} must be a positive width or -1 (a long filter)")
        self.d_model, self.kernel_size, self.use_act, self.l_max = d_model, kernel_size, use_act, l_max
        self.recurrent = kernel_size > 0  # a short filter steps; a long one does not
        self.projection = nn.Linear(d_model, d_model)
        if kernel_size > 0:
            self.conv = ShortConv(d_model, kernel_size, backend=backend)
        elif l_max is None:
            raise ConfigError("model.layer.kernel_size=-1 needs model.layer.l_max (null: the dataset's longest input)")
        elif implicit_long_conv:
            self.filter = ImplicitFilter(d_model, l_max, d_emb, d_hidden)
        else:
            self.filter_weight = nn.Parameter(torch.randn(d_model, l_max))

    def long_filter(self, L):  # -> (D, L)
        if hasattr(self, "filter"):
            return self.filter(L)
        check_length(L, self.l_max)
        return self.filter_weight[:, :L]

    def _gate(self, u, conv):  # (..., D) twice -> (..., D)
        proj = self.projection(u)
        if self.use_act:
            conv, proj = F.silu(conv), F.silu(proj)
        return conv * proj + u

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        u = x.transpose(1, 2)  # (B, D, L)
        if self.kernel_size > 0:
            conv, state = self.conv(u, state)
        else:
            self.refuse_state(state)
            conv = fftconv(u, self.long_filter(u.shape[-1])[None])[:, 0] + u  # (B, D, L)
        return self._gate(x, conv.transpose(1, 2)), state

    def why_no_step(self):
        return "a long filter (kernel_size=-1) is not a finite-state recurrence" if not self.recurrent else None

    def default_state(self, batch_size, device=None):
        self.check_step()
        return self.conv.default_state(batch_size, device)

    def step(self, x_t, state):  # x_t: (B, D), state (B, D, K-1)
        conv, state = self.conv.step(x_t, state)
        return self._gate(x_t, conv), state

    def state_size(self, L):
        return self.d_model * (self.kernel_size - 1 if self.kernel_size > 0 else L)
