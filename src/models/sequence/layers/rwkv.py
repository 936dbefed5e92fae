"""RWKV-6 (`model=rwkv6`, Finch) and RWKV-7 (`model=rwkv7`, Goose): token shift, time mixing on a
matrix state, channel mixing; fla's layers and feed-forwards with their defaults and inits.

Token shift: x'_t = x_{t-1} (x_{-1} from the state, zeros at the start), delta_t = x'_t - x_t, and
a mix x + delta * mu interpolates between the token and its predecessor.
rwkv6 time mixing: data-dependent mixes mu_t = mu + tanh(lerp(x, delta) W_1) W_2 for r, w, k, v, g;
    r, k, v, g = W (x + delta mu_t),  w_t = -exp(LoRA(x + delta mu_t)) (a log decay per key),
    S_t = diag(exp(w_t)) S_{t-1} + k_t v_t^T,  o_t = (S_{t-1} + diag(u) k_t v_t^T)^T r_t   (the gla op, u the bonus)
    y = W_o (GroupNorm_heads(o) * swish(g)).
    channel mixing: sigmoid(W_r lerp_r) * W_v relu(W_k lerp_k)^2, width 3.5 d_model (rounded up to 32).
rwkv7 time mixing: static mixes; w_t = -e^-1/2 sigmoid(LoRA(x_w)) (decay in (e^-e^-1/2, 1)),
    a_t = sigmoid(LoRA(x_a)) the in-context learning rate, kk = l2norm(k * k_k) per head,
    k <- k (1 + (a - 1) k_a),
    S_t = (diag(exp(w_t)) - kk_t (kk_t * a_t)^T) S_{t-1} + k_t v_t^T,  o_t = S_t^T r_t  (the dplr op),
    y = W_o ((GroupNorm_heads(o) + ((r * k * r_k) . 1) v) * sigmoid-LoRA gate).
    channel mixing: W_v relu(W_k (x + delta x_k))^2, width 4 d_model (rounded up to 32).
The layer is one RWKV block without its first norm (the backbone's): a = TimeMix(x),
y = a + ChannelMix(LN(x + a)) (channel_mixing; else y = a), so that x + y is the block's output.
RWKV-7's value residual across layers (v_first) is a model-level link: each layer here is its own
first layer (no v_lora), and its init is fla's for layer 0 of 1.
State: the two shifted tokens and S (n_heads, d_k, d_v).
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import OneTokenStep, heads, split, width
from src.ops.dplr_delta_rule import DISPATCH as DPLR_DISPATCH
from src.ops.dplr_delta_rule import dplr_delta_rule
from src.ops.gla import DISPATCH as GLA_DISPATCH
from src.ops.gla import gla
from src.utils.errors import ConfigError


def shift(x, last):  # x (B, L, D), last (B, D) or None -> delta = x_{t-1} - x_t, the new last token
    prev = torch.cat((torch.zeros_like(x[:, :1]) if last is None else last[:, None], x[:, :-1]), dim=1)
    return prev - x, x[:, -1]


def lora(d_in, d_out, rank, activation, bias=True):
    """Linear(d_in, rank) -> activation -> Linear(rank, d_out): the first zero, the second
    orthogonal with gain 0.1 (fla's LoRA init)."""
    first, second = nn.Linear(d_in, rank, bias=False), nn.Linear(rank, d_out, bias=bias)
    nn.init.zeros_(first.weight)
    nn.init.orthogonal_(second.weight, gain=0.1 * (math.sqrt(rank / d_out) if rank > d_out else 1))
    if bias:
        nn.init.zeros_(second.bias)
    return nn.Sequential(first, activation, second)


def _round32(n):
    return 32 * ((n + 31) // 32)


class _RWKVBlock(OneTokenStep):
    """a = time_mix(x); y = a + channel_mix(LN(x + a)); subclasses define both mixes."""

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        t_last, S, c_last = (None, None, None) if state is None else state
        a, t_last, S = self.time_mix(x, t_last, S)
        if self.channel_mixing:
            h = self.ffn_norm(x + a)
            delta, c_last = shift(h, c_last)
            a = a + self.channel_mix(h, delta)
        else:
            c_last = x.new_zeros(x.shape[0], 0)
        return a, (t_last, S, c_last)

    def default_state(self, batch_size, device=None):
        w = self.o_proj.weight
        zeros = lambda *s: torch.zeros(batch_size, *s, dtype=w.dtype, device=device or w.device)  # noqa: E731
        d = w.shape[0]
        return zeros(d), zeros(self.n_heads, self.d_k, self.d_v), zeros(d if self.channel_mixing else 0)


class RWKV6(_RWKVBlock):
    def __init__(self, d_model, n_heads=4, expand_k=0.5, expand_v=1.0, proj_low_rank_dim=32, gate_low_rank_dim=64,
                 elementwise_affine=True, norm_eps=1e-5, channel_mixing=True, hidden_ratio=3.5, backend="auto"):
        super().__init__()
        self.backend = GLA_DISPATCH.check(backend)
        self.n_heads, self.channel_mixing = n_heads, channel_mixing
        key, value = width(d_model, expand_k, "expand_k"), width(d_model, expand_v, "expand_v")
        self.d_k, self.d_v = split(key, n_heads, "key width"), split(value, n_heads, "value width")
        self.x_mu = nn.Parameter(torch.zeros(d_model))
        self.x_proj = nn.Sequential(nn.Linear(d_model, 5 * proj_low_rank_dim, bias=False), nn.Tanh(),
                                    nn.Linear(5 * proj_low_rank_dim, d_model, bias=False))
        self.x_bias = nn.Parameter(torch.zeros(5, d_model))
        self.r_proj, self.k_proj = nn.Linear(d_model, key, bias=False), nn.Linear(d_model, key, bias=False)
        self.v_proj, self.g_proj = nn.Linear(d_model, value, bias=False), nn.Linear(d_model, value, bias=False)
        self.w_proj = nn.Sequential(nn.Linear(d_model, gate_low_rank_dim, bias=False), nn.Tanh(),
                                    nn.Linear(gate_low_rank_dim, key))
        self.bonus = nn.Parameter(torch.zeros(n_heads, self.d_k))
        self.g_norm = nn.GroupNorm(n_heads, value, eps=norm_eps, affine=elementwise_affine)
        self.o_proj = nn.Linear(value, d_model, bias=False)
        for m in self.modules():  # fla's RWKV6Attention init
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight, gain=2**-2.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        if channel_mixing:
            hidden = _round32(int(d_model * hidden_ratio))
            self.ffn_norm = nn.LayerNorm(d_model)
            self.ffn_mu_k, self.ffn_mu_r = nn.Parameter(torch.zeros(d_model)), nn.Parameter(torch.zeros(d_model))
            self.ffn_key, self.ffn_value = nn.Linear(d_model, hidden, bias=False), nn.Linear(hidden, d_model, bias=False)
            self.ffn_receptance = nn.Linear(d_model, d_model, bias=False)

    def time_mix(self, x, last, S):
        delta, last = shift(x, last)
        B, L, D = x.shape
        lerp = self.x_proj[1](self.x_proj[0](x + delta * self.x_mu)).view(B, L, 5, -1)  # (B, L, 5, rank)
        mu = torch.einsum("blnr,dnr->blnd", lerp, self.x_proj[2].weight.view(D, 5, -1)) + self.x_bias
        xr, xw, xk, xv, xg = (x + delta * m for m in mu.unbind(-2))
        r, k = heads(self.r_proj(xr), self.d_k), heads(self.k_proj(xk), self.d_k)
        w = -torch.exp(heads(self.w_proj(xw), self.d_k))
        o, S = gla(r, k, heads(self.v_proj(xv), self.d_v), w, self.bonus, scale=1.0, initial_state=S,
                   output_final_state=True, backend=self.backend)
        o = self.g_norm(o.flatten(-2).flatten(0, 1)).view(B, L, -1) * F.silu(self.g_proj(xg))
        return self.o_proj(o), last, S

    def channel_mix(self, h, delta):
        k = F.relu(self.ffn_key(h + delta * self.ffn_mu_k)) ** 2
        return torch.sigmoid(self.ffn_receptance(h + delta * self.ffn_mu_r)) * self.ffn_value(k)


class RWKV7(_RWKVBlock):
    def __init__(self, d_model, head_dim=64, decay_low_rank_dim: int | None = None,
                 gate_low_rank_dim: int | None = None, a_low_rank_dim: int | None = None,
                 elementwise_affine=True, norm_eps=1e-5, channel_mixing=True, hidden_ratio=4.0, backend="auto"):
        super().__init__()
        self.backend = DPLR_DISPATCH.check(backend)
        if d_model % head_dim:
            raise ConfigError(f"model.layer.head_dim={head_dim} does not divide model.d_model={d_model}")
        self.n_heads, self.channel_mixing = d_model // head_dim, channel_mixing
        self.d_k = self.d_v = head_dim
        factor, root = head_dim / 64, d_model**0.5
        rank = lambda r, f: r or max(32, int(round(f * root / 32) * 32))  # noqa: E731  fla's defaults
        n = torch.arange(d_model, dtype=torch.float32)
        ddd = n / d_model  # fla's init for layer 0: mixes 1 - ddd^p
        for name, p in (("x_r", 0.2), ("x_w", 0.9), ("x_k", 0.7), ("x_v", 0.7), ("x_a", 0.9), ("x_g", 0.2)):
            self.register_parameter(name, nn.Parameter(1 - ddd**p))
        linear = n / (d_model - 1) - 0.5
        zigzag = ((n % head_dim) - (head_dim - 1) / 2) / max((head_dim - 1) / 2, 1)
        zigzag = zigzag * zigzag.abs()
        self.k_k = nn.Parameter(0.71 - linear * 0.1)
        self.k_a = nn.Parameter(torch.full((d_model,), 1.02))
        self.r_k = nn.Parameter(torch.full((self.n_heads, head_dim), -0.04))
        self.r_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        for proj, gain in ((self.r_proj, 1.0), (self.k_proj, 0.1), (self.v_proj, 1.0)):
            nn.init.orthogonal_(proj.weight, gain=gain)
        nn.init.zeros_(self.o_proj.weight)
        self.w_lora = lora(d_model, d_model, rank(decay_low_rank_dim, 2.5 * factor), nn.Tanh())
        self.a_lora = lora(d_model, d_model, rank(a_low_rank_dim, 2.5 * factor), nn.Identity())
        self.g_lora = lora(d_model, d_model, rank(gate_low_rank_dim, 5.0), nn.Sigmoid(), bias=False)
        with torch.no_grad():
            self.w_lora[2].bias.copy_(-6 + 6 * (n / max(d_model - 1, 1)) + 0.5 + zigzag * 2.5)
            self.a_lora[2].bias.copy_(-0.19 + zigzag * 0.3 + linear * 0.4)
        self.g_norm = nn.GroupNorm(self.n_heads, d_model, eps=head_dim * norm_eps, affine=elementwise_affine)
        if channel_mixing:
            self.ffn_norm = nn.LayerNorm(d_model)
            self.ffn_x_k = nn.Parameter(1 - ddd)  # fla's init for layer 0: 1 - ddd^(1^4)
            self.ffn_key = nn.Linear(d_model, _round32(int(d_model * hidden_ratio)), bias=False)
            self.ffn_value = nn.Linear(self.ffn_key.out_features, d_model, bias=False)
            nn.init.orthogonal_(self.ffn_key.weight)
            nn.init.zeros_(self.ffn_value.weight)

    def time_mix(self, x, last, S):
        delta, last = shift(x, last)
        B, L, _ = x.shape
        xr, xw, xk, xv, xa, xg = (x + delta * m for m in (self.x_r, self.x_w, self.x_k, self.x_v, self.x_a, self.x_g))
        r, k, v = self.r_proj(xr), self.k_proj(xk), self.v_proj(xv)
        w = -math.exp(-0.5) * torch.sigmoid(self.w_lora(xw))
        a = torch.sigmoid(self.a_lora(xa))
        kk = F.normalize(heads(k * self.k_k, self.d_k), dim=-1)
        k = k * (1 + (a - 1) * self.k_a)
        r, w, k, a, v = (heads(t, self.d_k) for t in (r, w, k, a, v))
        o, S = dplr_delta_rule(r, k, v, -kk, kk * a, w, scale=1.0, initial_state=S, output_final_state=True,
                               backend=self.backend)
        o = self.g_norm(o.flatten(-2).flatten(0, 1)).view(B, L, -1)
        o = o + ((r * k * self.r_k).sum(-1, keepdim=True) * v).flatten(-2)
        return self.o_proj(o * self.g_lora(xg)), last, S

    def channel_mix(self, h, delta):
        return self.ffn_value(F.relu(self.ffn_key(h + delta * self.ffn_x_k)) ** 2)
