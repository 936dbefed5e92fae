"""Residual backbone: a stack of `n_layers` blocks around a registered sequence layer.

    postnorm (prenorm=false):  x <- norm(x + dropout(layer(x)))
    prenorm  (prenorm=true):   x <- x + dropout(layer(norm(x))),  and a final norm at the end

All tensors are (B, L, d_model).
"""

import inspect

from torch import nn

from src.utils import registry
from src.utils.errors import check_choice


def build_layer(config, d_model, notice=print):
    """The layer of `config` (`model.layer`). `kernel_type=attn` on a convolution layer
    (the DLR repo's `model=dlr model.layer.kernel_type=attn`) builds the `attn` layer from the
    options it shares with the convolution config; the kernel options are reported as unused.
    Keys a layer does not take (an experiment's `activation` for a layer without one) are
    reported the same way and dropped."""
    config = dict(config)
    if config.get("kernel_type") == "attn":
        cls = registry.resolve(registry.layer, "attn")
        accepted = set(inspect.signature(cls).parameters) - {"d_model"}
        unused = sorted(k for k in config if k not in accepted and k not in ("_name_", "kernel_type"))
        notice(f"notice: model.layer.kernel_type=attn: building layer 'attn'; not used: {', '.join(unused)}")
        return cls(d_model, **{k: v for k, v in config.items() if k in accepted})
    cls = registry.resolve(registry.layer, config.get("_name_"), "model.layer._name_")
    parameters = inspect.signature(cls).parameters
    if not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        # keys an experiment sets for every layer (activation, postact) that this layer has no use for
        unused = sorted(k for k in config if k != "_name_" and k not in parameters)
        if unused:
            notice(f"notice: model.layer._name_={config['_name_']}: not used: {', '.join(unused)}")
            config = {k: v for k, v in config.items() if k not in unused}
    return registry.build(registry.layer, config, d_model, key="model.layer._name_")


class ResidualBlock(nn.Module):
    def __init__(self, d_model, layer, prenorm, norm, dropout, notice=print):
        super().__init__()
        self.layer = build_layer(layer, d_model, notice)
        self.prenorm = prenorm
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, state=None):  # x: (B, L, D)
        y = self.norm(x) if self.prenorm else x
        y, state = self.layer(y, state=state)
        y = x + self.dropout(y)
        return (y if self.prenorm else self.norm(y)), state


class SequenceModel(nn.Module):
    def __init__(self, d_model, n_layers, layer, prenorm=False, norm="layer", dropout=0.0, notice=print):
        super().__init__()
        check_choice("model.norm", norm, ["layer", "none"])
        self.d_model = d_model
        # Build the first block with the notice, the others quietly: they share its config.
        quiet = lambda line: None  # noqa: E731
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, layer, prenorm, norm, dropout, notice if i == 0 else quiet)
            for i in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm and norm == "layer" else nn.Identity()

    def forward(self, x, state=None):  # x: (B, L, D) -> (B, L, D), per-block states
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, state=None if state is None else state[i])
            states.append(s)
        return self.final_norm(x), states
