"""Forgetting attention through torch's fused attention (scaled_dot_product_attention), the T x T
matrix never built: the gate enters as two extra coordinates of the queries and keys,

    [scale q_i, G_i, 1] . [k_j, 1, -G_j] = scale q_i . k_j + G_i - G_j,

so a causal attention of width K + 2 at scale 1 is forgetting attention, and autograd carries the
gradient to G (hence to g) through those coordinates. The queries, keys and values are padded with
zeros to one width, max(K + 2, V): torch's blocked (flash) kernel on CPU takes only equal widths,
and with unequal ones it falls back to the dense (T x T) form, ~2.5x slower at T 1024 (K = V = 64;
benchmarks/README.md, "FoX and PaTH"). With them: memory O(T). float32: G_i - G_j is the
difference of two sums of up to T gates, off by ~eps |G| (|G| ~ T |g|), as in fla's kernel, which
takes the same float32 prefix sums.
"""

import torch
import torch.nn.functional as F

from src.ops.precision import float32_inside


@float32_inside  # G_i - G_j in bfloat16: off by up to 2^-8 |G|, |G| ~ T |g|
def forgetting_attn(q, k, v, g, scale=None):
    """q, k (B, T, H, K); v (B, T, H, V); g (B, T, H). -> o (B, T, H, V)."""
    scale = q.shape[-1] ** -0.5 if scale is None else scale
    G = g.cumsum(1)[..., None].to(q.dtype)  # (B, T, H, 1)
    one = torch.ones_like(G)
    q_aug = torch.cat((q * scale, G, one), dim=-1)  # (B, T, H, K + 2)
    k_aug = torch.cat((k, one, -G), dim=-1)
    V, width = v.shape[-1], max(q_aug.shape[-1], v.shape[-1])
    q_aug, k_aug, v_aug = (F.pad(x, (0, width - x.shape[-1])).transpose(1, 2)
                           for x in (q_aug, k_aug, v))  # (B, H, T, width)
    o = F.scaled_dot_product_attention(q_aug, k_aug, v_aug, is_causal=True, scale=1.0)
    return o[..., :V].transpose(1, 2)
