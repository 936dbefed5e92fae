"""The residual backbone: postnorm / prenorm blocks around a registered layer."""

import pytest
import torch

from src.models.sequence.backbone import SequenceModel

LAYER = {"_name_": "dlr", "kernel_type": "dlr", "d_state": 8, "dropout": 0.0}


@pytest.mark.parametrize("prenorm", [False, True])
def test_blocks_follow_their_formula(prenorm):
    torch.manual_seed(0)
    model = SequenceModel(d_model=6, n_layers=2, layer=LAYER, prenorm=prenorm, dropout=0.0).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    h = x
    for block in model.blocks:
        if prenorm:
            h = h + block.layer(block.norm(h))[0]
        else:
            h = block.norm(h + block.layer(h)[0])
    expected = model.final_norm(h)
    y, states = model(x)
    torch.testing.assert_close(y, expected)
    assert len(states) == 2
    assert isinstance(model.final_norm, torch.nn.LayerNorm) == prenorm


def test_no_norm_and_dropout():
    model = SequenceModel(d_model=6, n_layers=1, layer=LAYER, norm="none", dropout=0.5)
    x = torch.randn(2, 5, 6)
    model.eval()
    torch.testing.assert_close(model(x)[0], x + model.blocks[0].layer(x)[0])
    model.train()
    assert not torch.allclose(model(x)[0], model(x)[0])


def test_unknown_norm():
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="model.norm='batch' is not valid; choose one of: 'layer', 'none'"):
        SequenceModel(d_model=6, n_layers=1, layer=LAYER, norm="batch")
