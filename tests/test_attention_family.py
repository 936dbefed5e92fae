"""Softmax (full, sliding-window, d_qk), linear and normalised attention, transformer block: against
naive loops and the DSF code's formulas, state sizes, options (the contract checks of every layer
are in test_layer_contract.py)."""

import math

import pytest
import torch

from conftest import FLASH, attention_kernels, tiny_layer
from src.models.sequence.layers.linear_attention import FEATURE_MAPS, LinearAttention
from src.models.sequence.layers.mha import MultiHeadAttention
from src.utils.errors import ConfigError

D = 8


def make(case):
    return tiny_layer(case, d_model=D)


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


@pytest.mark.parametrize("d_qk", [8, 6, 12])
def test_softmax_attention_runs_the_flash_kernel(d_qk):
    """Causal, no window: torch's CPU flash kernel with is_causal (no mask), forward and backward,
    at any d_qk (the narrower of q, k and v padded)."""
    layer = MultiHeadAttention(D, n_heads=2, d_qk=d_qk)
    x = torch.randn(2, 9, D)
    assert attention_kernels(lambda: layer(x)[0].sum().backward()) == FLASH


def dsf_loop(layer, x, normalizer, phi):
    """The DSF code's attentions by loops over t, s and heads h, from the layer's weights:
    linear (sum): y_t = sum_{s<=t} (phi(q_t).phi(k_s)) v_s / sum_{s<=t} phi(q_t).phi(k_s);
    normalised (exp): y_t = sum_{s<=t} (q_t.k_s) v_s / exp(x_t w_h + b_h); then y W_o + b_o."""
    B, L, _ = x.shape
    q, k, v = (f(x).reshape(B, L, layer.n_heads, -1) for f in (layer.q, layer.k, layer.v))
    o = torch.zeros(B, L, layer.n_heads, v.shape[-1], dtype=x.dtype)
    for b in range(B):
        for t in range(L):
            for h in range(layer.n_heads):
                weights = [(phi(q[b, t, h]) @ phi(k[b, s, h])).item() for s in range(t + 1)]
                if normalizer == "sum":
                    n = sum(weights)
                elif normalizer == "none":
                    n = 1.0
                else:
                    eta = layer.eta(x[b, t])[h].item()
                    n = math.exp(eta) if normalizer == "exp" else math.log1p(math.exp(eta)) + 1e-4
                o[b, t, h] = sum(w * v[b, s, h] for s, w in enumerate(weights)) / n
    return layer.out(o.reshape(B, L, -1))


@pytest.mark.parametrize("normalizer, fmap", [("sum", "elu+1"), ("exp", "identity"), ("softplus", "identity"),
                                              ("none", "identity"), ("exp", "elu+1")])
def test_linear_attention_against_the_dsf_formulas(normalizer, fmap):
    torch.manual_seed(0)
    layer = LinearAttention(D, n_heads=2, d_qk=6, feature_map=fmap, normalizer=normalizer).double()
    x = torch.randn(2, 9, D, dtype=torch.float64)
    phi = (lambda a: torch.nn.functional.elu(a) + 1) if fmap == "elu+1" else (lambda a: a)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], dsf_loop(layer, x, normalizer, phi), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name, normalizer, fmap", [("linear_attn", "sum", "elu+1"), ("norm_attn", "exp", "identity")])
def test_model_configs_are_the_dsf_attentions(name, normalizer, fmap):
    """`model=linear_attn` and `model=norm_attn` compute the DSF code's definitions by default."""
    from omegaconf import OmegaConf

    from src.models.sequence.backbone import build_layer

    config = OmegaConf.load(f"configs/model/layer/{name}.yaml")
    config.dropout, config.causal = 0.0, True  # in a model they follow model.dropout and model.bidirectional
    torch.manual_seed(0)
    layer = build_layer(config, D).double()
    assert (layer.normalizer, layer.phi) == (normalizer, FEATURE_MAPS[fmap])
    x = torch.randn(1, 6, D, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x)[0], dsf_loop(layer, x, normalizer, FEATURE_MAPS[fmap]), rtol=1e-12,
                                   atol=1e-12)


def test_learned_normalizer_inits():
    """exp: nn.Linear's default init, w, b ~ U(-1/sqrt(D), 1/sqrt(D)) (DSF); softplus: w the same, b = softplus^-1(1)."""
    torch.manual_seed(0)
    dsf = LinearAttention(64, n_heads=8, feature_map="identity", normalizer="exp")
    ours = LinearAttention(64, n_heads=8, feature_map="identity", normalizer="softplus")
    for w in (dsf.eta.weight, dsf.eta.bias, ours.eta.weight):
        assert w.abs().max() <= 1 / 8 and w.abs().max() > 0.1 and w.std() > 0.05  # U(-1/8, 1/8): std 0.072
    torch.testing.assert_close(torch.nn.functional.softplus(ours.eta.bias), torch.ones(8))


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
     ("linear_attn", 10, 2 * 4 * 5), ("norm_attn", 10, 2 * 4 * 4), ("transformer", 7, 7 * 16),
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
        (LinearAttention, dict(normalizer="softmax"), r"model.layer.normalizer='softmax' is not valid; choose one of: 'sum', 'exp', 'softplus', 'none'"),
    ],
)
def test_bad_options_raise_one_clear_error(cls, kwargs, message):
    with pytest.raises(ConfigError, match=message):
        cls(D, **kwargs)
