"""SSD (scalar A per head, Mamba-2) in its chunked matrix form, in torch, for every device.

With the segment sums
    segsum(x)[i, j] = x_{j+1} + ... + x_i  (j <= i; -inf above the diagonal)
of dA = dt A inside chunks of T steps:
    Y_diag = (C B^T o exp(segsum(dA))) (dt x)                    (attention-like, per chunk)
             (inside a chunk segsum(dA)[i, j] = cs_i - cs_j, cs = cumsum(dA) in float64: O(T) sums,
             not O(T^2), and float32 would lose the digits the difference cancels)
    S_c    = sum_t exp(dA_cs[T-1] - dA_cs[t]) B_t (dt x_t)^T     (state at the end of chunk c)
    S'     = chunk recurrence of S with decays exp(sum of dA over the chunk) (segsum over chunks)
    Y_off  = exp(dA_cs[t]) C_t S'_{c-1}
Every exponent is a sum of dt A <= 0, so nothing overflows.

Signed transitions (neg_eigval): a_t = 2 exp(dt_t A) - 1 in (-1, 1] has no logarithm, and it
is 0 at dt A = -log 2. So the signed path takes no logarithm at all: it multiplies, with the
segment products
    segprod(a)[i, j] = a_{j+1} ... a_i  (j <= i, 1 on the diagonal; 0 above it)
(a cumulative product down each column, as segsum is a cumulative sum) in place of
exp(segsum(dA)), a cumulative product in place of exp(dA_cs), and segprod over the chunks'
products in place of the chunk decays. Products are exact at a = 0 and keep their gradient
there (torch's cumprod differentiates through zeros), where a sign beside a log magnitude
(sigma_i sigma_j exp(G_i - G_j), G = cumsum(log |a|)) needs |a| floored at some tiny value: the
floor's derivative then drops the gradient of the step with a = 0, and undoing that (d log|a| /
da = 1 / tiny) divides the cancellation error of G's sums by tiny (measured: gradients off by
1e14). |a| <= 1, so nothing overflows. The products need no float64, unlike cs: nothing cancels
in them, and a product of T float32 factors is off by at most ~T/2 float32 ulps (relative); they
are taken in the input's dtype, at least float32.
"""

import torch
import torch.nn.functional as F


def segsum(x):
    """x (..., T) -> (..., T, T): out[i, j] = x[j+1] + ... + x[i] for j <= i, -inf for j > i."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)  # [..., i, j] = x[i]
    ones = torch.ones(T, T, dtype=torch.bool, device=x.device)
    out = torch.cumsum(x.masked_fill(~ones.tril(-1), 0), dim=-2)  # [i, j] = sum of x[k], j < k <= i
    return out.masked_fill(ones.triu(1), float("-inf"))


def segprod(x):
    """x (..., T) -> (..., T, T): out[i, j] = x[j+1] ... x[i] for j <= i (1 for j = i), 0 for j > i."""
    T = x.shape[-1]
    x = x[..., None].expand(*x.shape, T)  # [..., i, j] = x[i]
    ones = torch.ones(T, T, dtype=torch.bool, device=x.device)
    out = torch.cumprod(x.masked_fill(~ones.tril(-1), 1), dim=-2)  # [i, j] = prod of x[k], j < k <= i
    return out.masked_fill(ones.triu(1), 0)


def _decays(dA):
    """dA = dt A (b, h, c, l) -> the products of exp(dA) that the chunked form reads: inside each
    chunk over (j, i] (b, h, c, l, l), from t to the chunk's end (b, h, c, l), from its start to t
    (b, h, c, l), and over whole chunks (b, h, c+1, c+1)."""
    T = dA.shape[-1]
    causal = torch.ones(T, T, dtype=torch.bool, device=dA.device).tril()
    dA_cs = torch.cumsum(dA, dim=-1)
    cs = torch.cumsum(dA.double(), dim=-1)  # float64: the differences below cancel its leading digits
    inside = torch.exp((cs[..., :, None] - cs[..., None, :]).to(dA.dtype).masked_fill(~causal, float("-inf")))
    to_end = torch.exp(dA_cs[..., -1:] - dA_cs)
    chunks = torch.exp(segsum(F.pad(dA_cs[..., -1], (1, 0))))
    return inside, to_end, torch.exp(dA_cs), chunks


def _signed_decays(dA):
    """_decays for the signed transitions a = 2 exp(dA) - 1 (module docstring): products, in at
    least float32."""
    a = torch.exp(dA.to(torch.promote_types(dA.dtype, torch.float32))) * 2 - 1  # (b, h, c, l)
    inside = segprod(a)  # (b, h, c, l, l)
    from_start = torch.cumprod(a, dim=-1)
    chunks = segprod(F.pad(from_start[..., -1], (1, 0), value=1))  # (b, h, c+1, c+1)
    return tuple(M.to(dA.dtype) for M in (inside, inside[..., -1, :], from_start, chunks))


def ssd_scan(x, dt, A, B, C, chunk_size=64, D=None, z=None, dt_bias=None, dt_softplus=False, initial_states=None,
             return_final_states=False, neg_eigval=False):
    """Same arguments and result as reference.ssd_scan (mamba-ssm's mamba_chunk_scan_combined)."""
    if dt_bias is not None:
        dt = dt + dt_bias
    if dt_softplus:
        dt = F.softplus(dt)
    batch, L, H, P = x.shape
    B = B.repeat_interleave(H // B.shape[2], dim=2)  # (batch, L, H, N)
    C = C.repeat_interleave(H // C.shape[2], dim=2)
    T = min(chunk_size, L)
    pad = -L % T  # dt = 0 and x = 0 after the end: no decay (a = 1, signed or not), no input
    xdt = F.pad(x * dt[..., None], (0, 0, 0, 0, 0, pad))
    dA = F.pad(dt * A, (0, 0, 0, pad))
    B, C = (F.pad(M, (0, 0, 0, 0, 0, pad)) for M in (B, C))
    n = (L + pad) // T
    xdt, B, C = (M.reshape(batch, n, T, H, -1) for M in (xdt, B, C))  # (b, c, l, h, p or n)
    dA = dA.reshape(batch, n, T, H).permute(0, 3, 1, 2)  # (b, h, c, l)
    decay, decay_to_end, decay_from_start, chunk_decay = (_signed_decays if neg_eigval else _decays)(dA)
    y_diag = torch.einsum("bclhn,bcshn,bhcls,bcshp->bclhp", C, B, decay, xdt)
    states = torch.einsum("bclhn,bhcl,bclhp->bchpn", B, decay_to_end, xdt)  # end of each chunk, from 0
    if initial_states is None:
        initial_states = torch.zeros_like(states[:, :1])
    else:
        initial_states = initial_states[:, None].to(states.dtype)
    states = torch.cat((initial_states, states), dim=1)  # (b, c+1, h, p, n)
    states = torch.einsum("bhzc,bchpn->bzhpn", chunk_decay, states)  # state at the end of chunk z-1
    final = states[:, -1]
    y_off = torch.einsum("bclhn,bchpn,bhcl->bclhp", C, states[:, :-1], decay_from_start)
    out = (y_diag + y_off).reshape(batch, n * T, H, P)[:, :L]
    if D is not None:
        out = out + x * (D[:, None] if D.dim() == 1 else D)
    if z is not None:
        out = out * F.silu(z)
    return (out, final) if return_final_states else out
