"""The wkv recurrence of RWKV-4, one time step at a time: the oracle of src/ops/wkv.

For each batch b and channel d, with log decay w (<= 0 in RWKV: w = -exp(time_decay)) and bonus u,

    wkv_t = (sum_{i<t} e^{(t-1-i) w + k_i} v_i + e^{u + k_t} v_t) / (sum_{i<t} e^{(t-1-i) w + k_i} + e^{u + k_t})

run in the numerically stable form: the state (a, b, p) holds both sums scaled by e^{-p}, p the
largest exponent so far, so no exponential is ever taken of a positive number:

    q = max(p, u + k_t),  wkv_t = (e^{p-q} a + e^{u+k_t-q} v_t) / (e^{p-q} b + e^{u+k_t-q})
    p' = max(p + w, k_t), a' = e^{p+w-p'} a + e^{k_t-p'} v_t,  b' = e^{p+w-p'} b + e^{k_t-p'}

starting from a = b = 0, p = -inf. Differentiable by autograd (slowly).
"""

import torch


def default_state(shape, dtype, device=None):
    """(a, b, p), each of `shape` (batch, D): empty sums."""
    zeros = torch.zeros(shape, dtype=dtype, device=device)
    return zeros, zeros.clone(), torch.full(shape, -torch.inf, dtype=dtype, device=device)


def wkv_step(w, u, k_t, v_t, state):
    """One step: w, u (D,); k_t, v_t (batch, D); state (a, b, p) -> wkv_t (batch, D), state."""
    a, b, p = state
    q = torch.maximum(p, u + k_t)
    e1, e2 = torch.exp(p - q), torch.exp(u + k_t - q)
    y = (e1 * a + e2 * v_t) / (e1 * b + e2)
    q = torch.maximum(p + w, k_t)
    e1, e2 = torch.exp(p + w - q), torch.exp(k_t - q)
    return y, (e1 * a + e2 * v_t, e1 * b + e2, q)


def wkv(w, u, k, v):
    """w, u (D,); k, v (batch, L, D) -> wkv (batch, L, D)."""
    state = default_state(k[:, 0].shape, k.dtype, k.device)
    ys = []
    for k_t, v_t in zip(k.unbind(1), v.unbind(1)):  # unbind: the backward of k[:, t] writes a zero copy of k
        y, state = wkv_step(w, u, k_t, v_t, state)
        ys.append(y)
    return torch.stack(ys, dim=1)
