"""Cauchy kernel as pykeops reductions (never materialises [B, N, L]); pip install pykeops==2.3.

With d = z_l - w_n = dr + i di and |d|^2 = dr^2 + di^2, in real arithmetic:
    forward (i = l, j = n):      sum_n v conj(d)^p / |d|^(2p)              (p = 1; p = 2 for dK/dz)
    backward (i = n, j = l):     sum_l g d / |d|^2,  sum_l g d^2 / |d|^4    -> grad_v, grad_w / conj(v)
KeOps computes in the input's real dtype (float32 or float64); each formula compiles on first
use (~10 s, cached in KEOPS_CACHE_FOLDER or ~/.cache).
"""

import torch

try:
    from pykeops.torch import Genred
except ImportError as e:
    raise ImportError(f"pykeops is not installed ({e}): pip install pykeops==2.3") from e



def _sq(a):
    return f"Square({a})"


_dr, _di = "(zr - wr)", "(zi - wi)"
_den = f"({_sq(_dr)} + {_sq(_di)})"
_c2re, _c2im = f"({_sq(_dr)} - {_sq(_di)})", f"(IntCst(2) * {_dr} * {_di})"  # d^2 (conj(d)^2 = re - i im)


def _times(ar, ai, br, bi):  # (ar + i ai)(br + i bi)
    return f"({ar} * {br} - {ai} * {bi})", f"({ar} * {bi} + {ai} * {br})"


_p1 = _times("vr", "vi", _dr, f"(-{_di})")  # v conj(d)
_p2 = _times("vr", "vi", _c2re, f"(-{_c2im})")  # v conj(d)^2
_VARS_I_L = ["zr = Vi(1)", "zi = Vi(1)", "wr = Vj(1)", "wi = Vj(1)", "vr = Vj(1)", "vi = Vj(1)"]
_forward = {
    1: Genred(f"Concat({_p1[0]} / {_den}, {_p1[1]} / {_den})", _VARS_I_L, reduction_op="Sum", axis=1),
    2: Genred(f"Concat({_p2[0]} / Square({_den}), {_p2[1]} / Square({_den}))", _VARS_I_L, reduction_op="Sum", axis=1),
}
_g1 = _times("gr", "gi", _dr, _di)  # g d
_g2 = _times("gr", "gi", _c2re, _c2im)  # g d^2
_backward = Genred(
    f"Concat(Concat({_g1[0]} / {_den}, {_g1[1]} / {_den}), Concat({_g2[0]} / Square({_den}), {_g2[1]} / Square({_den})))",
    ["wr = Vi(1)", "wi = Vi(1)", "zr = Vj(1)", "zi = Vj(1)", "gr = Vj(1)", "gi = Vj(1)"],
    reduction_op="Sum", axis=1,
)


def _parts(t):  # complex (B, M) -> real (B, M, 1), (B, M, 1)
    return t.real.unsqueeze(-1).contiguous(), t.imag.unsqueeze(-1).contiguous()


def _rows(z, B):  # (L,) -> (B, L) as a KeOps batch
    return z[None].expand(B, -1)


class KeopsCauchy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, v, z, w):  # v, w (B, N); z (L,) -> (B, L)
        ctx.save_for_backward(v, z, w)
        out = _forward[1](*_parts(_rows(z, v.shape[0])), *_parts(w), *_parts(v))
        return torch.complex(out[..., 0], out[..., 1])

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gK):
        v, z, w = ctx.saved_tensors
        B = v.shape[0]
        out = _backward(*_parts(w), *_parts(_rows(z, B)), *_parts(gK))  # (B, N, 4)
        grad_v = torch.complex(out[..., 0], out[..., 1])
        grad_w = torch.complex(out[..., 2], out[..., 3]) * v.conj()
        grad_z = None
        if ctx.needs_input_grad[1]:  # dK/dz = -sum_n v / (z - w)^2
            s2 = _forward[2](*_parts(_rows(z, B)), *_parts(w), *_parts(v))
            grad_z = -(gK * torch.complex(s2[..., 0], s2[..., 1]).conj()).sum(0)
        return grad_v, grad_z, grad_w


def cauchy(v, z, w):
    dtype = torch.promote_types(torch.promote_types(v.dtype, w.dtype), z.dtype)
    batch = torch.broadcast_shapes(v.shape[:-1], w.shape[:-1])
    N = v.shape[-1]
    v2 = v.to(dtype).expand(*batch, N).reshape(-1, N)
    w2 = w.to(dtype).expand(*batch, N).reshape(-1, N)
    return KeopsCauchy.apply(v2, z.to(dtype), w2).reshape(*batch, z.shape[0])
