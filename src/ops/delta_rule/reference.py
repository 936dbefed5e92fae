"""The delta rule, one Python step per time step (the oracle for every other path).

delta_rule, per head, state S (K, V), log decay g_t (scalar; 0 for DeltaNet), beta_t in (0, 2):
    S <- exp(g_t) S,    u_t = beta_t (v_t - S^T k_t),    S <- S + k_t u_t^T,    o_t = S^T (scale q_t)
i.e. S_t = exp(g_t) (I - beta_t k_t k_t^T) S_{t-1} + beta_t k_t v_t^T: fla's delta_rule_recurrence
(g = None) and naive_recurrent_gated_delta_rule. Nothing is normalised here (layers l2-normalise
q and k); beta in (1, 2) gives I - beta k k^T a negative eigenvalue (for |k| = 1).
Its diagonal-plus-low-rank generalisation is src/ops/dplr_delta_rule. Layout (B, T, H, K) as fla's
chunk kernels; states (B, H, K, V). Computes in the inputs' dtype; autograd goes through the loop.
"""

import torch


def _start(q, v, initial_state):
    B, _, H, K = q.shape
    return q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    """q, k (B, T, H, K); v (B, T, H, V); beta, g (B, T, H) (g None: no decay);
    initial_state (B, H, K, V) or None. -> o (B, T, H, V), final state (B, H, K, V) or None."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    S = _start(q, v, initial_state)
    out = []
    for t in range(q.shape[1]):
        if g is not None:
            S = S * g[:, t, :, None, None].exp()
        k_t = k[:, t, :, :, None]  # (B, H, K, 1)
        u = beta[:, t, :, None] * (v[:, t] - (S * k_t).sum(-2))  # (B, H, V)
        S = S + k_t * u[:, :, None, :]
        out.append((S * q[:, t, :, :, None] * scale).sum(-2))
    return torch.stack(out, dim=1), (S if output_final_state else None)
