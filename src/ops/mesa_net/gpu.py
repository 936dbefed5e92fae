"""fla's Triton kernel behind the mesa_net signature, imported only when called (CUDA only):
fla.ops.mesa_net.chunk_mesa_net (chunks of 64, fla's conjugate gradient forward and backward).

Its numerics differ from the torch path by more than rounding: it casts q and k to float16 before
the solve (chunk.py's ChunkMesaNetFunction), so `_smoke` in __init__ allows 2e-2. It takes V = K
only (one head width), K <= 128, and the CG solve only (`unsupported` refuses cg_steps=None).
Not run on hardware in this repository yet: the dispatcher takes it only where it imports and a
smoke call agrees with the torch path. Install: see requirements-gpu.txt.
"""

import torch


def mesa_net(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=None):
    from fla.ops.mesa_net import chunk_mesa_net

    Hkk0, Hkv0 = (None, None) if initial_state is None else initial_state
    o, Hkk, Hkv = chunk_mesa_net(q, k, v, g, beta, lamb, h_kk_init=Hkk0, h_kv_init=Hkv0,
                                 output_final_state=output_final_state, max_CG_iteration=cg_steps)
    return o, ((Hkk, Hkv) if output_final_state else None)


def unsupported(q, k, v, g, beta, lamb, initial_state=None, output_final_state=False, cg_steps=None):
    """Why fla's kernel cannot take this call (None if it can)."""
    if cg_steps is None:
        return "the exact solve (cg_steps=None): fla's kernel solves by conjugate gradient only"
    if not q.is_cuda:
        return "inputs are not on a CUDA device"
    if q.dtype not in (torch.float32, torch.float16, torch.bfloat16):
        return f"dtype {q.dtype} (fla's kernel takes float32, float16, bfloat16)"
    if v.shape[-1] != q.shape[-1] or q.shape[-1] > 128:
        return f"head widths K={q.shape[-1]}, V={v.shape[-1]} (fla's kernel takes V = K <= 128)"
    return None
