"""The mLSTM cell, the obvious way: one Python step per time step (the oracle).

Per head, with the state C (K, V), n (K), m (a scalar), the input and forget gate preactivations
i_t, f_t (scalars), keys scaled by K^-1/2 (k~_t = k_t / sqrt(K); the queries are not scaled):
    lf_t = logsigmoid(f_t),       m_t = max(lf_t + m_{t-1}, i_t)
    C_t  = exp(lf_t + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) k~_t v_t^T
    n_t  = exp(lf_t + m_{t-1} - m_t) n_{t-1} + exp(i_t - m_t) k~_t
    h_t  = C_t^T q_t / (max(|n_t . q_t|, exp(-m_t)) + eps),        eps = 1e-6
as xlstm's recurrent_step_stabilized_simple (xlstm/blocks/mlstm/backends.py), in the
(B, T, H, K) layout. The state starts at C = 0, n = 0, m = -inf unless given: then m_1 = i_1 and
the steps equal xlstm's parallel_stabilized_simple, whose stabiliser is the row maximum of its log
gate matrix (xlstm's own step starts from m = 0, which differs from its parallel form where eps
counts; pass initial_state (0, 0, 0) to get that). Computes in the inputs' dtype (float64 for
exact checks); autograd differentiates through the loop, m and the max included.
"""

import torch
import torch.nn.functional as F

EPS = 1e-6  # xlstm's eps, added to the normaliser


def mlstm(q, k, v, i, f, initial_state=None, output_final_state=False):
    """q, k (B, T, H, K); v (B, T, H, V); i, f (B, T, H); initial_state (C (B, H, K, V), n (B, H, K),
    m (B, H)) or None. -> h (B, T, H, V), final state (C, n, m) or None."""
    B, T, H, K = q.shape
    if initial_state is None:
        C, n = q.new_zeros(B, H, K, v.shape[-1]), q.new_zeros(B, H, K)
        m = q.new_full((B, H), -float("inf"))
    else:
        C, n, m = (s.to(q.dtype) for s in initial_state)
    out = []
    for t in range(T):
        lf = F.logsigmoid(f[:, t])  # (B, H)
        m_new = torch.maximum(lf + m, i[:, t])
        decay, gain = torch.exp(lf + m - m_new), torch.exp(i[:, t] - m_new)  # (B, H)
        k_t = k[:, t] * K**-0.5  # (B, H, K)
        C = decay[..., None, None] * C + gain[..., None, None] * k_t[..., None] * v[:, t, :, None, :]
        n = decay[..., None] * n + gain[..., None] * k_t
        m = m_new
        num = (C * q[:, t, :, :, None]).sum(-2)  # (B, H, V)
        den = torch.maximum((n * q[:, t]).sum(-1).abs(), torch.exp(-m)) + EPS  # (B, H)
        out.append(num / den[..., None])
    return torch.stack(out, dim=1), ((C, n, m) if output_final_state else None)
