"""What the op benchmarks measure of one call: its wall time (forward, or forward and backward) and
its float32 error against a float64 reference."""

import time

import torch


def timed(fn, x, backward):
    """Wall seconds of fn(*x), and with `backward` of the gradients of its sum with respect to every
    input of x that requires one."""
    start = time.perf_counter()
    y = fn(*x)
    if backward:
        torch.autograd.grad(y.sum(), [t for t in x if torch.is_tensor(t) and t.requires_grad])
    return time.perf_counter() - start


def relative_error(fn, x, y64):
    """||fn(x) - y64|| / ||y64|| of fn's output on x (detached), against the float64 reference y64."""
    with torch.no_grad():
        y = fn(*[t.detach() if torch.is_tensor(t) else t for t in x])
    return ((y.double() - y64).norm() / y64.norm()).item()
