"""MesaNet, one Python step per token with the exact linear solve (the oracle).

Per head, with the decay gamma_t = exp(g_t), beta_t and the ridge lambda (K,) (fla's `lamb`):
    H_t = gamma_t H_{t-1} + beta_t k_t k_t^T                      (K, K)
    G_t = gamma_t G_{t-1} + beta_t k_t v_t^T                      (K, V)
    q*_t = (H_t + diag(lambda))^-1 q_t,     o_t = G_t^T q*_t
fla's naive_mesa_net_exact (torch.linalg.solve on every H_t). cg_steps=n solves by n steps of
fla's conjugate gradient instead (cg.py: fla's iteration and its implicit gradient), the form its
kernels and naive_mesa_net_CG use. No scale and no normalisation here (the layer l2-normalises
q and k). Layout (B, T, H, K) as fla's; states (B, H, K, K) and (B, H, K, V). Computes in the
inputs' dtype (float64 for exact checks); autograd goes through the loop and the solves.
"""

import torch

from src.ops.mesa_net.cg import solve


def _matvec(p, A):  # A p for each row p (..., K), A (..., K, K)
    return (A @ p[..., None])[..., 0]


def mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=None):
    """q, k (B, T, H, K); v (B, T, H, V); g, beta (B, T, H); lamb (H, K) > 0; initial_state
    (H_kk (B, H, K, K), H_kv (B, H, K, V)) or None (zeros); cg_steps None (exact) or an int.
    -> o (B, T, H, V), (H_kk, H_kv) or None."""
    B, T, H, K = q.shape
    if initial_state is None:
        Hkk, Hkv = q.new_zeros(B, H, K, K), q.new_zeros(B, H, K, v.shape[-1])
    else:
        Hkk, Hkv = (s.to(q.dtype) for s in initial_state)
    ridge = torch.diag_embed(lamb.to(q.dtype))  # (H, K, K)
    out = []
    for t in range(T):
        decay = g[:, t].exp()[..., None, None]  # (B, H, 1, 1)
        kb = (k[:, t] * beta[:, t, :, None])[..., :, None]  # beta_t k_t (B, H, K, 1)
        Hkk = decay * Hkk + kb * k[:, t, :, None, :]
        Hkv = decay * Hkv + kb * v[:, t, :, None, :]
        A = Hkk + ridge
        x = torch.linalg.solve(A, q[:, t]) if cg_steps is None else solve(_matvec, q[:, t], cg_steps, A)
        out.append((x[..., None] * Hkv).sum(-2))
    return torch.stack(out, dim=1), ((Hkk, Hkv) if output_final_state else None)
