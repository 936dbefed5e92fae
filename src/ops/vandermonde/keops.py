"""Vandermonde kernel as pykeops reductions (never materialises [N, L]); pip install pykeops==2.3.

Forward, per row b (a KeOps batch dimension), i = position l, j = mode n:
    K[b, l] = sum_n v exp(x l) = sum_n e^{Re x l} (v cos(Im x l) ... )   (real arithmetic)
Backward, i = n, j = l, with g = conj(gK):
    T0[b, n] = sum_l g exp(x l),  T1[b, n] = sum_l g l exp(x l);  grad_v = conj(T0), grad_x = conj(v T1).
KeOps computes in float64 whatever the input dtype (a float32 phase Im(x) l is off by ~0.05 rad
at l ~ 1e6 and KeOps cannot reduce it modulo 2 pi in double itself); the result is cast back.
The first call of each formula compiles it (~10 s; cached in KEOPS_CACHE_FOLDER or ~/.cache).
"""

import torch

from src.ops.vandermonde.blocked import groups

try:
    from pykeops.torch import Genred
except ImportError as e:
    raise ImportError(f"pykeops is not installed ({e}): pip install pykeops==2.3") from e

_EXP = "Exp({xr} * {l})"
_TERM_RE = f"{_EXP} * ({{ar}} * Cos({{xi}} * {{l}}) - {{ai}} * Sin({{xi}} * {{l}}))"
_TERM_IM = f"{_EXP} * ({{ar}} * Sin({{xi}} * {{l}}) + {{ai}} * Cos({{xi}} * {{l}}))"
_names = dict(xr="xr", xi="xi", l="l", ar="ar", ai="ai")
_re, _im = _TERM_RE.format(**_names), _TERM_IM.format(**_names)

_forward = Genred(
    f"Concat({_re}, {_im})", ["l = Vi(1)", "xr = Vj(1)", "xi = Vj(1)", "ar = Vj(1)", "ai = Vj(1)"],
    reduction_op="Sum", axis=1,
)
_backward = Genred(
    f"Concat(Concat({_re}, {_im}), Concat(l * {_re}, l * {_im}))",
    ["xr = Vi(1)", "xi = Vi(1)", "l = Vj(1)", "ar = Vj(1)", "ai = Vj(1)"],
    reduction_op="Sum", axis=1,
)


def _parts(z):  # complex (B, M) -> real (B, M, 1), (B, M, 1)
    return z.real.unsqueeze(-1).contiguous(), z.imag.unsqueeze(-1).contiguous()


class KeopsVandermonde(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, x, L):  # v, x (B, N) complex128 -> (B, L)
        ctx.save_for_backward(v, x)
        l = torch.arange(L, dtype=torch.float64, device=v.device)[None, :, None].expand(v.shape[0], L, 1).contiguous()
        out = _forward(l, *_parts(x), *_parts(v))  # (B, L, 2)
        return torch.complex(out[..., 0], out[..., 1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):
        v, x = ctx.saved_tensors
        B, L = gK.shape
        l = torch.arange(L, dtype=torch.float64, device=v.device)[None, :, None].expand(B, L, 1).contiguous()
        out = _backward(*_parts(x), l, *_parts(gK.conj()))  # (B, N, 4)
        T0, T1 = torch.complex(out[..., 0], out[..., 1]), torch.complex(out[..., 2], out[..., 3])
        return T0.conj(), (v * T1).conj(), None


def vandermonde(v, x, L):
    dtype = torch.promote_types(v.dtype, x.dtype)
    v3, x2, batch = groups(v.to(dtype), x.to(dtype))
    R, G, N = v3.shape
    rows = x2.expand(R, G, N).reshape(R * G, N)
    K = KeopsVandermonde.apply(v3.reshape(R * G, N).to(torch.complex128), rows.to(torch.complex128), L)
    return K.to(dtype).reshape(*batch, L)
