"""fla's Triton kernels behind the delta-rule signatures, imported only when called (CUDA only):

    delta_rule, g None       fla.ops.delta_rule.chunk_delta_rule
    delta_rule, g per head   fla.ops.gated_delta_rule.chunk_gated_delta_rule
    delta_rule, g per key    fla.ops.kda.chunk_kda

Not run on hardware in this repository yet: the dispatcher takes it only where it imports and a
smoke call agrees with the torch path. Install: see requirements-gpu.txt.
"""

from src.ops.dispatch import fla_refuses


def delta_rule(q, k, v, beta, g=None, scale=None, initial_state=None, output_final_state=False):
    kwargs = dict(scale=scale, initial_state=initial_state, output_final_state=output_final_state)
    if g is None:
        from fla.ops.delta_rule import chunk_delta_rule

        return chunk_delta_rule(q, k, v, beta, **kwargs)
    if g.dim() == 4:
        from fla.ops.kda import chunk_kda

        return chunk_kda(q, k, v, g, beta, **kwargs)
    from fla.ops.gated_delta_rule import chunk_gated_delta_rule

    return chunk_gated_delta_rule(q, k, v, g, beta, **kwargs)


def unsupported(q, *args, **kwargs):
    """Why fla's kernels cannot take this call (None if they can)."""
    return fla_refuses(q)
