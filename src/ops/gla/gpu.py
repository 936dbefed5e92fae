"""fla's Triton kernels behind the gla signature, imported only when called (CUDA only):

    g per key, no u      fla.ops.gla.chunk_gla
    g per head or None   fla.ops.simple_gla.chunk_simple_gla
    u (RWKV-6 bonus)     fla.ops.rwkv6.chunk_rwkv6           (g None or per head: broadcast per key)

Signed decays (`negative`) are not theirs: `unsupported` refuses them, so `auto` takes the torch path.
Not run on hardware in this repository yet: the dispatcher takes it only where it imports and a
smoke call agrees with the torch path. Install: see requirements-gpu.txt.
"""

import torch

from src.ops.dispatch import fla_refuses


def gla(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None):
    assert negative is None, "fla's kernels take log decays only (see unsupported)"
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if u is not None:
        from fla.ops.rwkv6 import chunk_rwkv6

        w = torch.zeros_like(k) if g is None else (g if g.dim() == 4 else g[..., None].expand_as(k))
        return chunk_rwkv6(q, k, v, w.contiguous(), u, **kwargs)
    if g is None or g.dim() == 3:
        from fla.ops.simple_gla import chunk_simple_gla

        return chunk_simple_gla(q, k, v, g=g, **kwargs)
    from fla.ops.gla import chunk_gla

    return chunk_gla(q, k, v, g, **kwargs)


def unsupported(q, k, v, g=None, u=None, scale=None, initial_state=None, output_final_state=False, negative=None):
    """Why fla's kernels cannot take this call (None if they can)."""
    if negative is not None:
        return "signed decays (negative): fla's kernels take log decays only; backend=torch runs them"
    return fla_refuses(q)
