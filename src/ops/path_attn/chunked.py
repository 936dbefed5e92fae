"""PaTH attention by chunks, the Householder products in their UT (compact WY) form, as fla's
parallel kernel computes them; the logits are then a dense causal softmax.

In a chunk of C positions (local index m), the product of its transformations is
    H_e ... H_s = I - sum_{s <= n <= m <= e} T_mn beta_n w_m w_n^T,
    T = (I + strict_lower(diag(beta) W W^T))^{-1}   (unit lower triangular; W (C, K) rows w_m),
for every sub-range s..e of the chunk at once (a trailing block of a triangular inverse is the
inverse of the trailing block). With Y = T diag(beta) W and Z = T strict_lower(diag(beta) W K^T):
    within the chunk   logit_ij = q_i . k_j - sum_{m <= i} (q_i . w_m) Z_mj      (j <= i)
    query to the chunk's start    q~_i = q_i - sum_{m <= i} (q_i . w_m) y_m      (Q~ = Q - tril(Q W^T) Y)
    key to the chunk's end        k~_j = k_j - sum_m Z_mj w_m                     (K~ = K - Z^T W)
    through a whole chunk c       q^T P_c = q^T - (q . W_c^T) Y_c                 (P_c = I - W_c^T Y_c)
and for a key chunk c' before the query chunk c
    logits(c, c') = Q~_c P_{c-1} ... P_{c'+1} K~_{c'}^T,
computed one block diagonal d = c - c' at a time: N - 1 steps of batched matmuls for N chunks, the
queries carried one chunk further back per step (O(T^2 K) work, as attention). The triangular
solves are torch.linalg.solve_triangular; autograd gives the gradients.

The scale and the gate go into the products, not onto the T x T logits: q is scaled first, and the
gate is two more coordinates that the transformations leave alone (w is 0 there), as in FoX,
    [scale q_i, scale G_i, scale] . [k_j, 1, -G_j] = scale (q_i . k_j + G_i - G_j).
The block diagonals are gathered, then written in one indexed assignment into a tensor of -inf laid
out as the (T, T) logits ([(b, h), query chunk, i, key chunk, j]), those above the diagonal never
touched, so the softmax needs no mask and no copy. One write, not one a diagonal: the backward of
each in-place write copies the whole gradient (N of them at N chunks: forward + backward took 1.9x
as long at T 1024), and a write through a view copies the whole base each time.
"""

import torch
import torch.nn.functional as F

from src.ops.precision import float32_inside


def _chunks(x, T_pad, C):  # (B, T, H, ...) -> (B, H, N, C, ...), zero-padded to T_pad positions
    x = F.pad(x, (0, 0) * (x.dim() - 3) + (0, 0, 0, T_pad - x.shape[1]))
    return x.transpose(1, 2).unflatten(2, (T_pad // C, C))


@float32_inside  # the triangular solves have no half-precision kernels, and would lose the products
def path_attn(q, k, v, w, beta, g=None, scale=None, chunk=64):
    """As reference.path_attn; `chunk` positions per chunk."""
    B, T, H, K = q.shape
    scale = K**-0.5 if scale is None else scale
    q = q * scale
    if g is not None:  # the gate's coordinates (module docstring)
        G = g.cumsum(1)[..., None].to(q.dtype)  # (B, T, H, 1)
        one = torch.ones_like(G)
        q, k, w = torch.cat((q, scale * G, scale * one), -1), torch.cat((k, one, -G), -1), F.pad(w, (0, 2))
    C = min(chunk, T)
    T_pad = -(-T // C) * C  # padded positions: w = 0, beta = 0 (H = I), q = k = 0; never read by a real query
    q, k, w = (_chunks(t, T_pad, C) for t in (q, k, w))  # (B, H, N, C, K (+ 2))
    bw = _chunks(beta, T_pad, C)[..., None] * w
    strict = torch.ones(C, C, dtype=torch.bool, device=q.device).tril(-1)
    incl = torch.ones(C, C, dtype=torch.bool, device=q.device).tril()
    A = torch.eye(C, dtype=q.dtype, device=q.device) + (bw @ w.mT).masked_fill(~strict, 0)
    Y = torch.linalg.solve_triangular(A, bw, upper=False, unitriangular=True)  # (B, H, N, C, K)
    Z = torch.linalg.solve_triangular(A, (bw @ k.mT).masked_fill(~strict, 0), upper=False, unitriangular=True)
    qw = (q @ w.mT).masked_fill(~incl, 0)  # (B, H, N, C, C)
    local = (q @ k.mT - qw @ Z).masked_fill(~incl, float("-inf"))  # logits within each chunk, [i, j]
    q_start, k_end = q - qw @ Y, k - Z.mT @ w

    N = T_pad // C
    # chunk-major (N, B H, C, ..): the steps below slice the chunks, and a leading slice stays contiguous
    # (sliced in the middle, every product of the loop copied its operands: a quarter of the forward)
    local, q_start, k_end, w, Y = (t.permute(2, 0, 1, 3, 4).flatten(1, 2) for t in (local, q_start, k_end, w, Y))
    blocks = [local]  # block diagonal d: (N - d, B H, C, C), the pairs (c, c - d)
    rows = q_start[1:]  # query chunks c = d .. N-1, holding Q~_c P_{c-1} ... P_{c-d+1}
    for d in range(1, N):
        blocks.append(rows @ k_end[: N - d].mT)
        rows = rows[1:]  # carry chunks c = d+1 .. N-1 back through chunk c - d
        rows = rows - (rows @ w[1 : N - d].mT) @ Y[1 : N - d]
    diag = torch.arange(N, device=q.device)
    query, key = torch.cat([diag[d:] for d in range(N)]), torch.cat([diag[: N - d] for d in range(N)])  # blocks' order
    logits = q.new_full((B * H, N, C, N, C), float("-inf"))  # [(b, h), query chunk, i, key chunk, j]: (T, T) as is
    # one write (each write's backward copies the whole gradient); the indexed dims lead: (pairs, B H, C, C)
    logits[:, query, :, key] = torch.cat(blocks)
    weights = logits.view(B, H, T_pad, T_pad)[..., :T, :T].softmax(-1)  # (B, H, T, T)
    return (weights @ v.transpose(1, 2)).transpose(1, 2)  # (B, T, H, V)
