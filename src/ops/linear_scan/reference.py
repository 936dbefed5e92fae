"""The linear scan, the obvious way: one Python step per time step (the oracle for every other path).

    h_t = a_t * h_{t-1} + b_t   over the last dim

Same arguments and semantics as src/ops/linear_scan's linear_scan; use float64 inputs for exact
checks. Autograd differentiates through the loop.
"""

import torch


def linear_scan(a, b, h0=None, reverse=False):
    """a, b: (..., L) real or complex; h0: (...) or None (zeros) -> h (..., L).
    reverse: h_t = a_t * h_{t+1} + b_t, from t = L-1 down to 0, h0 the state after the end."""
    a, b = torch.broadcast_tensors(a, b)
    h = torch.zeros_like(b[..., 0]) if h0 is None else h0
    steps = range(b.shape[-1] - 1, -1, -1) if reverse else range(b.shape[-1])
    out = [None] * b.shape[-1]
    for t in steps:
        h = a[..., t] * h + b[..., t]
        out[t] = h
    return torch.stack(out, dim=-1)
