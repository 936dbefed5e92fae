"""DeltaNet (`model=deltanet`), Gated DeltaNet (`model=gated_deltanet`), Gated DeltaProduct
(`model=gated_deltaproduct`) and Kimi Delta Attention (`model=kda`): linear attention whose matrix
memory is written by the delta rule (src/ops/delta_rule), with fla's layer defaults.

Per head, with q_t, k_t l2-normalised after a short causal conv and SiLU, beta_t = sigmoid(W_b x_t)
(times 2 with allow_neg_eigval: beta in (0, 2), so I - beta k k^T may have the eigenvalue 1 - beta < 0,
which lets the layer track parity), and the log decay g_t (D_t = diag(exp(g_t))):
    S_t = (I - beta_t k_t k_t^T) D_t S_{t-1} + beta_t k_t v_t^T,     o_t = S_t^T q_t / sqrt(d_k)
    y = W_o [RMSNorm(o_t) (* act(W_g x_t) with use_gate)]                   (per head, then concatenated)
deltanet:        g = 0; n_heads = 4, d_k = expand_k d_model / n_heads, d_v = expand_v d_model / n_heads.
gated_deltanet:  g_t = -exp(A_log) softplus(W_a x_t + dt_bias) per head (Mamba-2's gate; A ~ U(0, 16),
                 dt_bias as Mamba's dt init), head_dim = d_k (null: d_model / n_heads; fla's 6 heads of
                 256 at d_model 2048: n_heads=6 head_dim=256), d_v = expand_v head_dim, use_gate true.
gated_deltaproduct (Siems et al. 2025): gated_deltanet with num_householder = n delta steps per token,
                 each with its own k_{t,j}, v_{t,j}, beta_{t,j} (W_k, W_v, W_b n times wider):
                 S_t = prod_j (I - beta_{t,j} k_{t,j} k_{t,j}^T) D_t S_{t-1} + ..., a product of n
                 generalised Householder reflections per token (allow_neg_eigval true, n = 2, as fla);
                 use_forget_gate false drops g.
kda (Kimi Linear, 2025): g_t per head and key, -exp(A_log_h) softplus(W_f2 W_f1 x_t + dt_bias)
                 (W_f through a d_v bottleneck, dt_bias per key, A ~ U(1, 16)), or with lower_bound b,
                 b sigmoid(exp(A_log_h) (W_f x_t + dt_bias)) in [b, 0) (fla's safe gate, A_log = 0);
                 the output gate sigmoid(W_g2 W_g1 x_t + bias) through the same bottleneck; d_v =
                 expand_v head_dim (expand_v 1).
State: the conv windows and S (n_heads, d_k, d_v). A_log and dt_bias carry weight_decay 0.
"""

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.mamba import inverse_softplus_dt
from src.models.sequence.layers.matrix_memory import Convs, GatedRMSNorm, OneTokenStep, heads, split, width
from src.models.sequence.layers.optim import register
from src.ops.delta_rule import DISPATCH, delta_product
from src.utils.errors import ConfigError, check_choice

QK_ACTIVATIONS = {"silu": F.silu, "relu": F.relu, "elu": lambda x: F.elu(x) + 1, "identity": lambda x: x}


