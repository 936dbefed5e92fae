"""MesaNet (`model=mesanet`; von Oswald et al. 2025, "MesaNet: Sequence Modeling by Locally Optimal
Test-Time Training"): fla's `MesaNet` layer (fla/layers/mesa_net.py) with its defaults, on the
mesa_net op (src/ops/mesa_net).

Per head, with q_t, k_t l2-normalised after a short causal conv and SiLU, v_t = W_v x_t (no conv),
gamma_t = sigmoid(W_a x_t + b_a) (the decay, g_t = log gamma_t), beta_t = sigmoid(W_b x_t + b_b),
and lambda = softplus(lambda_params) + lambda_lower_bound (K,) per head (1 at init):
    H_t = gamma_t H_{t-1} + beta_t k_t k_t^T,        G_t = gamma_t G_{t-1} + beta_t k_t v_t^T
    o_t = G_t^T (H_t + diag(lambda))^-1 q_t
the output of the linear map from keys to values that minimises the decayed, beta-weighted squared
error plus lambda's ridge over the tokens so far (the "mesa" layer: an optimal test-time fit per
token). The solve is fla's cg_steps conjugate-gradient steps (null: exact).
    y = W_o [RMSNorm(o_t) (* swish(W_g x_t) with use_output_gate)]          (per head, then concatenated)
Heads: n_heads of head_dim = d_model / n_heads (null), for q, k and v (fla: 16 heads of 128 at
d_model 2048, sized for that width; here 4 heads, relative to d_model). lambda_params carries
weight_decay 0 (fla's _no_weight_decay).
State: the q and k conv windows, H (n_heads, head_dim, head_dim) and G (n_heads, head_dim, head_dim).

Departures from fla: one cg_steps for training and steps (fla's max_cg_step_training and
max_cg_step_decoding, both 30; its decoding CG starts from a Jacobi guess, ours from 0 as its
training kernel, so a step equals the forward); no use_short_conv (fla's layer takes it and
convolves anyway); on CPU the op's chunked torch path (float32 q and k; fla's kernel casts them to
float16); dropout is the backbone's.
"""

import math

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import Convs, GatedRMSNorm, OneTokenStep, heads, split
from src.models.sequence.layers.optim import register
from src.ops.mesa_net import DISPATCH, mesa_net
from src.utils.errors import ConfigError


class MesaNet(OneTokenStep):
    """fla's MesaNet (see the module docstring).

    original: von Oswald et al. 2025, "MesaNet"; fla's MesaNet
    math: H_t = g_t H_{t-1} + b_t k_t k_t^T, G_t = g_t G_{t-1} + b_t k_t v_t^T, o_t = G_t^T (H_t + diag(lambda))^-1 q_t
    """

    def __init__(self, d_model, n_heads=4, head_dim: int | None = None, use_output_gate=False, conv_size=4,
                 conv_bias=False, norm_eps=1e-5, lambda_lower_bound=0.25, cg_steps: int | None = 30, backend="auto"):
        super().__init__()
        if not lambda_lower_bound > 0:
            raise ConfigError(f"model.layer.lambda_lower_bound={lambda_lower_bound} must be positive "
                              "(H_t + diag(lambda) must stay invertible)")
        if cg_steps is not None and cg_steps < 1:
            raise ConfigError(f"model.layer.cg_steps={cg_steps} must be a positive number of steps, or null (exact)")
        self.n_heads, self.d_k = n_heads, head_dim or split(d_model, n_heads, "model.d_model")
        self.lambda_lower_bound, self.cg_steps = lambda_lower_bound, cg_steps
        self.use_output_gate, self.backend = use_output_gate, DISPATCH.check(backend)
        width = n_heads * self.d_k
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, width, bias=False) for _ in range(3))
        self.a_proj, self.b_proj = nn.Linear(d_model, n_heads), nn.Linear(d_model, n_heads)
        self.convs = Convs([width, width], True, conv_size, conv_bias, ["silu", "silu"], backend)
        init = math.log(math.expm1(1.0 - lambda_lower_bound))  # softplus^-1: lambda = 1 at init (fla)
        register(self, "lambda_params", torch.full((width,), init), wd=0.0)
        self.g_proj = nn.Linear(d_model, width, bias=False) if use_output_gate else None
        self.o_norm = GatedRMSNorm(self.d_k, norm_eps, activation="swish")
        self.o_proj = nn.Linear(width, d_model, bias=False)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, S = (None, None) if state is None else state
        (q, k), conv_state = self.convs([self.q_proj(x), self.k_proj(x)], conv_state)
        q, k = F.normalize(heads(q, self.d_k), dim=-1), F.normalize(heads(k, self.d_k), dim=-1)
        g = F.logsigmoid(self.a_proj(x))  # (B, L, H)
        beta = torch.sigmoid(self.b_proj(x))
        lamb = (F.softplus(self.lambda_params) + self.lambda_lower_bound).view(self.n_heads, self.d_k)
        o, S = mesa_net(q, k, heads(self.v_proj(x), self.d_k), g, beta, lamb, S, True, self.cg_steps, self.backend)
        o = self.o_norm(o, heads(self.g_proj(x), self.d_k) if self.use_output_gate else None)
        return self.o_proj(o.flatten(-2)), (conv_state, S)

    def default_state(self, batch_size, device=None):
        """(conv windows, (H (B, n_heads, head_dim, head_dim), G (B, n_heads, head_dim, head_dim))), zeros."""
        w = self.o_proj.weight
        kw = dict(dtype=w.dtype, device=device or w.device)
        H = torch.zeros(batch_size, self.n_heads, self.d_k, self.d_k, **kw)
        return self.convs.default_state(batch_size, device), (H, torch.zeros_like(H))
