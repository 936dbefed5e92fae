"""DLR and DSS (`model=dlr`, `model=dss`): convolution layers (conv.LongConv) whose kernels are
diagonal linear recurrences seen as Vandermonde kernels.

Both describe, per channel c and feature h, the recurrence with a diagonal complex state s
    s_t = exp(x_n) s_{t-1} + u_t,      y_t = sum_n W[c, h, n] s_t[n]
whose impulse response is the kernel
    K[c, h, l] = sum_n W[c, h, n] exp(l x_n)                           (l = 0 .. L-1)
`vandermonde_params()` returns (W, x); `forward(L)` returns the real kernel (C, H, L) obtained
from K by `kernel_to_real`: real Re K | imag Im K | sum Re K + Im K | prod Re K * Im K |
real-prod Re K on the first H/2 features, Re K * Im K on the others.

DLR (Gupta, Mehta & Berant 2022): x = Lambda shared by all features,
    Lambda_n = -r_n^2 + i theta_n       (r, theta trained; init Lambda_n = -dt_n/2 + 2 pi i n/N
                                         for `omega`, -dt_n/2 + i randn for `randn`)
versions: '' (both parts), Lambda_imag (Lambda = i theta), Lambda_imag_W_real (and W real),
Lambda_real_W_real (Lambda = -r^2, W real).

DSS (Gupta, Gu & Berant 2022): x = dt_h Lambda_n, W' = W (exp(dt_h Lambda_n) - 1) / Lambda_n
(the zero-order hold of a diagonal state space), Re Lambda < 0 through Lambda_re = -exp(a):
versions exp (Lambda_re = -exp(a), Lambda_im free), exp-re-im (also Lambda_im = exp(b)),
exp-no-scale (W' = W), exp-no-scale-real (and Lambda real), clip (Lambda_re clipped at
max_real_Lambda), clip-no-scale, softmax (W' = W (exp(x) - 1) / ((exp(x L) - 1) Lambda): the
kernel is a softmax over positions, stabilised by exp(-P_max) for Re Lambda > 0; it depends on
L and so has no length-independent recurrence).
Complex parameters are stored as real pairs (..., 2) so that Adam's moments are per part.
"""

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from src.models.sequence.layers.base import group
from src.models.sequence.layers.conv import LongConv
from src.models.sequence.layers.optim import register
from src.ops.vandermonde import DISPATCH, vandermonde
from src.utils.errors import ConfigError, check_choice

KERNEL_TO_REAL = ["real", "imag", "sum", "prod", "real-prod"]


