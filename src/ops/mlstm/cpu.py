"""The mLSTM cell on gla's compiled C loop (src/ops/gla/gla.c, forward and backward), backend `cpu`.

chunked.py reduces the cell to gla with a per-head decay on the values [v | 1]; the C loop then
does the work: per step two multiply-adds per element of the (K, V + 1 + pad) state (the decay in
a per-head row scale), steps in blocks of 8 where the value width is a multiple of the vector
width (64 bytes: V + 1 padded to 80 columns at V = 64 in float32, +25%, against a step-by-step
loop at 65), and a backward that recomputes segments from checkpoints. A loop of its own would
save only the padding: the stabiliser, the gate exponentials and the normaliser are O(T H) and
O(T H V) elementwise work in torch around it.
"""

from src.ops.gla import cpu as gla_cpu
from src.ops.mlstm.chunked import via_gla


def mlstm(q, k, v, i, f, initial_state=None, output_final_state=False):
    """Same arguments and result as reference.mlstm."""
    return via_gla(gla_cpu.gla, q, k, v, i, f, initial_state, output_final_state,
                   lanes=64 // q.element_size())


def unsupported(q, k, v, i, f, initial_state=None, output_final_state=False):
    """Why the C loop cannot take this call (None if it can)."""
    return gla_cpu.unsupported(q, k, v, None, None, None if initial_state is None else initial_state[0])
