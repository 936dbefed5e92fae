"""Transformer block (`model=transformer`): softmax attention then an MLP, pre-norm.

    a = MHA(LN_1(x))                                    (mha.MultiHeadAttention: d_qk, causal, window, rope)
    y = a + MLP(LN_2(x + a)),   MLP = Linear(d, expand d) -> activation -> Linear(expand d, d)
The backbone adds the outer residual (x + y), so with `model.norm=none` (configs/model/transformer.yaml)
a stack of blocks is the usual pre-norm transformer: x <- x + a;  x <- x + MLP(LN_2(x)).
Recurrent view (causal): the attention's KV cache; the MLP is per position. state_size as mha.
"""

from torch import nn

from src.models.sequence.layers.activation import Activation
from src.models.sequence.layers.base import SequenceLayer
from src.models.sequence.layers.mha import MultiHeadAttention


class TransformerBlock(SequenceLayer):
    recurrent = True

    def __init__(self, d_model, n_heads=4, d_qk: int | None = None, causal=True, window: int | None = None,
                 rope=False, expand=4,
                 activation="gelu", dropout=0.0):
        super().__init__()
        self.causal = causal
        self.norm1, self.norm2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.attention = MultiHeadAttention(d_model, n_heads, d_qk, causal, window, rope, dropout)
        self.mlp = nn.Sequential(nn.Linear(d_model, expand * d_model), Activation(activation),
                                 nn.Linear(expand * d_model, d_model))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def _mlp(self, x, a):
        return a + self.dropout(self.mlp(self.norm2(x + a)))

    def forward(self, x, state=None, positions=None):  # x: (B, L, D)
        self.refuse_state(state)
        a, _ = self.attention(self.norm1(x), positions=positions)
        return self._mlp(x, a), None

    def default_state(self, batch_size, device=None):
        self.check_step()
        return self.attention.default_state(batch_size, device)

    def step(self, x_t, state):  # x_t: (B, D)
        a, state = self.attention.step(self.norm1(x_t), state)
        return self._mlp(x_t, a), state

    def state_size(self, L):
        return self.attention.state_size(L)
