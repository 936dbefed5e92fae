"""RWKV-4 (Peng et al. 2023; zoology's time mixer), `model=rwkv4`.

Time mixing, with the token shift x'_t = x_{t-1} (x'_0 = 0) and a learned mix per channel:
    k = W_k (mu_k x + (1 - mu_k) x'),  v = W_v (mu_v x + (1 - mu_v) x'),  r = W_r (mu_r x + (1 - mu_r) x')
    y = W_o (sigmoid(r) * wkv(w, u, k, v)),   w = -exp(time_decay), u = time_first
with wkv the decayed weighted average of past values plus a bonus u for the current token
(src/ops/wkv, running-max form). channel_mix=true adds RWKV's channel mixing after it, so that
with the backbone's residual a block is RWKV's block (x + TM(x) + CM(LN(x + TM(x)))):
    h = LN(x + TM(x)),  CM(h) = sigmoid(W_r' (mu_r' h + (1 - mu_r') h')) * W_v' relu(W_k' (mu_k' h + (1 - mu_k') h'))^2
(W_k': D -> 4D). Initialisation as zoology's, by the layer's depth r = layer_idx / (n_layers - 1)
(0 for one layer) and s = 1 - layer_idx / n_layers: time_decay_c = -5 + 8 (c / (D-1))^(0.7 + 1.3 r),
time_first_c = ln 0.3 + 0.5 ((c + 1) mod 3 - 1), mu_k = x^s, mu_v = x^s + 0.3 r, mu_r = x^(s/2)
with x_c = c / D; the linears bias-free with torch's default init.

Recurrent state: the previous input (and the previous h with channel_mix) and wkv's (a, b, p):
4 D numbers (5 D with channel_mix), what state_size(L) says.
"""

import math

import torch
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.ops.wkv import wkv
from src.ops.wkv.reference import default_state as wkv_state
from src.ops.wkv.reference import wkv_step


def shift(x, last=None):  # x (B, L, D), last (B, D) or None -> x' (B, L, D): x'_t = x_{t-1}
    first = torch.zeros_like(x[:, :1]) if last is None else last[:, None]
    return torch.cat((first, x[:, :-1]), dim=1)


def mix(x, x_prev, mu):
    return x * mu + x_prev * (1 - mu)


class ChannelMix(nn.Module):
    def __init__(self, d_model, s):
        super().__init__()
        x = torch.arange(d_model) / d_model
        self.mu_k, self.mu_r = nn.Parameter(x ** s), nn.Parameter(x ** s)
        self.key = nn.Linear(d_model, 4 * d_model, bias=False)
        self.receptance = nn.Linear(d_model, d_model, bias=False)
        self.value = nn.Linear(4 * d_model, d_model, bias=False)

    def forward(self, h, h_prev):  # (..., D) twice
        k = torch.square(torch.relu(self.key(mix(h, h_prev, self.mu_k))))
        return torch.sigmoid(self.receptance(mix(h, h_prev, self.mu_r))) * self.value(k)


class RWKV4(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, channel_mix=False, layer_idx=0, n_layers=1, backend="auto"):
        super().__init__()
        r = layer_idx / (n_layers - 1) if n_layers > 1 else 0.0
        s = 1.0 - layer_idx / n_layers
        c = torch.arange(d_model, dtype=torch.float64)
        self.time_decay = nn.Parameter((-5 + 8 * (c / max(1, d_model - 1)) ** (0.7 + 1.3 * r)).float())
        self.time_first = nn.Parameter(torch.full((d_model,), math.log(0.3)) + 0.5 * ((c + 1) % 3 - 1).float())
        x = torch.arange(d_model) / d_model
        self.mu_k, self.mu_v = nn.Parameter(x ** s), nn.Parameter(x ** s + 0.3 * r)
        self.mu_r = nn.Parameter(x ** (0.5 * s))
        self.key, self.value, self.receptance, self.output = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.channel_mix = ChannelMix(d_model, s) if channel_mix else None
        self.norm = nn.LayerNorm(d_model) if channel_mix else None
        self.d_model, self.backend = d_model, backend

    def _projections(self, x, x_prev):
        return (self.key(mix(x, x_prev, self.mu_k)), self.value(mix(x, x_prev, self.mu_v)),
                torch.sigmoid(self.receptance(mix(x, x_prev, self.mu_r))))

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        k, v, r = self._projections(x, shift(x))
        y = self.output(r * wkv(-torch.exp(self.time_decay), self.time_first, k, v, backend=self.backend))
        if self.channel_mix is not None:
            h = self.norm(x + y)
            y = y + self.channel_mix(h, shift(h))
        return y, None

    def default_state(self, batch_size, device=None):
        device = device or self.time_decay.device
        zeros = self.time_decay.new_zeros(batch_size, self.d_model, device=device)
        state = {"x": zeros, "wkv": wkv_state((batch_size, self.d_model), zeros.dtype, device)}
        return state if self.channel_mix is None else {**state, "h": zeros.clone()}

    def step(self, x_t, state):  # x_t: (B, D)
        k, v, r = self._projections(x_t, state["x"])
        out, wkv_s = wkv_step(-torch.exp(self.time_decay), self.time_first, k, v, state["wkv"])
        y = self.output(r * out)
        if self.channel_mix is None:
            return y, {"x": x_t, "wkv": wkv_s}
        h = self.norm(x_t + y)
        return y + self.channel_mix(h, state["h"]), {"x": x_t, "h": h, "wkv": wkv_s}

    def state_size(self, L):
        return self.d_model * (5 if self.channel_mix is not None else 4)
