"""H3 (Fu et al. 2023, "Hungry Hungry Hippos"; zoology's defaults), `model=h3`.

    q, k, v = W_q u + b_q, W_k u + b_k, W_v u + b_v                   (B, L, D), D = H head_dim
    k <- shift_ssm(k) + D_k k                                         per channel
    kv[b, i, j, h, t] = k[b, h head_dim + i, t] v[b, h head_dim + j, t]   outer product per head
    y[b, i, j, h] = diag_ssm_h(kv[b, i, j, h]) + D_h kv[b, i, j, h]    an S4D kernel on H heads
    o[b, j H + h, t] = sum_i q[b, h head_dim + i, t] y[b, i, j, h, t]
    out = W_o o + b_o

The shift SSM is a discrete state space with a shift matrix (N = d_state): its state is a
register of the last N inputs,
    x_t = shift(x_{t-1}) + B k_t  (x_t[0] = B[0] k_t, x_t[m] = x_{t-1}[m-1] + B[m] k_t),  y_t = C . x_t,
i.e. a causal convolution with taps K_s = sum_n B[n] C[n + s], s < N (B = e_0 at init, so K = C).
The diagonal SSM is S4D (s4.py's S4DKernel: init=lin, zoh, N = d_state, dt in [dt_min, dt_max]),
run as a long convolution through src/ops/fftconv, or stepped with its recurrence.
Optimizer groups: B, dt, A with lr = kernel_lr (null: the global lr) and no weight decay.

state_size(L) = D N (shift registers) + head_dim^2 H N (the diagonal states, N/2 complex).
"""

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.optim import register
from src.models.sequence.layers.s4 import S4DKernel
from src.ops.fftconv import fftconv
from src.utils.errors import ConfigError


class ShiftSSM(nn.Module):
    def __init__(self, H, N, lr=None):
        super().__init__()
        B = torch.zeros(H, N)
        B[:, 0] = 1.0
        register(self, "B", B, True, lr, 0.0)  # (H, N)
        self.C = nn.Parameter(torch.randn(H, N))  # (H, N)

    def kernel(self, L):  # -> (H, min(N, L)): K_s = sum_n B[n] C[n + s]
        H, N = self.C.shape
        K = F.conv1d(F.pad(self.C, (0, N - 1))[None], self.B[:, None], groups=H)[0]  # (H, N)
        return K[:, :L]

    def default_state(self, batch_size, device=None):
        return self.C.new_zeros(batch_size, *self.C.shape, device=device)  # (B, H, N)

    def step(self, u_t, state):  # u_t (B, H), state (B, H, N) -> y_t (B, H), state
        state = F.pad(state, (1, -1)) + self.B * u_t[..., None]
        return (self.C * state).sum(-1), state


class H3(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, d_state=64, head_dim=1, dt_min=0.001, dt_max=0.1, init="lin",
                 kernel_lr: float | None = None,
                 backend="auto"):
        super().__init__()
        if d_model % head_dim:
            raise ConfigError(f"model.layer.head_dim={head_dim} must divide d_model={d_model}")
        self.d_model, self.head_dim, self.H = d_model, head_dim, d_model // head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(d_model, d_model) for _ in range(3))
        self.shift = ShiftSSM(d_model, d_state, kernel_lr)
        self.shift_D = nn.Parameter(torch.randn(d_model))
        lr = {"dt": kernel_lr, "A": kernel_lr, "B": kernel_lr}
        self.ssm = S4DKernel(self.H, d_state, 1, init=init, dt_min=dt_min, dt_max=dt_max, b_clip=None, lr=lr,
                             backend=backend)
        self.D = nn.Parameter(torch.randn(self.H))
        self.output_linear = nn.Linear(d_model, d_model)

    def why_no_half_weights(self):
        return self.ssm.no_half_weights

    def _kv(self, k, v):  # k, v (B, D, ...) -> kv (B, hd, hd, H, ...)
        d = self.head_dim
        return rearrange(k, "b (h i) ... -> b i 1 h ...", i=d) * rearrange(v, "b (h j) ... -> b 1 j h ...", j=d)

    def _read(self, q, y):  # q (B, D, ...), y (B, hd, hd, H, ...) -> (B, D, ...): sum over i
        q = rearrange(q, "b (h i) ... -> b i 1 h ...", i=self.head_dim)
        return rearrange((q * y).sum(1), "b j h ... -> b (j h) ...")

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        q, k, v = (proj(x).transpose(1, 2) for proj in (self.q_proj, self.k_proj, self.v_proj))  # (B, D, L)
        L = x.shape[1]
        k = fftconv(k, self.shift.kernel(L)[None])[:, 0] + self.shift_D[:, None] * k
        kv = self._kv(k, v)  # (B, hd, hd, H, L)
        flat = kv.reshape(-1, self.H, L)
        y = fftconv(flat, self.ssm(L))[:, 0].reshape(kv.shape) + self.D[:, None] * kv
        return self.output_linear(self._read(q, y).transpose(1, 2)), None

    def default_state(self, batch_size, device=None):
        ssm = self.ssm.default_state(batch_size * self.head_dim ** 2, device)  # (B hd hd, H, N/2)
        return self.shift.default_state(batch_size, device), ssm.unflatten(0, (batch_size, -1))  # batch first

    def step(self, x_t, state):  # x_t: (B, D)
        shift_state, ssm_state = state
        q, k, v = self.q_proj(x_t), self.k_proj(x_t), self.v_proj(x_t)
        shifted, shift_state = self.shift.step(k, shift_state)
        kv = self._kv(shifted + self.shift_D * k, v)  # (B, hd, hd, H)
        y, ssm_state = self.ssm.step(kv.reshape(-1, self.H), ssm_state.flatten(0, 1))  # (B hd hd, 1, H)
        y = y.reshape(kv.shape) + self.D * kv
        ssm_state = ssm_state.unflatten(0, (x_t.shape[0], -1))  # (B, hd hd, H, N/2)
        return self.output_linear(self._read(q, y)), (shift_state, ssm_state)

    def state_size(self, L):
        return self.shift.C.numel() + self.head_dim ** 2 * self.ssm.state_size()
