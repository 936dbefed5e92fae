"""SequenceModel: encoder -> positions -> `n_layers` residual blocks -> final norm -> decoder.

    x <- encoder(x)                         linear (B, L, d_input) -> (B, L, D), or embedding (B, L) tokens
    x <- embedding_dropout(x + positions)   model.pos_emb (positions.py; rope goes to the layers instead)
    each block, postnorm (prenorm=false):   x <- norm(x + dropout(layer(x)))
                prenorm  (prenorm=true):    x <- x + dropout(layer(norm(x)))
        state_mixer=mlp adds a second residual sub-block of the same form around
        MLP(x) = fc2(act(fc1 x)), fc1: D -> mlp_expand D (zoology's "state mixer"), or
        state_mixer=swiglu around SwiGLU(x) = W3 (silu(W1 x) * W2 x) (MAD's channel mixer);
        state_mixer=identity the same around the identity: x <- x + norm'(x) when prenorm (zoology's
        `torch.nn.Identity` state mixer, which is not nothing: its block adds the normalised residual)
    x <- final_norm(x);  y = decoder(x)    (B, L, d_output), the last l_output positions, or pooled
    compress=true: x <- Compress(x) before the decoder, every position decoded from the last one
        (MAD's autoencoder, compress.py)
norm: layer (LayerNorm) | rms (RMSNorm, eps 1e-5, MAD's) | none.
Block i's layer is `layer`, or layers[i % len(layers)] when `layers` (a pattern, a hybrid) is given.

Every tensor between encoder and decoder is (B, L, D). Without `encoder` / `decoder` the model
maps (B, L, D) to (B, L, D). tie_embeddings: the decoder's weight is the embedding matrix.
init=gpt2 (zoology, GPT-2): every nn.Linear and nn.Embedding weight ~ N(0, 0.02), biases 0, and
the output projection of each residual branch (its last nn.Linear) ~ N(0, 0.02 / sqrt(2 n_layers)).
init=mad (MAD's LanguageModel): the token embedding ~ N(0, 0.02), every nn.Linear bias 0; with
compress (MAD's AutoEncoder) every nn.Linear weight ~ N(0, 0.02) too.

Recurrence: `default_state(B)` and `step(x_t, state)` run the model one position at a time
through every layer's `step` (and the encoder, positions, norms, mixers and head, which act per
position); a test shows this equals the parallel forward for every layer that steps.
"""

import inspect
import math
from collections.abc import Mapping

import torch
from torch import nn

from src.models.sequence.compress import Compress
from src.models.sequence.layers.activation import Activation
from src.models.sequence.positions import Positions, input_width
from src.tasks.decoders import build_decoder
from src.tasks.encoders import build_encoder
from src.utils import registry
from src.utils.errors import ConfigError, check_choice


def build_layer(config, d_model, rope=False, bidirectional=False, max_length=None, layer_idx=0, n_layers=1):
    """The layer of `config` (`model.layer`), its options checked against the layer's own
    (SequenceLayer.check_options). rope: pass rope=True to the layer (`model.pos_emb=rope`).
    bidirectional: the model is non-causal, which the layer must be able to be. max_length: the
    longest input, which fills a layer's `l_max: null` and bounds a set one. layer_idx, n_layers:
    the block's depth, given to layers whose initialisation depends on it (rwkv4, mlstm)."""
    config = dict(config)
    name = config.pop("_name_")
    cls = registry.resolve(registry.layer, name, "model.layer._name_")
    options = cls.option_parameters()
    if rope:
        if "rope" not in options:
            raise ConfigError(f"model.pos_emb=rope rotates queries and keys: model.layer._name_={name} "
                              "has none; use a layer with `rope` (mha, transformer) or another pos_emb")
        config["rope"] = True
    if bidirectional and "bidirectional" not in options and "causal" not in options:
        raise ConfigError(f"model.bidirectional=true: model.layer._name_={name} has no bidirectional form; "
                          f"use one of: {', '.join(bidirectional_layers())}, or model.bidirectional=false")
    if "l_max" in config and max_length:
        if config["l_max"] is None:
            config["l_max"] = max_length
        elif config["l_max"] < max_length:
            raise ConfigError(f"model.layer.l_max={config['l_max']} is shorter than the longest input, {max_length} "
                              f"(eval sets included): set model.layer.l_max={max_length} or null")
    takes = inspect.signature(cls).parameters
    context = {k: v for k, v in {"layer_idx": layer_idx, "n_layers": n_layers}.items() if k in takes}
    return cls(d_model, **cls.check_options(config), **context)


