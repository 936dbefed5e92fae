"""Decoders: backbone outputs (B, L, d_model) -> predictions.

`sequence` decoder, by mode:
    last  the last l_output positions: (B, l_output, d_output); l_output None keeps all L,
          l_output 0 (one output per sequence, as in S4) the last position: (B, d_output)
    pool  the mean over positions:      (B, d_output)
With `use_lengths` (padded batches that carry {"lengths": (B,)}), a sequence of length n is its
first n positions: `last` takes position n - 1, `pool` the mean over positions 0 .. n - 1.

`retrieval` decoder (S4's, after Nystromformer's LRA head), for batches of B pairs laid out as
(2B, L), the first texts then the second ones: u, v = the pooled halves (B, d_model) and
    logits = W2 act(W1 [u, v, u - v, u * v] + b1) + b2     (nli; without: W1 [u, v])
"""

import torch
from torch import nn

from src.utils.errors import ConfigError, check_choice


def restrict(x, mode, l_output, lengths=None):
    """The positions a `sequence` decoder reads: (B, d) for one output per sequence, else (B, l, d)."""
    if lengths is not None:
        if mode == "last":
            return x[torch.arange(x.shape[0], device=x.device), lengths - 1]  # (B, d_model)
        mask = torch.arange(x.shape[1], device=x.device) < lengths[:, None]  # (B, L)
        return (x * mask[..., None]).sum(dim=1) / lengths[:, None].to(x.dtype)
    if mode == "pool":
        return x.mean(dim=1)  # (B, d_model)
    if l_output == 0:
        return x[:, -1]  # (B, d_model)
    return x if l_output is None else x[:, x.shape[1] - l_output :]  # (B, l_output, d_model)


class SequenceDecoder(nn.Module):
    def __init__(self, d_model, d_output, l_output=None, mode="last", use_lengths=False, bias=True):
        super().__init__()
        self.mode = check_choice("decoder.mode", mode, ["last", "pool"])
        if use_lengths and l_output != 0:
            raise ConfigError(f"decoder.use_lengths=true needs one output per sequence (l_output=0), not {l_output}")
        self.l_output, self.use_lengths = l_output, use_lengths
        self.output = nn.Linear(d_model, d_output, bias=bias)  # bias=false: zoology's vocabulary head

    def forward(self, x, l_output=None, lengths=None):  # x: (B, L, d_model), lengths: (B,)
        """l_output: this input's number of outputs, if not the default (an eval set of another length)."""
        l_output = self.l_output if l_output is None else l_output
        return self.output(restrict(x, self.mode, l_output, _lengths(self.use_lengths, lengths)))


class RetrievalDecoder(nn.Module):
    def __init__(self, d_model, d_output, mode="pool", use_lengths=False, nli=True, activation="gelu", d_hidden=None):
        super().__init__()
        self.mode = check_choice("decoder.mode", mode, ["last", "pool"])
        self.use_lengths, self.nli = use_lengths, nli
        act = {"gelu": nn.GELU, "relu": nn.ReLU}[check_choice("decoder.activation", activation, ["gelu", "relu"])]
        d_hidden = d_hidden or d_model
        self.classifier = nn.Sequential(nn.Linear((4 if nli else 2) * d_model, d_hidden), act(), nn.Linear(d_hidden, d_output))

    def forward(self, x, l_output=None, lengths=None):  # x: (2B, L, d_model), lengths: (2B,); one output per pair
        u, v = restrict(x, self.mode, 0, _lengths(self.use_lengths, lengths)).chunk(2)  # (B, d_model) each
        features = [u, v, u - v, u * v] if self.nli else [u, v]
        return self.classifier(torch.cat(features, dim=-1))  # (B, d_output)


def _lengths(use_lengths, lengths):
    if use_lengths and lengths is None:
        raise ConfigError("decoder.use_lengths=true, but the dataset's batches carry no lengths")
    return lengths if use_lengths else None


def build_decoder(config, d_model, d_output, l_output=None):
    config = dict(config)
    name = check_choice("decoder._name_", config.pop("_name_"), ["sequence", "retrieval"])
    if name == "retrieval":
        return RetrievalDecoder(d_model, d_output, **config)
    return SequenceDecoder(d_model, d_output, l_output, **config)
