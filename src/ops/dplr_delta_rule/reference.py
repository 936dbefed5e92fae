"""The delta rule's diagonal-plus-low-rank generalisation (RWKV-7), one Python step per time step
(the oracle for every other path).

Per head, state S (K, V), log decay g_t (per key, or per head), a_t, b_t (K,):
    S_t = (diag(exp(g_t)) + b_t a_t^T) S_{t-1} + k_t v_t^T,    o_t = S_t^T (scale q_t)
fla's dplr_recurrence (RWKV-7 runs it with a = -kk, b = kk * a). Layout (B, T, H, K) as fla's
chunk kernels; states (B, H, K, V). Computes in the inputs' dtype; autograd goes through the loop.
"""

import torch


def dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False):
    """q, k, a, b (B, T, H, K); v (B, T, H, V); g (B, T, H, K) or (B, T, H); initial_state
    (B, H, K, V) or None. -> o (B, T, H, V), final state (B, H, K, V) or None."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    B, _, H, K = q.shape
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    out = []
    for t in range(q.shape[1]):
        decay = g[:, t].exp()
        low_rank = b[:, t, :, :, None] * (a[:, t, :, :, None] * S).sum(-2, keepdim=True)  # b (a^T S)
        S = S * (decay[..., None] if g.dim() == 4 else decay[..., None, None]) + low_rank \
            + k[:, t, :, :, None] * v[:, t, :, None, :]
        out.append((S * q[:, t, :, :, None] * scale).sum(-2))
    return torch.stack(out, dim=1), (S if output_final_state else None)
