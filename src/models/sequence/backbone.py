"""Residual backbone: a stack of `n_layers` blocks around a registered sequence layer.

    postnorm (prenorm=false):  x <- norm(x + dropout(layer(x)))
    prenorm  (prenorm=true):   x <- x + dropout(layer(norm(x))),  and a final norm at the end

All tensors are (B, L, d_model). Positional information (positions.py, `model.pos_emb`,
`model.pos_aug`) enters before the first block; with pos_emb=rope it is given to every layer
that takes `rope` (and `positions` in its forward) instead.
"""

import inspect

from torch import nn

from src.models.sequence.positions import Positions
from src.utils import registry
from src.utils.errors import ConfigError, check_choice


def build_layer(config, d_model, notice=print, rope=False):
    """The layer of `config` (`model.layer`). `kernel_type=attn` on a convolution layer
    (the DLR repo's `model=dlr model.layer.kernel_type=attn`) builds the `attn` layer from the
    options it shares with the convolution config; the kernel options are reported as unused.
    rope: pass rope=True to the layer (`model.pos_emb=rope`)."""
    config = dict(config)
    if rope:
        cls = registry.resolve(registry.layer, config["_name_"], "model.layer._name_")
        if "rope" not in inspect.signature(cls).parameters:
            raise ConfigError(f"model.pos_emb=rope rotates queries and keys: model.layer._name_={config['_name_']} "
                              "has none; use a layer with `rope` (mha, transformer) or another pos_emb")
        config["rope"] = True
    if config.get("kernel_type") == "attn":
        cls = registry.resolve(registry.layer, "attn")
        accepted = set(inspect.signature(cls).parameters) - {"d_model"}
        unused = sorted(k for k in config if k not in accepted and k not in ("_name_", "kernel_type"))
        notice(f"notice: model.layer.kernel_type=attn: building layer 'attn'; not used: {', '.join(unused)}")
        return cls(d_model, **{k: v for k, v in config.items() if k in accepted})
    cls = registry.resolve(registry.layer, config.pop("_name_"), "model.layer._name_")
    registry.check_kwargs(cls, config, f"model.layer ({cls.__name__})")
    return cls(d_model, **config)


class ResidualBlock(nn.Module):
    def __init__(self, d_model, layer, prenorm, norm, dropout, notice=print, rope=False):
        super().__init__()
        self.layer = build_layer(layer, d_model, notice, rope)
        self.takes_positions = "positions" in inspect.signature(self.layer.forward).parameters
        self.prenorm = prenorm
        self.norm = nn.LayerNorm(d_model) if norm == "layer" else nn.Identity()
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x, state=None, positions=None):  # x: (B, L, D), positions: (B, L)
        y = self.norm(x) if self.prenorm else x
        extra = {"positions": positions} if self.takes_positions else {}
        y, state = self.layer(y, state=state, **extra)
        y = x + self.dropout(y)
        return (y if self.prenorm else self.norm(y)), state


class SequenceModel(nn.Module):
    def __init__(self, d_model, n_layers, layer, prenorm=False, norm="layer", dropout=0.0, pos_emb="none",
                 pos_aug="none", pos_max_len=None, pos_init="random", pos_frozen=False, notice=print):
        super().__init__()
        check_choice("model.norm", norm, ["layer", "none"])
        self.d_model = d_model
        self.positions = Positions(d_model, pos_emb, pos_aug, pos_max_len, pos_init, pos_frozen)
        # Build the first block with the notice, the others quietly: they share its config.
        quiet = lambda line: None  # noqa: E731
        self.blocks = nn.ModuleList(
            ResidualBlock(d_model, layer, prenorm, norm, dropout, notice if i == 0 else quiet, pos_emb == "rope")
            for i in range(n_layers)
        )
        self.final_norm = nn.LayerNorm(d_model) if prenorm and norm == "layer" else nn.Identity()

    def forward(self, x, state=None):  # x: (B, L, d_input) -> (B, L, D), per-block states
        positions = self.positions.positions(x)  # (B, L)
        x = self.positions(x, positions)
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, state=None if state is None else state[i], positions=positions)
            states.append(s)
        return self.final_norm(x), states
