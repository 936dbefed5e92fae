"""S4 and S4D: kernels equal the discretised state space, inits, state size, options (the contract
checks of every layer, step == convolution included, are in test_layer_contract.py)."""

import cmath
import math

import pytest
import torch

from src.models.sequence.layers.s4 import S4, S4D, S4DKernel, S4Kernel, hippo, nplr
from src.utils.errors import ConfigError

D = 6


def direct_kernel(dA, dB, C, L):
    """K[c, h, l] = Re(C dA^l dB), by repeated multiplication (dense dA (H, N, N) or diagonal (H, N))."""
    rows, x = [], dB
    for _ in range(L):
        rows.append(torch.einsum("chn,hn->ch", C, x).real)
        x = torch.einsum("hnm,hm->hn", dA, x) if dA.ndim == 3 else dA * x
    return torch.stack(rows, -1)


@pytest.mark.parametrize("measure, rank", [("legs", 1), ("legt", 2), ("fourier", 1), ("legs", 2)])
@pytest.mark.parametrize("L", [1, 2, 7, 10])
def test_s4_kernel_is_the_discretised_state_space(measure, rank, L):
    """The Cauchy/Woodbury generating function against powers of the dense bilinear dA."""
    torch.manual_seed(0)
    k = S4Kernel(3, 6, channels=2, measure=measure, rank=rank, dt_min=0.05, dt_max=0.5).double()
    dt, Lambda, P, B, C = k.ssm()
    A = torch.diag_embed(Lambda) - torch.einsum("rhn,rhm->hnm", P, P.conj())
    eye = torch.eye(6, dtype=A.dtype)
    left = eye - dt[:, None, None] / 2 * A
    dA = torch.linalg.inv(left) @ (eye + dt[:, None, None] / 2 * A)
    dB = (torch.linalg.inv(left) @ (dt[:, None] * B)[..., None])[..., 0]
    # float64 throughout; fourier's dA has the largest norms (~1e-13 seen): 1e-11 leaves margin
    torch.testing.assert_close(k(L), direct_kernel(dA, dB, C, L), rtol=1e-10, atol=1e-11)


@pytest.mark.parametrize("init", S4DKernel.INITS)
@pytest.mark.parametrize("disc", S4DKernel.DISCRETIZATIONS)
@pytest.mark.parametrize("L", [1, 9])
def test_s4d_kernel_is_the_discretised_state_space(init, disc, L):
    """2 Re sum_n C dA^l dB from the textbook discretisations, by repeated multiplication."""
    torch.manual_seed(0)
    k = S4DKernel(3, 8, channels=2, init=init, disc=disc).double()
    dt = torch.exp(k.log_dt)[:, None]
    Lambda = torch.complex(-torch.exp(k.A_log_neg_re), k.A_im)
    B, C = torch.view_as_complex(k.B), torch.view_as_complex(k.C)
    if disc == "bilinear":
        dA, dB = (1 + dt * Lambda / 2) / (1 - dt * Lambda / 2), dt / (1 - dt * Lambda / 2) * B
    else:
        dA, dB = torch.exp(dt * Lambda), (torch.exp(dt * Lambda) - 1) / Lambda * B
        if disc == "dss":  # the S4 repository's dss: 1/den with its 1e-7 guard, Re of the kept modes (no 2)
            den = Lambda * (dA**L - 1)
            dB = dB * Lambda * den.conj() / (den.abs() ** 2 + 1e-7) / 2
    # float64; the Vandermonde op exponentiates l log dA, the loop multiplies: rounding only
    torch.testing.assert_close(k(L), direct_kernel(dA, 2 * dB, C, L), rtol=1e-10, atol=1e-12)


def one_mode_dss(dt, Lambda, B, C):
    """An S4D dss kernel of one complex mode (d_state 2) with the given dt, Lambda, B, C."""
    k = S4DKernel(1, 2, disc="dss", b_clip=None).double()
    with torch.no_grad():
        k.log_dt.fill_(math.log(dt))
        k.A_log_neg_re.fill_(math.log(-Lambda.real))
        k.A_im.fill_(Lambda.imag)
        k.B.copy_(torch.tensor([[[B.real, B.imag]]], dtype=torch.float64))
        k.C.copy_(torch.tensor([[[[C.real, C.imag]]]], dtype=torch.float64))
    return k


