"""TTT-Linear and TTT-MLP, one Python step per token (the oracle for chunked.py).

The hidden state is the weights of an inner model f, trained at test time by gradient descent on
the self-supervised loss of each token (Sun et al. 2024, "Learning to (Learn at Test Time)"):

    l(W; k_s, v_s) = 1/2 || LN_{w,b}(Z(k_s; W)) - (v_s - k_s) ||^2,      f(x; W) = x + LN(Z(x; W))
    TTT-Linear  Z(x; W) = x W1 + b1                                      W = (W1 (D, D), b1 (D))
    TTT-MLP     Z(x; W) = gelu_tanh(x W1 + b1) W2 + b2                   W = (W1 (D, 4D), b1, W2, b2)

with LN the layer norm over the head's D features (weight w, bias b: the `ttt_norm` of the
official code, shared by the loss and the output). Mini-batch gradient descent: every gradient in
a mini-batch of K tokens is taken at the weights W0 of the mini-batch's start, and token t (the
i-th of its mini-batch) reads the weights after the steps of s = its mini-batch's tokens <= t:

    G_t = sum_{s <= t} lr_s grad_W l(W0; k_s, v_s),     W_t = W0 - eta_t G_t,     z_t = Z(q_t; W_t)

(the official eta_{t,s} = token_eta_i ttt_lr_s factorises as eta_t lr_s). At the mini-batch's
last token W0 <- W_t and G <- 0. The ops return z (B, T, H, D); the layer's output is q + LN(z).
fla's ttt_linear (fla/ops/ttt/naive.py) is the case lr = 1 (its eta is one per token).

State: (W0 (B, H, ...) each, G alike (the gradient sums of the current mini-batch)) and the
number n of tokens already in the current mini-batch (0 <= n < K), an int beside the state.
Computes in the inputs' dtype; autograd goes through the loop (the inner gradients are formulas,
checked against autograd in the tests).
"""

import math

import torch


def layer_norm(z, w, b, eps):
    """(z - mean) / sqrt(var + eps) w + b over the last dim; w, b (H, D) broadcast over (B, H, ..., D)."""
    return _normalise(z, eps)[0] * w + b


def _normalise(z, eps):
    centred = z - z.mean(-1, keepdim=True)
    std = (centred.square().mean(-1, keepdim=True) + eps).sqrt()  # torch's var: ~10x slower on small tensors
    return centred / std, std


def ln_l2_grad(z, target, w, b, eps):
    """d/dz of 1/2 || LN_{w,b}(z) - target ||^2 (z, target (..., D); w, b broadcast)."""
    z_hat, std = _normalise(z, eps)
    g = (z_hat * w + b - target) * w  # d/dz_hat
    D = z.shape[-1]
    return (D * g - g.sum(-1, keepdim=True) - z_hat * (g * z_hat).sum(-1, keepdim=True)) / (D * std)


def gelu(x):
    """gelu with the tanh approximation (the official code's)."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def gelu_grad(x):
    """d gelu(x) / dx."""
    c = math.sqrt(2 / math.pi)
    th = torch.tanh(c * (x + 0.044715 * x**3))
    return 0.5 * (1 + th) + 0.5 * x * (1 - th**2) * c * (1 + 3 * 0.044715 * x**2)


def linear_grads(W, k, v, w, b, eps):
    """TTT-Linear: the gradients (d/dW1, d/db1) of l(W; k, v), per token: W = (W1 (B, H, D, D),
    b1 (B, H, D)); k, v (B, H, D) -> ((B, H, D, D), (B, H, D))."""
    W1, b1 = W
    g = ln_l2_grad((k[..., None, :] @ W1)[..., 0, :] + b1, v - k, w, b, eps)
    return k[..., :, None] * g[..., None, :], g


def linear_apply(W, x):
    W1, b1 = W
    return (x[..., None, :] @ W1)[..., 0, :] + b1


def mlp_grads(W, k, v, w, b, eps):
    """TTT-MLP: the gradients of l(W; k, v) as linear_grads, W = (W1, b1, W2, b2)."""
    W1, b1, W2, b2 = W
    z1 = (k[..., None, :] @ W1)[..., 0, :] + b1
    x2 = gelu(z1)
    g2 = ln_l2_grad((x2[..., None, :] @ W2)[..., 0, :] + b2, v - k, w, b, eps)
    g1 = (g2[..., None, :] @ W2.transpose(-1, -2))[..., 0, :] * gelu_grad(z1)
    return k[..., :, None] * g1[..., None, :], g1, x2[..., :, None] * g2[..., None, :], g2


def mlp_apply(W, x):
    W1, b1, W2, b2 = W
    x2 = gelu((x[..., None, :] @ W1)[..., 0, :] + b1)
    return (x2[..., None, :] @ W2)[..., 0, :] + b2


def _ttt(grads, apply, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps):
    W0, G = state
    n, out = offset, []
    for t in range(q.shape[1]):
        g_t = grads(W0, k[:, t], v[:, t], w, b, eps)
        lr_t, eta_t = lr[:, t], eta[:, t]
        G = tuple(Gi + lr_t.reshape(*lr_t.shape, *[1] * (gi.dim() - 2)) * gi for Gi, gi in zip(G, g_t))
        W_t = tuple(Wi - eta_t.reshape(*eta_t.shape, *[1] * (Gi.dim() - 2)) * Gi for Wi, Gi in zip(W0, G))
        out.append(apply(W_t, q[:, t]))
        n += 1
        if n == mini_batch_size:
            W0, G, n = W_t, tuple(torch.zeros_like(Gi) for Gi in G), 0
    return torch.stack(out, dim=1), (W0, G), n


def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """q, k, v (B, T, H, D); eta, lr (B, T, H); w, b (H, D); state ((W1 (B, H, D, D), b1 (B, H, D)),
    (G1, Gb1) alike); offset: tokens already in the current mini-batch.
    -> z (B, T, H, D), the state after T tokens, its offset."""
    return _ttt(linear_grads, linear_apply, q, k, v, eta, lr, w, b, state, offset,
                mini_batch_size, eps)


def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """As ttt_linear with W = (W1 (B, H, D, F), b1 (B, H, F), W2 (B, H, F, D), b2 (B, H, D))."""
    return _ttt(mlp_grads, mlp_apply, q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
