"""The DPLR delta rule in chunks (the UT/WY form of src/ops/delta_rule/chunked.py), in torch, for
every device.

With per-key log decays c_i (cumulative, c_{i-1} before step i) and the rows
w_i = a_i^T S_{i-1} of the low-rank update S_i = diag(exp(g_i)) S_{i-1} + b_i w_i + k_i v_i^T:
    (I - M_ab) W = M_ak V + (a * exp(c_{i-1})) S_0,     M_xy[i, j] = sum_k x_ik y_jk exp(c_{i-1,k} - c_jk), j < i
    o_i = scale ((q_i * exp(c_i))^T S_0 + sum_{j <= i} N_qb[i, j] w_j + N_qk[i, j] v_j),  N: exponents c_i - c_j
    S_C = diag(exp(c_C)) S_0 + sum_j exp(c_C - c_j) * (b_j w_j + k_j v_j^T).
All in-chunk matrices are computed for every chunk at once (the per-key ones by
src/ops/gla/chunked.decayed_scores, every exponent <= 0); a loop over the T / C chunks passes
the state on. g = -inf (a reset) is floored as in the GLA op.
"""

import torch
import torch.nn.functional as F

from src.ops.delta_rule.chunked import ut_solve
from src.ops.gla.chunked import chunk_size, chunks, decayed_scores, log_decay, unchunk


def dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False, chunk=64):
    """Same arguments and result as reference.dplr_delta_rule."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    C = chunk_size(T, chunk)
    qc, kc, vc, ac, bc = (chunks(t, C).contiguous() for t in (q * scale, k, v, a, b))
    c = log_decay(g, q, C)  # (B, H, N, C, K or 1)
    before = F.pad(c[..., :-1, :], (0, 0, 1, 0))  # c_{i-1}
    M_ab, M_ak = (decayed_scores(ac, y, before, c, diagonal=False) for y in (bc, kc))
    N_qb, N_qk = (decayed_scores(qc, y, c, c, diagonal=True) for y in (bc, kc))
    Wv, Ws = ut_solve(-M_ab, torch.cat((M_ak @ vc, ac * torch.exp(before).to(q.dtype)), dim=-1)).split(
        [v.shape[-1], K], -1)  # (B, H, N, C, V), (B, H, N, C, K)
    o_v = N_qk @ vc
    qd = qc * torch.exp(c).to(q.dtype)
    to_end = torch.exp(c[..., -1:, :] - c).to(q.dtype)
    bd, kd = ((t * to_end).transpose(-1, -2) for t in (bc, kc))  # (B, H, N, K, C)
    kv = kd @ vc  # (B, H, N, K, V)
    decay = torch.exp(c[..., -1, :]).to(q.dtype)[..., None]  # (B, H, N, K or 1, 1)
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    out = []
    # unbind, not [:, :, n]: see gla.chunked.pass_states
    for Wvn, Wsn, qn, Nn, on, dn, bn, kvn in zip(*(x.unbind(2) for x in (Wv, Ws, qd, N_qb, o_v, decay, bd, kv))):
        w = Wvn + Wsn @ S
        out.append(qn @ S + Nn @ w + on)
        S = dn * S + bn @ w + kvn
    return unchunk(torch.stack(out, dim=2), T), (S if output_final_state else None)
