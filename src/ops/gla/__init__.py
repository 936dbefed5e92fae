"""Gated linear attention: a matrix state decayed by a gate (GLA, RetNet, RWKV-6, HGRN-2, Based).

    gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False,
        negative=None, backend="auto") -> (o, final_state)

q, k (B, T, H, K); v (B, T, H, V); state (B, H, K, V); scale defaults to K^-1/2; g the log decay,
(B, T, H, K) per key, (B, T, H) per head, or None (no decay); u (H, K) RWKV-6's bonus:
    S_t = diag(exp(g_t)) S_{t-1} + k_t v_t^T,    o_t = S_t^T (scale q_t)
    with u:  o_t = (S_{t-1} + diag(u) k_t v_t^T)^T (scale q_t)
as fla's naive_recurrent_gla / naive_recurrent_simple_gla / naive_recurrent_rwkv6.
Signed decays: `negative`, a bool tensor of g's shape, makes the decay -exp(g_t) where it is true
(eigenvalues in (-1, 0): Grazzi et al. 2024, state tracking); the gradient reaches the decay's
magnitude through g (d/dg of +-exp(g) is the decay itself). A layer with a signed decay a passes
g = log|a| and negative = a < 0.
Backends: `torch` (chunked.py, every device), `cpu` (a compiled C loop, cpu.py, forward and
backward, CPU tensors; first on CPU), `triton` (fla's chunk kernels, gpu.py, CUDA only, usable
where fla imports and a smoke call agrees with torch; log decays only, so `auto` takes `torch`
on CUDA for signed decays). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.gla import chunked, cpu, gpu


def smoke_inputs(device):
    """A small call with every argument: per-key decay, bonus, initial state."""
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(2, 37, 2, 16, generator=gen) for _ in range(2))
    v = torch.randn(2, 37, 2, 8, generator=gen)
    g = torch.nn.functional.logsigmoid(torch.randn(2, 37, 2, 16, generator=gen))
    S0 = torch.randn(2, 2, 16, 8, generator=gen)
    return [t.to(device) for t in (q, k, v, g, S0)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path (per-key decay, with and without u)."""
    q, k, v, g, S0 = smoke_inputs(device)
    for u in (None, torch.randn(2, 16, generator=torch.Generator().manual_seed(1)).to(device)):
        (o, S), (o_ref, S_ref) = (f(q, k, v, g, u, None, S0, True) for f in (fn, chunked.gla))
        if not (torch.allclose(o, o_ref, rtol=1e-3, atol=1e-3) and torch.allclose(S, S_ref, rtol=1e-3, atol=1e-3)):
            raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, g)[0].sum().backward()


DISPATCH = Dispatcher("gla", {"torch": lazy("src.ops.gla.chunked.gla"), "cpu": lazy("src.ops.gla.cpu.gla"),
                              "triton": lazy("src.ops.gla.gpu.gla")},
                      {"cuda": ["triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke,
                      {"triton": gpu.unsupported, "cpu": cpu.unsupported})


def gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None,
        backend="auto"):
    """See the module docstring."""
    if g is not None and g.shape not in (q.shape, q.shape[:3]):
        raise ValueError(f"gla: g has shape {tuple(g.shape)}; it must be (B, T, H, K) = {tuple(q.shape)} "
                         f"or (B, T, H) = {tuple(q.shape[:3])}")
    if negative is not None and (g is None or negative.shape != g.shape or negative.dtype != torch.bool):
        raise ValueError(f"gla: negative must be a bool tensor of g's shape {None if g is None else tuple(g.shape)}; "
                         f"got {negative.dtype} {tuple(negative.shape)}")
    args = (q, k, v, g, u, scale, initial_state, output_final_state, negative)
    return DISPATCH.function(backend, q.device, args)(*args)
