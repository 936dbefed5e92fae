"""Forgetting attention through torch's fused attention (scaled_dot_product_attention), the T x T
matrix never built: the gate enters as two extra coordinates of the queries and keys,

    [scale q_i, G_i, 1] . [k_j, 1, -G_j] = scale q_i . k_j + G_i - G_j,

so a causal attention of width K + 2 at scale 1 is forgetting attention, and autograd carries the
gradient to G (hence to g) through those coordinates. On CPU torch runs its blocked (flash) kernel:
memory O(T), and forward + backward faster than the dense form (benchmarks/README.md, "FoX and
PaTH"). float32: G_i - G_j is the difference of two sums of up to T gates, off by ~eps |G|
(|G| ~ T |g|), as in fla's kernel, which takes the same float32 prefix sums.
"""

import torch
import torch.nn.functional as F


def forgetting_attn(q, k, v, g, scale=None):
    """q, k (B, T, H, K); v (B, T, H, V); g (B, T, H). -> o (B, T, H, V)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    G = g.cumsum(1)[..., None].to(q.dtype)  # (B, T, H, 1)
    one = torch.ones_like(G)
    q_aug = torch.cat((q * scale, G, one), dim=-1).transpose(1, 2)  # (B, H, T, K + 2)
    k_aug = torch.cat((k, one, -G), dim=-1).transpose(1, 2)
    o = F.scaled_dot_product_attention(q_aug, k_aug, v.transpose(1, 2), is_causal=True, scale=1.0)
    return o.transpose(1, 2)
