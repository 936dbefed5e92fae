"""Titans' neural memory (Behrouz et al. 2024): a matrix memory trained at test time by gradient
descent with momentum and forgetting, the gradients of a chunk at the memory of its start.

    titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6)
        -> (z, state, offset)
        S_t = eta_t S_{t-1} - theta_t grad_M l(M0; k_t, v_t),  M_t = (1 - alpha_t) M_{t-1} + S_t,  z_t = q_t M_t
        l(M; k, v) = || LN_{w,b}(k M) - (v - k) ||^2,  log_decay = log(1 - alpha), log_momentum = log(eta)

q, k, v (B, T, H, D); theta, log_decay, log_momentum (B, T, H); w, b (H, D); state (M, S, M0)
(B, H, D, D) each (reference.py). One path, chunked.py (every device), so no dispatcher; fla has no
Titans kernel (fla/ops/titans holds its naive loops only). reference.py is the oracle; fla's
titans_linear loop is one in the tests.
"""

from src.ops.titans import chunked


def titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset=0, chunk_size=16, eps=1e-6):
    """See the module docstring."""
    if k.shape != q.shape or v.shape != q.shape or any(x.shape != q.shape[:3] for x in (theta, log_decay, log_momentum)) \
            or not 0 <= offset < chunk_size:
        raise ValueError(f"titans: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, theta "
                         f"{tuple(theta.shape)}, log_decay {tuple(log_decay.shape)}, log_momentum "
                         f"{tuple(log_momentum.shape)}, offset {offset}: need q, k, v (B, T, H, D), the gates "
                         "(B, T, H), 0 <= offset < chunk_size")
    return chunked.titans(q, k, v, theta, log_decay, log_momentum, w, b, state, offset, chunk_size, eps)
