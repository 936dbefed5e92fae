"""TTT-Linear and TTT-MLP (Sun et al. 2024): a hidden state that is the weights of an inner model,
trained at test time by mini-batch gradient descent on each token's reconstruction loss.

    ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6)
    ttt_mlp(...)   (the same arguments)                    -> (z, state, offset)
        G_t = sum_{s <= t in its mini-batch} lr_s grad_W l(W0; k_s, v_s),  W_t = W0 - eta_t G_t,  z_t = Z(q_t; W_t)
        l(W; k, v) = 1/2 || LN_{w,b}(Z(k; W)) - (v - k) ||^2;  Z = x W1 + b1 (linear) or gelu(x W1 + b1) W2 + b2 (mlp)

q, k, v (B, T, H, D); eta, lr (B, T, H); w, b (H, D); state (W, G): the weights at the current
mini-batch's start and the gradient sums of its first `offset` tokens (reference.py). One path,
chunked.py (the dual form; every device), so no dispatcher; reference.py is the oracle. fla's
chunk_ttt_linear (Triton) is not a backend: it returns another output (z + LN(z), from which z
is not recovered), takes one eta per token (no lr_s) and no partial mini-batch in its state. Its
naive.py is an oracle in the tests (lr = 1).
"""

from src.ops.ttt import chunked


def _check(q, k, v, eta, lr, offset, mini_batch_size):
    if k.shape != q.shape or v.shape != q.shape or eta.shape != q.shape[:3] or lr.shape != eta.shape \
            or not 0 <= offset < mini_batch_size:
        raise ValueError(f"ttt: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, eta {tuple(eta.shape)}, "
                         f"lr {tuple(lr.shape)}, offset {offset}, mini_batch_size {mini_batch_size}: need q, k, v "
                         "(B, T, H, D), eta, lr (B, T, H), 0 <= offset < mini_batch_size")


def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See the module docstring."""
    _check(q, k, v, eta, lr, offset, mini_batch_size)
    return chunked.ttt_linear(q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)


def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6):
    """See the module docstring."""
    _check(q, k, v, eta, lr, offset, mini_batch_size)
    return chunked.ttt_mlp(q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
