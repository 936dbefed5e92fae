"""LongConv: the convolution block around a long kernel (`model=dlr|dss|sgconv`).

    u (B, L, H) -> k = kernel(min(L, max_kernel_length))                 (C, H, Lk)
    y[b, c, h, t] = sum_{s >= 0} k[c, h, s] u[b, h, t - s] + D[c, h] u[b, h, t]   (src/ops/fftconv)
    bidirectional: 2C kernels, the second C read backwards (lags -1 .. -Lk)
    out = Linear(C H -> H, postact)(dropout(activation(y)))

Kernels with `vandermonde_params` (DLR, DSS) also run as a recurrence, one step at a time:
    s_t = exp(x) s_{t-1} + u_t   (B, C, H, N),   y_t = real(sum_n W s_t) + D u_t
for kernel_to_real real/imag/sum (linear in K), causal, untruncated kernels.
"""

import torch
from einops import rearrange
from torch import nn

from src.models.sequence.layers.activation import Activation, OutputLinear
from src.models.sequence.kernel_cache import KernelCache
from src.models.sequence.layers.dlr import VandermondeKernel, to_real
from src.ops.fftconv import fftconv
from src.utils import registry
from src.utils.errors import ConfigError


class LongConv(nn.Module):
    def __init__(self, d_model, d_state=64, kernel_type="dss", channels=1, bidirectional=False, activation="gelu",
                 postact=None, dropout=0.0, max_kernel_length=None, chunk_size=None, attn_ff=0, **kernel_args):
        super().__init__()
        if chunk_size is not None or attn_ff:
            raise ConfigError("model.layer.chunk_size / attn_ff apply to kernel_type=attn only")
        kernel = registry.resolve(registry.kernel, kernel_type, "model.layer.kernel_type")
        self.H, self.C, self.bidirectional = d_model, channels, bidirectional
        self.max_kernel_length = max_kernel_length
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
        """(W (C, H, N), x (N,) or (H, N)) if this layer has an exact recurrent form."""
        why = None
        if not isinstance(self.kernel, VandermondeKernel):
            why = f"the {type(self.kernel).__name__} kernel is not a finite-state recurrence"
        elif self.bidirectional:
            why = "a bidirectional layer reads the future"
        elif self.max_kernel_length:
            why = "max_kernel_length truncates the kernel"
        elif self.kernel.kernel_to_real not in ("real", "imag", "sum"):
            why = f"kernel_to_real={self.kernel.kernel_to_real} is not linear in the kernel"
        if why:
            raise ConfigError(f"this layer has no step(): {why}")
        return self.kernel.vandermonde_params()

    def default_state(self, batch_size, device=None):
        W, _ = self._recurrence()
        return torch.zeros(batch_size, *W.shape, dtype=W.dtype, device=device)  # (B, C, H, N)

    def step(self, x_t, state):  # x_t: (B, H), state: (B, C, H, N)
        W, x = self._recurrence()
        state = torch.exp(x) * state + x_t[:, None, :, None]
        y = to_real((W * state).sum(-1), self.kernel.kernel_to_real) + self.D * x_t[:, None]  # (B, C, H)
        return self._output(y.flatten(1)), state