def test_s4d_dss_kernel_of_one_mode_is_its_closed_form():
    """K_l = Re(C B (e^a - 1) e^{a l} conj(den) / (|den|^2 + 1e-7)), den = Lambda (e^{a L} - 1), a = dt Lambda:
    the S4 repository's dss branch (no factor 2), so sum_l K_l = Re(C B / Lambda) up to the 1e-7.
    Real Lambda = -1, dt = ln 2, L = 3: e^a = 1/2, den = 7/8, K = -1/2 (1, 1/2, 1/4) (7/8) / (49/64 + 1e-7),
    i.e. -4/7 (1, 1/2, 1/4) to 1.3e-7."""
    K = one_mode_dss(math.log(2), complex(-1, 0), 1, 1)(3)[0, 0]
    scale = -0.5 * (7 / 8) / (49 / 64 + 1e-7)
    torch.testing.assert_close(K, scale * torch.tensor([1, 1 / 2, 1 / 4], dtype=torch.float64), rtol=1e-12, atol=1e-14)
    assert abs(K.sum().item() + 1) < 2e-7  # Re(C B / Lambda) = -1, but for the 1e-7 guard
    dt, Lambda, B, C, L = 0.5, complex(-1, 2), complex(0.3, -0.7), complex(1.5, 0.2), 6
    a = dt * Lambda
    den = Lambda * (cmath.exp(a * L) - 1)
    closed = [(C * B * (cmath.exp(a) - 1) * cmath.exp(a * l) * den.conjugate() / (abs(den) ** 2 + 1e-7)).real
              for l in range(L)]
    K = one_mode_dss(dt, Lambda, B, C)(L)[0, 0]
    torch.testing.assert_close(K, torch.tensor(closed, dtype=torch.float64), rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(K.sum().item(), (C * B / Lambda).real, rtol=1e-6, atol=0.0)  # the 1e-7 guard


@pytest.mark.parametrize("measure, n_clipped, largest", [("legs", 11, 40.75), ("legt", 3, 14.28)])
def test_b_clip_at_N_64(measure, n_clipped, largest):
    """The diagonalised HiPPO B at N = 64 has n_clipped of 32 modes with |Im B| > 2 (largest |Im B|
    given); b_clip=2 (the S4 repository's default) clips exactly those, b_clip=None keeps V^* B."""
    B = nplr(measure, 64)[2]
    outside = B.imag.abs() > 2
    assert outside.sum().item() == n_clipped and abs(B.imag.abs().max().item() - largest) < 0.01
    rank = 2 if measure == "legt" else 1
    kernels = [S4Kernel(1, 64, measure=measure, rank=rank).double()]
    if measure == "legs":
        kernels.append(S4DKernel(1, 64, init="legs").double())
    for k in kernels:
        clipped = torch.view_as_complex(k.B)[0]
        assert (clipped.imag.abs() <= 2).all() and (clipped.imag.abs() == 2).sum().item() == n_clipped
        torch.testing.assert_close(clipped.real, B.real, rtol=1e-6, atol=1e-6)  # float32 parameters
        torch.testing.assert_close(clipped.imag[~outside], B.imag[~outside], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(clipped.imag[outside], 2 * B.imag[outside].sign())
    unclipped = torch.view_as_complex(S4Kernel(1, 64, measure=measure, rank=rank, b_clip=None).B)[0]
    torch.testing.assert_close(unclipped.imag.double(), B.imag, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("measure", ["legs", "legt", "fourier"])
@pytest.mark.parametrize("N", [2, 8, 10])
def test_nplr_is_the_hippo_spectrum(measure, N):
    """The kept modes and their conjugates are the spectrum of the normal part A + P^T P, and V is
    unitary, so B and P keep their norms."""
    A, B, P = hippo(measure, N)
    Lambda, P_, B_ = nplr(measure, N)
    full = torch.cat((Lambda, Lambda.conj()))
    spectrum = torch.linalg.eigvals(A + P.T @ P)
    # eigvals of a non-symmetric float64 matrix of norm ~N: ~1e-13; 1e-9 leaves margin
    for part in ("real", "imag"):
        torch.testing.assert_close(torch.sort(getattr(full, part)).values, torch.sort(getattr(spectrum, part)).values,
                                   rtol=1e-9, atol=1e-9)
    torch.testing.assert_close((B_.abs() ** 2).sum() * 2, (B**2).sum(), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close((P_.abs() ** 2).sum() * 2, (P**2).sum(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("cls, options", [(S4, {}), (S4, dict(measure="legt", rank=2)), (S4D, dict(init="lin"))])
def test_state_size_is_the_kept_modes(cls, options):
    """N/2 complex modes per feature: N floats, at every length."""
    layer = cls(D, d_state=8, **options)
    assert layer.state_size(1) == layer.state_size(500) == D * 8
    assert layer.state_size(3) == sum(2 * t[0].numel() for t in [layer.default_state(1)])


def test_optim_groups_and_trainable():
    layer = S4(D, d_state=4, lr={"dt": 1e-2, "A": 2e-3, "P": 3e-3, "B": 4e-3},
               trainable={"B": False})
    hp = {n: getattr(p, "_optim", None) for n, p in layer.named_parameters()}
    assert hp["kernel.log_dt"] == {"lr": 1e-2, "weight_decay": 0.0}
    assert hp["kernel.A_log_neg_re"] == hp["kernel.A_im"] == {"lr": 2e-3, "weight_decay": 0.0}
    assert hp["kernel.P"] == {"lr": 3e-3, "weight_decay": 0.0}
    assert hp["kernel.C"] is None and "kernel.B" in dict(layer.named_buffers())
    s4d = S4D(D, d_state=4, lr={"dt": 1e-2, "A": 2e-3, "B": 4e-3}, trainable={"dt": False})
    assert s4d.kernel.B._optim["lr"] == 4e-3 and "kernel.log_dt" in dict(s4d.named_buffers())


@pytest.mark.parametrize(
    "cls, options, message",
    [
        (S4, dict(d_state=7), r"model.layer.d_state=7 must be even"),
        (S4, dict(measure="lagt"), r"model.layer.measure='lagt' is not valid; choose one of: 'legs', 'legt', 'fourier'"),
        (S4, dict(measure="legt", rank=1), r"model.layer.rank=1 is too small: measure=legt needs rank >= 2"),
        (S4D, dict(init="hippo"), r"model.layer.init='hippo' is not valid; choose one of: 'legs', 'lin', 'inv'"),
        (S4, dict(b_clip=0), r"model.layer.b_clip=0 must be > 0, or null for no clip"),
        (S4D, dict(init="lin", b_clip=-1.0), r"model.layer.b_clip=-1.0 must be > 0"),
        (S4D, dict(disc="euler"), r"model.layer.disc='euler' is not valid; choose one of: 'zoh', 'bilinear', 'dss'"),
    ],
)
def test_bad_options_raise_one_clear_error(cls, options, message):
    with pytest.raises(ConfigError, match=message):
        cls(D, **options)


def test_s4d_inits():
    """S4D-Lin: Im Lambda = pi n; S4D-Inv: N/pi (N/(2n+1) - 1); S4D-LegS: HiPPO-LegS's normal part."""
    n = torch.arange(4, dtype=torch.float64)
    torch.testing.assert_close(S4DKernel(2, 8, init="lin").A_im[0].double(), torch.pi * n, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(S4DKernel(2, 8, init="inv").A_im[0].double(), 8 / torch.pi * (8 / (2 * n + 1) - 1),
                               rtol=1e-6, atol=1e-6)
    legs = S4DKernel(2, 8, init="legs")
    torch.testing.assert_close(-torch.exp(legs.A_log_neg_re), torch.full((2, 4), -0.5))
    torch.testing.assert_close(legs.A_im[0].double(), nplr("legs", 8)[0].imag, rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("measure, rank", [("legs", 1), ("legt", 2), ("fourier", 1)])
def test_s4_float32_kernel_against_float64(measure, rank):
    """dA^L' by repeated squaring and the Cauchy sums in complex64 (measured ~1e-5 of max |K| at L=1000)."""
    torch.manual_seed(0)
    k = S4Kernel(4, 32, measure=measure, rank=rank)
    exact = S4Kernel(4, 32, measure=measure, rank=rank).double()
    exact.load_state_dict(k.state_dict())
    K, K64 = k(1000), exact(1000)
    torch.testing.assert_close(K.double(), K64, rtol=0, atol=1e-4 * K64.abs().max().item())
