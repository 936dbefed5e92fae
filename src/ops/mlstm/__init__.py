"""The mLSTM cell of xLSTM (Beck et al. 2024): a matrix memory with exponential input gates and
its stabiliser state.

    mlstm(q, k, v, i, f, initial_state=None, output_final_state=False, backend="auto")
        -> (h, final_state)

q, k (B, T, H, K); v (B, T, H, V); i, f (B, T, H) the input and forget gate preactivations;
state (C (B, H, K, V), n (B, H, K), m (B, H)), None: zeros and m = -inf. Per head:
    m_t = max(logsigmoid(f_t) + m_{t-1}, i_t)
    C_t = exp(logsigmoid(f_t) + m_{t-1} - m_t) C_{t-1} + exp(i_t - m_t) (k_t / sqrt(K)) v_t^T
    n_t = (the same with v_t = 1)
    h_t = C_t^T q_t / (max(|n_t . q_t|, exp(-m_t)) + 1e-6)
as xlstm's recurrent_step_stabilized_simple and (from no state) parallel_stabilized_simple.
Backends: `torch` (chunked.py: the cell as gla on [v | 1], gla's chunked path; every device),
`cpu` (cpu.py: the same on gla's compiled C loop, forward and backward; first on CPU).
reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.mlstm import chunked, cpu


def smoke_inputs(device):
    """A small call with every argument: gates that move the stabiliser, an initial state."""
    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 37, 2, 16, generator=gen) for _ in range(3))
    i, f = (3 * torch.randn(2, 37, 2, generator=gen) for _ in range(2))
    state = (torch.randn(2, 2, 16, 16, generator=gen), torch.randn(2, 2, 16, generator=gen),
             torch.randn(2, 2, generator=gen))
    return [t.to(device) for t in (q, k, v, i, f)], tuple(s.to(device) for s in state)


def _smoke(fn, device):
    """Runs forward and backward and agrees with the torch path."""
    args, state = smoke_inputs(device)
    (h, S), (h_ref, S_ref) = (g(*args, state, True) for g in (fn, chunked.mlstm))
    for got, want in zip((h, *S), (h_ref, *S_ref)):
        if not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
            raise RuntimeError(f"its smoke call differs from the torch path by {(got - want).abs().max().item():.3g}")
    args[0].requires_grad_(True)
    fn(*args)[0].sum().backward()


DISPATCH = Dispatcher("mlstm", {"torch": lazy("src.ops.mlstm.chunked.mlstm"), "cpu": lazy("src.ops.mlstm.cpu.mlstm")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def mlstm(q, k, v, i, f, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    if i.shape != q.shape[:3] or f.shape != q.shape[:3]:
        raise ValueError(f"mlstm: i and f have shapes {tuple(i.shape)}, {tuple(f.shape)}; "
                         f"they must be (B, T, H) = {tuple(q.shape[:3])}")
    args = (q, k, v, i, f, initial_state, output_final_state)
    return DISPATCH.function(backend, q.device, args)(*args)
