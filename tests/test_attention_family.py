"""Softmax (full, sliding-window, d_qk), linear and normalised attention, transformer block:
against naive loops, step == forward, causality, gradients, options."""

import math

import pytest
import torch

from conftest import assert_every_parameter_gets_a_gradient, run_steps

from src.models.sequence.layers.linear_attention import LinearAttention
from src.models.sequence.layers.mha import MultiHeadAttention
from src.models.sequence.layers.transformer import TransformerBlock
from src.utils.errors import ConfigError

D = 8
LAYERS = {
    "mha": (MultiHeadAttention, dict(n_heads=2)),
    "mha-dqk": (MultiHeadAttention, dict(n_heads=2, d_qk=4)),
    "mha-rope": (MultiHeadAttention, dict(n_heads=2, d_qk=12, rope=True)),
    "mha-window": (MultiHeadAttention, dict(n_heads=2, window=3)),
    "mha-window-rope": (MultiHeadAttention, dict(n_heads=2, window=4, rope=True)),
    "mha-bidirectional": (MultiHeadAttention, dict(n_heads=2, causal=False)),
    "mha-bidirectional-window": (MultiHeadAttention, dict(n_heads=2, causal=False, window=2)),
    "linear-elu": (LinearAttention, dict(n_heads=2)),
    "linear-identity": (LinearAttention, dict(n_heads=2, feature_map="identity", normalizer="none")),
    "linear-bidirectional": (LinearAttention, dict(n_heads=2, d_qk=6, causal=False)),
    "norm-attn": (LinearAttention, dict(n_heads=2, feature_map="identity", normalizer="learned")),
    "norm-attn-dqk": (LinearAttention, dict(n_heads=4, d_qk=4, feature_map="identity", normalizer="learned")),
    "transformer": (TransformerBlock, dict(n_heads=2)),
    "transformer-window-rope": (TransformerBlock, dict(n_heads=2, window=3, rope=True, expand=2)),
    "transformer-bidirectional": (TransformerBlock, dict(n_heads=2, causal=False)),
}
CAUSAL = [n for n in LAYERS if "bidirectional" not in n]


def make(name):
    torch.manual_seed(0)
    cls, kwargs = LAYERS[name]
    return cls(D, **kwargs)


@pytest.mark.parametrize("name", list(LAYERS))
@pytest.mark.parametrize("L", [1, 7])
def test_shapes(name, L):
    y, state = make(name)(torch.randn(3, L, D))
    assert y.shape == (3, L, D) and torch.isfinite(y).all() and state is None


@pytest.mark.parametrize("name", list(LAYERS))
def test_every_parameter_gets_a_gradient(name):
    layer = make(name).double()
    assert_every_parameter_gets_a_gradient(layer, torch.randn(2, 7, D, dtype=torch.float64))


@pytest.mark.parametrize("name", CAUSAL)
def test_step_equals_forward(name):
    layer = make(name).double()
    x = torch.randn(2, 10, D, dtype=torch.float64)
    y, _ = layer(x)
    steps, state = run_steps(layer, x, layer.default_state(2))
    torch.testing.assert_close(torch.stack(steps, 1), y, rtol=1e-10, atol=1e-10)  # float64: rounding only


@pytest.mark.parametrize("name", CAUSAL)
def test_causal_layers_do_not_read_the_future(name):
    layer = make(name).double()
    x = torch.randn(2, 12, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 7:] = torch.randn(2, 5, D, dtype=torch.float64)
    y, y2 = layer(x)[0], layer(x2)[0]
    torch.testing.assert_close(y[:, :7], y2[:, :7], rtol=1e-12, atol=1e-12)
    assert not torch.allclose(y[:, 7:], y2[:, 7:])


def by_loops(layer, x, weights):
    """y = (sum_j w_ij v_j) W_o + b_o per head, by loops; weights(q_i (B, d), k (B, L, d), x_i, i, h) -> w_i (B, L)."""
    B, L, _ = x.shape
    q, k, v = (f(x).reshape(B, L, layer.n_heads, -1) for f in (layer.q, layer.k, layer.v))
    o = torch.zeros(B, L, layer.n_heads, v.shape[-1], dtype=x.dtype)
    for i in range(L):
        for h in range(layer.n_heads):
            w = weights(q[:, i, h], k[:, :, h], i, h)
            for j in range(L):
                o[:, i, h] += w[:, j, None] * v[:, j, h]
    return layer.out(o.reshape(B, L, -1))


