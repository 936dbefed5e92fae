"""The delta rule (DeltaNet, Gated DeltaNet, Kimi Delta Attention) and its product form (Gated
DeltaProduct).

    delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
               backend="auto") -> (o, final_state)
        S <- diag(exp(g_t)) S,  u_t = beta_t (v_t - S^T k_t),  S <- S + k_t u_t^T,  o_t = S^T (scale q_t)
    delta_product(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
                  num_householder=2, backend="auto") -> (o, final_state)
        S <- diag(exp(g_t)) S, then n delta steps (k_{t,j}, v_{t,j}, beta_{t,j}), o_t = S^T (scale q_t)

q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H), in (0, 2); g (B, T, H) (a decay per head),
(B, T, H, K) (per key, KDA) or None; state (B, H, K, V); scale defaults to K^-1/2. fla's
delta_rule_recurrence, naive_recurrent_gated_delta_rule and naive_recurrent_kda. Nothing is
normalised inside (layers l2-normalise q, k). delta_product's k, v, beta have T n positions
(token t's steps at t n .. t n + n - 1, fla's layout). The C loop takes them natively (two passes
over the state a token); the other backends run delta_rule on the interleaved sequence of T n
steps: the decay at each token's first step, its query at its last (zero elsewhere), its outputs
every n-th, as fla's fused-recurrent GatedDeltaProduct does.
Its diagonal-plus-low-rank form (RWKV-7) is src/ops/dplr_delta_rule.
Backends: `torch` (chunked.py, the UT form, every device), `cpu` (a compiled C loop, cpu.py,
forward and backward, CPU tensors; first on CPU), `triton` (fla's chunk kernels, gpu.py, CUDA
only, usable where fla imports and a smoke call agrees with torch). reference.py is the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.delta_rule import chunked, cpu, gpu
from src.ops.dispatch import Dispatcher, lazy


def smoke_inputs(device):
    """A small call: unit keys, beta in (0, 2), per-key decays, an initial state."""
    gen = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(2, 37, 2, 16, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(2, 37, 2, 8, generator=gen)
    beta = 2 * torch.rand(2, 37, 2, generator=gen)
    g = F.logsigmoid(torch.randn(2, 37, 2, 16, generator=gen))
    S0 = torch.randn(2, 2, 16, 8, generator=gen)
    return [t.to(device) for t in (q, k, v, beta, g, S0)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path (no decay, per head, per key)."""
    q, k, v, beta, g, S0 = smoke_inputs(device)
    for gate in (None, g[..., 0], g):
        (o, S), (o_ref, S_ref) = (f(q, k, v, beta, gate, None, S0, True) for f in (fn, chunked.delta_rule))
        if not (torch.allclose(o, o_ref, rtol=1e-3, atol=1e-3) and torch.allclose(S, S_ref, rtol=1e-3, atol=1e-3)):
            raise RuntimeError(f"its smoke call differs from the torch path by {(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, beta, g)[0].sum().backward()


DISPATCH = Dispatcher("delta_rule", {"torch": lazy("src.ops.delta_rule.chunked.delta_rule"),
                                     "cpu": lazy("src.ops.delta_rule.cpu.delta_rule"),
                                     "triton": lazy("src.ops.delta_rule.gpu.delta_rule")},
                      {"cuda": ["triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke,
                      {"triton": gpu.unsupported, "cpu": cpu.unsupported})


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    args = (q, k, v, beta, g, scale, initial_state, output_final_state)
    return DISPATCH.function(backend, q.device, args)(*args)


def delta_product(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
                  num_householder=2, backend="auto"):
    """See the module docstring: delta_rule on the T n interleaved steps."""
    n = num_householder
    if n == 1:
        return delta_rule(q, k, v, beta, g, scale, initial_state, output_final_state, backend)
    B, T, H, K = q.shape
    if k.shape[1] != T * n or v.shape[1] != T * n or beta.shape[1] != T * n:
        raise ValueError(f"delta_product with num_householder={n} takes k, v, beta of {T * n} positions "
                         f"({T} tokens), not {k.shape[1]}, {v.shape[1]}, {beta.shape[1]}")
    args = (q, k, v, beta, g, scale, initial_state, output_final_state)
    name = DISPATCH.resolve(backend, q.device, args)
    if name == "cpu":  # the C loop takes the n steps a token natively
        return cpu.delta_product(*args, num_householder=n)
    q_n = q.new_zeros(B, T, n, H, K)
    q_n[:, :, -1] = q  # read after the token's last step
    g_n = None
    if g is not None:
        g_n = g.new_zeros(B, T, n, *g.shape[2:])
        g_n[:, :, 0] = g  # decay before its first
    o, S = delta_rule(q_n.flatten(1, 2), k, v, beta, None if g_n is None else g_n.flatten(1, 2),
                      K**-0.5 if scale is None else scale, initial_state, output_final_state, name)
    return o[:, n - 1 :: n], S
