"""The sLSTM cell of xLSTM (Beck et al. 2024): scalar memories with exponential input gates,
recurrent connections through h and head-wise block-diagonal recurrent matrices.

    slstm(x, R, b, initial_state=None, output_final_state=False, backend="auto") -> (h, final_state)

x (B, T, 4, H, d) the gate preactivations from the input, gates [i, f, z, o] (xlstm's order);
R (H, d, 4, d) the recurrent kernel (xlstm's external layout), b (4, H, d); state (h, c, n, m),
each (B, H, d), None: zeros and m = -inf. Per unit (reference.py):
    r_t = x_t + b + h_{t-1} R,          m_t = max(logsigmoid(r_f) + m_{t-1}, r_i)
    c_t = exp(logsigmoid(r_f) + m_{t-1} - m_t) c_{t-1} + exp(r_i - m_t) tanh(r_z)
    n_t = (the same with tanh(r_z) = 1),   h_t = sigmoid(r_o) c_t / n_t
as xlstm's vanilla slstm_forward. The recurrence through h_{t-1} is nonlinear: no chunked form.
Backends: `torch` (reference.py, the per-step loop, autograd through it: every device),
`cpu` (cpu.py: a compiled C loop, forward and backward; first on CPU). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.slstm import cpu, reference


def smoke_inputs(device):
    """A small call with every argument: large gates that move the stabiliser, an initial state."""
    gen = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(2, 37, 4, 2, 8, generator=gen)
    R, b = 0.3 * torch.randn(2, 8, 4, 8, generator=gen), torch.randn(4, 2, 8, generator=gen)
    h, c, n, m = (torch.randn(2, 2, 8, generator=gen) for _ in range(4))
    state = (h, c, n.abs() + 1, m)
    return [t.to(device) for t in (x, R, b)], tuple(s.to(device) for s in state)


def _smoke(fn, device):
    """Runs forward and backward and agrees with the reference loop."""
    args, state = smoke_inputs(device)
    (h, S), (h_ref, S_ref) = (g(*args, state, True) for g in (fn, reference.slstm))
    for got, want in zip((h, *S), (h_ref, *S_ref)):
        if not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
            raise RuntimeError(f"its smoke call differs from the reference by {(got - want).abs().max().item():.3g}")
    args[0].requires_grad_(True)
    fn(*args)[0].sum().backward()


DISPATCH = Dispatcher("slstm", {"torch": lazy("src.ops.slstm.reference.slstm"), "cpu": lazy("src.ops.slstm.cpu.slstm")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def slstm(x, R, b, initial_state=None, output_final_state=False, backend="auto"):
    """See the module docstring."""
    B, T, G, H, d = x.shape
    if G != 4 or R.shape != (H, d, 4, d) or b.shape != (4, H, d):
        raise ValueError(f"slstm: x {tuple(x.shape)}, R {tuple(R.shape)}, b {tuple(b.shape)}; they must be "
                         f"(B, T, 4, H, d), (H, d, 4, d) = {(H, d, 4, d)}, (4, H, d) = {(4, H, d)}")
    args = (x, R, b, initial_state, output_final_state)
    return DISPATCH.function(backend, x.device, args)(*args)
