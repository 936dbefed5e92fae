"""Mamba-3 SISO on gla's compiled C loop (src/ops/gla/gla.c, forward and backward), backend `cpu`.

chunked.py reduces the layer's two-token update to one scan s_t = e^{a_t} s_{t-1} + x_t B_t^T,
y_t = s_t C_t; that scan is gla with a per-head log decay g = a, k = B, v = x, q = C, scale 1 and
the state transposed (gla's (K, V) = (N, P)). The rotations, gates and the correction term are
O(T H N) elementwise work in torch around the loop.
"""

from src.ops.gla import cpu as gla_cpu
from src.ops.mamba3.chunked import via_scan


def _gla_scan(x, a, B, C, S0):  # x (b, L, H, P), a (b, L, H), B, C (b, L, H, N), S0 (b, H, P, N)
    y, S = gla_cpu.gla(C, B, x, a, None, 1.0, S0.transpose(-1, -2), True)  # S (b, H, N, P)
    return y, S.transpose(-1, -2)


def mamba3_siso(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False, chunk_size=64):
    """Same arguments and result as reference.mamba3_siso (chunk_size is not used: a loop has none)."""
    return via_scan(_gla_scan, q, k, v, adt, dt, trap, q_bias, k_bias, angles, D, z, initial_state,
                    output_final_state)


def unsupported(q, k, v, adt, dt, trap, q_bias, k_bias, angles, D=None, z=None, initial_state=None,
                output_final_state=False, chunk_size=64):
    """Why the C loop cannot take this call (None if it can)."""
    return gla_cpu.unsupported(q, k, v, adt, None, None, None if initial_state is None else initial_state[1])
