"""Whole-model recurrence: SequenceModel.step, one position at a time through the embedding, every
block's layer step, the state mixers, the final norm and the head, equals the parallel forward.
Runs over every layer config (configs/model/layer/*.yaml, found by glob), in float64."""

import pytest
import torch

from conftest import LAYER_CONFIGS, floats, layer_options, run_steps
from src.models.sequence.backbone import SequenceModel
from src.utils.errors import ConfigError

D, L, V = 16, 9, 11


def token_model(stem, **options):
    torch.manual_seed(0)
    return SequenceModel(D, 2, layer_options(stem), prenorm=True, state_mixer="mlp", mlp_expand=2, encoder="embedding",
                         decoder={"_name_": "sequence", "mode": "last"}, n_tokens=V, d_output=V, max_length=L,
                         **options).double().eval()


def why_no_step(model):
    return model.blocks[0].layer.why_no_step()


@pytest.mark.parametrize("stem", LAYER_CONFIGS)
def test_model_step_equals_forward(stem):
    model = token_model(stem, pos_emb="sinusoidal", tie_embeddings=True)
    x = torch.randint(0, V, (3, L))
    if why_no_step(model):
        with pytest.raises(ConfigError, match="has no step"):
            run_steps(model, x)
        return
    with torch.no_grad():
        torch.testing.assert_close(run_steps(model, x)[0], model(x)[0], rtol=1e-9, atol=1e-9)


def test_model_step_with_real_inputs_and_learned_positions():
    torch.manual_seed(0)
    model = SequenceModel(D, 2, layer_options("mamba"), prenorm=False, encoder="linear", d_input=3,
                          decoder={"_name_": "sequence", "mode": "last"}, d_output=2, pos_emb="learned",
                          max_length=L).double().eval()
    x = torch.randn(2, L, 3, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(run_steps(model, x)[0], model(x)[0], rtol=1e-9, atol=1e-9)


def test_a_pooled_decoder_has_no_step():
    model = SequenceModel(D, 1, layer_options("lstm"), encoder="embedding", n_tokens=V,
                          decoder={"_name_": "sequence", "mode": "pool"}, d_output=V)
    with pytest.raises(ConfigError, match=r"decoder.mode=pool \(SequenceDecoder\) reads the whole sequence"):
        model.step(torch.zeros(2, dtype=torch.long), model.default_state(2))


@pytest.mark.parametrize("stem", LAYER_CONFIGS)
def test_model_state_size_counts_the_state_after_L_steps(stem):
    """SequenceModel.state_size(L), logged with every run, is the floats its step state holds after L
    tokens (layers with no step: what their docstring counts, positive)."""
    model = token_model(stem)
    if why_no_step(model):
        assert model.state_size(L) > 0
        return
    x = torch.randint(0, V, (2, L))
    state = model.default_state(2)
    with torch.no_grad():
        for t in range(L):
            _, state = model.step(x[:, t], state)
    assert model.state_size(L) == floats(state["layers"])
