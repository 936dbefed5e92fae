"""PaTH attention (Yang et al. 2025): causal softmax attention whose positions are accumulated
Householder transformations of the keys, data-dependent, instead of RoPE's fixed rotations.

    path_attn(q, k, v, w, beta, g=None, scale=None, backend="auto") -> o
        H_s = I - beta_s w_s w_s^T,   logit_ij = q_i^T H_i H_{i-1} ... H_{j+1} k_j   (q_i . k_i at j = i)
        o_i = sum_{j <= i} softmax_j(scale (logit_ij + G_i - G_j)) v_j,   G_t = g_1 + ... + g_t (0 if g is None)

q, k, w (B, T, H, K), w unit (the layer l2-normalises it); v (B, T, H, V); beta (B, T, H) in (0, 2)
(beta > 1: a reflection with a negative eigenvalue); g (B, T, H) optional log forget gates
(PaTH-FoX), scaled with the logits as in fla; scale defaults to K^-1/2. fla's naive_path_attn
(one query head per key head).
Backends: `torch` (chunked.py, the UT form of the products per chunk and a dense softmax, every
device), `triton` (fla's parallel kernel, gpu.py, CUDA only, usable where fla imports and a smoke
call agrees with torch). reference.py is the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import Dispatcher, lazy
from src.ops.path_attn import chunked, gpu


def smoke_inputs(device):
    """A small call at fla's head width 16, with the forget gate."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 37, 2, 16, generator=gen) for _ in range(3))
    w = F.normalize(torch.randn(2, 37, 2, 16, generator=gen), dim=-1)
    beta = 2 * torch.rand(2, 37, 2, generator=gen)
    g = F.logsigmoid(torch.randn(2, 37, 2, generator=gen) + 2)
    return [t.to(device) for t in (q, k, v, w, beta, g)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path, with and without the gate."""
    q, k, v, w, beta, g = smoke_inputs(device)
    for gate in (None, g):
        o, o_ref = fn(q, k, v, w, beta, gate), chunked.path_attn(q, k, v, w, beta, gate)
        if not torch.allclose(o.float(), o_ref.float(), rtol=1e-3, atol=1e-3):
            raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, w, beta, g).sum().backward()


DISPATCH = Dispatcher("path_attn", {"torch": lazy("src.ops.path_attn.chunked.path_attn"),
                                    "triton": lazy("src.ops.path_attn.gpu.path_attn")},
                      {"cuda": ["triton", "torch"], "default": ["torch"]}, _smoke, {"triton": gpu.unsupported})


def path_attn(q, k, v, w, beta, g=None, scale=None, backend="auto"):
    """See the module docstring."""
    if w.shape != k.shape or beta.shape != q.shape[:3] or (g is not None and g.shape != q.shape[:3]):
        gate = None if g is None else tuple(g.shape)
        raise ValueError(f"path_attn: w {tuple(w.shape)} must have k's shape {tuple(k.shape)}, beta "
                         f"{tuple(beta.shape)} and g {gate} (B, T, H) = {tuple(q.shape[:3])}")
    args = (q, k, v, w, beta, g, scale)
    return DISPATCH.function(backend, q.device, args)(*args)
