"""Memory that learns at test time: TTT-Linear and TTT-MLP (`model=ttt_linear`, `model=ttt_mlp`;
Sun et al. 2024) and Titans' neural memory (`model=titans`; Behrouz et al. 2024), on the ops
src/ops/ttt and src/ops/titans.

TTT (the official ttt-lm-pytorch TTTLinear / TTTMLP, as zoology's TTT mixer, with its defaults).
Per head (n_heads, d = d_model / n_heads), i = t mod K the token's place in its mini-batch of K:

    q, k, v = rope_i(W_q x), rope_i(W_k x), W_v x               (rope on the place i, pairs interleaved)
    lr_t    = base_lr sigmoid(w_lr . x_t + b_lr) / d            (the learnable inner learning rate)
    eta_t   = max(1 / (i + 1) + token_idx_i, 0)                 (token_idx learnable, from 0)
    z       = ttt(q, k, v, eta, lr; W0, LN_{w,b})               (src/ops/ttt: mini-batch GD on
              l(W; k, v) = 1/2 || LN(Z(k; W)) - (v - k) ||^2, Z = x W1 + b1 or gelu(x W1 + b1) W2 + b2)
    o       = q + LN_{w,b}(z)                                   (the inner model's output f(q))
    y       = W_o [LayerNorm(o) (* gelu(W_g x) if use_gate)]

W0 (the inner model's start, W1 ~ N(0, 0.02), biases 0; TTT-MLP's hidden width mlp_expand d) and
the inner LN's w = 1, b = 0 are learned in the outer loop, as the official code's. State per
sequence: the inner weights at the current mini-batch's start and the gradient sums of its tokens
so far (both the inner model's size), and the place i (an integer): the weights change only at
mini-batch ends, so step carries the partial mini-batch and equals forward exactly.

TTT-MLP's `w1_std` is the start of its first weight. From the official 0.02 the features
h(x) = gelu(x W1) are ~0.01 |x| each, so after a mini-batch the readout

    z(q) = h(q) W2 + b2 - eta sum_s lr_s [(h(q) . h(k_s)) + 1] g_s

is the output bias's sum of gradients (the + 1), the same for every query: recall starts with no
signal (tests/test_ttt.py measures it). At width 64 with 4 heads of 16, MQAR stays at chance for
3,072 steps; w1_std = 1 / sqrt(d) = 0.25 (|h(x)|^2 ~ |x|^2, TTT-Linear's scale) learns it in 512.
With 2 heads of 32 the official start learns it too, and faster than 1 / sqrt(d) (docs/results.md):
the default stays the official one.

Titans (no official code; fla's titans op, fla/ops/titans/naive.py, in a TTT layer):

    q, k, v = silu(conv(W x)) each (use_short_conv; else silu(W x)),  q, k l2-normalised per head
    theta_t = base_lr sigmoid(w_theta . x_t + b_theta) / d,  alpha_t = sigmoid(...),  eta_t = sigmoid(...)
    z       = titans(q, k, v, theta, alpha, eta; M0, LN_{w,b})   (src/ops/titans: momentum S, forgetting
              alpha, gradients of each chunk of K tokens at its start memory)
    o       = q + LN_{w,b}(z),  y = W_o [LayerNorm(o) (* gelu(W_g x) if use_gate)]

Departures. TTT: no pre_conv and no share_qk (the official code's defaults, off). Titans: the
paper gives no formula for its data-dependent theta, alpha, eta; here each is a sigmoid of a
linear map of x, theta scaled as TTT's lr (base_lr / d), the forget gate's bias starting at -4
(alpha ~ 0.02) and the momentum's at 0 (eta = 0.5). The start memory M0 is learned (~ N(0, 0.02),
as TTT's W1; fla's test draws it at random, and LN(k M0) needs M0 != 0). The output is q + LN(z),
the inner model's f(q), where fla's op returns z + LN(z). The output gate is TTT's.
"""

import functools

import torch
import torch.nn.functional as F
from torch import nn

from src.models.sequence.layers.matrix_memory import Convs, OneTokenStep, heads, split
from src.models.sequence.positions import rotary
from src.ops.titans import DISPATCH as TITANS, titans
from src.ops.ttt import DISPATCH as TTT, MLP_DISPATCH as TTT_MLP, ttt_linear, ttt_mlp
from src.ops.ttt.reference import layer_norm
from src.utils.errors import ConfigError


