"""S4 and S4D (`model=s4`, `model=s4d`): convolution layers (conv.LongConv) around these kernels.

Both discretise, per feature h, the continuous state space x' = A x + B u, y = C x of real
dimension N = d_state, kept as N/2 complex modes whose complex conjugates are implied: every
vector v of the N-dimensional (complex) system is [v, conj v], so u real -> y real.

S4D (Gu, Gupta, Goel & Re 2022): A = diag(Lambda), Re Lambda = -exp(A_log_neg_re) < 0.
    zoh:      dA = exp(dt Lambda),                    dB = (exp(dt Lambda) - 1) / Lambda B
    bilinear: dA = (1 + dt Lambda/2) / (1 - dt Lambda/2),  dB = dt B / (1 - dt Lambda/2)
    dss:      dA = exp(dt Lambda),  dB = (exp(dt Lambda) - 1) / den B,  den = Lambda (exp(dt Lambda L) - 1),
              1/den = conj(den) / (|den|^2 + 1e-7) as in DSS and the S4 repository
              (DSS's softmax normalisation over the L positions: depends on L, so no recurrence)
    K[c, h, l] = s Re sum_n C[c,h,n] dA[h,n]^l dB[h,n], s = 2 for zoh and bilinear (the conjugate
    modes) and s = 1 for dss (the S4 repository's dss branch: Re of the kept modes only), so that
    for dss sum_l K[c, h, l] = Re sum_n C B / Lambda (up to the 1e-7). A Vandermonde kernel with
    x = log dA, W = s C dB (dlr.VandermondeKernel, which also gives its recurrence).
    Inits: legs (Lambda and B of HiPPO-LegS in normal-plus-low-rank form, P dropped),
    lin (Lambda_n = -1/2 + i pi n), inv (Lambda_n = -1/2 + i N/pi (N/(2n+1) - 1)); B = 1 for both.

S4 (Gu, Goel & Re 2022): A = Lambda - P P^* (diagonal plus rank r), from a HiPPO matrix
A_hippo = V (Lambda - P P^*) V^* (measures legs, legt, fourier; V unitary), bilinear:
    dA = (I - dt/2 A)^-1 (I + dt/2 A),  dB = dt (I - dt/2 A)^-1 B,  K_l = C dA^l dB  (l < L)
Its generating function at the L'-th roots of unity z (L' = L, or L + 1 when L is even, so
that z = -1 is never a node) is the DFT of K_0..K_{L'-1}:
    sum_l K_l z^l = C~ (I - z dA)^-1 dB = 2/(1+z) C~ (g - A)^-1 B,
    C~ = C (I - dA^L'),  g = 2/dt (1-z)/(1+z),
and by Woodbury, with k(a, b) = sum_n a_n b_n / (g - Lambda_n) (the Cauchy op):
    C~ (g - A)^-1 B = k(C~, B) - k(C~, P) (I + k(P^*, P))^-1 k(P^*, B).
K = irfft over the L'//2 + 1 nodes, first L taps. C is the state-space C (not C~ as in the
original), so the kernel at every L is the same system and `step` is exact:
    x_t = M11 x_{t-1} + M12 conj(x_{t-1}) + dB u_t,  y_t = 2 Re(C x_t)  (x: the N/2 kept modes,
    dA = [[M11, M12], [conj M12, conj M11]] on [x, conj x]).
HiPPO's legt and fourier have Re Lambda = 0; it is set to -1e-4 so that Re Lambda = -exp(.)
applies. Rank beyond the measure's own gets small random rows of P (a zero row never learns:
P P^* is quadratic in it).

b_clip (S4, and S4D's legs init): Im B of the diagonalised HiPPO B = V^* B_hippo is clipped to
[-b_clip, b_clip], as the current S4 repository's nplr(..., B_clip=2.0); null keeps V^* B exact
(the DLR repository's S4). At N = 64 the clip changes 11 of 32 LegS modes (|Im B| up to 40.8)
and 3 of 32 LegT modes; fourier's B is real.

Trainable/lr: dt (log_dt), A (Lambda), P, B; C uses the optimizer's defaults. The state of
either is N/2 complex numbers per feature: state_size = H N floats.
"""

import functools
import math
from dataclasses import dataclass

import torch
from torch import nn

from src.models.sequence.layers.base import group
from src.models.sequence.layers.conv import LongConv
from src.models.sequence.layers.dlr import COMPLEX_KERNEL, VandermondeKernel, log_uniform, reciprocal
from src.models.sequence.layers.optim import register
from src.ops import cauchy as cauchy_op
from src.ops import vandermonde as vandermonde_op
from src.utils.errors import ConfigError, check_choice

