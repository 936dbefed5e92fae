"""MesaNet (von Oswald et al. 2025, "MesaNet: Sequence Modeling by Locally Optimal Test-Time
Training"): linear attention whose query is first passed through the inverse of the keys' decayed
covariance, the minimiser of a ridge-regularised least-squares fit of v from k.

    mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=30,
             backend="auto") -> (o, (H_kk, H_kv) or None)

q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) the log decay; beta (B, T, H); lamb (H, K) > 0; per head
    H_t = exp(g_t) H_{t-1} + beta_t k_t k_t^T,      G_t = exp(g_t) G_{t-1} + beta_t k_t v_t^T
    o_t = G_t^T (H_t + diag(lamb))^-1 q_t
states H_kk (B, H, K, K), H_kv (B, H, K, V). The solve: cg_steps=n, fla's n conjugate-gradient
steps from 0 and its implicit gradient (cg.py; fla's default n is 30); cg_steps=None, exact.
fla's naive_mesa_net_exact / naive_mesa_net_CG / chunk_mesa_net, no scale, nothing normalised.
Backends: `cpu` (mesa_net.c, a C loop over tokens that forms each state and solves on it; first on
CPU), `torch` (chunked.py, every device), `triton` (fla's chunk kernel, gpu.py, CUDA only, CG only,
float16 q and k inside). reference.py is the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import Dispatcher, lazy
from src.ops.mesa_net import chunked, cpu, gpu


def smoke_inputs(device):
    """A small call: unit q, k, decays, beta in (0, 1), lamb >= 0.25, initial states."""
    gen = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(2, 37, 2, 16, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(2, 37, 2, 16, generator=gen)
    g = F.logsigmoid(torch.randn(2, 37, 2, generator=gen) + 3)
    beta = torch.rand(2, 37, 2, generator=gen)
    lamb = 0.25 + torch.rand(2, 16, generator=gen)
    S = torch.randn(2, 2, 16, 16, generator=gen)
    Hkk0 = S @ S.transpose(-1, -2) / 16  # positive semi-definite
    Hkv0 = torch.randn(2, 2, 16, 16, generator=gen)
    return [t.to(device) for t in (q, k, v, g, beta, lamb, Hkk0, Hkv0)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path within 2e-2 (gpu.py: float16 q, k)."""
    q, k, v, g, beta, lamb, Hkk0, Hkv0 = smoke_inputs(device)
    (o, S), (o_ref, S_ref) = (f(q, k, v, g, beta, lamb, (Hkk0, Hkv0), True, 30) for f in (fn, chunked.mesa_net))
    for got, want in ((o, o_ref), *zip(S, S_ref)):
        if not torch.allclose(got.float(), want, rtol=2e-2, atol=2e-2):
            raise RuntimeError(f"its smoke call differs from the torch path by {(got - want).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, g, beta, lamb, None, False, 30)[0].sum().backward()


DISPATCH = Dispatcher("mesa_net", {"torch": lazy("src.ops.mesa_net.chunked.mesa_net"),
                                   "cpu": lazy("src.ops.mesa_net.cpu.mesa_net"),
                                   "triton": lazy("src.ops.mesa_net.gpu.mesa_net")},
                      {"cuda": ["triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke,
                      {"triton": gpu.unsupported, "cpu": cpu.unsupported})


def mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=30, backend="auto"):
    """See the module docstring."""
    B, T, H, K = q.shape
    if k.shape != q.shape or v.shape[:3] != (B, T, H) or g.shape != (B, T, H) or beta.shape != (B, T, H) \
            or lamb.shape != (H, K):
        raise ValueError(f"mesa_net: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}, "
                         f"beta {tuple(beta.shape)}, lamb {tuple(lamb.shape)}: need q, k (B, T, H, K), v (B, T, H, V), "
                         "g, beta (B, T, H), lamb (H, K)")
    if cg_steps is not None and cg_steps < 0:
        raise ValueError(f"mesa_net: cg_steps={cg_steps} is not a number of steps (>= 0) or None (exact)")
    args = (q, k, v, g, beta, lamb, initial_state, output_final_state, cg_steps)
    return DISPATCH.function(backend, q.device, args)(*args)
