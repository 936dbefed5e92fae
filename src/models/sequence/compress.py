"""MAD's autoencoder as a backbone option (`model.compress=true`, mad/model/auto_encoder.py of
athms/mad-lab): the blocks' outputs are compressed to the last position's vector, which is
decoded back at every position: the whole input must pass through one vector.

    z   = h_{L-1}                                  (B, D): the last position of the blocks' output
    u_t = z + s(t)                                 s(t) = [sin(t w) | cos(t w)], w_m = 10000^(-m / (D/2 - 1))
    o_t = norm(gelu(W2 norm(gelu(W1 norm(u_t) + b1)) + b2))   then the decoder's head, per position

s is MAD's (fairseq's) sinusoid layout, sines then cosines; norm is model.norm (MAD: RMSNorm).
One norm more than MAD: the backbone's final norm (when it has one) runs before the pooling.
With causal layers z reads the whole input; the decoder is one MLP per position.
"""

import math

import torch
from torch import nn


def sinusoids(L, d):
    """(L, d): MAD's posemb_sincos_1d, [sin(t w) | cos(t w)] (a zero column when d is odd)."""
    half = d // 2
    w = torch.exp(torch.arange(half, dtype=torch.float32) * -(math.log(10000) / max(half - 1, 1)))
    angle = torch.arange(L, dtype=torch.float32)[:, None] * w
    return torch.cat([angle.sin(), angle.cos(), torch.zeros(L, d % 2)], dim=1)


class Compress(nn.Module):
    def __init__(self, d_model, norm):
        """norm: a callable d_model -> the norm module (the backbone's model.norm)."""
        super().__init__()
        self.norm0, self.fc1, self.norm1 = norm(d_model), nn.Linear(d_model, d_model), norm(d_model)
        self.fc2, self.norm2 = nn.Linear(d_model, d_model), norm(d_model)
        self.activation = nn.GELU()

    def forward(self, x):  # (B, L, D) -> (B, L, D)
        u = x[:, -1:] + sinusoids(x.shape[1], x.shape[2]).to(x)  # (B, L, D)
        return self.norm2(self.activation(self.fc2(self.norm1(self.activation(self.fc1(self.norm0(u)))))))