def to_real(K, kernel_to_real):
    """Complex kernel (C, H, L) -> real (C, H, L)."""
    if kernel_to_real == "real":
        return K.real
    if kernel_to_real == "imag":
        return K.imag
    if kernel_to_real == "sum":
        return K.real + K.imag
    prod = K.real * K.imag
    if kernel_to_real == "prod":
        return prod
    H = K.shape[-2]
    return torch.cat((K.real[..., : H // 2, :], prod[..., H // 2 :, :]), dim=-2)


def log_uniform(n, low, high):
    """n samples of exp(U(log low, log high))."""
    return torch.exp(math.log(low) + torch.rand(n) * (math.log(high) - math.log(low)))


COMPLEX_KERNEL = "its kernel is computed in complex numbers, which have no half-precision form in torch"


class VandermondeKernel(nn.Module):
    """A kernel given by `vandermonde_params(L) -> (W, x)`: to_real(sum_n W exp(l x)).
    Subclasses set `backend` and `kernel_to_real`.

    Its recurrent form (the kernel-step protocol of conv.LongConv), for kernel_to_real linear in K:
        s_t = exp(x) s_{t-1} + u_t   (B, H, N) complex,   y_t = to_real(sum_n W s_t)   (B, C, H)
    """

    recurrent = True
    no_half_weights = COMPLEX_KERNEL  # LongConv.why_no_half_weights

    def vandermonde_params(self, L=None):
        raise NotImplementedError

    def forward(self, L):  # -> (C, H, L)
        return to_real(vandermonde(*self.vandermonde_params(L), L, self.backend), self.kernel_to_real)

    def no_recurrence(self):
        """Why this kernel has no length-independent recurrence (None if it has one)."""
        if self.kernel_to_real not in ("real", "imag", "sum"):
            return f"kernel_to_real={self.kernel_to_real} is not linear in the kernel"
        return None

    def default_state(self, batch_size, device=None):
        W, _ = self.vandermonde_params()
        return torch.zeros(batch_size, *W.shape[1:], dtype=W.dtype, device=device)  # (B, H, N)

    def step(self, u_t, state):  # u_t: (B, H), state: (B, H, N) -> y_t (B, C, H), state
        W, x = self.vandermonde_params()
        state = torch.exp(x) * state + u_t[..., None]
        return to_real((W * state[:, None]).sum(-1), self.kernel_to_real), state

    def state_size(self):
        """Floats per sequence in the recurrent state: H N complex numbers."""
        W, _ = self.vandermonde_params()
        return 2 * W.shape[-2] * W.shape[-1]


@dataclass
class DLRTrainable:
    Lambda: bool = True
    W: bool = True


@dataclass
class DLRLr:
    Lambda: float | None = 1e-4  # the imaginary part (and the real part unless Lambda_re is set)
    Lambda_re: float | None = None  # the real part; None: Lambda's
    W: float | None = 1e-4


class DLRKernel(VandermondeKernel):
    VERSIONS = ["", "Lambda_imag", "Lambda_imag_W_real", "Lambda_real_W_real"]

    def __init__(self, H, d_state=4096, channels=1, dt_min=1e-4, dt_max=1e-1, trainable: DLRTrainable | None = None,
                 lr: DLRLr | None = None, version="", Lambda_init="omega", W_scale: float | None = None, wd=0.0,
                 kernel_to_real="real", backend="auto"):
        super().__init__()
        N = d_state
        self.version = check_choice("model.layer.version", version, self.VERSIONS)
        check_choice("model.layer.Lambda_init", Lambda_init, ["omega", "randn"])
        self.kernel_to_real = check_choice("model.layer.kernel_to_real", kernel_to_real, KERNEL_TO_REAL)
        self.backend = DISPATCH.check(backend)
        if version == "Lambda_real_W_real" and kernel_to_real not in ("real", "sum"):
            raise ConfigError(
                f"model.layer.version=Lambda_real_W_real gives a real kernel: kernel_to_real={kernel_to_real} "
                "would make it zero; choose one of: 'real', 'sum'"
            )
        trainable, lr = group(DLRTrainable, trainable), group(DLRLr, lr)
        lr_re = lr.Lambda if lr.Lambda_re is None else lr.Lambda_re

        dt = log_uniform(N, dt_min, dt_max)  # [N]
        theta = 2 * math.pi * torch.arange(N) / N if Lambda_init == "omega" else torch.randn(N)
        if "Lambda_real" not in version:
            register(self, "Lambda_im", theta % (2 * math.pi), trainable.Lambda, lr.Lambda, 0.0)  # [N]
        if "Lambda_imag" not in version:
            register(self, "Lambda_re_sqrt", (0.5 * dt).sqrt(), trainable.Lambda, lr_re, 0.0)  # [N]: Re = -r^2
        W_shape = (channels, H, N) if "W_real" in version else (channels, H, N, 2)
        W_scale = 1 / N if W_scale is None else W_scale
        register(self, "W", torch.randn(W_shape) * W_scale, trainable.W, lr.W, wd)

    def vandermonde_params(self, L=None):
        """(W (C, H, N) complex, Lambda (N,) complex)."""
        N = self.W.shape[2]
        re = -self.Lambda_re_sqrt**2 if "Lambda_imag" not in self.version else self.W.new_zeros(N)
        im = self.Lambda_im if "Lambda_real" not in self.version else self.W.new_zeros(N)
        Lambda = torch.complex(re, im)
        W = torch.complex(self.W, torch.zeros_like(self.W)) if "W_real" in self.version else torch.view_as_complex(self.W)
        return W, Lambda


@functools.lru_cache(maxsize=None)
def hippo_skew_imag(n):
    """The n/2 positive imaginary parts (descending) of the eigenvalues of S, the skew-symmetric
    part of the n x n HiPPO-LegS matrix. S is real skew-symmetric, so its eigenvalues are +-i l_k
    and S^T S = -S^2 is symmetric with eigenvalues l_k^2, each twice: a symmetric eigensolver
    (10x faster than a general one at n = 8192, 35 s here). Cached per n: every layer shares it."""
    r = torch.sqrt(2 * torch.arange(n, dtype=torch.float64) + 1)
    lower = (r[:, None] * r[None, :]).tril(diagonal=-1)
    S = (lower - lower.T) / 2
    squares = torch.linalg.eigvalsh(S.T @ S).clamp(min=0).flip(0)  # l_k^2 descending, each twice
    return squares[0::2].sqrt()


def reciprocal(x, epsilon=1e-7, clamp=False):
    """1 / x with a bounded norm: conj(x) / max(|x|^2, eps) (clamp) or conj(x) / (|x|^2 + eps)."""
    norm_sq = (x * x.conj()).real
    return x.conj() / (norm_sq.clamp(min=epsilon) if clamp else norm_sq + epsilon)


@dataclass
class DSSTrainable:
    log_dt: bool = True
    Lambda: bool = True
    W: bool = True


@dataclass
class DSSLr:
    log_dt: float | None = 1e-3
    Lambda: float | None = 1e-3
    W: float | None = 1e-3


class DSSKernel(VandermondeKernel):
    VERSIONS = ["exp", "softmax", "exp-re-im", "exp-no-scale", "exp-no-scale-real", "clip", "clip-no-scale"]

    def __init__(self, H, d_state=64, channels=1, dt_min=1e-3, dt_max=1e-1, trainable: DSSTrainable | None = None,
                 lr: DSSLr | None = None, sep_dt_re_im=False, Lambda_init="hippo_skew_pos_imag", version="exp", wd=0.0,
                 max_real_Lambda=1e-4, kernel_to_real="real", epsilon=1e-7, backend="auto"):
        super().__init__()
        N = d_state
        self.version = check_choice("model.layer.version", version, self.VERSIONS)
        check_choice("model.layer.Lambda_init", Lambda_init, ["hippo_skew_pos_imag", "lin", "randn"])
        self.kernel_to_real = check_choice("model.layer.kernel_to_real", kernel_to_real, KERNEL_TO_REAL)
        self.max_real_Lambda, self.epsilon = max_real_Lambda, epsilon
        self.backend = DISPATCH.check(backend)
        if version == "exp-re-im" and Lambda_init != "hippo_skew_pos_imag":
            raise ConfigError(
                f"model.layer.version=exp-re-im parametrises Im(Lambda) = exp(b), which needs Im(Lambda) > 0: "
                f"model.layer.Lambda_init={Lambda_init} has Im(Lambda) <= 0; use hippo_skew_pos_imag"
            )
        trainable, lr = group(DSSTrainable, trainable), group(DSSLr, lr)

        if Lambda_init == "hippo_skew_pos_imag":
            im = hippo_skew_imag(2 * N).float()
        elif Lambda_init == "lin":
            im = math.pi * torch.arange(N, dtype=torch.float)
        else:
            im = torch.randn(N)
        re = torch.full((N,), -0.5)
        log_dt = torch.log(log_uniform(H, dt_min, dt_max))  # [H]
        if sep_dt_re_im:
            log_dt = log_dt[:, None].repeat(1, 2)  # [H, 2]: dt of the real and of the imaginary part
        register(self, "log_dt", log_dt, trainable.log_dt, lr.log_dt, 0.0)
        if "exp" in version:
            register(self, "Lambda_log_neg_re", torch.log(-re), trainable.Lambda, lr.Lambda, 0.0)
            if "real" not in version:
                name, value = ("Lambda_log_im", torch.log(im)) if "im" in version else ("Lambda_im", im)
                register(self, name, value, trainable.Lambda, lr.Lambda, 0.0)
        else:
            register(self, "Lambda", torch.stack((re, im), dim=-1), trainable.Lambda, lr.Lambda, 0.0)  # [N, 2]
        register(self, "W", torch.randn(channels, H, N, 2), trainable.W, lr.W, wd)

    def Lambda_(self):
        """Lambda (N,) complex, from the version's parametrisation."""
        if "exp" in self.version:
            re = -torch.exp(self.Lambda_log_neg_re)
            if "real" in self.version:
                return torch.complex(re, torch.zeros_like(re))
            im = torch.exp(self.Lambda_log_im) if "im" in self.version else self.Lambda_im
            return torch.complex(re, im)
        re, im = self.Lambda.unbind(-1)
        if "clip" in self.version:
            re = re.clamp(max=self.max_real_Lambda)
        return torch.complex(re, im)

    def vandermonde_params(self, L=None):
        """(W' (C, H, N) complex, dt Lambda (H, N) complex); softmax needs the length L, and its
        modes with Re Lambda > 0 are normalised by exp(x (L-1)) (see forward)."""
        Lambda = self.Lambda_()  # [N]
        dt = torch.exp(self.log_dt)
        if dt.ndim == 1:
            x = dt[:, None] * Lambda  # [H, N]
        else:  # separate dt for the real and imaginary parts
            x = torch.complex(dt[:, :1] * Lambda.real, dt[:, 1:] * Lambda.imag)
        W = torch.view_as_complex(self.W)  # [C, H, N]
        if self.version == "softmax":
            if L is None:
                raise ConfigError("this layer has no step(): version=softmax normalises the kernel over the length L")
            x_neg = torch.where(Lambda.real > 0, -x, x)  # Re <= 0: exp(x_neg L) cannot overflow
            W = W * (torch.exp(x_neg) - 1) * reciprocal((torch.exp(x_neg * L) - 1) * Lambda, self.epsilon)
        elif "no-scale" not in self.version:
            W = W * (torch.exp(x) - 1) * reciprocal(Lambda, clamp=True)
        return W, x

    def no_recurrence(self):
        if self.version == "softmax":
            return "version=softmax normalises the kernel over the length L"
        return super().no_recurrence()

    def forward(self, L):  # -> (C, H, L)
        if self.version != "softmax":
            return super().forward(L)
        # softmax: a mode with Re x > 0 contributes W' exp(x l - x (L-1)) = W' exp(-x (L-1-l)), so it
        # runs backwards from l = L-1 with exponent -x: no exponent is positive (the DLR repo
        # subtracted a detached x (L-1) instead, which overflows at long L and drops its gradient).
        W, x = self.vandermonde_params(L)
        positive = x.real > 0  # (H, N)
        x_neg = torch.where(positive, -x, x)
        K = vandermonde(W * ~positive, x_neg, L, self.backend)
        K = K + vandermonde(W * positive, x_neg, L, self.backend).flip(-1)
        return to_real(K, self.kernel_to_real)


class DLR(LongConv):
    Kernel = DLRKernel


class DSS(LongConv):
    Kernel = DSSKernel
