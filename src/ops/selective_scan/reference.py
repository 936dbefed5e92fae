"""The selective scan (S6, Mamba), the obvious way: one Python step per time step (the oracle).

    h_t = a_t * h_{t-1} + delta_t B_t u_t,    y_t = C_t . h_t + D u_t,
    a_t = exp(delta_t A)  in (0, 1],   or with neg_eigval   a_t = 2 exp(delta_t A) - 1  in (-1, 1]

Same arguments and semantics as src/ops/selective_scan's selective_scan; use float64 inputs for
exact checks. Autograd differentiates through the loop.
"""

import torch
import torch.nn.functional as F


def _per_channel(M, D):
    """B or C as (batch, D, N, L) from (D, N), (batch, N, L) or (batch, G, N, L)."""
    if M.dim() == 2:
        return M[None, :, :, None]
    if M.dim() == 3:
        return M[:, None]
    return M.repeat_interleave(D // M.shape[1], dim=1)


def selective_scan(u, delta, A, B, C, D=None, z=None, delta_bias=None, delta_softplus=False,
                   return_last_state=False, initial_state=None, neg_eigval=False):
    """mamba-ssm's selective_scan_fn semantics (real A); neg_eigval: the transition 2 exp(delta A) - 1.
    u, delta: (batch, D, L); A: (D, N); B, C: (D, N), (batch, N, L) or (batch, G, N, L);
    D: (D,); z: (batch, D, L) -> out * silu(z); delta_bias: (D,); initial_state: (batch, D, N).
    Returns out (batch, D, L) and, with return_last_state, the last state (batch, D, N)."""
    if delta_bias is not None:
        delta = delta + delta_bias[:, None]
    if delta_softplus:
        delta = F.softplus(delta)
    dim, L = u.shape[1], u.shape[2]
    B, C = _per_channel(B, dim), _per_channel(C, dim)  # (batch or 1, D, N, L or 1)
    h = u.new_zeros(u.shape[0], *A.shape) if initial_state is None else initial_state
    ys = []
    for t in range(L):
        dA = torch.exp(delta[:, :, t, None] * A)  # (batch, D, N)
        if neg_eigval:
            dA = 2 * dA - 1
        h = dA * h + (delta[:, :, t] * u[:, :, t])[..., None] * B[..., min(t, B.shape[-1] - 1)]
        ys.append((h * C[..., min(t, C.shape[-1] - 1)]).sum(-1))
    out = torch.stack(ys, dim=-1)
    if D is not None:
        out = out + u * D[:, None]
    if z is not None:
        out = out * F.silu(z)
    return (out, h) if return_last_state else out