def pattern_entry(entry):
    """An entry of `model.layers` as a layer config: the options it gives over the layer class's
    own defaults, with `l_max: null` (the longest input) where the class takes l_max."""
    entry = dict(entry)
    if "_name_" not in entry:
        raise ConfigError(f"model.layers: each entry needs a _name_ (a layer: {', '.join(sorted(registry.layer))}); "
                          f"got {entry}")
    cls = registry.resolve(registry.layer, entry["_name_"], "model.layers[]._name_")
    if "l_max" in cls.option_parameters():
        entry.setdefault("l_max", None)
    return entry


def bidirectional_layers():
    """The registered layers that take `bidirectional` or `causal`."""
    names = []
    for name in sorted(registry.layer):
        options = registry.resolve(registry.layer, name).option_parameters()
        if "bidirectional" in options or "causal" in options:
            names.append(name)
    return names


class MLP(nn.Module):
    """fc2(act(fc1 x)): D -> expand D -> D, position by position."""

    def __init__(self, d_model, expand=4, activation="gelu"):
        super().__init__()
        self.fc1 = nn.Linear(d_model, expand * d_model)
        self.activation = Activation(activation, "model.mlp_activation")
        self.fc2 = nn.Linear(expand * d_model, d_model)

    def forward(self, x):  # (..., D)
        return self.fc2(self.activation(self.fc1(x)))


