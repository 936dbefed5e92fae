"""The delta rule in chunks (the UT/WY form), in torch, for every device.

In a chunk of C positions with S_0 at its start, b_i = sum_{s <= i} g_s (log decay
from the start) and Gamma_ij = exp(b_i - b_j) for j <= i (else 0), the update vectors u_i
satisfy u_i = beta_i (v_i - exp(b_i) S_0^T k_i - sum_{j < i} Gamma_ij (k_i . k_j) u_j), i.e.
    (I + A) U = diag(beta) V - diag(beta exp(b)) K S_0,    A_ij = beta_i Gamma_ij k_i . k_j (j < i).
With the unit lower-triangular inverse T = (I + A)^-1 (the UT transform):
    U = T diag(beta) V - W S_0,   W = T diag(beta exp(b)) K
    o_i = scale (exp(b_i) q_i^T S_0 + sum_{j <= i} Gamma_ij (q_i . k_j) u_j)
    S_C = exp(b_C) S_0 + sum_j exp(b_C - b_j) k_j u_j^T.
With a per-key decay (KDA) b_i is a vector, Gamma_ij (k_i . k_j) becomes
sum_d k_id k_jd exp(b_id - b_jd) (and likewise for q_i . k_j), built by src/ops/gla/chunked's
decayed_scores with every exponent <= 0, and exp(b) scales K, Q and the state row by row.
All in-chunk matrices are computed for every chunk at once; a loop over the T / C chunks passes
the state on. g = -inf (a reset) is floored as in the GLA op.
"""

import torch

from src.ops.gla.chunked import chunk_size, chunks, decayed_scores, log_decay, unchunk


def ut_solve(A, rhs):
    """(I + strictly-lower(A))^-1 rhs, A (..., C, C), C a power of two. The inverse is built by
    doubling the diagonal blocks, all blocks of one size at once (batched matmuls only; torch's
    batched triangular solve is slow on CPU, its backward more so):
        [[P, 0], [L, Q]]^-1 = [[P^-1, 0], [-Q^-1 L P^-1, Q^-1]]."""
    C = A.shape[-1]
    T = A.new_ones(*A.shape[:-2], C, 1, 1)  # the inverses of the 1 x 1 diagonal blocks
    s = 1
    while s < C:
        nb = C // (2 * s)
        blocks = A.unflatten(-2, (nb, 2, s)).unflatten(-1, (nb, 2, s))  # (..., nb, 2, s, nb, 2, s)
        L = blocks.diagonal(dim1=-6, dim2=-3)[..., 1, :, 0, :, :].movedim(-1, -3)  # (..., nb, s, s)
        P, Q = T.unflatten(-3, (nb, 2)).unbind(-3)
        top = torch.cat((P, torch.zeros_like(P)), dim=-1)
        T = torch.cat((top, torch.cat((-(Q @ L @ P), Q), dim=-1)), dim=-2)  # (..., nb, 2s, 2s)
        s *= 2
    return T[..., 0, :, :] @ rhs


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False, chunk=64):
    """Same arguments and result as reference.delta_rule."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    C = chunk_size(T, chunk)
    qc, kc, vc = (chunks(t, C).contiguous() for t in (q * scale, k, v))  # (B, H, N, C, K or V)
    beta = chunks(beta[..., None], C)  # (B, H, N, C, 1)
    b = log_decay(g, q, C)  # (B, H, N, C, K or 1)
    if b.shape[-1] == 1:
        causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
        Gamma = torch.exp((b - b.transpose(-1, -2)).masked_fill(~causal, float("-inf"))).to(q.dtype)  # (.., C, C)
        KK, QK = (kc @ kc.transpose(-1, -2)) * Gamma, (qc @ kc.transpose(-1, -2)) * Gamma
    else:
        KK, QK = (decayed_scores(x, kc, b, b, diagonal=x is qc) for x in (kc, qc))
    A = beta * KK  # its strictly lower part is used
    U, W = ut_solve(A, torch.cat((beta * vc, beta * torch.exp(b).to(q.dtype) * kc), dim=-1)).split([v.shape[-1], K], -1)
    qd = qc * torch.exp(b).to(q.dtype)
    kd = (kc * torch.exp(b[..., -1:, :] - b).to(q.dtype)).transpose(-1, -2)  # (B, H, N, K, C)
    decay = torch.exp(b[..., -1, :]).to(q.dtype)[..., None]  # (B, H, N, K or 1, 1)
    S = q.new_zeros(B, H, K, v.shape[-1]) if initial_state is None else initial_state.to(q.dtype)
    out = []
    # unbind, not [:, :, n]: see gla.chunked.pass_states
    for Un, Wn, qn, QKn, dn, kn in zip(*(x.unbind(2) for x in (U, W, qd, QK, decay, kd))):
        u = Un - Wn @ S
        out.append(qn @ S + QKn @ u)
        S = dn * S + kn @ u
    return unchunk(torch.stack(out, dim=2), T), (S if output_final_state else None)
