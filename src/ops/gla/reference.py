"""Gated linear attention, the obvious way: one Python step per time step (the oracle).

Per head, with the state S (K, V), the log decay g_t (per key (K,), per head (scalar) or 0):
    S_t = diag(d_t) S_{t-1} + k_t v_t^T,      o_t = S_t^T (scale q_t),
    d_t = exp(g_t), or -exp(g_t) where the boolean `negative` (g's shape) is true (signed decays),
and with RWKV-6's bonus u (K,) the output reads the state before step t:
    o_t = (S_{t-1} + diag(u) k_t v_t^T)^T (scale q_t).
fla's naive_recurrent_gla (per key), naive_recurrent_simple_gla (per head) and
naive_recurrent_rwkv6 (u), in the (B, T, H, K) layout. Computes in the inputs' dtype (float64
for exact checks); autograd differentiates through the loop.
"""

import torch


def gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None):
    """q, k (B, T, H, K); v (B, T, H, V); g (B, T, H, K), (B, T, H) or None; u (H, K) or None;
    initial_state (B, H, K, V) or None (zeros); negative (bool, g's shape) or None (every decay
    positive). -> o (B, T, H, V), final state (B, H, K, V) or None."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    out = []
    for t in range(T):
        kv = k[:, t, :, :, None] * v[:, t, :, None, :]  # (B, H, K, V)
        q_t = q[:, t, :, :, None] * scale  # (B, H, K, 1)
        if u is not None:
            out.append(((S + u[..., None] * kv) * q_t).sum(-2))
        if g is not None:
            decay = g[:, t].exp() if negative is None else torch.where(negative[:, t], -g[:, t].exp(), g[:, t].exp())
            S = S * (decay[..., None] if g.dim() == 4 else decay[..., None, None])
        S = S + kv
        if u is None:
            out.append((S * q_t).sum(-2))
    return torch.stack(out, dim=1), (S if output_final_state else None)
