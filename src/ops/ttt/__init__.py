"""TTT-Linear and TTT-MLP (Sun et al. 2024): a hidden state that is the weights of an inner model,
trained at test time by mini-batch gradient descent on each token's reconstruction loss.

    ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6, backend="auto")
    ttt_mlp(...)   (the same arguments)                                    -> (z, state, offset)
        G_t = sum_{s <= t in its mini-batch} lr_s grad_W l(W0; k_s, v_s),  W_t = W0 - eta_t G_t,  z_t = Z(q_t; W_t)
        l(W; k, v) = 1/2 || LN_{w,b}(Z(k; W)) - (v - k) ||^2;  Z = x W1 + b1 (linear) or gelu(x W1 + b1) W2 + b2 (mlp)

q, k, v (B, T, H, D); eta, lr (B, T, H); w, b (H, D); state (W, G): the weights at the current
mini-batch's start and the gradient sums of its first `offset` tokens (reference.py). Backends of
each: `cpu` (ttt_linear.c, ttt_mlp.c: C loops over each head's mini-batches, calls from a
mini-batch's start; first on CPU) and `torch` (chunked.py, the dual form, every device).
reference.py is the oracle. fla's chunk_ttt_linear (Triton) is not a backend: it
returns another output (z + LN(z), from which z is not recovered), takes one eta per token (no
lr_s) and no partial mini-batch in its state. Its naive.py is an oracle in the tests (lr = 1).
"""

import torch

from src.ops.dispatch import Dispatcher, lazy
from src.ops.ttt import chunked, cpu


def _smoke(torch_path, shapes):
    """Forward and backward from a mini-batch's start agree with the torch path within 1e-4, the
    inner model's weights and biases of `shapes` (H 2, D 8)."""
    def smoke(fn, device):
        gen = torch.Generator().manual_seed(0)
        q, k, v = (torch.randn(1, 21, 2, 8, generator=gen).to(device) for _ in range(3))
        eta, lr = (torch.rand(1, 21, 2, generator=gen).to(device) for _ in range(2))
        w, b = (torch.randn(2, 8, generator=gen).to(device) for _ in range(2))
        W = tuple(0.3 * torch.randn(1, 2, *s, generator=gen).to(device) for s in shapes)
        q.requires_grad_(True)
        (z, *_), (want, *_) = (f(q, k, v, eta, lr, w, b, (W, tuple(map(torch.zeros_like, W))), 0, 4)
                               for f in (fn, torch_path))
        if not torch.allclose(z, want, rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"its smoke call differs from the torch path by {(z - want).abs().max().item():.3g}")
        z.sum().backward()
    return smoke


DISPATCH = Dispatcher("ttt_linear", {"torch": lazy("src.ops.ttt.chunked.ttt_linear"),
                                     "cpu": lazy("src.ops.ttt.cpu.ttt_linear")},
                      {"cpu": ["cpu", "torch"], "default": ["torch"]},
                      _smoke(chunked.ttt_linear, [(8, 8), (8,)]), {"cpu": cpu.unsupported})
MLP_DISPATCH = Dispatcher("ttt_mlp", {"torch": lazy("src.ops.ttt.chunked.ttt_mlp"),
                                      "cpu": lazy("src.ops.ttt.cpu.ttt_mlp")},
                          {"cpu": ["cpu", "torch"], "default": ["torch"]},
                          _smoke(chunked.ttt_mlp, [(8, 12), (12,), (12, 8), (8,)]), {"cpu": cpu.unsupported})


def _check(q, k, v, eta, lr, offset, mini_batch_size):
    if k.shape != q.shape or v.shape != q.shape or eta.shape != q.shape[:3] or lr.shape != eta.shape \
            or not 0 <= offset < mini_batch_size:
        raise ValueError(f"ttt: q {tuple(q.shape)}, k {tuple(k.shape)}, v {tuple(v.shape)}, eta {tuple(eta.shape)}, "
                         f"lr {tuple(lr.shape)}, offset {offset}, mini_batch_size {mini_batch_size}: need q, k, v "
                         "(B, T, H, D), eta, lr (B, T, H), 0 <= offset < mini_batch_size")


def ttt_linear(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6, backend="auto"):
    """See the module docstring."""
    _check(q, k, v, eta, lr, offset, mini_batch_size)
    args = (q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
    return DISPATCH.function(backend, q.device, args)(*args)


def ttt_mlp(q, k, v, eta, lr, w, b, state, offset=0, mini_batch_size=16, eps=1e-6, backend="auto"):
    """See the module docstring."""
    _check(q, k, v, eta, lr, offset, mini_batch_size)
    args = (q, k, v, eta, lr, w, b, state, offset, mini_batch_size, eps)
    return MLP_DISPATCH.function(backend, q.device, args)(*args)
