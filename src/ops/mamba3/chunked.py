"""Mamba-3 SISO as an SSD scan (Mamba-2's chunked matrix form), in torch, for every device.

The trapezoidal update mixes two tokens,
    h_t = alpha_t h_{t-1} + alpha_t c_t v_{t-1} k~_{t-1}^T + gamma_t v_t k~_t^T,
    c_t = (1 - lambda_t) dt_t,  gamma_t = lambda_t dt_t,  alpha_t = exp(adt_t),
but the shifted state s_t = h_t + c_{t+1} v_t k~_t^T (with c_{T+1} = 0 at the end of the call) is
one SSD scan with a per-token log decay adt_t and a per-token input weight w_t = gamma_t + c_{t+1}:
    s_t = alpha_t s_{t-1} + w_t v_t k~_t^T,    s_0 = h_0 + c_1 v_0 k~_0^T
    y_t = h_t q~_t = s_t q~_t - c_{t+1} (q~_t . k~_t) v_t,   h_T = s_T.
The rotations are data-dependent but act on q and k only: q~_t = R(phi_t)(q_t + q_bias) with
phi_t = phi_0 + sum_{u <= t} dt_u pi tanh(angles_u) (a cumulative sum, in float64; the state keeps
it mod 2 pi as mamba-ssm does), and the same for k. The scan is the ssd_scan op's chunked form with
the decay and the input weight as separate inputs (ssd_scan ties them as exp(dt A) and dt, which
would need w / adt here). Every exponent is a sum of adt over a causal span (<= 0 in the layer).
"""

import math

import torch
import torch.nn.functional as F

from src.ops.mamba3.reference import rotate as reference_rotate
from src.ops.ssd_scan.chunked import segsum


def scan(x, a, B, C, chunk_size, S0):
    """s_t = exp(a_t) s_{t-1} + x_t B_t^T from S0, y_t = s_t C_t; x (b, L, H, P), a (b, L, H),
    B, C (b, L, H, N), S0 (b, H, P, N) -> y (b, L, H, P), s_L (b, H, P, N)."""
    batch, L, H, P = x.shape
    T = min(chunk_size, L)
    pad = -L % T  # a = 0 and x = 0 after the end: no decay, no input
    x, B, C = (F.pad(M, (0, 0, 0, 0, 0, pad)) for M in (x, B, C))
    n = (L + pad) // T
    x, B, C = (M.reshape(batch, n, T, H, -1) for M in (x, B, C))  # (b, c, l, h, p or n)
    a = F.pad(a, (0, 0, 0, pad)).reshape(batch, n, T, H).permute(0, 3, 1, 2)  # (b, h, c, l)
    cs = torch.cumsum(a.double(), dim=-1)  # float64: the differences below cancel its leading digits
    causal = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
    decay = torch.exp((cs[..., :, None] - cs[..., None, :]).to(a.dtype).masked_fill(~causal, float("-inf")))
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, x)
    to_end = torch.exp((cs[..., -1:] - cs).to(a.dtype))  # (b, h, c, l)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, to_end, x)  # end of each chunk, from 0
    states = torch.cat((S0[:, None].to(states.dtype), states), dim=1)  # (b, c+1, h, p, n)
    chunk_decay = torch.exp(segsum(F.pad(cs[..., -1].to(a.dtype), (1, 0))))  # (b, h, c+1, c+1)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)  # state at the end of chunk z-1
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states[:, :-1], torch.exp(cs.to(a.dtype)))
    return (y_diag + y_off).reshape(batch, n * T, H, P)[:, :L], states[:, -1]


def mamba3_siso(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False, chunk_size=64):
    """Same arguments and result as reference.mamba3_siso (plus the chunk length)."""
    return via_scan(lambda x, a, B, C, S0: scan(x, a, B, C, chunk_size, S0), q, k, v, adt, dt, trap, q_bias, k_bias,
                    angles, D, z, initial_state, output_final_state)


def rotate(x, cos, sin):
    """reference.rotate as one complex product: the pair (x_2i, x_2i+1) is x_2i + i x_2i+1, turned by
    cos_i + i sin_i (by 1 past S), 5x the stacked form at (B, T, H, N) = (2, 2048, 4, 128) on CPU.
    Half precisions have no complex kernels everywhere: reference.rotate."""
    if x.dtype not in (torch.float32, torch.float64):
        return reference_rotate(x, cos, sin)
    turn = F.pad(torch.complex(cos, sin), (0, x.shape[-1] // 2 - cos.shape[-1]), value=1)  # (..., N/2)
    return torch.view_as_real(torch.view_as_complex(x.unflatten(-1, (-1, 2))) * turn).flatten(-2)


def via_scan(scan_fn, q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
             output_final_state=False):
    """reference.mamba3_siso through `scan_fn(x, a, B, C, S0) -> (y, s_L)`, a function with scan's
    arguments and result without the chunk length (the module docstring's reduction)."""
    batch, T, H, P = v.shape
    G, N, S = q.shape[2], q.shape[-1], angles.shape[-1]
    q, k = ((M[:, :, :, None] + bias.view(G, H // G, N)).flatten(2, 3) for M, bias in ((q, q_bias), (k, k_bias)))
    if initial_state is None:
        phi0, h0 = v.new_zeros(batch, H, S), v.new_zeros(batch, H, P, N)
        k0, v0 = v.new_zeros(batch, H, N), v.new_zeros(batch, H, P)
    else:
        phi0, h0, k0, v0 = initial_state
    phi = phi0[:, None].double() + torch.cumsum((torch.tanh(angles) * math.pi * dt[..., None]).double(), dim=1)
    phi = (phi - 2 * math.pi * torch.floor(phi / (2 * math.pi))).to(torch.promote_types(v.dtype, torch.float32))
    cos, sin = torch.cos(phi).to(q.dtype), torch.sin(phi).to(q.dtype)  # (B, T, H, S), of angles mod 2 pi
    qr, kr = rotate(q, cos, sin), rotate(k, cos, sin)  # (B, T, H, N)
    lam = torch.sigmoid(trap)
    c = (1 - lam) * dt  # (B, T, H)
    c_next = F.pad(c[:, 1:], (0, 0, 0, 1))  # c_{t+1}, 0 after the last token
    w = lam * dt + c_next
    s0 = h0 + c[:, 0, :, None, None] * v0[..., None] * k0[..., None, :]  # (B, H, P, N)
    y, h = scan_fn(w[..., None] * v, adt, kr, qr, s0)
    y = y - (c_next * torch.linalg.vecdot(qr, kr))[..., None] * v
    if D is not None:
        y = y + D[:, None] * v
    if z is not None:
        y = y * F.silu(z)
    if not output_final_state:
        return y
    return y, (phi[:, -1].to(v.dtype), h, kr[:, -1], v[:, -1])
