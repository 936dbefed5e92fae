"""SSD (Mamba-2), the obvious way: one Python step per time step (the oracle).

    h_t = a_t h_{t-1} + dt_t x_t B_t^T,    y_t = h_t C_t + D x_t,
    a_t = exp(dt_t A_h)  in (0, 1],   or with neg_eigval   a_t = 2 exp(dt_t A_h) - 1  in (-1, 1]

Same arguments and semantics as src/ops/ssd_scan's ssd_scan (without chunks); use float64 inputs
for exact checks. Autograd differentiates through the loop.
"""

import torch
import torch.nn.functional as F


def ssd_scan(x, dt, A, B, C, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, neg_eigval=False):
    """mamba-ssm's mamba_chunk_scan_combined semantics (without chunks); neg_eigval: the
    transition 2 exp(dt A) - 1.
    x: (batch, L, H, P); dt: (batch, L, H); A: (H,); B, C: (batch, L, G, N), G divides H;
    D: (H,) or (H, P); z: (batch, L, H, P) -> out * silu(z); dt_bias: (H,);
    initial_states: (batch, H, P, N). Returns out (batch, L, H, P) [, final states (batch, H, P, N)]."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    batch, L, H, P = x.shape
    B = B.repeat_interleave(H // B.shape[2], dim=2)  # (batch, L, H, N)
    C = C.repeat_interleave(H // C.shape[2], dim=2)
    h = x.new_zeros(batch, H, P, B.shape[-1]) if initial_states is None else initial_states
    ys = []
    for t in range(L):
        decay = torch.exp(dt[:, t] * A)[:, :, None, None]  # (batch, H, 1, 1)
        if neg_eigval:
            decay = 2 * decay - 1
        h = decay * h + (dt[:, t, :, None] * x[:, t])[..., None] * B[:, t, :, None, :]
        ys.append((h * C[:, t, :, None, :]).sum(-1))
    out = torch.stack(ys, dim=1)
    if D is not None:
        out = out + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        out = out * F.silu(z)
    return (out, h) if return_final_states else out
