"""ShortConv: the depthwise causal convolution of width K in front of Mamba's and qLSTM's scans.

    y[b, t, c] = act(bias[c] + sum_{k<K} w[c, k] x[b, t - (K-1) + k, c])      (x = state before t=0)

Its recurrent state is the last K-1 inputs, (B, C, K-1) (zeros at the start). The weights are an
nn.Conv1d's (C, 1, K), as in mamba-ssm, so checkpoints read the same.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.ops.causal_conv1d import DISPATCH, causal_conv1d


class ShortConv(nn.Module):
    def __init__(self, channels, width, bias=True, activation=None, backend="auto"):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, width, groups=channels, bias=bias)
        self.width, self.activation, self.backend = width, activation, DISPATCH.backend_of(backend)

    def _act(self, y):
        return F.silu(y) if self.activation == "silu" else y

    def forward(self, x, state=None):  # x: (B, C, L), state (B, C, K-1) or None -> (B, C, L), state
        K = self.width
        y = causal_conv1d(x, self.conv.weight[:, 0], self.conv.bias, self.activation, state, backend=self.backend)
        window = F.pad(x, (K - 1, 0)) if state is None else torch.cat((state, x), dim=-1)
        return y, window[..., window.shape[-1] - (K - 1):]

    def step(self, x_t, state):  # x_t: (B, C), state (B, C, K-1)
        window = torch.cat((state, x_t[..., None]), dim=-1)  # (B, C, K)
        y = (window * self.conv.weight[:, 0]).sum(-1)
        if self.conv.bias is not None:
            y = y + self.conv.bias
        return self._act(y), window[..., 1:]

    def default_state(self, batch_size, device=None):
        w = self.conv.weight
        return torch.zeros(batch_size, w.shape[0], self.width - 1, dtype=w.dtype, device=device or w.device)
