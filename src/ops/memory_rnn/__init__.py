"""The memory-augmented RNNs of the Chomsky hierarchy (Deletang et al. 2023): a vanilla RNN that
reads and writes a stack (Joulin and Mikolov 2015) or a tape of vectors through soft actions.

    memory_rnn(u, W_h, W_r, write, W_a, b_a, kind, size, shifts=(), initial_state=None,
               output_final_state=False, backend="auto") -> (h, final_state)

u (B, T, H) the input's share of the preactivation; W_h (H, H); W_r (H, C) reads cell 0 of the
memory (K = `size` cells of C floats); write ((W_1, b_1), ..., (W_n, b_n)) the Linear layers (relu
between) from h_t to the value v_t (C,) pushed or written; W_a (A, H), b_a (A,) the action logits;
kind "stack" (actions push, pop, no-op) or "tape" (an action per tape shift in `shifts`); state
(h (B, H), M (B, K, C)), None: zeros. Per step (reference.py):
    h_t = relu(u_t + W_h h_{t-1} + W_r M_{t-1}[0]),   v_t = f(h_t),   p_t = softmax(W_a h_t + b_a)
    stack:  M_t[i] = p_push M_{t-1}[i-1] + p_pop M_{t-1}[i+1] + p_noop M_{t-1}[i]   (M[-1] = v_t, M[K] = 0)
    tape:   M_t[i] = sum_a p_a W[(i - s_a) mod K],  W = M_{t-1} with W[0] = v_t
The recurrence runs through the relu and the softmax: no chunked form. Backends: `torch`
(reference.py, the per-step loop, autograd through it: every device), `cpu` (cpu.py: a compiled C
loop, forward and backward; first on CPU). reference.py is the oracle.
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.memory_rnn import cpu, reference
from src.ops.memory_rnn.reference import KINDS

STACK_ACTIONS = 3  # push, pop, no-op


def smoke_inputs(device, kind="tape"):
    """A small call with every argument: a two-layer write MLP, an initial state, a tape with a wrap-around jump."""
    gen = torch.Generator().manual_seed(0)
    B, T, H, C, K = 2, 9, 6, 3, 5
    u = torch.randn(B, T, H, generator=gen)
    W_h, W_r = torch.randn(H, H, generator=gen) / 2, torch.randn(H, C, generator=gen)
    write = ((torch.randn(4, H, generator=gen), torch.randn(4, generator=gen)),
             (torch.randn(C, 4, generator=gen), torch.randn(C, generator=gen)))
    shifts = (0, -1, 1, -7, 7) if kind == "tape" else ()
    A = len(shifts) or STACK_ACTIONS
    W_a, b_a = torch.randn(A, H, generator=gen), torch.randn(A, generator=gen)
    state = (torch.randn(B, H, generator=gen).relu(), torch.randn(B, K, C, generator=gen))
    to = lambda t: t.to(device)  # noqa: E731
    return (to(u), to(W_h), to(W_r), tuple((to(W), to(b)) for W, b in write), to(W_a), to(b_a), kind, K, shifts,
            tuple(map(to, state)))


def _smoke(fn, device):
    """Runs forward and backward on a stack and a tape and agrees with the reference loop."""
    for kind in KINDS:
        args = smoke_inputs(device, kind)
        (h, S), (h_ref, S_ref) = (g(*args, True) for g in (fn, reference.memory_rnn))
        for got, want in zip((h, *S), (h_ref, *S_ref)):
            if not torch.allclose(got, want, rtol=1e-3, atol=1e-3):
                error = (got - want).abs().max().item()
                raise RuntimeError(f"its smoke call differs from the reference by {error:.3g}")
        args[0].requires_grad_(True)
        fn(*args)[0].sum().backward()


DISPATCH = Dispatcher("memory_rnn", {"torch": lazy("src.ops.memory_rnn.reference.memory_rnn"),
                                     "cpu": lazy("src.ops.memory_rnn.cpu.memory_rnn")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]}, _smoke, {"cpu": cpu.unsupported})


def memory_rnn(u, W_h, W_r, write, W_a, b_a, kind, size, shifts=(), initial_state=None, output_final_state=False,
               backend="auto"):
    """See the module docstring."""
    B, T, H = u.shape
    C, A = W_r.shape[1], W_a.shape[0]
    if kind not in KINDS:
        raise ValueError(f"memory_rnn: kind={kind!r}; it must be one of {', '.join(KINDS)}")
    if W_h.shape != (H, H) or W_r.shape[0] != H or not write or write[0][0].shape[1] != H or write[-1][0].shape[0] != C:
        raise ValueError(f"memory_rnn: u {tuple(u.shape)}, W_h {tuple(W_h.shape)}, W_r {tuple(W_r.shape)}, write "
                         f"{[tuple(W.shape) for W, _ in write]}: they must be (B, T, H), (H, H), (H, C), and Linear "
                         "layers from H to C")
    if A != (len(shifts) if kind == "tape" else STACK_ACTIONS) or b_a.shape != (A,):
        raise ValueError(f"memory_rnn: W_a {tuple(W_a.shape)}, b_a {tuple(b_a.shape)} for a {kind} with shifts "
                         f"{tuple(shifts)}: one action per shift on a tape, push, pop and no-op on a stack")
    if size < (2 if kind == "stack" else 1):
        raise ValueError(f"memory_rnn: size={size}; a stack needs >= 2 cells, a tape >= 1")
    args = (u, W_h, W_r, tuple(write), W_a, b_a, kind, size, tuple(shifts), initial_state, output_final_state)
    return DISPATCH.function(backend, u.device, args)(*args)
