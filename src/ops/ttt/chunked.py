"""TTT-Linear and TTT-MLP in the mini-batch dual form (Sun et al. 2024, Sec. 2.5): one step of
matrix products a mini-batch, the same computation as reference.py's token loop.

Within a mini-batch (rows t, s of its m tokens; W0 its start weights, G the gradient sums of the
tokens before the segment, zero from a mini-batch's start), every gradient is at W0, so for
TTT-Linear with g_s = d l / d Z(k_s; W0) (one layer-norm backward for the whole segment):

    z_t = q_t W1 + b1 - eta_t (q_t G1 + Gb1 + sum_{s <= t} lr_s (q_t . k_s + 1) g_s)
        = q W1 + b1 - eta * (q G1 + Gb1 + (tril(q k^T + 1) * lr_s) g)
    G1 <- G1 + (lr k)^T g,   Gb1 <- Gb1 + sum_s lr_s g_s;   at the mini-batch's end W0 <- W0 - eta_last G

TTT-MLP applies the same to each layer: the first layer's on (q, k; g1), then gelu, then the
second's on (gelu(Z1 of q), gelu(Z1 of k); g2), with g1 = (g2 W2^T) gelu'(Z1 of k). The sequence
is cut into the rest of the current mini-batch (offset tokens already in it), whole mini-batches
and a partial last one; the state carries the partial one's sums (see reference.py).
"""

import torch

from src.ops.ttt.reference import gelu, gelu_grad, ln_l2_grad


def _tri(x, y, lr):
    """tril(x y^T + 1) with column s scaled by lr_s: (B, H, m, m)."""
    return torch.tril(x @ y.transpose(-1, -2) + 1) * lr[..., None, :]


def _layer(x_q, x_k, g, W, b, G, Gb, eta, lr):
    """One linear inner layer in dual form: its outputs at the queries, and the segment's sums
    added to (G, Gb) (None: zero)."""
    z = x_q @ W + b[..., None, :]
    upd = _tri(x_q, x_k, lr) @ g
    if G is not None:
        upd = upd + x_q @ G + Gb[..., None, :]
    lg = lr[..., None] * g
    G_new = x_k.transpose(-1, -2) @ lg
    Gb_new = lg.sum(-2)
    if G is not None:
        G_new, Gb_new = G + G_new, Gb + Gb_new
    return z - eta[..., None] * upd, G_new, Gb_new


def _linear_segment(W, G, q, k, v, eta, lr, w, b, eps):
    W1, b1 = W
    g = ln_l2_grad(k @ W1 + b1[..., None, :], v - k, w[:, None], b[:, None], eps)
    z, G1, Gb1 = _layer(q, k, g, W1, b1, *(G or (None, None)), eta, lr)
    return z, (G1, Gb1)


def _mlp_segment(W, G, q, k, v, eta, lr, w, b, eps):
    W1, b1, W2, b2 = W
    G1, Gb1, G2, Gb2 = G or (None,) * 4
    z1 = k @ W1 + b1[..., None, :]
    x2 = gelu(z1)
    g2 = ln_l2_grad(x2 @ W2 + b2[..., None, :], v - k, w[:, None], b[:, None], eps)
    g1 = (g2 @ W2.transpose(-1, -2)) * gelu_grad(z1)
    z1_q, G1, Gb1 = _layer(q, k, g1, W1, b1, G1, Gb1, eta, lr)
    x2_q = gelu(z1_q)
    z, G2, Gb2 = _layer(x2_q, x2, g2, W2, b2, G2, Gb2, eta, lr)
    return z, (G1, Gb1, G2, Gb2)


def _ttt(segment, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps):
    q, k, v = (x.transpose(1, 2) for x in (q, k, v))  # (B, H, T, D)
    eta, lr = eta.transpose(1, 2), lr.transpose(1, 2)  # (B, H, T)
    W, G = state
    G = G if offset else None  # the sums are zero at a mini-batch's start
    T, K, out, start = q.shape[2], mini_batch_size, [], 0
    while start < T:
        end = min(start + K - offset, T)
        part = slice(start, end)
        z, G = segment(W, G, q[:, :, part], k[:, :, part], v[:, :, part], eta[:, :, part], lr[:, :, part], w, b, eps)
        out.append(z)
        offset += end - start
        if offset == K:
            a = eta[:, :, end - 1]  # (B, H)
            W = tuple(Wi - a.reshape(*a.shape, *[1] * (Gi.dim() - 2)) * Gi for Wi, Gi in zip(W, G))
            G, offset = None, 0
        start = end
    G = tuple(torch.zeros_like(Wi) for Wi in W) if G is None else G
    return torch.cat(out, dim=2).transpose(1, 2), (W, G), offset


def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_linear."""
    return _ttt(_linear_segment, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)


def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_mlp."""
    return _ttt(_mlp_segment, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
