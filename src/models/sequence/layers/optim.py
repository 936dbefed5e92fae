"""Per-parameter optimizer hyperparameters (read by src/utils/optim.py)."""

from torch import nn


def register(module, name, tensor, trainable=True, lr=None, wd=None):
    """Register `tensor` on `module` as a parameter (or a buffer if not trainable); a parameter
    gets `_optim = {"lr": lr, "weight_decay": wd}` with the entries that are set."""
    if not trainable:
        module.register_buffer(name, tensor)
        return
    param = nn.Parameter(tensor)
    optim = {k: v for k, v in (("lr", lr), ("weight_decay", wd)) if v is not None}
    if optim:
        param._optim = optim
    module.register_parameter(name, param)
