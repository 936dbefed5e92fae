"""The depthwise causal convolution (Mamba's short conv) in torch, for every device."""

import torch
import torch.nn.functional as F


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None):
    """Depthwise causal convolution: x (batch, C, L), weight (C, K), bias (C,), initial_states
    (batch, C, K-1) (the inputs before t = 0; zeros if None) -> (batch, C, L). K shifted
    multiply-adds: torch's CPU depthwise conv1d backward is ~100x slower at these shapes."""
    K, L = weight.shape[1], x.shape[-1]
    window = F.pad(x, (K - 1, 0)) if initial_states is None else torch.cat((initial_states, x), dim=-1)
    y = weight[:, K - 1, None] * window[..., K - 1 :]
    for k in range(K - 1):
        y = y + weight[:, k, None] * window[..., k : k + L]
    if bias is not None:
        y = y + bias[:, None]
    return F.silu(y) if activation in ("silu", "swish") else y
