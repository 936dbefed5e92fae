"""Encoders: dataset inputs -> (B, L, d_model).

    linear     x (B, L, d_input) float  -> x W + b
    embedding  x (B, L) integer tokens  -> E[x],  E (n_tokens, d_model)
"""

from torch import nn

from src.utils.errors import ConfigError, check_choice


def build_encoder(name, d_input, n_tokens, d_model):
    check_choice("encoder", name, ["embedding", "linear"])
    if name == "linear":
        if d_input is None:
            raise ConfigError("encoder=linear needs real-valued inputs; this dataset has tokens (use encoder=embedding)")
        return nn.Linear(d_input, d_model)
    if n_tokens is None:
        raise ConfigError("encoder=embedding needs token inputs; this dataset has real-valued ones (use encoder=linear)")
    return nn.Embedding(n_tokens, d_model)
