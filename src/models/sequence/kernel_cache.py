"""Gradient accumulation without recomputing long-convolution kernels.

With trainer.accumulate_grad_batches = k the parameters change only every k micro-batches, so a
kernel K = kernel(L) is the same for all k of them. SequenceLightningModule.training_step opens
`accumulation_window(step, last)` around each micro-batch, and LongConv asks its `KernelCache`:

  first micro-batch   K = kernel(L), its autograd graph kept; the layer convolves with a leaf
                      K' = K.detach() (requires_grad), so each micro-batch's backward stops at
                      K' and sums dL_i/dK into K'.grad;
  later micro-batches the same K';
  last micro-batch    the layer convolves with AddAccumulatedGrad(K, K'): K itself, whose backward
                      adds K'.grad to the gradient coming in, so the one backward through the
                      kernel carries sum_i dL_i/dK and the parameters get
                      J^T sum_i dL_i/dK = sum_i J^T dL_i/dK,
                      what k separate backward passes accumulate (up to summation order).

The kernel is computed and back-propagated once per optimizer step instead of k times. The last
micro-batch's own backward does it, so DDP's gradient synchronisation (which runs in that
backward) sees the kernel's parameter gradients. Outside a window (k = 1, validation, tests,
inference, no grad) the kernel is computed on every call. All micro-batches of a window must have
the same length L (one kernel): the synthetic tasks do; a change raises.
"""

import contextlib
import contextvars

import torch

_window = contextvars.ContextVar("kernel_accumulation_window", default=None)


@contextlib.contextmanager
def accumulation_window(step, last):
    """Micro-batches inside share kernels until the one with `last` (step: the optimizer step)."""
    token = _window.set((step, last))
    try:
        yield
    finally:
        _window.reset(token)


class AddAccumulatedGrad(torch.autograd.Function):
    """Identity on K; its backward adds leaf.grad (the earlier micro-batches' dL/dK)."""

    @staticmethod
    def forward(ctx, K, leaf):
        ctx.leaf = leaf
        return K.view_as(K)

    @staticmethod
    def backward(ctx, grad):
        earlier = ctx.leaf.grad
        return (grad if earlier is None else grad + earlier), None


class KernelCache:
    """Held by a layer: `cache(kernel, L)` instead of `kernel(L)` (see the module docstring)."""

    def __init__(self):
        self.entry = None  # (step, L, K with graph, leaf K')

    def __call__(self, kernel, L):
        window = _window.get()
        if window is None or not torch.is_grad_enabled():
            return kernel(L)
        step, last = window
        if self.entry is not None and self.entry[0] == step and self.entry[1] != L:
            raise RuntimeError(
                f"trainer.accumulate_grad_batches: micro-batches of one step have lengths {self.entry[1]} and {L}; "
                "the kernel cache needs one length per step (use accumulate_grad_batches=1)"
            )
        if self.entry is None or self.entry[0] != step:
            if last:  # a window of one micro-batch (the end of an epoch)
                self.entry = None
                return kernel(L)
            K = kernel(L)
            self.entry = (step, L, K, K.detach().requires_grad_())
        _, _, K, leaf = self.entry
        if last:
            self.entry = None
            return AddAccumulatedGrad.apply(K, leaf)
        return leaf
