"""Titans' neural memory, one Python step per token (the oracle for chunked.py).

Titans (Behrouz et al. 2024, "Learning to Memorize at Test Time") trains its memory M at test time
by gradient descent with momentum S and weight decay (forgetting) alpha on the associative loss
of each token, here (as fla's titans_linear, fla/ops/titans/naive.py) the TTT-Linear inner model
of src/ops/ttt without its bias: f(x; M) = x + LN_{w,b}(x M), per head,

    l(M; k_t, v_t) = || LN_{w,b}(k_t M) - (v_t - k_t) ||^2
    S_t = eta_t S_{t-1} - theta_t grad_M l(M0; k_t, v_t)            (momentum eta, step theta)
    M_t = (1 - alpha_t) M_{t-1} + S_t                               (forget alpha)
    z_t = q_t M_t

with every gradient of a chunk of K tokens taken at M0, the memory at the chunk's start (Titans'
mini-batch gradient descent, fla's chunk_size); the layer's output is q + LN(z) (see the layer).
Gates as logs: log_decay = log(1 - alpha) <= 0, log_momentum = log(eta) <= 0.

State: (M, S, M0) (B, H, D, D) each, and the number n of tokens already in the current chunk
(0 <= n < K), an int beside the state.
"""

import torch

from src.ops.ttt.reference import ln_l2_grad


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """q, k, v (B, T, H, D); theta, log_decay, log_momentum (B, T, H); w, b (H, D); state (M, S, M0)
    (B, H, D, D) each; offset: tokens already in the current chunk.
    -> z (B, T, H, D), the state after T tokens, its offset."""
    M, S, M0 = state
    n, out = offset, []
    for t in range(q.shape[1]):
        k_t = k[:, t]  # (B, H, D)
        g = 2 * ln_l2_grad((k_t[..., None, :] @ M0)[..., 0, :], v[:, t] - k_t, w, b, eps)  # d l / d(k M0)
        grad = k_t[..., :, None] * g[..., None, :]  # (B, H, D, D)
        S = log_momentum[:, t, :, None, None].exp() * S - theta[:, t, :, None, None] * grad
        M = log_decay[:, t, :, None, None].exp() * M + S
        out.append((q[:, t, :, None, :] @ M)[..., 0, :])
        n += 1
        if n == chunk_size:
            M0, n = M, 0
    return torch.stack(out, dim=1), (M, S, M0), n
