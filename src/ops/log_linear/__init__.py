"""Log-linear attention (Guo et al. 2025, "Log-Linear Attention"): a linear-attention model whose
state is a Fenwick tree of O(log T) states, one per bucket of 1, 2, 4, ... past positions, each
read with the query's own weight for its level.

    log_linear_attn(q, k, v, g, level_scales, initial_state=None, output_final_state=False,
                    backend="auto") -> (o, state)                 (Mamba-2 inside)
    log_linear_delta_rule(q, k, v, beta, g, level_scales, initial_state=None,
                          output_final_state=False, backend="auto") -> (o, state)   (Gated DeltaNet)

q, k (B, T, G, K) with G dividing H (a group shared by H / G heads, as Mamba-2's B, C);
v (B, T, H, V); g (B, T, H) the log decay; beta (B, T, H); level_scales (B, T, H, n_levels),
lambda_t[l] >= 0 in the layers:
    o_t = sum_{s <= t} lambda_t[l(t, s)] A_ts v_s,      l(t, s) = 0 if s = t, else 1 + floor(log2(t xor s))
with A the inner model's attention (reference.py); no 1/sqrt(K) scale. fla's naive_log_linear_attn
(Mamba-2) and HanGuo97/log-linear-attention's hattention_recurrent (both inner models). state:
(levels (B, H, bit_length(t), K, V), t) after t tokens: it grows by one (K, V) level each time t
passes a power of two; t0 + T must be at most 2^(n_levels - 1) (every level has its lambda).
Backends: `torch` (chunked.py; with Mamba-2 inside, the levels within chunks of 64 as one dense
weighting and those above as a Fenwick tree of chunk states, in matmuls; with the delta rule, one
delta_rule pass per level), `cpu` (first on CPU: Mamba-2 inside from position 0 in float32 or
float64 by cpu.py's C loop, log_linear.c; other calls on chunked.py's forms with delta_rule's C
loop per level), `triton` (gpu.py: fla's log-linear kernel for Mamba-2 from position 0, fla's gated
delta rule kernels per level otherwise; CUDA only). reference.py (the per-token Fenwick loop) is
the oracle.
"""

import torch
import torch.nn.functional as F

from src.ops.dispatch import Dispatcher
from src.ops.log_linear import chunked, cpu, gpu


def smoke_inputs(device):
    """A small call from a state at position 5 (two buckets), with and without the delta rule."""
    gen = torch.Generator().manual_seed(0)
    q, k = (F.normalize(torch.randn(2, 19, 2, 16, generator=gen), dim=-1) for _ in range(2))
    v = torch.randn(2, 19, 2, 8, generator=gen)
    beta, g = torch.rand(2, 19, 2, generator=gen), F.logsigmoid(torch.randn(2, 19, 2, generator=gen) + 2)
    lam, levels = torch.rand(2, 19, 2, 6, generator=gen), torch.randn(2, 2, 3, 16, 8, generator=gen)
    levels[:, :, 1] = 0  # 5 = 101b: no bucket at level 2
    return [t.to(device) for t in (q, k, v, beta, g, lam, levels)]


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path (from zeros; from a state where the
    backend takes one)."""
    q, k, v, beta, g, lam, levels = smoke_inputs(device)
    for b in (None, beta):
        for state in (None, (levels, 5)):
            args = (q, k, v, b, g, lam, state, True)
            if fn is gpu.log_linear and gpu.unsupported(*args):
                continue
            (o, S), (o_ref, S_ref) = fn(*args), _TORCH(*args)
            if not (torch.allclose(o, o_ref, rtol=1e-3, atol=1e-3) and torch.allclose(S[0], S_ref[0], rtol=1e-3,
                                                                                        atol=1e-3)):
                raise RuntimeError(f"its smoke call differs from the torch path by "
                                   f"{(o - o_ref).abs().max().item():.3g}")
    q.requires_grad_(True)
    fn(q, k, v, beta, g, lam, None, False)[0].sum().backward()


def torch_path(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False, inner="torch"):
    """chunked.py's paths: dense in chunks with Mamba-2 inside (beta None), per level with the delta rule."""
    if beta is None:
        return chunked.log_linear_attn(q, k, v, g, level_scales, initial_state, output_final_state)
    return chunked.log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner)


def cpu_path(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False):
    """Backend `cpu`: log_linear.c for the calls it takes (Mamba-2 inside from position 0, float32 or
    float64, half precisions widened), else torch_path with gla's and delta_rule's `auto` per level:
    their C loops where those take the call."""
    if cpu.unsupported(q, k, v, beta, g, level_scales, initial_state, output_final_state):
        return torch_path(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner="auto")
    return cpu.log_linear_attn(q, k, v, g, level_scales, output_final_state)


_TORCH = torch_path
DISPATCH = Dispatcher("log_linear",
                      {"torch": lambda: _TORCH, "cpu": lambda: cpu_path, "triton": lambda: gpu.log_linear},
                      {"cuda": ["triton", "torch"], "cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke,
                      {"triton": gpu.unsupported, "cpu": lambda q, *args: None if q.device.type == "cpu" else
                       "inputs are not on the CPU"})


def _check(q, k, v, beta, g, level_scales, initial_state):
    B, T, H, V = v.shape
    if q.shape != k.shape or q.shape[:2] != (B, T) or H % q.shape[2] or g.shape != (B, T, H) \
            or (beta is not None and beta.shape != (B, T, H)) or level_scales.shape[:3] != (B, T, H):
        raise ValueError(f"log_linear: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, g {tuple(g.shape)}, "
                         f"level_scales {tuple(level_scales.shape)}: need q, k (B, T, G, K) with G | H, "
                         "v (B, T, H, V), "
                         "g, beta (B, T, H), level_scales (B, T, H, n_levels)")
    end = T + (0 if initial_state is None else initial_state[1])
    if end > 1 << (level_scales.shape[-1] - 1):
        raise ValueError(f"log_linear: position {end} needs {(end - 1).bit_length() + 1} levels; level_scales has "
                         f"{level_scales.shape[-1]} (at most 2^(n_levels - 1) = {1 << (level_scales.shape[-1] - 1)} "
                         "positions)")


def log_linear_attn(q, k, v, g, level_scales, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    _check(q, k, v, None, g, level_scales, initial_state)
    args = (q, k, v, None, g, level_scales, initial_state, output_final_state)
    return DISPATCH.function(backend, q.device, args)(*args)


def log_linear_delta_rule(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False,
                          backend="auto"):
    """See the module docstring."""
    _check(q, k, v, beta, g, level_scales, initial_state)
    args = (q, k, v, beta, g, level_scales, initial_state, output_final_state)
    return DISPATCH.function(backend, q.device, args)(*args)
