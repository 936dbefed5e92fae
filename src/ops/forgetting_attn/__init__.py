"""Forgetting attention (FoX, Lin et al. 2025): causal softmax attention whose logits carry a
cumulative, data-dependent forget gate.

    forgetting_attn(q, k, v, g, scale=None, backend="auto") -> o
        o_i = sum_{j <= i} softmax_j(scale q_i . k_j + G_i - G_j) v_j,    G_t = g_1 + ... + g_t

q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) the log forget gates (<= 0: log sigmoid of a
projection in the layer); scale defaults to K^-1/2. fla's naive_forgetting_attn (one query head
per key head; no sliding window).
Backends: `torch` (blocked.py, torch's fused attention with the gate as two extra query/key
coordinates, every device), `triton` (fla's parallel kernel, gpu.py, CUDA only, usable where fla
imports and a smoke call agrees with torch). reference.py is the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import Dispatcher, lazy
from src.ops.forgetting_attn import blocked, gpu


def smoke_inputs(device):
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 37, 2, 16, generator=gen) for _ in range(3))
    g = F.logsigmoid(torch.randn(2, 37, 2, generator=gen) + 2)
    return [t.to(device) for t in (q, k, v, g)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path."""
    q, k, v, g = smoke_inputs(device)
    o, o_ref = fn(q, k, v, g), blocked.forgetting_attn(q, k, v, g)
    if not torch.allclose(o.float(), o_ref.float(), rtol=1e-3, atol=1e-3):
        raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, g).sum().backward()


DISPATCH = Dispatcher("forgetting_attn", {"torch": lazy("src.ops.forgetting_attn.blocked.forgetting_attn"),
                                          "triton": lazy("src.ops.forgetting_attn.gpu.forgetting_attn")},
                      {"cuda": ["triton", "torch"], "default": ["torch"]}, _smoke, {"triton": gpu.unsupported})


def forgetting_attn(q, k, v, g, scale=None, backend="auto"):
    """See the module docstring."""
    if g.shape != q.shape[:3]:
        raise ValueError(f"forgetting_attn: g has shape {tuple(g.shape)}; it must be (B, T, H) = {tuple(q.shape[:3])}")
    args = (q, k, v, g, scale)
    return DISPATCH.function(backend, q.device, args)(*args)
