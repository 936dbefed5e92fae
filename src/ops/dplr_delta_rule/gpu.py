"""fla's Triton kernel behind the dplr_delta_rule signature, imported only when called (CUDA only):
fla.ops.generalized_delta_rule.chunk_dplr_delta_rule (g per head: broadcast per key).

Not run on hardware in this repository yet: the dispatcher takes it only where it imports and a
smoke call agrees with the torch path. Install: see requirements-gpu.txt.
"""

from src.ops.delta_rule.gpu import unsupported  # fla's limits are the same as for the delta rule


def dplr_delta_rule(q, k, v, a, b, g, scale=None, initial_state=None, output_final_state=False):
    from fla.ops.generalized_delta_rule import chunk_dplr_delta_rule

    gk = g if g.dim() == 4 else g[..., None].expand_as(k).contiguous()
    return chunk_dplr_delta_rule(q, k, v, a, b, gk, scale=scale, initial_state=initial_state,
                                 output_final_state=output_final_state)
