"""The delta rule (DeltaNet, Gated DeltaNet) and its diagonal-plus-low-rank form (RWKV-7).

    delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
               backend="auto") -> (o, final_state)
        S <- exp(g_t) S,  u_t = beta_t (v_t - S^T k_t),  S <- S + k_t u_t^T,  o_t = S^T (scale q_t)
        beta (B, T, H) in (0, 2); g (B, T, H) or None. fla's delta_rule_recurrence and
        naive_recurrent_gated_delta_rule. Nothing is normalised inside (layers l2-normalise q, k).
    dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False,
                    backend="auto") -> (o, final_state)
        S_t = (diag(exp(g_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,  o_t = S_t^T (scale q_t)
        a, b (B, T, H, K); g (B, T, H, K) or (B, T, H). fla's dplr_recurrence.

q, k (B, T, H, K); v (B, T, H, V); state (B, H, K, V); scale defaults to K^-1/2.
Backends: `torch` (chunked.py, the UT form, every device), `cpu` (delta_rule only: a compiled C
loop, cpu.py, forward and backward; first on CPU), `triton` (fla's chunk
kernels, gpu.py, CUDA only, usable where fla imports and a smoke call agrees with torch).
reference.py is the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.delta_rule import chunked, cpu, gpu
from src.ops.dispatch import Dispatcher, lazy


def smoke_inputs(device):
    """A small call: unit keys, beta in (0, 2), per-head and per-key decays, an initial state."""
    gen = torch.Generator().manual_seed(0)
    q, k, a = (F.normalize(torch.randn(2, 37, 2, 16, generator=gen), dim=-1) for _ in range(3))
    v = torch.randn(2, 37, 2, 8, generator=gen)
    beta = 2 * torch.rand(2, 37, 2, generator=gen)
    g = F.logsigmoid(torch.randn(2, 37, 2, generator=gen))
    gk = F.logsigmoid(torch.randn(2, 37, 2, 16, generator=gen))
    S0 = torch.randn(2, 2, 16, 8, generator=gen)
    return [t.to(device) for t in (q, k, v, beta, g, a, gk, S0)]


def _agree(got, want):
    (o, S), (o_ref, S_ref) = got, want
    if not (torch.allclose(o, o_ref, rtol=1e-3, atol=1e-3) and torch.allclose(S, S_ref, rtol=1e-3, atol=1e-3)):
        raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")


def _smoke_delta(fn, device):
    q, k, v, beta, g, _, _, S0 = smoke_inputs(device)
    for gate in (None, g):
        _agree(fn(q, k, v, beta, gate, None, S0, True), chunked.delta_rule(q, k, v, beta, gate, None, S0, True))
    q.requires_grad_(True)
    fn(q, k, v, beta, g)[0].sum().backward()


def _smoke_dplr(fn, device):
    q, k, v, beta, _, a, gk, S0 = smoke_inputs(device)
    b = -a * beta[..., None] / 2
    _agree(fn(q, k, v, a, b, gk, None, S0, True), chunked.dplr_delta_rule(q, k, v, a, b, gk, None, S0, True))
    q.requires_grad_(True)
    fn(q, k, v, a, b, gk)[0].sum().backward()


PREFERENCE = {"cuda": ["triton", "torch"], "default": ["torch"]}
DISPATCH = {
    "delta_rule": Dispatcher("delta_rule", {"torch": lazy("src.ops.delta_rule.chunked.delta_rule"),
                                            "cpu": lazy("src.ops.delta_rule.cpu.delta_rule"),
                                            "triton": lazy("src.ops.delta_rule.gpu.delta_rule")},
                             {**PREFERENCE, "cpu": ["cpu", "torch"]}, _smoke_delta,
                             {"triton": gpu.unsupported, "cpu": cpu.unsupported}),
    "dplr_delta_rule": Dispatcher("dplr_delta_rule", {"torch": lazy("src.ops.delta_rule.chunked.dplr_delta_rule"),
                                                      "triton": lazy("src.ops.delta_rule.gpu.dplr_delta_rule")},
                                  PREFERENCE, _smoke_dplr, {"triton": gpu.unsupported}),
}


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    args = (q, k, v, beta, g, scale, initial_state, output_final_state)
    return DISPATCH["delta_rule"].function(backend, q.device, args)(*args)


def dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    args = (q, k, v, a, b, g, scale, initial_state, output_final_state)
    return DISPATCH["dplr_delta_rule"].function(backend, q.device, args)(*args)