MEASURE_RANK = {"legs": 1, "legt": 2, "fourier": 1}


def hippo(measure, N):
    """HiPPO (A (N, N), B (N,), P (r, N)) in float64, with A + P^T P normal."""
    n = torch.arange(N, dtype=torch.float64)
    r = (2 * n + 1).sqrt()
    if measure == "legs":
        A = -(r[:, None] * r[None, :]).tril(-1) - torch.diag(n + 1)
        return A, r, (n + 0.5).sqrt()[None]
    if measure == "legt":  # halved twice, as in the S4 repo (time scale of the window)
        i, j = n[:, None], n[None, :]
        A = -0.5 * r[:, None] * torch.where(i < j, (-1.0) ** (i - j), 1.0) * r[None, :]
        P = (n + 0.5).sqrt()
        return A, 0.5 * r, torch.stack((P * (n % 2 == 1), P * (n % 2 == 0)))
    # fourier: frequencies 0, 1, 1, 2, 2, ... coupled in pairs; B is also the rank-1 correction
    d = torch.stack((torch.zeros(N // 2), torch.arange(N // 2, dtype=torch.float64)), -1).reshape(-1)[1:]
    B = torch.zeros(N, dtype=torch.float64)
    B[0::2] = 2**0.5
    B[0] = 1.0
    A = math.pi * (torch.diag(d, -1) - torch.diag(d, 1)) - B[:, None] * B[None, :]
    return A, B, B[None].clone()


@functools.lru_cache(maxsize=None)
def nplr(measure, N):
    """(Lambda (N/2,), P (r, N/2), B (N/2,)) complex128: A_hippo = V (Lambda - P P^*) V^* on the
    N/2 modes of positive imaginary part (and their conjugates). A + P^T P = c I + K, K skew:
    Lambda = c + i mu for the eigenvalues i mu of K; a zero-eigenvalue space (fourier) is paired
    into complex vectors (a + i b)/sqrt 2 whose conjugates are its other half."""
    A, B, P = hippo(measure, N)
    S = A + P.T @ P
    c = S.diagonal().mean()
    K = S - c * torch.eye(N, dtype=torch.float64)
    mu, V = torch.linalg.eigh(-1j * K.to(torch.complex128))  # ascending
    positive = mu > 1e-9 * max(1.0, mu.abs().max().item())
    mu, V = mu[positive], V[:, positive]
    n_zero = N // 2 - len(mu)
    if n_zero:
        right = torch.linalg.svd(K).Vh  # singular values descending: the null space comes last
        Z = right[-2 * n_zero :].T  # real orthonormal basis of the null space of K: (N, 2 n_zero)
        V = torch.cat((V, (Z[:, 0::2] + 1j * Z[:, 1::2]) / 2**0.5), dim=1)
        mu = torch.cat((mu, mu.new_zeros(n_zero)))
    Lambda = torch.complex(c.expand(N // 2).clone(), mu)
    Vh = V.conj().T
    return Lambda, (Vh @ P.T.to(V.dtype)).T, Vh @ B.to(V.dtype)


def clip_imag(B, b_clip):
    """B with Im B clipped to [-b_clip, b_clip] (b_clip None: B unchanged)."""
    if b_clip is None:
        return B
    if not b_clip > 0:
        raise ConfigError(f"model.layer.b_clip={b_clip} must be > 0, or null for no clip")
    return torch.complex(B.real, B.imag.clamp(-b_clip, b_clip))


def complex_pairs(z):
    """complex (...) -> real (..., 2) for a parameter (Adam's moments are then per part)."""
    return torch.view_as_real(z.to(torch.complex64)).clone()


def _check_N(N):
    if N % 2:
        raise ConfigError(f"model.layer.d_state={N} must be even: S4/S4D keep N/2 complex modes and their conjugates")


@dataclass
class S4DTrainable:
    dt: bool = True
    A: bool = True
    B: bool = True


@dataclass
class S4DLr:
    dt: float | None = 1e-3
    A: float | None = 1e-3
    B: float | None = 1e-3


@dataclass
class S4Trainable(S4DTrainable):
    P: bool = True


@dataclass
class S4Lr(S4DLr):
    P: float | None = 1e-3


class S4DKernel(VandermondeKernel):
    INITS = ["legs", "lin", "inv"]
    DISCRETIZATIONS = ["zoh", "bilinear", "dss"]

    def __init__(self, H, d_state=64, channels=1, init="legs", disc="zoh", dt_min=1e-3, dt_max=1e-1,
                 b_clip: float | None = 2.0, trainable: S4DTrainable | None = None, lr: S4DLr | None = None,
                 backend="auto"):
        super().__init__()
        N = d_state
        _check_N(N)
        check_choice("model.layer.init", init, self.INITS)
        self.disc = check_choice("model.layer.disc", disc, self.DISCRETIZATIONS)
        self.backend = vandermonde_op.DISPATCH.check(backend)
        self.kernel_to_real = "real"
        trainable, lr = group(S4DTrainable, trainable), group(S4DLr, lr)
        n = torch.arange(N // 2, dtype=torch.float64)
        if init == "legs":
            Lambda, _, B = nplr("legs", N)
        else:
            im = math.pi * n if init == "lin" else N / math.pi * (N / (2 * n + 1) - 1)
            Lambda, B = torch.complex(torch.full_like(n, -0.5), im), torch.ones(N // 2, dtype=torch.complex128)
        B = clip_imag(B, b_clip)  # legs only: B = 1 has no imaginary part
        register(self, "log_dt", torch.log(log_uniform(H, dt_min, dt_max)), trainable.dt, lr.dt, 0.0)  # (H,)
        register(self, "A_log_neg_re", torch.log(-Lambda.real).float().repeat(H, 1), trainable.A, lr.A, 0.0)
        register(self, "A_im", Lambda.imag.float().repeat(H, 1), trainable.A, lr.A, 0.0)  # (H, N/2)
        register(self, "B", complex_pairs(B).repeat(H, 1, 1), trainable.B, lr.B, 0.0)  # (H, N/2, 2)
        self.C = nn.Parameter(complex_pairs(torch.randn(channels, H, N // 2, dtype=torch.cfloat)))  # (C, H, N/2, 2)

    def no_recurrence(self):
        if self.disc == "dss":
            return "disc=dss normalises the kernel over the length L"
        return None

    def vandermonde_params(self, L=None):
        """(W = s C dB (C, H, N/2), x = log dA (H, N/2)), complex; s = 1 for dss, else 2."""
        dt = torch.exp(self.log_dt)[:, None]  # (H, 1)
        Lambda = torch.complex(-torch.exp(self.A_log_neg_re), self.A_im)  # (H, N/2)
        B, C = torch.view_as_complex(self.B), torch.view_as_complex(self.C)
        if self.disc == "dss":
            if L is None:
                raise ConfigError(f"this layer has no step(): {self.no_recurrence()}")
            x = dt * Lambda
            return C * (torch.exp(x) - 1) * B * reciprocal((torch.exp(x * L) - 1) * Lambda), x  # s = 1
        if self.disc == "bilinear":
            x = torch.log((1 + dt * Lambda / 2) / (1 - dt * Lambda / 2))
            dB = dt * B / (1 - dt * Lambda / 2)
        else:
            x = dt * Lambda
            dB = (torch.exp(x) - 1) / Lambda * B
        return 2 * C * dB, x


def conj_full(v):
    """The N/2 kept modes -> the conjugate-completed N (last dimension)."""
    return torch.cat((v, v.conj()), dim=-1)


class S4Kernel(nn.Module):
    MEASURES = list(MEASURE_RANK)
    recurrent = True
    no_half_weights = COMPLEX_KERNEL  # LongConv.why_no_half_weights

    def __init__(self, H, d_state=64, channels=1, measure="legs", rank=1, dt_min=1e-3, dt_max=1e-1,
                 b_clip: float | None = 2.0, trainable: S4Trainable | None = None, lr: S4Lr | None = None,
                 backend="auto"):
        super().__init__()
        N = d_state
        _check_N(N)
        check_choice("model.layer.measure", measure, self.MEASURES)
        if rank < MEASURE_RANK[measure]:
            raise ConfigError(f"model.layer.rank={rank} is too small: measure={measure} needs rank >= {MEASURE_RANK[measure]}")
        self.backend = cauchy_op.DISPATCH.check(backend)
        trainable, lr = group(S4Trainable, trainable), group(S4Lr, lr)
        Lambda, P, B = nplr(measure, N)
        B = clip_imag(B, b_clip)
        extra = rank - P.shape[0]
        P = torch.cat((P, 1e-3 * torch.randn(extra, N // 2, dtype=torch.complex128)))  # (r, N/2)
        re = Lambda.real.clamp(max=-1e-4)
        register(self, "log_dt", torch.log(log_uniform(H, dt_min, dt_max)), trainable.dt, lr.dt, 0.0)  # (H,)
        register(self, "A_log_neg_re", torch.log(-re).float().repeat(H, 1), trainable.A, lr.A, 0.0)  # (H, N/2)
        register(self, "A_im", Lambda.imag.float().repeat(H, 1), trainable.A, lr.A, 0.0)  # (H, N/2)
        register(self, "P", complex_pairs(P)[:, None].repeat(1, H, 1, 1), trainable.P, lr.P, 0.0)  # (r, H, N/2, 2)
        register(self, "B", complex_pairs(B).repeat(H, 1, 1), trainable.B, lr.B, 0.0)  # (H, N/2, 2)
        self.C = nn.Parameter(complex_pairs(torch.randn(channels, H, N // 2, dtype=torch.cfloat)))  # (C, H, N/2, 2)

    def ssm(self):
        """dt (H,) real; Lambda (H, N), P (r, H, N), B (H, N), C (C, H, N): complex, conjugate-completed."""
        Lambda = torch.complex(-torch.exp(self.A_log_neg_re), self.A_im)
        P, B, C = (torch.view_as_complex(t) for t in (self.P, self.B, self.C))
        return torch.exp(self.log_dt), conj_full(Lambda), conj_full(P), conj_full(B), conj_full(C)

    def discrete(self):
        """Dense bilinear dA (H, N, N), dB (H, N) of the conjugate-completed system."""
        dt, Lambda, P, B, _ = self.ssm()
        A = torch.diag_embed(Lambda) - torch.einsum("rhn,rhm->hnm", P, P.conj())
        eye = torch.eye(A.shape[-1], dtype=A.dtype, device=A.device)
        half = (dt / 2)[:, None, None] * A
        inverse = torch.linalg.inv(eye - half)  # one inverse: its backward is matrix products only
        return inverse @ (eye + half), (inverse @ (dt[:, None] * B)[..., None])[..., 0]

    def forward(self, L):  # -> (C, H, L)
        dt, Lambda, P, B, C = self.ssm()
        n_c = C.shape[0]
        Lp = L if L % 2 else L + 1  # odd: z = -1 is not a root of unity of order L'
        dA, _ = self.discrete()
        C = C - torch.einsum("chn,hnm->chm", C, torch.linalg.matrix_power(dA, Lp))  # C~ = C (I - dA^L')
        k = torch.arange(Lp // 2 + 1, device=C.device, dtype=dt.dtype)
        z = torch.exp(-2j * math.pi * k / Lp)  # (Lf,) roots of unity
        s = (1 - z) / (1 + z)  # g = 2/dt s: 1/(g - Lambda) = (dt/2) / (s - dt Lambda/2)
        left = torch.cat((C, P.conj()))  # (C + r, H, N)
        right = torch.cat((B[None], P))  # (1 + r, H, N)
        v = left[:, None] * right[None] * (dt / 2)[:, None]  # (C + r, 1 + r, H, N)
        r = cauchy_op.cauchy(v, s.to(v.dtype), (dt / 2)[:, None] * Lambda, backend=self.backend)  # (C+r, 1+r, H, Lf)
        k00, k01, k10, k11 = r[:n_c, 0], r[:n_c, 1:], r[n_c:, 0], r[n_c:, 1:]
        if k11.shape[0] == 1:  # rank 1: a division (batched 1 x 1 LU solves are ~100x slower on CPU)
            solved = (k10 / (1 + k11[0]))[0][..., None]  # (H, Lf, 1)
        else:
            eye = torch.eye(k11.shape[0], dtype=k11.dtype, device=k11.device)
            M = eye + k11.permute(2, 3, 0, 1)  # (H, Lf, r, r)
            solved = torch.linalg.solve(M, k10.permute(1, 2, 0)[..., None])[..., 0]  # (H, Lf, r)
        K_hat = (k00 - torch.einsum("crhl,hlr->chl", k01, solved)) * (2 / (1 + z))  # (C, H, Lf)
        return torch.fft.irfft(K_hat, n=Lp)[..., :L]

    # The recurrence (conv.LongConv's kernel-step protocol).
    def no_recurrence(self):
        return None

    def default_state(self, batch_size, device=None):
        H, n = self.A_im.shape
        dtype = torch.complex128 if self.A_im.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, H, n, dtype=dtype, device=device)  # (B, H, N/2)

    def step(self, u_t, state):  # u_t: (B, H), state: (B, H, N/2) -> y_t (B, C, H), state
        dA, dB = self.discrete()
        n = state.shape[-1]
        M11, M12 = dA[:, :n, :n], dA[:, :n, n:]
        state = (torch.einsum("hnm,bhm->bhn", M11, state) + torch.einsum("hnm,bhm->bhn", M12, state.conj())
                 + dB[:, :n] * u_t[..., None])
        C = torch.view_as_complex(self.C)  # (C, H, N/2)
        return 2 * torch.einsum("chn,bhn->bch", C, state).real, state

    def state_size(self):
        return 2 * self.A_im.numel()  # H N/2 complex numbers


class S4(LongConv):
    Kernel = S4Kernel


class S4D(LongConv):
    Kernel = S4DKernel