@pytest.mark.parametrize("causal, window", [(True, None), (True, 3), (False, None), (False, 2)])
def test_softmax_attention_against_loops(causal, window):
    torch.manual_seed(0)
    layer = MultiHeadAttention(D, n_heads=2, d_qk=6, causal=causal, window=window).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)

    def weights(q_i, k, i, h):
        j = torch.arange(k.shape[1])
        read = (j <= i if causal else torch.ones_like(j, dtype=torch.bool)) & ((i - j).abs() < (window or 99))
        e = torch.exp((k * q_i[:, None]).sum(-1) / math.sqrt(3)) * read  # heads of d_qk / n_heads = 3
        return e / e.sum(-1, keepdim=True)

    torch.testing.assert_close(layer(x)[0], by_loops(layer, x, weights), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("normalizer", ["sum", "learned", "none"])
def test_linear_attention_against_loops(normalizer):
    torch.manual_seed(0)
    fmap = "elu+1" if normalizer == "sum" else "identity"
    layer = LinearAttention(D, n_heads=2, d_qk=6, feature_map=fmap, normalizer=normalizer).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    phi = (lambda a: torch.nn.functional.elu(a) + 1) if fmap == "elu+1" else (lambda a: a)
    eta = torch.nn.functional.softplus(layer.eta(x)) + 1e-4 if normalizer == "learned" else None  # (B, L, heads)

    def weights(q_i, k, i, h):
        raw = (phi(k) * phi(q_i / math.sqrt(3))[:, None]).sum(-1) * (torch.arange(k.shape[1]) <= i)
        if normalizer == "sum":
            return raw / raw.sum(-1, keepdim=True)
        return raw / eta[:, i, h, None] if normalizer == "learned" else raw

    torch.testing.assert_close(layer(x)[0], by_loops(layer, x, weights), rtol=1e-12, atol=1e-12)


def test_sliding_window_reads_only_the_window():
    layer = make("mha-window").double()  # window 3: position i reads i-2 .. i
    x = torch.randn(1, 10, D, dtype=torch.float64)
    x2 = x.clone()
    x2[:, 4] += 1.0
    y, y2 = layer(x)[0], layer(x2)[0]
    changed = [(y[0, t] - y2[0, t]).abs().max() > 0 for t in range(10)]
    assert changed == [False] * 4 + [True] * 3 + [False] * 3


def test_rope_scores_depend_on_relative_position_only():
    from src.models.sequence.positions import rotary

    q, k = torch.randn(1, 1, 1, 6, dtype=torch.float64), torch.randn(1, 1, 1, 6, dtype=torch.float64)
    score = lambda i, j: (rotary(q, torch.tensor([i])) * rotary(k, torch.tensor([j]))).sum()  # noqa: E731
    torch.testing.assert_close(score(5, 2), score(105, 102), rtol=1e-10, atol=1e-10)
    assert not torch.allclose(score(5, 2), score(5, 3))


@pytest.mark.parametrize(
    "name, L, size",
    [("mha", 10, 10 * 16), ("mha-dqk", 10, 10 * 12), ("mha-window", 10, 3 * 16), ("mha-window", 2, 2 * 16),
     ("linear-elu", 10, 2 * 4 * 5), ("norm-attn", 10, 2 * 4 * 4), ("transformer", 7, 7 * 16),
     ("mha-bidirectional-window", 10, 10 * 16)],
)
def test_state_size(name, L, size):
    assert make(name).state_size(L) == size


@pytest.mark.parametrize(
    "cls, kwargs, message",
    [
        (MultiHeadAttention, dict(n_heads=3), r"must split into n_heads=3 heads"),
        (MultiHeadAttention, dict(n_heads=2, d_qk=6, rope=True), r"d_qk / n_heads = 3 must be even"),
        (MultiHeadAttention, dict(window=0), r"model.layer.window=0 must be >= 1"),
        (LinearAttention, dict(feature_map="relu"), r"model.layer.feature_map='relu' is not valid; choose one of: 'elu\+1', 'identity'"),
        (LinearAttention, dict(feature_map="identity", normalizer="sum"), r"normalizer=sum needs a positive feature map"),
        (LinearAttention, dict(normalizer="softmax"), r"model.layer.normalizer='softmax' is not valid"),
    ],
)
def test_bad_options_raise_one_clear_error(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(D, **kwargs)


@pytest.mark.parametrize("name", ["mha-bidirectional", "linear-bidirectional", "transformer-bidirectional"])
def test_non_causal_layers_refuse_step(name):
    with pytest.raises(ConfigError, match="no step"):
        make(name).default_state(1)
