"""fla's Triton kernel behind the forgetting_attn signature, imported only when called (CUDA only):
fla.ops.forgetting_attn.parallel_forgetting_attn (the gates in float32, as fla's layer passes them).

The dispatcher takes it only where it imports and a smoke call agrees with the torch path.
Install: see requirements-gpu.txt.
"""

from src.ops.dispatch import fla_refuses


def forgetting_attn(q, k, v, g, scale=None):
    from fla.ops.forgetting_attn import parallel_forgetting_attn

    return parallel_forgetting_attn(q, k, v, g.float(), scale).to(v.dtype)


def unsupported(q, *args, **kwargs):
    """Why fla's kernel cannot take this call (None if it can)."""
    return fla_refuses(q)
