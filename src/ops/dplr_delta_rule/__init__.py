"""The delta rule's diagonal-plus-low-rank form (RWKV-7).

    dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False,
                    backend="auto") -> (o, final_state)
        S_t = (diag(exp(g_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)

q, k, a, b (B, T, H, K); v (B, T, H, V); g (B, T, H, K) or (B, T, H); state (B, H, K, V); scale
defaults to K^-1/2. fla's dplr_recurrence (RWKV-7 runs it with a = -kk, b = kk * a).
Backends: `torch` (chunked.py, the UT form, every device), `triton` (fla's chunk kernel, gpu.py,
CUDA only, usable where fla imports and a smoke call agrees with torch). reference.py is the
oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import Dispatcher, lazy
from src.ops.dplr_delta_rule import chunked, gpu


def smoke_inputs(device):
    """A small call: unit keys, b = -a beta / 2 with beta in (0, 2), per-key decays, an initial state."""
    gen = torch.Generator().manual_seed(0)
    q, k, a = (F.normalize(torch.randn(2, 37, 2, 16, generator=gen), dim=-1) for _ in range(3))
    v = torch.randn(2, 37, 2, 8, generator=gen)
    beta = 2 * torch.rand(2, 37, 2, generator=gen)
    g = F.logsigmoid(torch.randn(2, 37, 2, 16, generator=gen))
    S0 = torch.randn(2, 2, 16, 8, generator=gen)
    return [t.to(device) for t in (q, k, v, a, -a * beta[..., None] / 2, g, S0)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path."""
    q, k, v, a, b, g, S0 = smoke_inputs(device)
    (o, S), (o_ref, S_ref) = (f(q, k, v, a, b, g, None, S0, True) for f in (fn, chunked.dplr_delta_rule))
    if not (torch.allclose(o, o_ref, rtol=1e-3, atol=1e-3) and torch.allclose(S, S_ref, rtol=1e-3, atol=1e-3)):
        raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, a, b, g)[0].sum().backward()


DISPATCH = Dispatcher("dplr_delta_rule", {"torch": lazy("src.ops.dplr_delta_rule.chunked.dplr_delta_rule"),
                                          "triton": lazy("src.ops.dplr_delta_rule.gpu.dplr_delta_rule")},
                      {"cuda": ["triton", "torch"], "default": ["torch"]}, _smoke, {"triton": gpu.unsupported})


def dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    args = (q, k, v, a, b, g, scale, initial_state, output_final_state)
    return DISPATCH.function(backend, q.device, args)(*args)
