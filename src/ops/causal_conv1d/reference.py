"""The depthwise causal convolution, the obvious way: one output per step (the oracle).

Same arguments and semantics as src/ops/causal_conv1d's causal_conv1d. Autograd differentiates
through it.
"""

import torch
import torch.nn.functional as F


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None):
    """Depthwise causal convolution, one output per step: x (batch, C, L), weight (C, K), bias (C,)
    -> y[c, t] = bias[c] + sum_k weight[c, k] x[c, t - (K-1) + k], with x before t = 0 read from
    initial_states (batch, C, K-1) (zeros if None); activation None or "silu"."""
    K = weight.shape[1]
    xp = F.pad(x, (K - 1, 0)) if initial_states is None else torch.cat((initial_states, x), dim=-1)
    ys = [(weight * xp[..., t : t + K]).sum(-1) for t in range(x.shape[-1])]
    y = torch.stack(ys, dim=-1)
    if bias is not None:
        y = y + bias[:, None]
    return F.silu(y) if activation in ("silu", "swish") else y