class _DeltaRuleLayer(OneTokenStep):
    def _build(self, d_model, d_k, d_v, n_heads, use_beta, use_gate, use_short_conv, conv_size, conv_bias,
               allow_neg_eigval, qk_activation, norm_eps, gate_activation, backend, num_householder=1):
        check_choice("model.layer.qk_activation", qk_activation, list(QK_ACTIVATIONS))
        if num_householder < 1:
            raise ConfigError(f"model.layer.num_householder={num_householder} is not a positive integer")
        self.backend = DISPATCH.check(backend)
        self.n_heads, self.d_k, self.d_v, self.n = n_heads, d_k, d_v, num_householder
        self.use_beta, self.use_gate, self.allow_neg_eigval = use_beta, use_gate, allow_neg_eigval
        self.qk_activation = qk_activation
        n = num_householder
        self.q_proj = nn.Linear(d_model, n_heads * d_k, bias=False)
        self.k_proj = nn.Linear(d_model, n * n_heads * d_k, bias=False)
        self.v_proj = nn.Linear(d_model, n * n_heads * d_v, bias=False)
        self.b_proj = nn.Linear(d_model, n * n_heads, bias=False) if use_beta else None
        qk_conv_act = "silu" if qk_activation == "silu" else None
        self.convs = Convs([n_heads * d_k, n * n_heads * d_k, n * n_heads * d_v], use_short_conv, conv_size,
                           conv_bias, [qk_conv_act, qk_conv_act, "silu"], backend)
        self.g_proj = nn.Linear(d_model, n_heads * d_v, bias=False) if use_gate else None
        self.o_norm = GatedRMSNorm(d_v, norm_eps, activation=gate_activation)
        self.o_proj = nn.Linear(n_heads * d_v, d_model, bias=False)

    def _log_decay(self, x):
        return None

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        conv_state, S = (None, None) if state is None else state
        (q, k, v), conv_state = self.convs([self.q_proj(x), self.k_proj(x), self.v_proj(x)], conv_state)
        if self.convs.convs is None:  # the convs apply SiLU to v (and to q, k for qk_activation=silu)
            v = F.silu(v)
        if self.convs.convs is None or self.qk_activation != "silu":
            q, k = QK_ACTIVATIONS[self.qk_activation](q), QK_ACTIVATIONS[self.qk_activation](k)
        steps = lambda t: t.unflatten(2, (self.n, -1)).flatten(1, 2)  # noqa: E731  (B, L, n H, ...) -> (B, L n, H, ...)
        q, k = F.normalize(heads(q, self.d_k), dim=-1), F.normalize(steps(heads(k, self.d_k)), dim=-1)
        beta = torch.sigmoid(self.b_proj(x)) if self.use_beta else x.new_ones(*x.shape[:2], self.n * self.n_heads)
        if self.allow_neg_eigval:
            beta = 2 * beta
        o, S = delta_product(q, k, steps(heads(v, self.d_v)), steps(beta), self._log_decay(x), initial_state=S,
                             output_final_state=True, num_householder=self.n, backend=self.backend)
        o = self.o_norm(o, heads(self.g_proj(x), self.d_v) if self.use_gate else None)
        return self.o_proj(o.flatten(-2)), (conv_state, S)

    def default_state(self, batch_size, device=None):
        w = self.o_proj.weight
        S = torch.zeros(batch_size, self.n_heads, self.d_k, self.d_v, dtype=w.dtype, device=device or w.device)
        return self.convs.default_state(batch_size, device), S


class DeltaNet(_DeltaRuleLayer):
    def __init__(self, d_model, n_heads=4, expand_k=1.0, expand_v=1.0, use_beta=True, use_gate=False,
                 use_short_conv=True, conv_size=4, conv_bias=False, allow_neg_eigval=False, qk_activation="silu",
                 norm_eps=1e-5, backend="auto"):
        super().__init__()
        d_k = split(width(d_model, expand_k, "expand_k"), n_heads, "key width")
        d_v = split(width(d_model, expand_v, "expand_v"), n_heads, "value width")
        self._build(d_model, d_k, d_v, n_heads, use_beta, use_gate, use_short_conv, conv_size, conv_bias,
                    allow_neg_eigval, qk_activation, norm_eps, "swish", backend)


