"""The delta rule, one Python step per time step (the oracle for every other path).

delta_rule, per head, state S (K, V), log decay g_t (per head, 0 for DeltaNet; or per key, KDA),
beta_t in (0, 2), D_t = diag(exp(g_t)) (exp(g_t) I for a per-head g):
    S <- D_t S,    u_t = beta_t (v_t - S^T k_t),    S <- S + k_t u_t^T,    o_t = S^T (scale q_t)
i.e. S_t = (I - beta_t k_t k_t^T) D_t S_{t-1} + beta_t k_t v_t^T: fla's delta_rule_recurrence
(g = None), naive_recurrent_gated_delta_rule (g per head) and naive_recurrent_kda (g per key).
Nothing is normalised here (layers l2-normalise q and k); beta in (1, 2) gives I - beta k k^T a
negative eigenvalue (for |k| = 1).
delta_product, n Householder steps per token (Gated DeltaProduct), fla's
naive_recurrent_gated_delta_product: S <- D_t S, then for j = 1..n the delta step with
(k_{t,j}, v_{t,j}, beta_{t,j}), then o_t = S^T (scale q_t).
Its diagonal-plus-low-rank generalisation is src/ops/dplr_delta_rule. Layout (B, T, H, K) as fla's
chunk kernels; states (B, H, K, V). Computes in the inputs' dtype; autograd goes through the loop.
"""

import torch


def _start(q, v, initial_state):
    B, _, H, K = q.shape
    return q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """q, k (B, T, H, K); v (B, T, H, V); beta (B, T, H); g (B, T, H) or (B, T, H, K) or None
    (no decay); initial_state (B, H, K, V) or None. -> o (B, T, H, V), final state or None."""
    return delta_product(q, k, v, beta, g, scale, initial_state, output_final_state, num_householder=1)


def delta_product(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False,
                  num_householder=2):
    """q (B, T, H, K); k (B, T n, H, K), v (B, T n, H, V), beta (B, T n, H): token t's n steps at
    t n, ..., t n + n - 1; g (B, T, H) or (B, T, H, K) or None. -> o (B, T, H, V), final state."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    n = num_householder
    S = _start(q, v, initial_state)
    out = []
    for t in range(q.shape[1]):
        if g is not None:
            S = S * (g[:, t, :, :, None] if g.dim() == 4 else g[:, t, :, None, None]).exp()
        for j in range(t * n, t * n + n):
            k_j = k[:, j, :, :, None]  # (B, H, K, 1)
            u = beta[:, j, :, None] * (v[:, j] - (S * k_j).sum(-2))  # (B, H, V)
            S = S + k_j * u[:, :, None, :]
        out.append((S * q[:, t, :, :, None] * scale).sum(-2))
    return torch.stack(out, dim=1), (S if output_final_state else None)
