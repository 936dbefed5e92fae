"""LRU: the Linear Recurrent Unit (Orvieto et al. 2023), a complex diagonal linear recurrence.

    lambda = exp(-exp(nu) + i exp(theta))                  (N,) complex, |lambda| = exp(-exp(nu)) < 1
    h_t = lambda * h_{t-1} + gamma * (B x_t)               B (N, d_model) complex, h (N,) complex
    y_t = Re(C h_t) + D * x_t                              C (d_model, N) complex, D (d_model,)
    out = OutputLinear(activation(y), postact)             (GELU then GLU, as in the paper's block)
gamma = exp(gamma_log), init sqrt(1 - |lambda|^2), keeps E|h|^2 at the input's scale. Ring init:
|lambda| uniform on the ring r_min <= |lambda| <= r_max (uniform in area), arg lambda uniform in
[0, max_phase]. nu, theta, gamma_log get weight decay 0 (and learning rate `lr` if set).
State per sequence: h, N complex numbers = 2 N floats.
"""

import math

import torch
from torch import nn

from src.models.sequence.layers.activation import Activation, OutputLinear
from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.optim import register
from src.ops.linear_scan import DISPATCH, linear_scan
from src.utils.errors import ConfigError


class LRU(SequenceLayer):
    recurrent = True

    def why_no_half_weights(self):
        return "its recurrence is complex, and complex numbers have no half-precision form in torch"

    def __init__(self, d_model, d_state=64, r_min=0.0, r_max=1.0, max_phase=2 * math.pi, lr: float | None = None,
                 activation="gelu", postact="glu", dropout=0.0, backend="auto"):
        super().__init__()
        if not 0 <= r_min < r_max <= 1:
            raise ConfigError(f"model.layer.r_min={r_min}, r_max={r_max}: need 0 <= r_min < r_max <= 1")
        self.backend = DISPATCH.backend_of(backend)
        self.d_state = d_state
        u1, u2 = torch.rand(d_state), torch.rand(d_state)
        nu_log = torch.log(-0.5 * torch.log(u1 * (r_max**2 - r_min**2) + r_min**2))
        theta_log = torch.log(max_phase * u2)
        register(self, "nu_log", nu_log, lr=lr, wd=0.0)
        register(self, "theta_log", theta_log, lr=lr, wd=0.0)
        modulus = torch.exp(-torch.exp(nu_log))
        register(self, "gamma_log", torch.log(torch.sqrt(1 - modulus**2)), lr=lr, wd=0.0)
        self.B = nn.Parameter(torch.randn(d_state, d_model, 2) / math.sqrt(2 * d_model))
        self.C = nn.Parameter(torch.randn(d_model, d_state, 2) / math.sqrt(d_state))
        self.D = nn.Parameter(torch.randn(d_model))
        self.activation = Activation(activation)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.output_linear = OutputLinear(d_model, d_model, postact)

    def _params(self):
        """lambda (N,), gamma B (N, d_model), C (d_model, N), all complex."""
        Lambda = torch.exp(torch.complex(-torch.exp(self.nu_log), torch.exp(self.theta_log)))
        B = torch.view_as_complex(self.B) * torch.exp(self.gamma_log)[:, None]
        return Lambda, B, torch.view_as_complex(self.C)

    def _output(self, h, x, C):  # h (..., N) complex, x (..., d_model)
        y = (h @ C.T).real + self.D * x
        return self.output_linear(self.dropout(self.activation(y)))

    def forward(self, x, state=None, positions=None):  # x (B, L, d_model)
        Lambda, B, C = self._params()
        bu = x.to(B.dtype) @ B.T  # (B, L, N)
        h = linear_scan(Lambda[:, None], bu.transpose(1, 2), state, backend=self.backend).transpose(1, 2)
        return self._output(h, x, C), h[:, -1]

    def step(self, x_t, state):  # x_t (B, d_model), state (B, N) complex
        Lambda, B, C = self._params()
        h = Lambda * state + x_t.to(B.dtype) @ B.T
        return self._output(h, x_t, C), h

    def default_state(self, batch_size, device=None):
        dtype = torch.complex128 if self.B.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.d_state, dtype=dtype, device=device or self.B.device)

    def state_size(self, L=None):
        """Floats per sequence: h, d_state complex numbers."""
        return 2 * self.d_state
