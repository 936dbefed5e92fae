"""The Stack-RNN and Tape-RNN recurrences, the obvious way: one Python step per time step (the
oracle), written from google-deepmind/neural_networks_chomsky_hierarchy's models/stack_rnn.py
(StackRNNCore, _update_stack) and models/tape_rnn.py (TapeRNNCore, _update_memory), one stack or
tape, with its inner core hk.VanillaRNN.

Per step, from the hidden state h_{t-1} (H,) and the memory M_{t-1} (K, C) (K cells of C floats;
M[0] the top of the stack, or the tape's cell under the head), with u_t = W_x x_t + b the input's
share of the RNN's preactivation:
    h_t = relu(u_t + W_h h_{t-1} + W_r M_{t-1}[0])         the controller reads M[0] with its input
                                                           (hk.VanillaRNN's nonlinearity is relu)
    v_t = f(h_t)                                           the value to push or write: f a stack of
                                                           Linear layers with relu between them
    p_t = softmax(W_a h_t + b_a)                           the action probabilities (A,)
    stack (A = 3: push, pop, no-op), with M[K] = 0:
        M_t[0] = p_push v_t      + p_pop M_{t-1}[1]     + p_noop M_{t-1}[0]
        M_t[i] = p_push M_{t-1}[i-1] + p_pop M_{t-1}[i+1] + p_noop M_{t-1}[i]        (i >= 1)
    tape (one action per shift s_a; the hierarchy's: 0, -1, +1, -n, +n for an input of n tokens):
        W = M_{t-1} with cell 0 replaced by v_t             (every action writes first)
        M_t[i] = sum_a p_a W[(i - s_a) mod K]               (the original's roll(eye, s_a) applied to W)
The output is h_t. The state starts at h = 0 and an all-zero memory unless given. Computes in
the inputs' dtype (float64 for exact checks); autograd differentiates through the loop.
"""

import torch
import torch.nn.functional as F

KINDS = ("stack", "tape")


def write_value(h, write):
    """f(h): the Linear layers `write` ((W, b), ...) with relu between them (haiku's MLP)."""
    for i, (W, b) in enumerate(write):
        h = F.linear(h, W, b)
        if i + 1 < len(write):
            h = F.relu(h)
    return h


def update_stack(M, p, v):
    """M (B, K, C), p (B, 3) [push, pop, no-op], v (B, C) -> the new stack, as _update_stack."""
    push, pop, noop = (p[:, a, None] for a in range(3))  # (B, 1) each
    top = push * v + pop * M[:, 1] + noop * M[:, 0]  # (B, C)
    below = torch.cat([M[:, 2:], torch.zeros_like(M[:, :1])], dim=1)  # M[i + 1] for i >= 1, M[K] = 0
    rest = push[..., None] * M[:, :-1] + pop[..., None] * below + noop[..., None] * M[:, 1:]  # (B, K - 1, C)
    return torch.cat([top[:, None], rest], dim=1)


def update_tape(M, p, v, shifts):
    """M (B, K, C), p (B, A), v (B, C) -> the new tape, as _update_memory: write v under the head,
    then the actions' rolls of the tape, weighted by p."""
    W = torch.cat([v[:, None], M[:, 1:]], dim=1)
    return sum(p[:, a, None, None] * torch.roll(W, s, dims=1) for a, s in enumerate(shifts))


def memory_rnn(u, W_h, W_r, write, W_a, b_a, kind, size, shifts=(), initial_state=None, output_final_state=False):
    """u (B, T, H); W_h (H, H); W_r (H, C); write ((W_1, b_1), ..., (W_n, b_n)), W_n (C, .);
    W_a (A, H), b_a (A,); kind "stack" (A = 3) or "tape" (A = len(shifts)); size K (cells);
    initial_state (h (B, H), M (B, K, C)) or None. -> h (B, T, H), final state (h, M) or None."""
    B, _, H = u.shape
    if initial_state is None:
        h, M = u.new_zeros(B, H), u.new_zeros(B, size, W_r.shape[1])
    else:
        h, M = (s.to(u.dtype) for s in initial_state)
    out = []
    for u_t in u.unbind(1):  # unbind, not u[:, t]: the backward of T selects would write T zero copies of u
        h = F.relu(u_t + F.linear(h, W_h) + F.linear(M[:, 0], W_r))
        v = write_value(h, write)
        p = torch.softmax(F.linear(h, W_a, b_a), dim=-1)
        M = update_stack(M, p, v) if kind == "stack" else update_tape(M, p, v, shifts)
        out.append(h)
    return torch.stack(out, dim=1), ((h, M) if output_final_state else None)
