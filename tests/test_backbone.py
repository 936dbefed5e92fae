"""The residual backbone: postnorm / prenorm blocks around a registered layer."""

import pytest
import torch

from src.models.sequence.backbone import SequenceModel

LAYER = {"_name_": "dlr", "d_state": 8, "dropout": 0.0}


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

    with pytest.raises(ConfigError, match="model.norm='batch' is not valid; choose one of: 'layer', 'rms', 'none'"):
        SequenceModel(d_model=6, n_layers=1, layer=LAYER, norm="batch")


@pytest.mark.parametrize("prenorm", [False, True])
def test_the_state_mixer_is_its_own_residual_block(prenorm):
    torch.manual_seed(0)
    model = SequenceModel(d_model=6, n_layers=2, layer=LAYER, prenorm=prenorm, state_mixer="mlp", mlp_expand=3,
                          mlp_activation="relu").double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    h = x
    for block in model.blocks:
        mlp = lambda u: block.mixer.fc2(torch.relu(block.mixer.fc1(u)))  # noqa: E731
        if prenorm:
            h = h + block.layer(block.norm(h))[0]
            h = h + mlp(block.mixer_norm(h))
        else:
            h = block.norm(h + block.layer(h)[0])
            h = block.mixer_norm(h + mlp(h))
    torch.testing.assert_close(model(x)[0], model.final_norm(h))
    assert model.blocks[0].mixer.fc1.weight.shape == (18, 6)


def test_the_identity_state_mixer_adds_the_normalised_residual():
    """state_mixer=identity is zoology's torch.nn.Identity state mixer: its sub-block still adds
    norm2(residual), so a prenorm block is r <- r + layer(norm(r)); r <- r + mixer_norm(r)."""
    torch.manual_seed(0)
    model = SequenceModel(d_model=6, n_layers=2, layer=LAYER, prenorm=True, state_mixer="identity").double()
    for block in model.blocks:  # affine parameters away from (1, 0), so that a skipped norm shows
        torch.nn.init.normal_(block.mixer_norm.weight)
        torch.nn.init.normal_(block.mixer_norm.bias)
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    h = x
    for block in model.blocks:
        h = h + block.layer(block.norm(h))[0]
        h = h + block.mixer_norm(h)
    torch.testing.assert_close(model(x)[0], model.final_norm(h))
    assert [n for n, _ in model.blocks[0].named_parameters() if n.startswith("mixer")] == [
        "mixer_norm.weight", "mixer_norm.bias"]


def token_model(**options):
    options = {"decoder": {"_name_": "sequence"}, **options}
    return SequenceModel(d_model=8, n_layers=2, layer=LAYER, encoder="embedding", n_tokens=11, d_output=11, **options)


def test_tied_embeddings_share_one_matrix():
    model = token_model(tie_embeddings=True)
    assert model.decoder.output.weight is model.encoder.weight
    names = [name for name, _ in model.named_parameters()]
    assert "encoder.weight" in names and "decoder.output.weight" not in names  # one parameter, trained once
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match=r"tie_embeddings=true needs a token embedding and a vocabulary head of the "
                                          r"same shape .* got head \(7, 8\), encoder \(11, 8\)"):
        SequenceModel(d_model=8, n_layers=1, layer=LAYER, encoder="embedding", n_tokens=11,
                      decoder={"_name_": "sequence"}, d_output=7, tie_embeddings=True)


def test_embedding_dropout_and_final_norm():
    torch.manual_seed(0)
    model = token_model(embedding_dropout=0.5, final_norm=True)
    assert isinstance(model.final_norm, torch.nn.LayerNorm)  # asked for, though postnorm
    x = torch.randint(0, 11, (2, 7))
    model.train()
    assert not torch.equal(model(x)[0], model(x)[0])
    model.eval()
    assert torch.equal(model(x)[0], model(x)[0])
    assert isinstance(token_model(prenorm=True, norm="none").final_norm, torch.nn.Identity)  # as before


def test_embedding_dropout_drops_tokens_plus_positions():
    """GPT-2's and zoology's order: dropout(token embedding + position embedding)."""
    torch.manual_seed(0)
    model = token_model(embedding_dropout=0.5, pos_emb="learned", max_length=7)
    x = torch.randint(0, 11, (2, 7))
    seen = {}
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.setdefault("h", args[0]))
    model.train()
    torch.manual_seed(1)
    model(x)
    torch.manual_seed(1)
    expected = torch.nn.functional.dropout(model.encoder(x) + model.positions.embedding[:7], 0.5)
    torch.testing.assert_close(seen["h"], expected)


def test_a_vocabulary_head_without_bias():
    model = token_model(decoder={"_name_": "sequence", "bias": False})
    assert model.decoder.output.bias is None
    assert token_model().decoder.output.bias is not None


