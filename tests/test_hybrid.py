"""Layer patterns (`model.layers`): block i is built from layers[i % len(layers)]; a hybrid steps
like its forward; the shipped hybrid and one written on the command line build and train."""

import pytest
import torch

from conftest import TWO_STEPS, compose_config, run_steps, train_in_process
from src.models.sequence.backbone import SequenceModel
from src.models.sequence.layers.base_conv import BaseConv
from src.models.sequence.layers.h3 import H3
from src.models.sequence.layers.mha import MultiHeadAttention
from src.models.sequence.layers.rwkv4 import RWKV4
from src.utils.errors import ConfigError

D, L, V = 16, 9, 11
PATTERN = [{"_name_": "base_conv"}, {"_name_": "h3", "d_state": 4, "head_dim": 2}, {"_name_": "rwkv4"},
           {"_name_": "mha", "n_heads": 2}]


def hybrid(n_layers=5, layers=PATTERN):
    torch.manual_seed(0)
    return SequenceModel(D, n_layers, {"_name_": "dlr"}, layers=layers, prenorm=True, encoder="embedding",
                         decoder={"_name_": "sequence", "mode": "last"}, n_tokens=V, d_output=V, max_length=L).double().eval()


def test_blocks_cycle_through_the_pattern():
    model = hybrid()
    kinds = [type(block.layer) for block in model.blocks]
    assert kinds == [BaseConv, H3, RWKV4, MultiHeadAttention, BaseConv]
    rwkv = [block.layer for block in model.blocks if isinstance(block.layer, RWKV4)]
    assert [layer.mu_v[0].item() for layer in rwkv] == pytest.approx([0.3 * 2 / 4])  # block 2 of 5: r = 2 / 4


def test_a_hybrid_steps_like_its_forward():
    model = hybrid()
    x = torch.randint(0, V, (3, L))
    with torch.no_grad():
        torch.testing.assert_close(run_steps(model, x)[0], model(x)[0], rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("layers, match", [([], "must be null or a non-empty list"),
                                           ({"_name_": "mha"}, "must be null or a non-empty list"),
                                           ([{"n_heads": 2}], "each entry needs a _name_"),
                                           ([{"_name_": "mhaa"}], "model.layers\\[\\]._name_='mhaa' is not registered")])
def test_bad_patterns_fail_in_one_line(layers, match):
    with pytest.raises(ConfigError, match=match):
        hybrid(layers=layers)


COMMAND_LINE = ["model=mamba_attn_hybrid", "model.layers=[{_name_: base_conv, kernel_size: -1}, {_name_: mha, window: 4}]"]


def test_the_shipped_hybrid_and_a_command_line_one_compose():
    config = compose_config(["wandb=null", "experiment=dss-sequence1d", "model=mamba_attn_hybrid"])
    assert [entry._name_ for entry in config.model.layers] == ["mamba", "mha"]
    assert config.model.layers[1].causal is True and config.model.layers[1].dropout == config.model.dropout
    config = compose_config(["wandb=null", "experiment=dss-sequence1d", "dataset.L=32", *COMMAND_LINE])
    model = SequenceModel(8, 2, config.model.layer, layers=config.model.layers, max_length=32)
    assert model.blocks[0].layer.kernel_size == -1 and model.blocks[0].layer.l_max == 32
    assert model.blocks[1].layer.window == 4


def test_a_command_line_hybrid_trains_two_steps(tmp_path):
    metrics = train_in_process([*TWO_STEPS, *COMMAND_LINE, "dataset.task=shift"], tmp_path / "run")
    assert metrics["val/loss"] == metrics["val/loss"]
