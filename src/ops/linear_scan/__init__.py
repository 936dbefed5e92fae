"""The diagonal linear scan: h_t = a_t h_{t-1} + b_t over the last dim (LRU, qLSTM).

    linear_scan(a, b, h0=None, reverse=False, backend="auto")

a, b broadcast, real or complex; h0 (...) or None (zeros); reverse runs from the end, h0 then the
state after the end. Backends: `torch` (chunked.py, blocked, any device), `cpu` (a compiled C
loop, cpu.py, forward and backward, CPU tensors; first on CPU), `cuda`/`triton`
(accelerated-scan's warp and Triton kernels, gpu.py, CUDA only, usable where they import and a
smoke call agrees with torch). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, agrees_with, lazy
from src.ops.linear_scan import chunked, cpu, gpu


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)
    return (torch.rand(2, 3, 40, generator=g).to(device), torch.randn(2, 3, 40, generator=g).to(device)), {}


DISPATCH = Dispatcher("linear_scan", {"torch": lazy("src.ops.linear_scan.chunked.linear_scan"),
                                      "cuda": lazy("src.ops.linear_scan.gpu.warp_scan"),
                                      "triton": lazy("src.ops.linear_scan.gpu.triton_scan"),
                                      "cpu": lazy("src.ops.linear_scan.cpu.linear_scan")},
                      {"cuda": ["cuda", "triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]},
                      agrees_with(chunked.linear_scan, smoke_inputs),
                      {"cuda": gpu.unsupported, "triton": gpu.unsupported, "cpu": cpu.unsupported})


def linear_scan(a, b, h0=None, reverse=False, backend="auto"):
    """h_t = a_t * h_{t-1} + b_t over the last dim (a, b broadcast, real or complex); h0: (...)
    or None (zeros); reverse runs from the end. -> h, of the broadcast shape."""
    args = (a, b, h0, reverse)
    return DISPATCH.function(backend, b.device, args)(*args)
