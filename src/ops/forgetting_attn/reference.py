"""Forgetting attention, the plain quadratic definition (the oracle).

Per head, with the log forget gates g_s <= 0 and their prefix sums G_t = g_1 + ... + g_t:
    o_i = sum_{j <= i} softmax_j(scale q_i . k_j + G_i - G_j) v_j,
so key j's weight is multiplied by the forget gates f_{j+1} ... f_i = exp(G_i - G_j) of the steps
since it was written (Lin et al. 2025; fla's naive_forgetting_attn, which computes in float32).
Computes in the inputs' dtype (float64 for exact checks); autograd gives the gradients.
"""

import torch


def forgetting_attn(q, k, v, g, scale=None):
    """q, k (B, T, H, K); v (B, T, H, V); g (B, T, H) log forget gates. -> o (B, T, H, V)."""
    T, K = q.shape[1], q.shape[-1]
    scale = K**-0.5 if scale is None else scale
    G = g.cumsum(1).transpose(1, 2)  # (B, H, T)
    logits = scale * torch.einsum("bihk,bjhk->bhij", q, k) + G[..., :, None] - G[..., None, :]  # (B, H, T, T)
    causal = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    weights = logits.masked_fill(~causal, float("-inf")).softmax(-1)
    return torch.einsum("bhij,bjhv->bihv", weights, v)
