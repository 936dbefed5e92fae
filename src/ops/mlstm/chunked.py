"""The mLSTM cell as gated linear attention with one more value column: the torch path (every
device), and the form the other backends share (cpu.py).

The recurrence (reference.py) is gla's with a per-head decay, once the stabiliser m is known:
    g_t  = lf_t + m_{t-1} - m_t <= 0,       k'_t = exp(i_t - m_t) k_t / sqrt(K)   (exp(.) <= 1)
    [C_t | n_t] = exp(g_t) [C_{t-1} | n_{t-1}] + k'_t [v_t | 1]^T
so one gla call on the values [v | 1] (V + 1 columns; scale 1) gives num_t = C_t^T q_t and
z_t = n_t . q_t in one pass over the state, and h_t = num_t / (max(|z_t|, exp(-m_t)) + eps).
m is a max-plus scan, in closed form: with F_t = sum_{s <= t} lf_s,
    m_t = F_t + max(m_0, max_{j <= t} (i_j - F_j))                (a cumulative max)
computed in float64 (B T H scalars), so that float32 calls keep their stabiliser to float64
rounding. Every exponent is <= 0: nothing overflows, also for i_t = 50 (a state that grows like
e^50 is held as e^-m_t times it). m_0 = -inf (no initial state) makes g_1 = -inf: it is floored
at gla's reset value, whose exp is exactly 0 in the working dtype. Autograd differentiates
through the scan and the gla path (its own backward), so the gradients are the loop's, the
stabiliser's included (it counts where eps does).
`lanes` pads the value columns with zeros to a multiple of it (the C loop's 8-step blocks want
V a multiple of its vector width); the padded columns stay zero and are dropped.
"""

import torch
import torch.nn.functional as F

from src.ops.gla import chunked as gla_chunked
from src.ops.mlstm.reference import EPS


def stabiliser(i, f, m0):
    """i, f (B, T, H); m0 (B, H) or None (-inf). -> lf, m (B, T, H) and m_{t-1} (B, T, H), float64."""
    i, lf = i.double(), F.logsigmoid(f.double())
    m0 = i.new_full(i[:, 0].shape, -float("inf")) if m0 is None else m0.double()
    cum = lf.cumsum(1)  # F_t (B, T, H)
    m = cum + torch.maximum(m0[:, None], (i - cum).cummax(1).values)
    return lf, m, torch.cat((m0[:, None], m[:, :-1]), 1)


def via_gla(gla, q, k, v, i, f, initial_state=None, output_final_state=False, lanes=1):
    """Same arguments and result as reference.mlstm; `gla` a gla backend's function."""
    B, T, H, K = q.shape
    V, dtype = v.shape[-1], q.dtype
    C0, n0, m0 = (None, None, None) if initial_state is None else initial_state
    lf, m, m_prev = stabiliser(i, f, m0)  # (B, T, H) float64
    g = (lf + m_prev - m).clamp(min=gla_chunked.floor(dtype)).to(dtype)  # log decay, <= 0
    k_in = k * (torch.exp(i.double() - m) * K**-0.5).to(dtype)[..., None]  # (B, T, H, K)
    pad = -(V + 1) % lanes
    v_in = torch.cat((v, v.new_ones(B, T, H, 1), v.new_zeros(B, T, H, pad)), -1)  # (B, T, H, V + 1 + pad)
    S0 = None if C0 is None else torch.cat((C0, n0[..., None], C0.new_zeros(B, H, K, pad)), -1).to(dtype)
    o, S = gla(q, k_in, v_in, g, None, 1.0, S0, True)  # o (B, T, H, V + 1 + pad), S (B, H, K, V + 1 + pad)
    m = m.to(dtype)
    den = torch.maximum(o[..., V].abs(), torch.exp(-m)) + EPS  # (B, T, H)
    h = o[..., :V] / den[..., None]
    return h, ((S[..., :V], S[..., V], m[:, -1]) if output_final_state else None)


def mlstm(q, k, v, i, f, initial_state=None, output_final_state=False):
    """Same arguments and result as reference.mlstm: the chunked gla path in torch."""
    return via_gla(gla_chunked.gla, q, k, v, i, f, initial_state, output_final_state)
