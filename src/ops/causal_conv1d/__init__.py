"""The depthwise causal convolution of Mamba's short conv: causal-conv1d's causal_conv1d_fn.

    causal_conv1d(x, weight, bias=None, activation=None, initial_states=None, backend="auto")
        y[c, t] = bias[c] + sum_k weight[c, k] x[c, t - (K-1) + k]   (then silu if asked)

x (batch, C, L), weight (C, K), bias (C,); initial_states (batch, C, K-1): the inputs before t = 0
(zeros if None). Backends: `torch` (chunked.py, K shifted multiply-adds, any device), `cuda`
(causal-conv1d's kernel, gpu.py, CUDA only, K in 2..4, no initial states). reference.py is the
oracle.
"""

import torch

from src.ops.causal_conv1d import chunked, gpu
from src.ops.dispatch import Dispatcher, agrees_with, lazy


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)
    x, weight, bias = (torch.randn(*shape, generator=g).to(device) for shape in ((2, 4, 40), (4, 4), (4,)))
    return (x, weight, bias), dict(activation="silu")


DISPATCH = Dispatcher("causal_conv1d", {"torch": lazy("src.ops.causal_conv1d.chunked.causal_conv1d"),
                                        "cuda": lazy("src.ops.causal_conv1d.gpu.causal_conv1d")},
                      {"cuda": ["cuda", "torch"], "cpu": ["torch"], "default": ["torch"]},
                      agrees_with(chunked.causal_conv1d, smoke_inputs), {"cuda": gpu.unsupported})


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None, backend="auto"):
    """See the module docstring. -> y (batch, C, L)."""
    args = (x, weight, bias, activation, initial_states)
    return DISPATCH.function(backend, x.device, args)(*args)
