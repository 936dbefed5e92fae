"""Titans' neural memory (Behrouz et al. 2024): a matrix memory trained at test time by gradient
descent with momentum and forgetting, the gradients of a chunk at the memory of its start.

    titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6,
           backend="auto") -> (z, state, offset)
        S_t = eta_t S_{t-1} - theta_t grad_M l(M0; k_t, v_t),  M_t = (1 - alpha_t) M_{t-1} + S_t,  z_t = q_t M_t
        l(M; k, v) = || LN_{w,b}(k M) - (v - k) ||^2,  log_decay = log(1 - alpha), log_momentum = log(eta)

q, k, v (B, T, H, D); theta, log_decay, log_momentum (B, T, H); w, b (H, D); state (M, S, M0)
(B, H, D, D) each (reference.py). Backends: `cpu` (titans.c, a C loop over each head's chunks,
calls from a chunk's start; first on CPU) and `torch` (chunked.py, every device); fla has no
Titans kernel (fla/ops/titans holds its naive loops only). reference.py is the oracle; fla's
titans_linear loop is one in the tests.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.titans import chunked, cpu


def _smoke(fn, device):
    """Forward and backward from a chunk's start agree with the torch path within 1e-4."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(1, 21, 2, 8, generator=gen).to(device) for _ in range(3))
    theta, alpha, eta = (0.5 * torch.rand(1, 21, 2, generator=gen).to(device) for _ in range(3))
    w, b = (torch.randn(2, 8, generator=gen).to(device) for _ in range(2))
    state = tuple(0.3 * torch.randn(1, 2, 8, 8, generator=gen).to(device) for _ in range(3))
    q.requires_grad_(True)
    (z, *_), (want, *_) = (f(q, k, v, theta, torch.log1p(-alpha), torch.log(0.5 + eta), w, b, state, 0, 4)
                           for f in (fn, chunked.titans))
    if not torch.allclose(z, want, rtol=1e-4, atol=1e-4):
        raise RuntimeError(f"its smoke call differs from the torch path by {(z - want).abs().max().item():.3g}")
    z.sum().backward()


DISPATCH = Dispatcher("titans", {"torch": lazy("src.ops.titans.chunked.titans"),
                                 "cpu": lazy("src.ops.titans.cpu.titans")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6, backend="auto"):
    """See the module docstring."""
    if k.shape != q.shape or v.shape != q.shape or any(x.shape != q.shape[:3] for x in (theta, log_decay, log_momentum)) \
            or not 0 <= offset < chunk_size:
        raise ValueError(f"titans: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, theta "
                         f"{tuple(theta.shape)}, log_decay {tuple(log_decay.shape)}, log_momentum "
                         f"{tuple(log_momentum.shape)}, offset {offset}: need q, k, v (B, T, H, D), the gates "
                         "(B, T, H), 0 <= offset < chunk_size")
    args = (q, k, v, theta, log_decay, log_momentum, w, b, state, offset, chunk_size, eps)
    return DISPATCH.function(backend, q.device, args)(*args)
