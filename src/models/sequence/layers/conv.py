"""LongConv: the convolution block around a long kernel (`model=dlr|dss|sgconv|s4|s4d`).

    u (B, L, H) -> k = kernel(min(L, max_kernel_length))                 (C, H, Lk)
    y[b, c, h, t] = sum_{s >= 0} k[c, h, s] u[b, h, t - s] + D[c, h] u[b, h, t]   (src/ops/fftconv)
    bidirectional: 2C kernels, the second C read backwards (lags -1 .. -Lk)
    out = Linear(C H -> H, postact)(dropout(activation(y)))

Kernels with a recurrent form (DLR, DSS, S4, S4D) also run one step at a time. Such a kernel
implements `no_recurrence() -> None | reason`, `default_state(B)`, `step(u_t (B, H), state) ->
(y_t (B, C, H), state)` and `state_size()`; the layer adds D u_t and the output as above. Only
causal, untruncated layers step.

state_size(L): the kernel's recurrent state where the layer steps; otherwise what a streaming
evaluation must keep, the last min(L, Lk) inputs (H floats each), or the whole input (H L) when
bidirectional.
"""

import torch
from einops import rearrange
from torch import nn

from src.models.sequence.layers.activation import Activation, OutputLinear
from src.models.sequence.kernel_cache import KernelCache
from src.ops.fftconv import fftconv
from src.utils import registry
from src.utils.errors import ConfigError


def kernel_class(kernel_type):
    """The kernel registered as `kernel_type`; ConfigError listing the valid ones, `attn` included
    (which backbone.build_layer turns into the attention layer before a LongConv is built)."""
    if kernel_type not in registry.kernel:
        valid = ", ".join(sorted([*registry.kernel, "attn"]))
        raise ConfigError(f"model.layer.kernel_type={kernel_type!r} is not registered; choose one of: {valid}")
    return registry.resolve(registry.kernel, kernel_type)


class LongConv(nn.Module):
    def __init__(self, d_model, d_state=64, kernel_type="dss", channels=1, bidirectional=False, activation="gelu",
                 postact=None, dropout=0.0, max_kernel_length=None, chunk_size=None, attn_ff=0, **kernel_args):
        super().__init__()
        if chunk_size is not None or attn_ff:
            raise ConfigError("model.layer.chunk_size / attn_ff apply to kernel_type=attn only")
        kernel = kernel_class(kernel_type)
        self.H, self.C, self.bidirectional = d_model, channels, bidirectional
        self.max_kernel_length = max_kernel_length
        registry.check_kwargs(kernel, kernel_args, f"model.layer.kernel_type={kernel_type} ({kernel.__name__})")
        self.kernel = kernel(d_model, d_state, channels=channels * (2 if bidirectional else 1), **kernel_args)
        self.kernel_cache = KernelCache()  # one kernel per optimizer step under gradient accumulation
        self.D = nn.Parameter(torch.randn(channels, d_model))
        self.activation = Activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = OutputLinear(channels * d_model, d_model, postact)

    def forward(self, x, state=None):  # x: (B, L, H)
        u = x.transpose(1, 2)  # (B, H, L)
        L = u.shape[-1]
        Lk = min(L, self.max_kernel_length) if self.max_kernel_length else L
        k = self.kernel_cache(self.kernel, Lk)  # (C or 2C, H, Lk)
        y = fftconv(u, k, self.bidirectional)  # (B, C, H, L)
        y = y + u.unsqueeze(1) * self.D.unsqueeze(-1)
        return self._output(rearrange(y, "b c h l -> b l (c h)")), None

    def _output(self, y):  # (..., C H) -> (..., H)
        return self.output_linear(self.dropout(self.activation(y)))

    def _recurrence(self):
        """The kernel, if this layer has an exact recurrent form; ConfigError saying why not."""
        why = None
        if not hasattr(self.kernel, "step"):
            why = f"the {type(self.kernel).__name__} kernel is not a finite-state recurrence"
        elif self.bidirectional:
            why = "a bidirectional layer reads the future"
        elif self.max_kernel_length:
            why = "max_kernel_length truncates the kernel"
        else:
            why = self.kernel.no_recurrence()
        if why:
            raise ConfigError(f"this layer has no step(): {why}")
        return self.kernel

    def default_state(self, batch_size, device=None):
        return self._recurrence().default_state(batch_size, device)

    def step(self, x_t, state):  # x_t: (B, H)
        y, state = self._recurrence().step(x_t, state)  # (B, C, H)
        y = y + self.D * x_t[:, None]
        return self._output(y.flatten(1)), state

    def state_size(self, L):
        try:
            return self._recurrence().state_size()
        except ConfigError:
            if self.bidirectional:
                return self.H * L
            return self.H * (min(L, self.max_kernel_length) if self.max_kernel_length else L)
