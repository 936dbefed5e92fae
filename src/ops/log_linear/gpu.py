"""fla's kernels behind the log_linear signature, imported only when called (CUDA only):

    Mamba-2 inside (beta None)       fla.ops.log_linear_attn.chunk_log_linear_attn, from position 0;
                                     the final Fenwick state is chunked.py's (its sums over the buckets)
    Gated DeltaNet inside            chunked.py on fla's gated delta rule kernels (inner="triton")

fla's log-linear kernel keeps its own state (LogLinearAttentionState: the tree plus the inputs of
the last partial chunk), so `unsupported` refuses a call from a state; it takes one group of q, k
(G = 1), a power-of-two V and K a multiple of its block. Not run on hardware in this repository
yet: the dispatcher takes it only where it imports and a smoke call agrees with the torch path.
Install: see requirements-gpu.txt.
"""

from src.ops.dispatch import fla_refuses

from src.ops.log_linear import chunked


def log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state):
    if beta is not None:
        return chunked.log_linear(q, k, v, beta, g, level_scales, initial_state, output_final_state, inner="triton")
    from fla.ops.log_linear_attn import chunk_log_linear_attn

    o, _ = chunk_log_linear_attn(q, k, v, g, level_scales)
    if not output_final_state:
        return o, None
    levels = v.new_zeros(v.shape[0], v.shape[2], 0, k.shape[-1], v.shape[-1])
    return o, chunked._final(k.expand(-1, -1, v.shape[2], -1), v, g, levels, 0)


def unsupported(q, k, v, beta, g, level_scales, initial_state=None, output_final_state=False):
    """Why fla's kernels cannot take this call (None if they can)."""
    if fla_refuses(q):
        return fla_refuses(q)
    if beta is None and initial_state is not None:
        return "a start from a state: fla's log-linear kernel keeps its own kind of state; backend=torch runs it"
    if beta is None and (q.shape[2] != 1 or v.shape[-1] & (v.shape[-1] - 1) or q.shape[-1] % 16):
        return (f"q, k groups {q.shape[2]}, K={q.shape[-1]}, V={v.shape[-1]}: fla's log-linear kernel takes one "
                "group, V a power of two, K a multiple of 16")
    return None
