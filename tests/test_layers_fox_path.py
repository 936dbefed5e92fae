"""Value tests of the fox and path_attn layers (the contract tests cover shapes, gradients and
step == forward): what each reduces to at the limits of its gates, and why neither can count
an input of one repeated symbol."""

import pytest
import torch
import torch.nn.functional as F

from conftest import tiny_layer


def x_in(L=30, seed=0):
    return torch.randn(2, L, 16, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


def plain_attention(layer, x):
    """Causal softmax attention of the layer's own q, k, v projections, then W_o."""
    projections = (layer.q_proj, layer.k_proj, layer.v_proj)
    q, k, v = (p(x).unflatten(-1, (layer.n_heads, -1)).transpose(1, 2) for p in projections)
    return layer.o_proj(F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(-2))


def test_fox_that_forgets_everything_reads_the_current_token_only():
    layer = tiny_layer("fox", dtype=torch.float64)
    with torch.no_grad():
        layer.f_proj.bias.fill_(-1e4)  # f_t = log sigmoid(-1e4): nothing survives a step
    x = x_in()
    torch.testing.assert_close(layer(x)[0], layer.o_proj(layer.v_proj(x)), rtol=1e-10, atol=1e-10)


def test_fox_that_forgets_nothing_is_softmax_attention_without_positions():
    layer = tiny_layer("fox", dtype=torch.float64)
    with torch.no_grad():
        layer.f_proj.weight.zero_()
        layer.f_proj.bias.fill_(1e4)  # f_t = 0
    x = x_in()
    torch.testing.assert_close(layer(x)[0], plain_attention(layer, x), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("case", ["fox-pro", "path_attn-fox-full-w"])
def test_every_position_gets_the_same_output_on_a_repeated_symbol(case):
    """Whatever the gates or reflections, each query's weights sum to 1 over identical values:
    neither layer (nor softmax attention with RoPE) tells the positions of `a a a ...` apart
    without a distinct first token, so none can count them (count_mod needs dataset.bos=true)."""
    layer = tiny_layer(case, dtype=torch.float64)
    y = layer(x_in(L=1).expand(2, 40, 16))[0]
    torch.testing.assert_close(y, y[:, :1].expand_as(y), rtol=1e-10, atol=1e-10)


def test_path_attn_with_beta_zero_is_softmax_attention_without_positions():
    layer = tiny_layer("path_attn", dtype=torch.float64)
    with torch.no_grad():
        layer.bt_proj.bias.fill_(-1e4)  # beta = 2 sigmoid(-1e4) = 0: every H_t = I
    x = x_in()
    torch.testing.assert_close(layer(x)[0], plain_attention(layer, x), rtol=1e-10, atol=1e-10)
