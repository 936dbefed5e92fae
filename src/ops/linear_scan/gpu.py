"""accelerated-scan's kernels behind the linear_scan signature (h_t = gates_t h_{t-1} + tokens_t),
imported only when called:

    cuda     accelerated_scan.warp.scan      (CUDA warp kernel)
    triton   accelerated_scan.scalar.scan    (accelerated-scan 0.3: Triton, any length)

Install: see requirements-gpu.txt.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import real_on_cuda


def _accelerated(a, b, h0, reverse, kind):
    if kind == "warp":
        from accelerated_scan.warp import scan
    else:
        from accelerated_scan.scalar import scan
    dtype = torch.promote_types(a.dtype, b.dtype)
    a, b = torch.broadcast_tensors(a.to(dtype), b.to(dtype))
    shape, L = b.shape, b.shape[-1]
    if reverse:
        a, b = a.flip(-1), b.flip(-1)
    if h0 is not None:  # fold the initial state into the first input
        b = torch.cat(((b[..., 0] + a[..., 0] * h0)[..., None], b[..., 1:]), dim=-1)
    n = max(32, 1 << (L - 1).bit_length())  # the kernels take power-of-two lengths >= 32
    a, b = F.pad(a, (0, n - L), value=1.0), F.pad(b, (0, n - L))  # padding after the end is inert
    rows = shape[-2] if len(shape) >= 2 else 1
    h = scan(a.reshape(-1, rows, n).contiguous(), b.reshape(-1, rows, n).contiguous())
    h = h.reshape(*shape[:-1], n)[..., :L]
    return h.flip(-1) if reverse else h


def warp_scan(a, b, h0=None, reverse=False):
    return _accelerated(a, b, h0, reverse, "warp")


def triton_scan(a, b, h0=None, reverse=False):
    return _accelerated(a, b, h0, reverse, "triton")


def unsupported(a, b, h0=None, reverse=False):
    """Why the kernels cannot take this call (None if they can)."""
    why = real_on_cuda(a, b, h0)
    if why is None and torch.promote_types(a.dtype, b.dtype) not in (torch.float32, torch.float16, torch.bfloat16):
        why = f"dtype {torch.promote_types(a.dtype, b.dtype)} (the kernels take float32, float16, bfloat16)"
    return why