class _TestTimeMemory(OneTokenStep):
    """The projections, inner layer norm and output path that TTT and Titans share."""

    def _build(self, d_model, n_heads, mini_batch_size, base_lr, use_gate, eps, n_gates):
        if mini_batch_size < 1:
            raise ConfigError(f"model.layer.mini_batch_size={mini_batch_size} is not a positive integer")
        self.n_heads, self.d = n_heads, split(d_model, n_heads, "d_model")
        self.K, self.base_lr, self.eps = mini_batch_size, base_lr, eps
        self.q_proj, self.k_proj, self.v_proj, self.o_proj = (nn.Linear(d_model, d_model, bias=False) for _ in range(4))
        self.gate_weight = nn.Parameter(torch.randn(n_gates * n_heads, d_model) * 0.02)  # lr (and Titans' gates)
        self.gate_bias = nn.Parameter(torch.zeros(n_gates * n_heads))
        self.ln_weight = nn.Parameter(torch.ones(n_heads, self.d))  # the inner model's layer norm
        self.ln_bias = nn.Parameter(torch.zeros(n_heads, self.d))
        self.post_norm = nn.LayerNorm(d_model, eps=1e-6)
        self.g_proj = nn.Linear(d_model, d_model, bias=False) if use_gate else None

    def _gates(self, x):  # (B, L, d_model) -> (B, L, n_gates, H) logits
        return (F.linear(x, self.gate_weight) + self.gate_bias).unflatten(-1, (-1, self.n_heads))

    def _output(self, x, q, z):  # q, z (B, L, H, d) -> y (B, L, d_model)
        o = self.post_norm((q + layer_norm(z, self.ln_weight, self.ln_bias, self.eps)).flatten(-2))
        if self.g_proj is not None:
            o = o * F.gelu(self.g_proj(x), approximate="tanh")
        return self.o_proj(o)

    def _start(self, params, batch_size):
        """The inner weights of every sequence at the start, their gradient sums (zero), place 0."""
        W = tuple(p.expand(batch_size, *p.shape) for p in params)
        return W, tuple(torch.zeros_like(w) for w in W), torch.zeros(batch_size, dtype=torch.long, device=W[0].device)


class TTTLinear(_TestTimeMemory):
    """TTT-Linear; see the module docstring.

    math: W_t = W0 - eta_t sum_{s <= t in its mini-batch} lr_s grad l(W0; k_s, v_s), o_t = q_t + LN(q_t W1_t + b1_t)
    original: Sun et al. 2024; ttt-lm-pytorch's TTTLinear (zoology's TTT mixer)
    """

    def __init__(self, d_model, n_heads=4, mini_batch_size=16, base_lr=1.0, rope_theta=10000.0, use_gate=False,
                 eps=1e-6, backend="auto"):
        super().__init__()
        self._build_ttt(d_model, n_heads, mini_batch_size, base_lr, rope_theta, use_gate, eps, hidden=None,
                        backend=backend)

    def _build_ttt(self, d_model, n_heads, mini_batch_size, base_lr, rope_theta, use_gate, eps, hidden, w1_std=0.02,
                   backend="auto"):
        self._build(d_model, n_heads, mini_batch_size, base_lr, use_gate, eps, n_gates=1)
        if self.d % 2:
            raise ConfigError(f"head width d_model / model.layer.n_heads = {self.d} is odd: rope needs it even")
        self.rope_theta = rope_theta
        self.token_idx = nn.Parameter(torch.zeros(mini_batch_size))  # learnable offset of 1 / (i + 1)
        H, d = n_heads, self.d
        shapes = [(H, d, d), (H, d)] if hidden is None else [(H, d, hidden), (H, hidden), (H, hidden, d), (H, d)]
        stds = [w1_std if i == 0 else 0.02 for i in range(len(shapes))]  # W1's, then W2's: N(0, std^2); biases 0
        self.W0 = nn.ParameterList(nn.Parameter(torch.randn(*s) * std if len(s) == 3 else torch.zeros(*s))
                                   for s, std in zip(shapes, stds))
        self.op = functools.partial(ttt_linear, backend=TTT.check(backend)) if hidden is None else \
            functools.partial(ttt_mlp, backend=TTT_MLP.check(backend))

    def _rope(self, x, place):  # x (B, L, H, d), place (L,)
        return rotary(x.transpose(1, 2), place, self.rope_theta).transpose(1, 2)

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        B, L, _ = x.shape
        W, G, place = self._start(self.W0, B) if state is None else state
        offset = int(place[0])
        i = (offset + torch.arange(L, device=x.device)) % self.K  # each token's place in its mini-batch
        q, k = (self._rope(heads(p(x), self.d), i) for p in (self.q_proj, self.k_proj))
        v = heads(self.v_proj(x), self.d)
        lr = self.base_lr * torch.sigmoid(self._gates(x)[:, :, 0]) / self.d  # (B, L, H)
        eta = (1 / (i + 1) + self.token_idx[i]).clamp_min(0).to(x.dtype)  # (L,)
        z, (W, G), offset = self.op(q, k, v, eta[None, :, None].expand_as(lr), lr, self.ln_weight, self.ln_bias,
                                    (W, G), offset, self.K, self.eps)
        return self._output(x, q, z), (W, G, torch.full_like(place, offset))

    def default_state(self, batch_size, device=None):
        W, G, place = self._start(self.W0, batch_size)
        return tuple(w.contiguous() for w in W), G, place


