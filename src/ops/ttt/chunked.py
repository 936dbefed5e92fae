"""TTT-Linear and TTT-MLP in the mini-batch dual form (Sun et al. 2024, Sec. 2.5): one step of
matrix products a mini-batch, the same computation as reference.py's token loop.

Each inner layer's bias is a last row of its weight, read by a last input feature of 1
(x^ = [x, 1], W^ = [W; b]). Within a mini-batch (rows t, s of its m tokens; W0 its start weights,
G the gradient sums of the tokens before the segment, zero from a mini-batch's start), every
gradient is at W0, so for TTT-Linear with g_s = d l / d Z(k_s; W0) (one layer-norm backward for
the whole segment):

    z_t = q^_t W^0 - eta_t (q^_t G^ + sum_{s <= t} lr_s (q^_t . k^_s) g_s)
        = q^ W^0 - eta * (q^ G^ + (tril(q^ k^^T) * lr_s) g)
    G^ <- G^ + k^^T (lr g);   at the mini-batch's end W^0 <- W^0 - eta_last G^

TTT-MLP applies the same to each layer: the first layer's on (q, k; g1), then gelu, then the
second's on (gelu(Z1 of q), gelu(Z1 of k); g2), with g1 = (g2 W2^T) gelu'(Z1 of k).

The sequence is cut into the rest of the current mini-batch (offset tokens already in it, its
sums G in the state), whole mini-batches, and a partial last one (see reference.py). A whole
mini-batch needs no sums: its end weights are W^0 - k^^T (eta_last lr g).
"""

import torch
import torch.nn.functional as F

from src.ops.ttt.reference import ln_l2_grad


def _ones_column(x):
    """(..., m, n) -> (..., m, n + 1): the bias's input, 1, as a last feature."""
    return torch.cat((x, x.new_ones(*x.shape[:-1], 1)), -1)


def _join(pairs):
    """(W1, b1, W2, b2, ..) -> [W^1, W^2, ..]: each bias as its weight's last row."""
    return [torch.cat((W, b[..., None, :]), -2) for W, b in zip(pairs[::2], pairs[1::2])]


def _split(layers):
    """The inverse of _join: a flat tuple (W1, b1, W2, b2, ..) of views."""
    return tuple(x for W in layers for x in (W[..., :-1, :], W[..., -1, :]))


def _linear_grads(W, k, target, w, b, eps):
    """The inner gradients at W of a segment's tokens, one (input, d l / d output) pair a layer:
    k^ (..., m, D + 1), target (..., m, D)."""
    return [(k, ln_l2_grad(k @ W[0], target, w, b, eps))]


def _mlp_grads(W, k, target, w, b, eps):
    W1, W2 = W
    z1 = k @ W1
    x2 = _ones_column(F.gelu(z1, approximate="tanh"))
    g2 = ln_l2_grad(x2 @ W2, target, w, b, eps)
    g1 = torch.ops.aten.gelu_backward(g2 @ W2[..., :-1, :].transpose(-1, -2), z1, approximate="tanh")
    return [(k, g1), (x2, g2)]


def _read(W, G, q, grads, eta, lr):
    """The outputs at the queries q^ (..., m, D + 1) of the layers W (each (..., n + 1, n')) after
    the steps of the gradients `grads` (each token's own and those before it, weighted by lr) and
    of the sums G (None: zero), all scaled by eta (..., m)."""
    for i, (Wi, (x, g)) in enumerate(zip(W, grads)):
        if i:
            q = _ones_column(F.gelu(z, approximate="tanh"))
        step = (torch.tril(q @ x.transpose(-1, -2)) * lr[..., None, :]) @ g
        if G is not None:
            step = step + q @ G[i]
        z = q @ Wi - eta[..., None] * step
    return z


def _ttt(inner, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps):
    q, k = (_ones_column(x.transpose(1, 2)) for x in (q, k))  # (B, H, T, D + 1)
    target = v.transpose(1, 2) - k[..., :-1]  # (B, H, T, D)
    eta, lr = eta.transpose(1, 2), lr.transpose(1, 2)  # (B, H, T)
    w, b = w[:, None], b[:, None]
    W, G = _join(state[0]), _join(state[1]) if offset else None  # the sums are zero at a mini-batch's start
    T, K, out = q.shape[2], mini_batch_size, []
    first = min(K - offset, T)  # the segments: the rest of the current mini-batch, whole ones, a partial last
    sizes = [first] + [K] * ((T - first) // K) + ([(T - first) % K] if (T - first) % K else [])
    # split, not [..., start:end]: the backward of a slice a segment writes a zero tensor of the whole size
    for q_i, k_i, target_i, eta_i, lr_i in zip(*(x.split(sizes, dim=2) for x in (q, k, target, eta, lr))):
        grads = inner(W, k_i, target_i, w, b, eps)
        out.append(_read(W, G, q_i, grads, eta_i, lr_i))
        offset += q_i.shape[2]
        last = eta_i[:, :, -1, None, None]  # (B, H, 1, 1)
        if offset == K and G is None:
            W = [Wi - x.transpose(-1, -2) @ (last * lr_i[..., None] * g) for Wi, (x, g) in zip(W, grads)]
        else:
            sums = [x.transpose(-1, -2) @ (lr_i[..., None] * g) for x, g in grads]
            G = sums if G is None else [a + c for a, c in zip(G, sums)]
            if offset == K:
                W = [Wi - last * Gi for Wi, Gi in zip(W, G)]
        if offset == K:
            G, offset = None, 0
    G = tuple(torch.zeros_like(x) for x in _split(W)) if G is None else _split(G)
    return torch.cat(out, dim=2).transpose(1, 2), (_split(W), G), offset


def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_linear."""
    return _ttt(_linear_grads, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)


def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See reference.ttt_mlp."""
    return _ttt(_mlp_grads, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