class SwiGLU(nn.Module):
    """W3 (silu(W1 x) * W2 x), no biases, hidden width 8 D / 3 rounded up to a multiple of 16
    (MAD's SwiGLU), position by position."""

    def __init__(self, d_model):
        super().__init__()
        hidden = -(-int(8 * d_model / 3) // 16) * 16
        self.w1 = nn.Linear(d_model, hidden, bias=False)
        self.w2 = nn.Linear(d_model, hidden, bias=False)
        self.w3 = nn.Linear(hidden, d_model, bias=False)

    def forward(self, x):  # (..., D)
        return self.w3(nn.functional.silu(self.w1(x)) * self.w2(x))


def norm_layer(norm, d_model):
    """The module of model.norm at width d_model."""
    return {"layer": lambda: nn.LayerNorm(d_model), "rms": lambda: nn.RMSNorm(d_model, eps=1e-5),
            "none": nn.Identity}[norm]()


class ResidualBlock(nn.Module):
    def __init__(self, d_model, layer, prenorm, norm, dropout, mixer=None):
        super().__init__()
        self.layer = layer
        self.prenorm = prenorm
        self.norm = norm_layer(norm, d_model)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.mixer = mixer
        if mixer is not None:
            self.mixer_norm = norm_layer(norm, d_model)

    def _residual(self, f, norm, x):  # one residual sub-block around f: (..., D) -> ((..., D), f's extra)
        y, extra = f(norm(x) if self.prenorm else x)
        y = x + self.dropout(y)
        return (y if self.prenorm else norm(y)), extra

    def _mix(self, x):
        if self.mixer is None:
            return x
        return self._residual(lambda u: (self.mixer(u), None), self.mixer_norm, x)[0]

    def forward(self, x, state=None, positions=None):  # x: (B, L, D), positions: (B, L)
        x, state = self._residual(lambda u: self.layer(u, state=state, positions=positions), self.norm, x)
        return self._mix(x), state

    def step(self, x_t, state):  # x_t: (B, D)
        x_t, state = self._residual(lambda u: self.layer.step(u, state), self.norm, x_t)
        return self._mix(x_t), state


class SequenceModel(nn.Module):
    def __init__(self, d_model, n_layers, layer, prenorm=False, norm="layer", final_norm=None, dropout=0.0,
                 bidirectional=False, state_mixer="none", mlp_expand=4, mlp_activation="gelu", embedding_dropout=0.0,
                 tie_embeddings=False, init="default", pos_emb="none", pos_aug="none", pos_max_len=None,
                 pos_init="random", pos_frozen=False, layers=None, compress=False, encoder=None, decoder=None,
                 d_input=None, n_tokens=None, d_output=None, l_output=None, max_length=None):
        """encoder: None | linear | embedding (of d_input features / n_tokens tokens); decoder: None or
        the sequence decoder's options (src/tasks/decoders.py) for d_output outputs at l_output
        positions; max_length: the longest input (sizes positions and `l_max`); final_norm: None
        means `prenorm`. layers: None (every block is `layer`) or a list of layer configs
        (pattern_entry), block i built from layers[i % len(layers)] (a hybrid). compress: decode
        every position from the last one (compress.py; src/module.py resolves null)."""
        super().__init__()
        check_choice("model.norm", norm, ["layer", "rms", "none"])
        check_choice("model.state_mixer", state_mixer, ["none", "mlp", "swiglu", "identity"])
        check_choice("model.init", init, ["default", "gpt2", "mad"])
        for key, value in (("model.d_model", d_model), ("model.n_layers", n_layers)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"{key}={value!r} must be a positive integer")
        self.d_model = d_model
        self.encoder = None if encoder is None else build_encoder(encoder, d_input, n_tokens, input_width(d_model, pos_emb))
        self.embedding_dropout = nn.Dropout(embedding_dropout) if embedding_dropout > 0 else nn.Identity()
        if pos_max_len is None:
            pos_max_len = max_length
        elif max_length and pos_max_len < max_length and (pos_emb in ("learned", "scaler") or pos_aug != "none"):
            raise ConfigError(f"model.pos_max_len={pos_max_len} is shorter than the longest input, {max_length} "
                              f"(eval sets included): set model.pos_max_len>={max_length} or null")
        self.positions = Positions(d_model, pos_emb, pos_aug, pos_max_len, pos_init, pos_frozen)
        if layers is not None and (isinstance(layers, (str, Mapping)) or len(layers) == 0):
            raise ConfigError(f"model.layers={layers!r} must be null or a non-empty list of layer configs")
        pattern = [layer] if layers is None else [pattern_entry(entry) for entry in layers]
        self.blocks = nn.ModuleList()
        for i in range(n_layers):
            layer_module = build_layer(pattern[i % len(pattern)], d_model, pos_emb == "rope", bidirectional,
                                       max_length, i, n_layers)
            mixer = {"mlp": lambda: MLP(d_model, mlp_expand, mlp_activation), "swiglu": lambda: SwiGLU(d_model),
                     "identity": nn.Identity,
                     "none": lambda: None}[state_mixer]()
            self.blocks.append(ResidualBlock(d_model, layer_module, prenorm, norm, dropout, mixer))
        if final_norm is None:
            final_norm = prenorm and norm != "none"
        self.final_norm = norm_layer(norm if norm != "none" else "layer", d_model) if final_norm else nn.Identity()
        self.compress = Compress(d_model, lambda d: norm_layer(norm, d)) if compress else None
        self.decoder = None if decoder is None else build_decoder(decoder, d_model, d_output, l_output)
        if init == "gpt2":
            self.init_gpt2()
        if init == "mad":
            self.init_mad()
        if tie_embeddings:
            self.tie()

    def tie(self):
        """decoder.output.weight <- encoder.weight (both (n_tokens, D))."""
        head = getattr(self.decoder, "output", None)
        if not isinstance(self.encoder, nn.Embedding) or head is None or head.weight.shape != self.encoder.weight.shape:
            shapes = (None if head is None else tuple(head.weight.shape),
                      tuple(self.encoder.weight.shape) if self.encoder is not None else None)
            raise ConfigError("model.tie_embeddings=true needs a token embedding and a vocabulary head of the same "
                              f"shape (encoder=embedding, d_output = n_tokens); got head {shapes[0]}, encoder {shapes[1]}")
        head.weight = self.encoder.weight

    @torch.no_grad()
    def init_gpt2(self, std=0.02):
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()
        position = getattr(self.positions, "embedding", None)
        if isinstance(position, nn.Parameter) and self.positions.pos_init == "random":
            position.normal_(0.0, std)  # GPT-2's position table: like the token embedding (else it drowns it)
        for block in self.blocks:
            for branch in (block.layer, block.mixer):
                linears = [m for m in branch.modules() if isinstance(m, nn.Linear)] if branch is not None else []
                if linears:  # the branch's output projection
                    linears[-1].weight.normal_(0.0, std / math.sqrt(2 * len(self.blocks)))

    @torch.no_grad()
    def init_mad(self, std=0.02):
        for module in self.modules():
            if isinstance(module, nn.Embedding):
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and self.compress is not None:
                module.weight.normal_(0.0, std)
            if isinstance(module, nn.Linear) and module.bias is not None:
                module.bias.zero_()

    def forward(self, x, state=None, l_output=None, lengths=None):  # x: (B, L, d_input) or (B, L) tokens
        """-> (outputs, per-block states). l_output: the number of positions the decoder reads for
        this input, if not its default (an eval set of another length); lengths (B,): the real
        lengths of a padded batch, for a decoder with use_lengths."""
        if self.encoder is not None:
            x = self.encoder(x)  # (B, L, D)
        positions = self.positions.positions(x)  # (B, L)
        x = self.positions(x, positions)
        if self.encoder is not None:
            x = self.embedding_dropout(x)
        states = []
        for i, block in enumerate(self.blocks):
            x, s = block(x, state=None if state is None else state[i], positions=positions)
            states.append(s)
        x = self.final_norm(x)
        if self.compress is not None:
            x = self.compress(x)
        return (x if self.decoder is None else self.decoder(x, l_output, lengths)), states

    @property
    def causal(self):
        """Whether every layer is causal (y_t reads x_{<=t} only)."""
        return all(block.layer.causal for block in self.blocks)

    def state_size(self, L):
        """Floats the layers keep per sequence to go on after L inputs (each layer's state_size(L):
        the recurrent state, the KV cache, or what a non-recurrent layer reads), summed: what
        zoology and DSF plot recall against."""
        return sum(block.layer.state_size(L) for block in self.blocks)

    def default_state(self, batch_size, device=None):
        """{"position": 0, "layers": every layer's default_state}."""
        for block in self.blocks:
            block.layer.check_step()
        return {"position": 0, "layers": [block.layer.default_state(batch_size, device) for block in self.blocks]}

    def step(self, x_t, state):  # x_t: (B, d_input) or (B,) tokens -> (B, d_output) or (B, D), state
        if self.compress is not None:
            raise ConfigError("model.compress=true decodes every position from the last one: the model has no step()")
        if self.decoder is not None and (self.decoder.mode != "last" or not hasattr(self.decoder, "output")):
            raise ConfigError(f"decoder.mode={self.decoder.mode} ({type(self.decoder).__name__}) reads the whole "
                              "sequence: the model has no step()")
        t = state["position"]
        x = x_t if self.encoder is None else self.encoder(x_t)  # (B, D)
        x = self.positions(x[:, None], torch.full((x.shape[0], 1), t, device=x.device))[:, 0]
        if self.encoder is not None:
            x = self.embedding_dropout(x)
        layers = []
        for block, s in zip(self.blocks, state["layers"]):
            x, s = block.step(x, s)
            layers.append(s)
        x = self.final_norm(x)
        return (x if self.decoder is None else self.decoder.output(x)), {"position": t + 1, "layers": layers}
