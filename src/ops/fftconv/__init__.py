"""Long convolutions y = k * u by FFT, causal or bidirectional.

    fftconv(u, k, bidirectional=False, backend="auto")

u (B, H, L) real, k (C, H, Lk) real (or (2C, H, Lk): causal then anticausal kernels when
bidirectional) -> y (B, C, H, L), differentiable in both. One backend, `torch` (blocked.py: FFT
size a 2^a 3^b 5^c >= L + Lk, blocked over features, custom backward that saves only u and the
kernel), behind the same dispatcher as every op, so that `backend=` is checked, chosen and
logged as for the others and a device kernel joins by one loader. reference.py is the direct
sum it is tested against.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)
    return [torch.randn(*shape, generator=g).to(device) for shape in ((2, 3, 9), (2, 3, 5))]


def _smoke(fn, device):
    u, k = (x.requires_grad_() for x in smoke_inputs(device))
    fn(u, k, True).sum().backward()


DISPATCH = Dispatcher("fftconv", {"torch": lazy("src.ops.fftconv.blocked.fftconv")}, {"default": ["torch"]}, _smoke)


def fftconv(u, k, bidirectional=False, backend="auto"):
    """See the module docstring."""
    return DISPATCH.function(backend, u.device)(u, k, bidirectional)
