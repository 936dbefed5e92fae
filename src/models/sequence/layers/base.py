"""SequenceLayer: the contract every sequence layer keeps (the S4 repo's SequenceModule, typed).

    forward(x (B, L, D), state=None, positions=None) -> (y (B, L, D), state)
        A layer whose forward returns a state continues from one it is given: forward(x[:, :s])
        then forward(x[:, s:], state) equals forward(x). A layer whose forward returns None
        refuses a state (`refuse_state`). positions (B, L) are the absolute positions (rope).
    causal                        y_t reads x_{<= t} only
    state_size(L)                 floats per sequence to go on after L inputs: the recurrent
                                  state, a KV cache, or what a non-recurrent layer must keep
    default_state(B), step(x_t (B, D), state) -> (y_t (B, D), state)
                                  the recurrent form, where the layer has one (`recurrent`):
                                  step over x equals forward(x). Without one both refuse with
                                  the reason (`why_no_step`).

Options. A layer's options are the keyword arguments of its __init__ after d_model: `options()`
is them as a dataclass (the way hydra-zen's `builds` makes a structured config of a signature),
so OmegaConf's structured merge checks a config's keys and types, nested ones included:
    a parameter's type is its annotation, else the type of its default (None: Any);
    a parameter annotated with a dataclass (`lr: DLRLr | None = None`) is a nested group whose
    keys and defaults are that dataclass's; the layer reads it through `group(DLRLr, lr)`.
`CONTEXT` arguments are given by the backbone (the block's depth), never by the config.
"""

import dataclasses
import difflib
import functools
import inspect
import types
import typing

from omegaconf import OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException
from torch import nn

from src.utils.errors import ConfigError

CONTEXT = ("layer_idx", "n_layers")  # set by backbone.build_layer from the block's place


def group(cls, value):
    """A nested option group as its dataclass: `value` (None, a mapping of some of its keys, or
    an instance) over the dataclass defaults."""
    if value is None:
        return cls()
    if isinstance(value, cls):
        return value
    return cls(**value)


def _field_type(param):
    """The OmegaConf type of an option: its annotation (Optional[X] kept, other unions Any),
    else the type of its default."""
    annotation = param.annotation
    if annotation is inspect.Parameter.empty:
        default = param.default
        return type(default) if isinstance(default, (bool, int, float, str)) else typing.Any
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0] if dataclasses.is_dataclass(args[0]) else typing.Optional[args[0]]
        return typing.Any
    return annotation


class SequenceLayer(nn.Module):
    causal = True  # a subclass sets it per instance where an option decides
    recurrent = False  # a subclass with default_state and step sets True

    # --- options -------------------------------------------------------------------------------

    @classmethod
    def option_parameters(cls):
        """{name: inspect.Parameter} of the options (the keyword arguments after d_model)."""
        params = list(inspect.signature(cls.__init__).parameters.values())[2:]  # self, d_model
        return {p.name: p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and p.name not in CONTEXT}

    @classmethod
    @functools.cache
    def options(cls):
        """The options as a dataclass type (field: name, type, default)."""
        fields = []
        for name, p in cls.option_parameters().items():
            kind = _field_type(p)
            if dataclasses.is_dataclass(kind):
                fields.append((name, kind, dataclasses.field(default_factory=kind)))
            elif isinstance(p.default, (list, dict)):
                fields.append((name, kind, dataclasses.field(default_factory=lambda d=p.default: d.copy())))
            else:
                fields.append((name, kind, None if p.default is inspect.Parameter.empty else p.default))
        return dataclasses.make_dataclass(f"{cls.__name__}Options", fields)

    @classmethod
    def check_options(cls, options, prefix="model.layer"):
        """`options` (a mapping without `_name_`) merged over the defaults; ConfigError in one line
        naming the first unknown or mistyped key, nested keys included, and the valid ones."""
        schema = OmegaConf.structured(cls.options())
        try:
            return OmegaConf.to_container(OmegaConf.merge(schema, options))
        except ConfigKeyError as e:
            key = f"{prefix}.{e.full_key}"
            parent = e.full_key.rpartition(".")[0]
            node = OmegaConf.select(schema, parent) if parent else schema
            valid = sorted(node.keys()) if OmegaConf.is_dict(node) else []
            close = difflib.get_close_matches(e.key, valid, n=3, cutoff=0.6)
            where = f"{prefix}.{parent}" if parent else prefix
            hint = (f"did you mean {', '.join(f'{where}.{c}' for c in close)}?" if close else
                    f"the keys of {where} ({cls.__name__}) are: {', '.join(valid)}" if valid else
                    f"{where} ({cls.__name__}) takes no keys")
            raise ConfigError(f"unknown key {key}: nothing reads it; {hint}") from None
        except OmegaConfBaseException as e:
            full_key = e.full_key or _group_given_a_value(schema, options)
            value = OmegaConf.select(OmegaConf.create(options), full_key)
            raise ConfigError(f"{prefix}.{full_key}={value!r} has the wrong type: use {_kind(schema, full_key)}") \
                from None

    # --- state ---------------------------------------------------------------------------------

    def refuse_state(self, state):
        """For a forward that does not continue from a state: refuse one instead of ignoring it."""
        if state is not None:
            raise ConfigError(f"{type(self).__name__}.forward does not continue from a state; "
                              "run it from the start, or use step()")

    def why_no_step(self):
        """None when step() runs this layer exactly; else why not. A subclass adds its reasons."""
        if not self.recurrent:
            return "it has no recurrent form here"
        if not self.causal:
            return "a non-causal layer reads the future"
        return None

    def why_no_half_weights(self):
        """None when the layer runs with bfloat16 or float16 weights (trainer.precision=bf16-true,
        16-true); else why not. Autocast (bf16-mixed) keeps the weights in float32: every layer runs there."""
        return None

    def check_step(self):
        why = self.why_no_step()
        if why:
            raise ConfigError(f"{type(self).__name__} has no step(): {why}")

    def default_state(self, batch_size, device=None):
        self.check_step()
        raise NotImplementedError(f"{type(self).__name__} is recurrent but defines no default_state")

    def step(self, x_t, state):
        self.check_step()
        raise NotImplementedError(f"{type(self).__name__} is recurrent but defines no step")

    def state_size(self, L):
        raise NotImplementedError(f"{type(self).__name__} defines no state_size")


def _group_given_a_value(schema, options):
    """The key of a nested group given a plain value (OmegaConf reports no key for it)."""
    return next(k for k, v in options.items() if OmegaConf.is_dict(schema.get(k)) and not isinstance(v, dict))


def _kind(schema, key):
    """What the schema's node at `key` takes, in words."""
    parent, _, leaf = key.rpartition(".")
    node = (OmegaConf.select(schema, parent) if parent else schema)._get_node(leaf)
    names = {"IntegerNode": "an integer", "FloatNode": "a number", "StringNode": "a string",
             "BooleanNode": "true or false", "DictConfig": "a mapping", "ListConfig": "a list"}
    return names.get(type(node).__name__, type(node).__name__)