class TTTMLP(TTTLinear):
    """TTT-MLP; see the module docstring.

    math: W_t = W0 - eta_t sum_{s <= t in its mini-batch} lr_s grad l(W0; k_s, v_s), o_t = q_t + LN(MLP(q_t; W_t))
    original: Sun et al. 2024; ttt-lm-pytorch's TTTMLP (zoology's TTT mixer)
    """

    def __init__(self, d_model, n_heads=4, mini_batch_size=16, base_lr=1.0, rope_theta=10000.0, use_gate=False,
                 mlp_expand=4, w1_std=0.02, eps=1e-6, backend="auto"):
        _TestTimeMemory.__init__(self)
        if mlp_expand < 1:
            raise ConfigError(f"model.layer.mlp_expand={mlp_expand} is not a positive integer")
        if not w1_std > 0:
            raise ConfigError(f"model.layer.w1_std={w1_std} is not positive")
        self._build_ttt(d_model, n_heads, mini_batch_size, base_lr, rope_theta, use_gate, eps,
                        mlp_expand * d_model // n_heads, w1_std, backend)


class Titans(_TestTimeMemory):
    """Titans' neural memory; see the module docstring.

    math: S_t = eta_t S_{t-1} - theta_t grad l(M0; k_t, v_t), M_t = (1 - alpha_t) M_{t-1} + S_t, o_t = q_t + LN(q_t M_t)
    original: Behrouz et al. 2024; fla's titans op (fla/ops/titans/naive.py)
    """

    def __init__(self, d_model, n_heads=4, mini_batch_size=16, base_lr=1.0, use_gate=True, use_short_conv=True,
                 conv_size=4, eps=1e-6, backend="auto"):
        super().__init__()
        self._build(d_model, n_heads, mini_batch_size, base_lr, use_gate, eps, n_gates=3)
        self.convs = Convs([d_model] * 3, use_short_conv, conv_size, False, ["silu"] * 3, backend)
        self.backend = TITANS.backend_of(backend)  # one key for the convs and the memory's op
        self.M0 = nn.Parameter(torch.randn(n_heads, self.d, self.d) * 0.02)
        with torch.no_grad():
            self.gate_bias[n_heads : 2 * n_heads] = -4.0  # forget gate alpha ~ 0.02

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        B, L, _ = x.shape
        conv_state, (M, S, M0, place) = (None, self._memory(B)) if state is None else state
        qkv = [p(x) for p in (self.q_proj, self.k_proj, self.v_proj)]
        if self.convs.convs is None:
            qkv, conv_state = [F.silu(y) for y in qkv], ()
        else:
            qkv, conv_state = self.convs(qkv, conv_state)
        q, k, v = (heads(y, self.d) for y in qkv)
        q, k = F.normalize(q, dim=-1), F.normalize(k, dim=-1)
        lr, forget, momentum = self._gates(x).unbind(2)  # (B, L, H) each
        theta = self.base_lr * torch.sigmoid(lr) / self.d
        z, (M, S, M0), offset = titans(q, k, v, theta, F.logsigmoid(-forget), F.logsigmoid(momentum), self.ln_weight,
                                       self.ln_bias, (M, S, M0), int(place[0]), self.K, self.eps, self.backend)
        return self._output(x, q, z), (conv_state, (M, S, M0, torch.full_like(place, offset)))

    def _memory(self, batch_size):
        M = self.M0.expand(batch_size, *self.M0.shape)
        return M, torch.zeros_like(M), M, torch.zeros(batch_size, dtype=torch.long, device=M.device)

    def default_state(self, batch_size, device=None):
        M, S, M0, place = self._memory(batch_size)
        return self.convs.default_state(batch_size, device), (M.contiguous(), S, M0.contiguous(), place)
