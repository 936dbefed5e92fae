"""Decoders: backbone outputs (B, L, d_model) -> predictions.

`sequence` decoder, by mode:
    last  the last l_output positions: (B, l_output, d_output); l_output None keeps all L,
          l_output 0 (one output per sequence, as in S4) the last position: (B, d_output)
    pool  the mean over positions:      (B, d_output)
"""

from torch import nn

from src.utils.errors import check_choice


class SequenceDecoder(nn.Module):
    def __init__(self, d_model, d_output, l_output=None, mode="last"):
        super().__init__()
        self.mode = check_choice("decoder.mode", mode, ["last", "pool"])
        self.l_output = l_output
        self.output = nn.Linear(d_model, d_output)

    def forward(self, x, l_output=None):  # x: (B, L, d_model); l_output: this input's, if not the default
        l_output = self.l_output if l_output is None else l_output
        if self.mode == "pool":
            x = x.mean(dim=1)  # (B, d_model)
        elif l_output == 0:
            x = x[:, -1]  # (B, d_model)
        elif l_output is not None:
            x = x[:, x.shape[1] - l_output :]  # (B, l_output, d_model)
        return self.output(x)


def build_decoder(config, d_model, d_output, l_output=None):
    config = dict(config)
    check_choice("decoder._name_", config.pop("_name_"), ["sequence"])
    return SequenceDecoder(d_model, d_output, l_output, **config)
