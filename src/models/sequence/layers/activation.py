"""Activations by name (`model.layer.activation`, `model.layer.postact`)."""

from torch import nn

from src.utils.errors import check_choice

ACTIVATIONS = {
    None: nn.Identity, "id": nn.Identity, "identity": nn.Identity, "linear": nn.Identity,
    "tanh": nn.Tanh, "relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid, "glu": lambda: nn.GLU(dim=-1),
}


def Activation(name, key="model.layer.activation"):
    return ACTIVATIONS[check_choice(key, name, list(ACTIVATIONS))]()


def OutputLinear(d_input, d_output, postact=None):
    """Linear d_input -> d_output followed by `postact`; glu doubles the linear's width."""
    width = 2 * d_output if postact == "glu" else d_output
    return nn.Sequential(nn.Linear(d_input, width), Activation(postact, "model.layer.postact"))
