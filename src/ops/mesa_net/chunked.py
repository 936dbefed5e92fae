"""MesaNet in chunks, in torch, for every device (the recurrence: reference.py).

In a chunk of C positions with H_0, G_0 the states at its start, b_i = sum_{s <= i} g_s the log
decay from the start and M_ij = exp(b_i - b_j) beta_j for j <= i (else 0), the state at i is
    H_i = exp(b_i) H_0 + sum_{j <= i} M_ij k_j k_j^T          (G_i alike with v_j)
so it need not be formed to be applied: for rows x_i (C, K),
    (H_i + diag(lambda)) x_i = exp(b_i) H_0 x_i + sum_j M_ij (k_j . x_i) k_j + lambda * x_i
    o_i = G_i^T x_i           = exp(b_i) G_0^T x_i + sum_j M_ij (k_j . x_i) v_j
(matmuls over the chunk: ((X K^T) * M) K), and the chunk states are passed on by a loop over the
T / C chunks, as src/ops/gla/chunked does. The solve x_i = (H_i + diag(lambda))^-1 q_i:
cg_steps=n, fla's n conjugate-gradient steps on every row at once with this matvec, and fla's
implicit gradient (cg.py): fla's chunk_mesa_net, minus its float16 q and k; cg_steps=None, the
exact solve on H_i formed for every position (C K^2 floats a chunk: the exact-solve limit, for
checks and small heads). Decays as in the GLA op (cumulative in float32, float64 for float64
inputs; every exponent <= 0).
"""

import torch

from src.ops.gla.chunked import chunk_size, chunks, log_decay, pass_states, unchunk
from src.ops.mesa_net.cg import solve
from src.ops.precision import float32_inside


def _matvec(x, H0, k, M, eb, ridge):
    """(H_i + diag(lambda)) x_i for every row: x, k (..., C, K), H0 (..., K, K), M (..., C, C), eb
    (..., C, 1) = exp(b), ridge broadcasting to x. H0 x as in reference.py (H0 is symmetric; the
    orientation decides the gradient of a non-symmetric initial state). The sums go into the first
    product's result in place (addcmul_): two passes over the rows a call instead of four (CG runs it
    30 times; baddbmm would copy its input first)."""
    Ax = ((x @ k.transpose(-1, -2)) * M) @ k
    return Ax.addcmul_(ridge, x).addcmul_(eb, x @ H0.transpose(-1, -2))


@float32_inside  # the solves: torch has no half-precision LU, and CG in bfloat16 would stop far from the solution
def mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=None, chunk=32):
    """Same arguments and result as reference.mesa_net. Chunks of 32: on CPU 1.1-1.2x faster than 64
    forward and forward + backward at T 256 and 1024 (the C x C products shrink; B 2, 4 heads of 64)."""
    B, T, H, K = q.shape
    C = chunk_size(T, chunk)
    # (B, H, N, C, K or V), contiguous: the CG steps' products would otherwise copy the views each step
    qc, kc, vc = (chunks(t, C).contiguous() for t in (q, k, v))
    b = log_decay(g, q, C)  # (B, H, N, C, 1)
    causal = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    M = torch.exp((b - b.transpose(-1, -2)).masked_fill(~causal, float("-inf"))).to(q.dtype)
    M = M * chunks(beta, C)[..., None, :]  # M_ij = exp(b_i - b_j) beta_j  (B, H, N, C, C)
    kS = kc * (torch.exp(b[..., -1:, :] - b).to(q.dtype) * chunks(beta[..., None], C))  # into the chunk's state
    if initial_state is None:
        Hkk0, Hkv0 = q.new_zeros(B, H, K, K), q.new_zeros(B, H, K, v.shape[-1])
    else:
        Hkk0, Hkv0 = (s.to(q.dtype) for s in initial_state)
    decay = torch.exp(b[..., -1:, :]).to(q.dtype)  # (B, H, N, 1, 1)
    Hkk_starts, Hkk = pass_states(Hkk0, decay, kS.transpose(-1, -2) @ kc)  # (B, H, N, K, K)
    Hkv_starts, Hkv = pass_states(Hkv0, decay, kS.transpose(-1, -2) @ vc)  # (B, H, N, K, V)
    eb = torch.exp(b).to(q.dtype)  # (B, H, N, C, 1)
    ridge = lamb.to(q.dtype)[:, None, None, :]  # (H, 1, 1, K)
    if cg_steps is None:
        Hi = eb[..., None] * Hkk_starts[:, :, :, None] + torch.einsum("...ij,...jk,...jl->...ikl", M, kc, kc)
        x = torch.linalg.solve(Hi + torch.diag_embed(ridge.expand(-1, -1, C, -1)), qc)
    else:
        x = solve(_matvec, qc, cg_steps, Hkk_starts.contiguous(), kc, M, eb, ridge)
    o = (x * eb) @ Hkv_starts + ((x @ kc.transpose(-1, -2)) * M) @ vc
    return unchunk(o, T), ((Hkk, Hkv) if output_final_state else None)
