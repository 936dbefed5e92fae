"""causal-conv1d's CUDA kernel behind the causal_conv1d signature, imported only when called:
backend `cuda`, causal_conv1d.causal_conv1d_fn. Install: see requirements-gpu.txt.
"""

from src.ops.dispatch import real_on_cuda


def causal_conv1d(x, weight, bias=None, activation=None, initial_states=None):
    from causal_conv1d import causal_conv1d_fn

    return causal_conv1d_fn(x.contiguous(), weight.contiguous(), bias, activation=activation)


def unsupported(x, weight, bias=None, activation=None, initial_states=None):
    """Why the kernel cannot take this call (None if it can)."""
    if initial_states is not None:
        return "causal_conv1d_fn takes initial states only for channel-last inputs"
    if weight.shape[1] not in (2, 3, 4):
        return f"kernel width {weight.shape[1]} (causal_conv1d_fn takes 2, 3 or 4)"
    return real_on_cuda(x, weight, bias)
