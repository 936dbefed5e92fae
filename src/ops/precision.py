"""Half-precision calls to the ops: autocast's mixed dtypes and a half-precision model's tensors.

Under autocast (`trainer.precision=bf16-mixed` or `16-mixed`) a layer hands its op bfloat16 or
float16 projections beside float32 gates; a half-precision model (`bf16-true`) hands it half
tensors only. fla's kernels take both and keep their states and prefix sums in float32. Two kinds
of backend compute the same way through `float32_inside`: the torch paths that would lose more
than the inputs' own rounding in half precision, or have no half kernels (a forget gate's prefix
sums, an inner model's layer norm and gradient steps, the triangular solves of a UT form, an
FFT), and the C loops, compiled for float32 and float64 only. They run in float32 or wider,
outside autocast, and return tensors of the arguments' promoted dtype, so that a bfloat16 model
gets bfloat16 back and an autocast one float32 (the promotion of bfloat16 and float32).
"""

import contextlib
import functools

import torch
from torch.utils import _pytree

HALF = (torch.float16, torch.bfloat16)


def promoted_dtype(*tensors):
    """The promoted dtype of the tensors given (None skipped)."""
    return functools.reduce(torch.promote_types, [x.dtype for x in tensors if x is not None])


def no_autocast(device):
    """A context that turns the caller's autocast off on `device`, for a computation that chooses
    its own dtypes."""
    if torch.amp.is_autocast_available(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def _floats(x):
    """The floating tensors in x's nested tuples and lists."""
    found, stack = [], [x]
    while stack:
        y = stack.pop()
        if isinstance(y, torch.Tensor):
            if y.is_floating_point():
                found.append(y)
        elif isinstance(y, (tuple, list)):
            stack.extend(y)
    return found


def float32_inside(fn):
    """fn(*args, **kwargs) run outside autocast, its half-precision tensor arguments widened to
    float32; where there were any, the floating tensors of its result in the arguments' promoted
    dtype. A call without half-precision tensors and outside autocast runs as it is (4 us more here)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        floats = _floats((args, tuple(kwargs.values())))
        half = any(x.dtype in HALF for x in floats)
        if not half and not torch.is_autocast_enabled(floats[0].device.type):
            return fn(*args, **kwargs)
        with no_autocast(floats[0].device):
            if not half:
                return fn(*args, **kwargs)
            widen = lambda x: x.float() if torch.is_tensor(x) and x.dtype in HALF else x  # noqa: E731
            result = fn(*_pytree.tree_map(widen, args), **_pytree.tree_map(widen, kwargs))
        dtype = promoted_dtype(*floats)
        return _pytree.tree_map(lambda x: x.to(dtype) if torch.is_tensor(x) and x.is_floating_point() else x, result)
    return wrapped
