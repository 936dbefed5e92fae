"""Mamba-3 SISO (mamba-ssm's mamba3_siso_combined): a trapezoidal SSD with a
data-dependent rotation ("complex" state) of B and C.

    mamba3_siso(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False, chunk_size=64, backend="auto") -> y [, state]

q = C, k = B (B, T, G, N) with G dividing H; v = x, z (B, T, H, P); adt = A dt, dt, trap (B, T, H);
q_bias, k_bias (H, N); angles (B, T, H, S) with S <= N / 2; D (H,). Per head:
    phi_t = (phi_{t-1} + dt_t pi tanh(angles_t)) mod 2 pi,   q~_t = R(phi_t)(q_t + q_bias), k~ alike
    h_t   = e^{adt_t} h_{t-1} + (1 - s(trap_t)) dt_t e^{adt_t} v_{t-1} k~_{t-1}^T + s(trap_t) dt_t v_t k~_t^T
    y_t   = (h_t q~_t + D v_t) silu(z_t)                                    (s = sigmoid)
state (phi, h, k~_last, v_last): (B, H, S), (B, H, P, N), (B, H, N), (B, H, P), mamba-ssm's
(Angle_State, SSM_State, K_State, V_State); None: zeros. Layout: mamba-ssm's with time second
for adt, dt, trap (its (B, H, T)).
It is exactly an SSD scan on rotated q, k and a shifted state (chunked.py's docstring). Backends:
`torch` (chunked.py, that reduction on SSD's chunked form; every device), `cpu` (cpu.py, the same
reduction on gla's compiled C loop, forward and backward; first on CPU).
reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, agrees_with, lazy
from src.ops.mamba3 import chunked, cpu


def smoke_inputs(device):
    g = torch.Generator().manual_seed(0)

    def r(*shape):
        return torch.randn(*shape, generator=g).to(device)

    dt = torch.rand(2, 21, 2, generator=g).to(device)
    return (r(2, 21, 1, 6), r(2, 21, 1, 6), r(2, 21, 2, 3), -dt * torch.rand(2, 21, 2, generator=g).to(device), dt,
            r(2, 21, 2), r(2, 6), r(2, 6), r(2, 21, 2, 2)), {}


def _smoke(fn, device):
    """Agrees with the torch path on the smoke call, and runs its backward."""
    agrees_with(chunked.mamba3_siso, smoke_inputs)(fn, device)
    args, _ = smoke_inputs(device)
    args[2].requires_grad_(True)
    fn(*args).sum().backward()


DISPATCH = Dispatcher("mamba3", {"torch": lazy("src.ops.mamba3.chunked.mamba3_siso"),
                                 "cpu": lazy("src.ops.mamba3.cpu.mamba3_siso")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def mamba3_siso(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False, chunk_size=64, backend="auto"):
    """See the module docstring."""
    H = v.shape[2]
    if q.shape != k.shape or H % q.shape[2] or adt.shape != v.shape[:3] or dt.shape != adt.shape \
            or trap.shape != adt.shape or 2 * angles.shape[-1] > q.shape[-1]:
        raise ValueError(f"mamba3_siso: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, adt, dt, trap "
                         f"{tuple(adt.shape)}, {tuple(dt.shape)}, {tuple(trap.shape)}, angles {tuple(angles.shape)}: "
                         "need q, k (B, T, G, N) with G | H, adt, dt, trap (B, T, H), angles (B, T, H, S <= N / 2)")
    args = (q, k, v, adt, dt, trap, q_bias, k_bias, angles, D, z, initial_state, output_final_state, chunk_size)
    return DISPATCH.function(backend, v.device, args)(*args)
