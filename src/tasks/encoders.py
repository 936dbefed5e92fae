"""Encoders: dataset inputs -> (B, L, d_model).

    linear     x (B, L, d_input) float  -> x W + b
    embedding  x (B, L) integer tokens  -> E[x]
"""

from torch import nn

from src.utils.errors import ConfigError, check_choice


def build_encoder(name, dataset, d_model):
    check_choice("encoder", name, ["embedding", "linear"])
    if name == "linear":
        if dataset.d_input is None:
            raise ConfigError(f"encoder=linear needs real-valued inputs; dataset {type(dataset).__name__} has tokens")
        return nn.Linear(dataset.d_input, d_model)
    if getattr(dataset, "n_tokens", None) is None:
        raise ConfigError(f"encoder=embedding needs token inputs; dataset {type(dataset).__name__} has none")
    return nn.Embedding(dataset.n_tokens, d_model)
