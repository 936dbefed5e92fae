"""fla's Triton kernel behind the path_attn signature, imported only when called (CUDA only):
fla.ops.path_attn.parallel_path_attn (w, beta and g in float32, as fla's layer passes them; head
widths 16, 32, 64 or 128).

The dispatcher takes it only where it imports and a smoke call agrees with the torch path.
Install: see requirements-gpu.txt.
"""

from src.ops.dispatch import fla_refuses


def path_attn(q, k, v, w, beta, g=None, scale=None):
    from fla.ops.path_attn import parallel_path_attn

    o, _ = parallel_path_attn(q, k, v, w.float(), beta.float(), None if g is None else g.float(), scale)
    return o.to(v.dtype)


def unsupported(q, k, v, *args, **kwargs):
    """Why fla's kernel cannot take this call (None if it can)."""
    if fla_refuses(q):
        return fla_refuses(q)
    if q.shape[-1] not in (16, 32, 64, 128) or v.shape[-1] not in (16, 32, 64, 128):
        return f"head widths {q.shape[-1]}, {v.shape[-1]} (fla's kernel takes 16, 32, 64, 128)"
    return None
