"""The sLSTM cell, the obvious way: one Python step per time step (the oracle).

Per head h (d units), with gate preactivations from the input x_t = Wx_t (4, H, d) in xlstm's gate
order [i, f, z, o], a bias b (4, H, d), the block-diagonal recurrent kernel R (H, d, 4, d) (xlstm's
external layout: R[h, k, g, j] takes unit k of h_{t-1} to unit j of gate g) and the state
(h, c, n, m), each (H, d):
    r_t = x_t + b + (h_{t-1} R per head),     r[g, h, j] += sum_k h_{t-1}[h, k] R[h, k, g, j]
    lf_t = logsigmoid(r_f),       m_t = max(lf_t + m_{t-1}, r_i)
    i_t = exp(r_i - m_t),         f_t = exp(lf_t + m_{t-1} - m_t)        (both <= 1)
    c_t = f_t c_{t-1} + i_t tanh(r_z),       n_t = f_t n_{t-1} + i_t
    h_t = sigmoid(r_o) c_t / n_t
as xlstm's slstm_forward with slstm_forward_pointwise (xlstm/blocks/slstm/src/vanilla/). Every unit
has its own stabiliser m. The state starts at h = c = n = 0, m = -inf unless given: then m_1 = r_i
at the first step, which is xlstm's start (its pointwise step takes m_1 = r_i while its n is all
zero); xlstm's min(exp(.), 1) clamps are identities here (each exponent is <= 0) and are left out.
Computes in the inputs' dtype (float64 for exact checks); autograd differentiates through the loop.
"""

import torch
import torch.nn.functional as F


def slstm(x, R, b, initial_state=None, output_final_state=False):
    """x (B, T, 4, H, d); R (H, d, 4, d); b (4, H, d); initial_state (h, c, n, m), each (B, H, d), or
    None. -> h (B, T, H, d), final state (h, c, n, m) or None."""
    B, _, _, H, d = x.shape
    if initial_state is None:
        h, c, n = (x.new_zeros(B, H, d) for _ in range(3))
        m = x.new_full((B, H, d), -float("inf"))
    else:
        h, c, n, m = (s.to(x.dtype) for s in initial_state)
    out = []
    for x_t in x.unbind(1):  # unbind, not x[:, t]: the backward of T selects would write T zero copies of x
        r = x_t + b + torch.einsum("bhk,hkgj->bghj", h, R)  # (B, 4, H, d)
        ri, rf, rz, ro = r.unbind(1)  # (B, H, d) each
        lf = F.logsigmoid(rf) + m
        m = torch.maximum(lf, ri)
        i, f = torch.exp(ri - m), torch.exp(lf - m)
        c = f * c + i * torch.tanh(rz)
        n = f * n + i
        h = torch.sigmoid(ro) * c / n
        out.append(h)
    return torch.stack(out, dim=1), ((h, c, n, m) if output_final_state else None)
