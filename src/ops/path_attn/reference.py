"""PaTH attention, the plain definition with the Householder products (the oracle).

Per head, with the generalised Householder transformations H_s = I - beta_s w_s w_s^T (w_s unit,
beta_s in (0, 2)) and the optional log forget gates g_s with prefix sums G_t (FoX's gate):
    logit_ij = q_i^T H_i H_{i-1} ... H_{j+1} k_j          (j < i; q_i . k_i at j = i)
    o_i = sum_{j <= i} softmax_j(scale (logit_ij + G_i - G_j)) v_j
(Yang et al. 2025; fla's naive_path_attn, which scales the gate with the logits and computes in
float32). The loop walks the keys from the last to the first, carrying each query back through
the transformations it has passed: row i holds H_{j+1} ... H_i q_i when key j is read (the H_s are
symmetric). Computes in the inputs' dtype; autograd gives the gradients.
"""

import torch


def path_attn(q, k, v, w, beta, g=None, scale=None):
    """q, k, w (B, T, H, K); v (B, T, H, V); beta, g (B, T, H) (g may be None). -> o (B, T, H, V)."""
    T, K = q.shape[1], q.shape[-1]
    scale = K**-0.5 if scale is None else scale
    rows = torch.arange(T, device=q.device)[None, :, None, None]  # query index i
    u, columns = q, []
    for j in reversed(range(T)):
        columns.append((u * k[:, j : j + 1]).sum(-1))  # (B, T, H): logit_ij for every row i >= j
        reflected = u - beta[:, j : j + 1, :, None] * (u * w[:, j : j + 1]).sum(-1, keepdim=True) * w[:, j : j + 1]
        u = torch.where(rows >= j, reflected, u)  # H_j acts on the queries at or after j
    logits = torch.stack(columns[::-1], dim=-1).transpose(1, 2)  # (B, H, T, T): [b, h, i, j]
    return attend(logits, v, g, scale)


def attend(logits, v, g, scale):
    """logits (B, H, T, T) [b, h, i, j], v (B, T, H, V), g (B, T, H) or None -> o (B, T, H, V):
    the gated causal softmax of the module docstring."""
    T = logits.shape[-1]
    if g is not None:
        G = g.cumsum(1).transpose(1, 2)  # (B, H, T)
        logits = logits + G[..., :, None] - G[..., None, :]
    causal = torch.ones(T, T, dtype=torch.bool, device=logits.device).tril()
    weights = (scale * logits).masked_fill(~causal, float("-inf")).softmax(-1)
    return torch.einsum("bhij,bjhv->bihv", weights, v)