def test_gpt2_init_statistics_of_every_linear_layer():
    """init=gpt2: every Linear and Embedding weight ~ N(0, 0.02), biases 0; each residual branch's last
    Linear (the layer's and the MLP's output projection) ~ N(0, 0.02 / sqrt(2 n_layers))."""
    torch.manual_seed(0)
    n_layers, d = 4, 128
    layer = {"_name_": "mamba", "d_state": 4, "expand": 2}
    model = SequenceModel(d_model=d, n_layers=n_layers, layer=layer, prenorm=True, state_mixer="mlp", init="gpt2",
                          encoder="embedding", n_tokens=1000, decoder={"_name_": "sequence"}, d_output=1000)
    outputs = {id(block.layer.out_proj) for block in model.blocks} | {id(block.mixer.fc2) for block in model.blocks}
    linears = [m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Embedding))]
    assert len(linears) == 2 + n_layers * (4 + 2)  # embedding, head; mamba's in, x, dt, out; fc1, fc2
    for module in linears:
        std = 0.02 / (2 * n_layers) ** 0.5 if id(module) in outputs else 0.02
        w = module.weight.detach()
        assert w.mean().abs() < 4 * std / w.numel() ** 0.5, module  # mean 0 to 4 standard errors
        assert w.std().item() == pytest.approx(std, rel=0.15 if w.numel() < 500 else 0.05), module
        if isinstance(module, torch.nn.Linear) and module.bias is not None:
            assert (module.bias == 0).all(), module
    default = SequenceModel(d_model=d, n_layers=1, layer=layer, init="default")
    assert default.blocks[0].layer.ssm.dt_proj.bias.abs().max() > 0  # the layer's own dt-range init is kept


def test_model_sizes_must_be_positive():
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="model.n_layers=0 must be a positive integer"):
        SequenceModel(d_model=8, n_layers=0, layer=LAYER)


def test_gpt2_init_draws_a_learned_position_table_like_the_token_embedding():
    """GPT-2 (and zoology) draw the position table N(0, 0.02) as the token embedding; at its own
    init (std 1/sqrt(d)) it drowned the tokens (2-layer attention stalled on MQAR). A sinusoidal
    start is kept."""
    torch.manual_seed(0)
    make = lambda pos_init: SequenceModel(d_model=64, n_layers=1, layer={"_name_": "mha"}, init="gpt2",  # noqa: E731
                                          encoder="embedding", n_tokens=100, decoder={"_name_": "sequence"},
                                          d_output=100, pos_emb="learned", pos_max_len=256, pos_init=pos_init)
    table = make("random").positions.embedding.detach()
    assert table.std().item() == pytest.approx(0.02, rel=0.05)
    from src.models.sequence.positions import sinusoids

    torch.testing.assert_close(make("sinusoidal").positions.embedding.detach(), sinusoids(torch.arange(256), 64))


def test_mads_block_rmsnorm_and_swiglu():
    """MAD's shape: x <- x + layer(rms(x)); x <- x + W3 (silu(W1 rms(x)) * W2 rms(x)); final RMSNorm.
    Hidden width 8 D / 3 rounded up to 16 (352 at D = 128, as MAD's SwiGLU)."""
    torch.manual_seed(0)
    model = SequenceModel(d_model=6, n_layers=2, layer=LAYER, prenorm=True, norm="rms", state_mixer="swiglu").double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    rms = lambda norm, h: h / h.pow(2).mean(-1, keepdim=True).add(1e-5).sqrt() * norm.weight  # noqa: E731
    h = x
    for block in model.blocks:
        h = h + block.layer(rms(block.norm, h))[0]
        u, m = rms(block.mixer_norm, h), block.mixer
        h = h + m.w3(torch.nn.functional.silu(m.w1(u)) * m.w2(u))
    torch.testing.assert_close(model(x)[0], rms(model.final_norm, h))
    wide = SequenceModel(d_model=128, n_layers=1, layer=LAYER, state_mixer="swiglu")
    assert wide.blocks[0].mixer.w1.weight.shape == (352, 128) and wide.blocks[0].mixer.w1.bias is None


def test_compress_decodes_every_position_from_the_last():
    """model.compress: o_t = norm(gelu(W2 norm(gelu(W1 norm(z + s(t)))))), z the last position: the
    output at every position moves with the last input only through z (a causal stack)."""
    from src.models.sequence.compress import sinusoids

    torch.manual_seed(0)
    model = SequenceModel(d_model=6, n_layers=1, layer=LAYER, prenorm=True, norm="rms", compress=True).double()
    x = torch.randn(2, 5, 6, dtype=torch.float64)
    y = model(x)[0]
    c = model.compress
    h = model.final_norm(x + model.blocks[0].layer(model.blocks[0].norm(x))[0])
    u = h[:, -1:] + sinusoids(5, 6).double()
    gelu = torch.nn.functional.gelu
    torch.testing.assert_close(y, c.norm2(gelu(c.fc2(c.norm1(gelu(c.fc1(c.norm0(u))))))))
    x2 = x.clone()
    x2[:, 0] += 1  # a first input changes every output (it reaches z)
    assert not torch.allclose(model(x2)[0][:, 0], y[:, 0])
    angle = 3 * 10000 ** (-torch.arange(3) / 2)
    torch.testing.assert_close(sinusoids(5, 6)[3], torch.cat([angle.sin(), angle.cos()]))  # MAD's layout
    from src.utils.errors import ConfigError

    with pytest.raises(ConfigError, match="no step"):
        model.step(x[:, 0], model.default_state(2))


def test_mad_init():
    torch.manual_seed(0)
    model = SequenceModel(d_model=64, n_layers=1, layer={"_name_": "mha"}, encoder="embedding", n_tokens=300,
                          decoder={"_name_": "sequence"}, d_output=300, init="mad")
    assert abs(model.encoder.weight.std().item() - 0.02) < 0.002
    assert all((m.bias == 0).all() for m in model.modules() if isinstance(m, torch.nn.Linear) and m.bias is not None)