class GatedDeltaNet(_DeltaRuleLayer):
    def __init__(self, d_model, n_heads=4, head_dim: int | None = None, expand_v=2.0, use_gate=True,
                 use_short_conv=True,
                 conv_size=4, conv_bias=False, allow_neg_eigval=False, norm_eps=1e-5, output_gate_activation="swish",
                 backend="auto", num_householder=1, use_forget_gate=True):
        super().__init__()
        check_choice("model.layer.output_gate_activation", output_gate_activation, ["swish", "silu", "sigmoid"])
        head_dim = head_dim or split(d_model, n_heads, "model.d_model")
        self._build(d_model, head_dim, width(head_dim, expand_v, "expand_v"), n_heads, True, use_gate,
                    use_short_conv, conv_size, conv_bias, allow_neg_eigval, "silu", norm_eps, output_gate_activation,
                    backend, num_householder)
        self.a_proj = nn.Linear(d_model, n_heads, bias=False) if use_forget_gate else None
        if use_forget_gate:
            register(self, "A_log", torch.log(torch.empty(n_heads).uniform_(0, 16)), wd=0.0)
            register(self, "dt_bias", inverse_softplus_dt(n_heads, 0.001, 0.1, 1e-4), wd=0.0)

    def _log_decay(self, x):  # (B, L, H): -exp(A_log) softplus(W_a x + dt_bias) <= 0
        if self.a_proj is None:
            return None
        return -torch.exp(self.A_log) * F.softplus(self.a_proj(x) + self.dt_bias)


class GatedDeltaProduct(GatedDeltaNet):
    """Gated DeltaNet with num_householder delta steps per token.

    original: Siems et al. 2025, "DeltaProduct"; fla's GatedDeltaProduct"""

    def __init__(self, d_model, n_heads=4, head_dim: int | None = None, expand_v=2.0, num_householder=2,
                 allow_neg_eigval=True, use_forget_gate=True, use_gate=True, use_short_conv=True, conv_size=4,
                 conv_bias=False, norm_eps=1e-5, backend="auto"):
        super().__init__(d_model, n_heads, head_dim, expand_v, use_gate, use_short_conv, conv_size, conv_bias,
                         allow_neg_eigval, norm_eps, "swish", backend, num_householder, use_forget_gate)


class KDA(_DeltaRuleLayer):
    """The gated delta rule with a decay per head and key.

    original: Kimi Team 2025, "Kimi Linear"; fla's KimiDeltaAttention"""

    def __init__(self, d_model, n_heads=4, head_dim: int | None = None, expand_v=1.0, allow_neg_eigval=False,
                 lower_bound: float | None = None, use_short_conv=True, conv_size=4, conv_bias=False, norm_eps=1e-5,
                 backend="auto"):
        super().__init__()
        if lower_bound is not None and not lower_bound < 0:
            raise ConfigError(f"model.layer.lower_bound={lower_bound} is not a negative log decay (or null)")
        head_dim = head_dim or split(d_model, n_heads, "model.d_model")
        d_v = width(head_dim, expand_v, "expand_v")
        self._build(d_model, head_dim, d_v, n_heads, True, False, use_short_conv, conv_size, conv_bias,
                    allow_neg_eigval, "silu", norm_eps, "sigmoid", backend)
        self.lower_bound = lower_bound
        self.f_proj = nn.Sequential(nn.Linear(d_model, d_v, bias=False), nn.Linear(d_v, n_heads * head_dim, bias=False))
        # fla's output gate goes through the d_v bottleneck, with a bias: it replaces _build's W_g
        self.g_proj = nn.Sequential(nn.Linear(d_model, d_v, bias=False), nn.Linear(d_v, n_heads * d_v, bias=True))
        self.use_gate = True
        A = torch.zeros(n_heads) if lower_bound is not None else torch.log(torch.empty(n_heads).uniform_(1, 16))
        register(self, "A_log", A, wd=0.0)
        register(self, "dt_bias", inverse_softplus_dt(n_heads * head_dim, 0.001, 0.1, 1e-4), wd=0.0)

    def _log_decay(self, x):  # (B, L, H, d_k), <= 0
        f = heads(self.f_proj(x) + self.dt_bias, self.d_k)
        A = torch.exp(self.A_log)[:, None]
        if self.lower_bound is None:
            return -A * F.softplus(f)
        return self.lower_bound * torch.sigmoid(A * f)
