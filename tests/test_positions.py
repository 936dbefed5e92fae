"""Positional information: embeddings, rope wiring, training-time augmentations, the scaler channel."""

import math

import pytest
import torch

from conftest import TWO_STEPS, train_in_process
from src.models.sequence.backbone import SequenceModel
from src.models.sequence.positions import Positions, sample_positions, sinusoids
from src.utils.errors import ConfigError

D = 8
MHA = {"_name_": "mha", "n_heads": 2, "dropout": 0.0}


def model(**kwargs):
    torch.manual_seed(0)
    return SequenceModel(d_model=D, n_layers=2, layer=MHA, **kwargs)


@pytest.mark.parametrize("pos_emb", ["none", "learned", "sinusoidal", "rope", "scaler"])
def test_every_position_kind_runs_and_trains(pos_emb):
    m = model(pos_emb=pos_emb, pos_max_len=20).double()
    x = torch.randn(2, 13, m.positions.d_input, dtype=torch.float64)
    y, _ = m(x)
    assert y.shape == (2, 13, D)
    (y**2).sum().backward()
    for name, p in m.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_added_signals():
    x = torch.zeros(1, 5, D)
    p = torch.arange(5)[None]
    sin = Positions(D, "sinusoidal")(x, p)
    assert torch.allclose(sin[0, 3, 0], torch.tensor(math.sin(3.0))) and torch.allclose(sin[0, 3, 1], torch.tensor(math.cos(3.0)))
    w = 10000 ** (-2 / D)  # second frequency
    assert torch.allclose(sin[0, 3, 2], torch.tensor(math.sin(3 * w)))
    scaler = Positions(D, "scaler", pos_max_len=10)(torch.zeros(1, 5, D - 1), p)
    torch.testing.assert_close(scaler[0, :, -1], p[0] / 10)
    learned = Positions(D, "learned", pos_max_len=10, pos_init="sinusoidal", pos_frozen=True)
    assert "embedding" in dict(learned.named_buffers()) and not list(learned.parameters())
    torch.testing.assert_close(learned(x, p), sinusoids(p, D))
    assert isinstance(Positions(D, "learned", pos_max_len=10).embedding, torch.nn.Parameter)


def test_rope_reaches_the_attention_layers_and_is_relative():
    m = model(pos_emb="rope").double()
    assert all(block.layer.rope for block in m.blocks)
    # shifting every position by the same offset leaves a rope-only model unchanged
    x = torch.randn(2, 9, D, dtype=torch.float64)
    plain = m(x)[0]
    m.positions.pos_aug, m.positions.max_len = "shift", 40
    m.train()
    torch.testing.assert_close(m(x)[0], plain, rtol=1e-10, atol=1e-10)


def test_rope_on_a_layer_without_queries_is_refused():
    layer = {"_name_": "rnn", "model": "lstm", "dropout": 0.0}
    with pytest.raises(ConfigError, match=r"model.pos_emb=rope rotates queries and keys: model.layer._name_=rnn has none"):
        SequenceModel(d_model=D, n_layers=1, layer=layer, pos_emb="rope")


def test_augmentations():
    torch.manual_seed(0)
    shift = sample_positions(64, 10, "shift", 30)
    assert (shift.diff(dim=-1) == 1).all() and shift.min() >= 0 and shift.max() < 30 and len(set(shift[:, 0].tolist())) > 5
    rand = sample_positions(64, 10, "randomized", 30)
    assert (rand.diff(dim=-1) > 0).all() and rand.min() >= 0 and rand.max() < 30  # sorted, distinct
    assert rand.max() > 20 and len({tuple(r) for r in rand.tolist()}) > 50
    torch.testing.assert_close(sample_positions(3, 10, "none", None), torch.arange(10).expand(3, 10))
    with pytest.raises(ConfigError, match=r"model.pos_max_len=8, which must be >= L=10"):
        sample_positions(1, 10, "shift", 8)


def test_augmentation_only_in_training():
    m = model(pos_emb="learned", pos_aug="randomized", pos_max_len=50)
    x = torch.randn(2, 9, D)
    m.eval()
    torch.testing.assert_close(m.positions.positions(x), torch.arange(9).expand(2, 9))
    m.train()
    assert not torch.equal(m.positions.positions(x), torch.arange(9).expand(2, 9))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(pos_emb="alibi"), r"model.pos_emb='alibi' is not valid; choose one of: 'none', 'learned'"),
        (dict(pos_aug="flip"), r"model.pos_aug='flip' is not valid; choose one of: 'none', 'shift', 'randomized'"),
        (dict(pos_emb="learned"), r"model.pos_emb=learned needs model.pos_max_len"),
        (dict(pos_emb="learned", pos_max_len=4, pos_init="zeros"), r"model.pos_init='zeros' is not valid"),
    ],
)
def test_bad_options(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        model(**kwargs)


def test_positions_beyond_the_table():
    m = model(pos_emb="learned", pos_max_len=5)
    with pytest.raises(ConfigError, match=r"position 8 is beyond model.pos_max_len=5"):
        m(torch.randn(1, 9, D))


def test_scaler_and_augmentation_train_from_the_command_line(tmp_path):
    metrics = train_in_process([*TWO_STEPS, "model=mha", "model.pos_emb=scaler", "model.pos_aug=shift",
                                "model.pos_max_len=128"], tmp_path / "run")
    assert metrics["val/loss"] == metrics["val/loss"]
