"""Log-linear attention, one Python step per token with its Fenwick-tree states (the oracle).

Definition (Guo et al. 2025; fla's naive_log_linear_attn). With A_ts the inner model's attention
weight of s on t (s <= t) and lambda_t (n_levels,) the query's weight per level,
    o_t = sum_{s <= t} lambda_t[l(t, s)] A_ts v_s,     l(t, s) = 0 if s = t, else 1 + floor(log2(t xor s))
(t, s absolute positions): the level of s is the highest bit where s and t differ, so the tokens
before t fall into buckets of 1, 2, 4, ... positions (a Fenwick tree over the prefix), one for each
set bit of t, and each bucket is weighted by the query's own lambda for its level. Inner models:
    Mamba-2 (log_linear_attn)            A_ts = exp(g_{s+1} + ... + g_t) (q_t . k_s)
    Gated DeltaNet (log_linear_delta_rule) A_ts = q_t^T P_t ... P_{s+1} beta_s k_s,
                                            P_r = exp(g_r) (I - beta_r k_r k_r^T)
(no 1/sqrt(K) scale; a layer scales q itself). The recurrence keeps one (K, V) state per bucket:
at token t every bucket is moved by the inner transition (exp(g_t), or P_t), the token's own write
(k_t v_t^T, or beta_t k_t v_t^T) is level 0, the output reads
    o_t = sum_l lambda_t[l] S_l^T q_t,
and then level 0 and the buckets at levels 1..m, m the number of trailing one bits of t, merge
into the bucket at level m + 1: as the position passes a multiple of 2^m the buckets below it
become one (the tree's carry). After t tokens the buckets sit at the set bits of t: the state is
(levels (B, H, bit_length(t), K, V), the slot for level l at l - 1, empty ones zero; t).
Computes in the inputs' dtype; autograd goes through the loop.
"""

import torch


def log_linear_attn(q, k, v, g, level_scales, initial_state=None, output_final_state=False):
    """q, k (B, T, G, K), G dividing H (a group shared by H / G heads); v (B, T, H, V); g (B, T, H)
    the log decay; level_scales (B, T, H, n_levels);
    initial_state (levels (B, H, m, K, V), position) or None (position 0). -> o (B, T, H, V),
    (levels, position) or None."""
    return _fenwick(q, k, v, None, g, level_scales, initial_state, output_final_state)


def log_linear_delta_rule(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False):
    """As log_linear_attn with Gated DeltaNet inside: beta (B, T, H)."""
    return _fenwick(q, k, v, beta, g, level_scales, initial_state, output_final_state)


def _fenwick(q, k, v, beta, g, level_scales, initial_state, output_final_state):
    q, k = (x.repeat_interleave(v.shape[2] // x.shape[2], dim=2) for x in (q, k))  # groups -> heads
    B, T, H, K = q.shape
    levels, t0 = (q.new_zeros(B, H, 0, K, v.shape[-1]), 0) if initial_state is None else initial_state
    S = list(levels.to(q.dtype).unbind(2))  # S[i]: the bucket at level i + 1
    out = []
    for i in range(T):
        q_t, k_t, v_t = q[:, i], k[:, i, :, :, None], v[:, i, :, None, :]  # (B, H, K), (B, H, K, 1), (B, H, 1, V)
        decay = g[:, i].exp()[..., None, None]
        if beta is None:
            S, own = [decay * s for s in S], k_t * v_t
        else:
            b = beta[:, i, :, None, None]
            S = [decay * (s - b * k_t * (k_t * s).sum(-2, keepdim=True)) for s in S]  # P_t S
            own = b * k_t * v_t
        lam = level_scales[:, i]  # (B, H, n_levels)
        o = lam[..., 0, None] * (q_t[..., None] * own).sum(-2)
        for level, s in enumerate(S, start=1):
            o = o + lam[..., level, None] * (q_t[..., None] * s).sum(-2)
        out.append(o)
        m = ((t0 + i) ^ (t0 + i + 1)).bit_length() - 1  # the trailing one bits of t
        merged = own + sum(S[:m])
        S = [torch.zeros_like(own)] * m + [merged] + S[m + 1 :]  # S[m] was empty: bit m of t is 0
    final = (torch.stack(S, dim=2) if S else levels.to(q.dtype), t0 + T)
    return torch.stack(out, dim=1), (final if output_final_state else None)
