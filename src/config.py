"""A composed config, from Hydra to building: legacy keys translated, interpolations resolved,
and every key, type and value checked before anything is built or written (`prepare`).

Keys. A key is known when the component that consumes it takes it. model.layer (and each entry
of model.layers): the layer's typed options (SequenceLayer.check_options, OmegaConf's structured
merge, nested keys included). Elsewhere, the signature of the class or function its section's
`_name_` selects in src/utils/registry.py (dataset, optimizer, scheduler, callbacks.*), of `lightning.Trainer`
(trainer.*, minus the arguments the run sets itself), of `SequenceModel` (model.*), of the
dataset's `train_dataloader` (loader.*), of `SequenceDecoder` (decoder.*) and of `WandbLogger`
and `wandb.init` (wandb.*); the `train` and `task` keys are those the config files declare
(configs/config.yaml, configs/task/*.yaml). A new argument of any of these is accepted as soon
as the code takes it. Any other key, with or without Hydra's `+`, is a ConfigError that
suggests the closest known keys.

Types. A value must fit the parameter's annotation, or else the type of its default (an int
where the default is an int, a number where it is a float, ...). null is left to the consumer
(it means "the default" in these configs, e.g. wandb.save_dir: the run directory).

Values. Sizes (batch sizes, model.d_model, model.n_layers, dataset.L, dataset.samples_per_epoch,
d_state, trainer.max_epochs) are >= 1; learning rates and weight decays >= 0.
"""

import collections.abc
import difflib
import inspect
import types
import typing
from pathlib import Path

from omegaconf import OmegaConf

from src.utils import registry
from src.utils.errors import ConfigError
from src.utils.legacy import translate
from src.utils.notice import notice

# `${not:${..bidirectional}}`: the attention layers' `causal` follows `model.bidirectional`.
OmegaConf.register_new_resolver("not", lambda value: not value, replace=True)
# `${batch_by_length:${dataset.L},512,128}`: base at L <= L0, halved per doubling of L beyond it
# (zoology's MQAR batch sizes: 512 up to L 128, 256 at 256, 128 at 512).
OmegaConf.register_new_resolver("batch_by_length", lambda L, base, L0: max(1, base * L0 // max(L, L0)), replace=True)

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
# Trainer arguments that src/training.py sets itself.
SET_BY_THE_RUN = {"default_root_dir", "logger", "callbacks", "use_distributed_sampler", "plugins"}


def prepare(config):
    """Translate the legacy keys, resolve interpolations, check required values and then every key,
    type and value."""
    translate(config)
    missing = sorted(OmegaConf.missing_keys(config))
    if missing:
        raise ConfigError(f"these config values must be set: {', '.join(missing)}")
    notice_unread_vars(config)
    OmegaConf.resolve(config)
    check(config)
    return config


def starts_from_checkpoint(config):
    """Whether the run starts from train.ckpt (evaluates it, or resumes it into a new directory)
    rather than continuing hydra.run.dir in place (train.resume=auto) or starting fresh."""
    ckpt = OmegaConf.select(config, "train.ckpt") or OmegaConf.select(config, "trainer.resume_from_checkpoint")
    return ckpt is not None and OmegaConf.select(config, "train.resume") != "auto"


def from_checkpoint(config, defaults, overrides):
    """The config a run from a checkpoint runs: the checkpoint's own (resolved) config, with what the
    command line changed on top. `config` is the composed config, `defaults` the config composed
    without the command line's `overrides`; a key counts as changed where it is named by an
    override (`model.d_model=16`, `+key=v`, `~key`) or where `config` differs from `defaults`
    (a group choice: `dataset=count_same`, `wandb=null`). Everything else comes from the
    checkpoint, so `train.eval_only=true train.ckpt=PATH` alone evaluates the model PATH holds.
    An override its weights cannot take (another width, another layer) is refused when the
    checkpoint is loaded, naming the key (src/training.py check_checkpoint).
    Returns `config` unchanged when train.ckpt cannot be read or holds no config (the run then
    refuses it, saying why)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    from src.utils.checkpoint_io import load_checkpoint

    translate(config)  # trainer.resume_from_checkpoint -> train.ckpt (prepare translates again: a no-op)
    try:
        saved = load_checkpoint(config.train.ckpt)["hyper_parameters"]["config"]
    except Exception:  # noqa: BLE001 - not a readable checkpoint of this repository: fit says why
        return config
    if not isinstance(saved, dict):
        return config
    named = set()
    for override in OverridesParser.create().parse_overrides(list(overrides)):
        if not (CONFIGS / override.key_or_group).is_dir():  # a key, not a config group
            named.add(override.key_or_group)
    new = OmegaConf.to_container(config, resolve=True)
    defaults = OmegaConf.masked_copy(defaults, [k for k in defaults if k != "hydra"])
    old = OmegaConf.to_container(defaults, resolve=True)
    config = _overlay(saved, new, old, named)
    config["vars"] = {}  # what read them is resolved in the checkpoint's config (and in `new` where they changed)
    return OmegaConf.create(config)


_UNSET = object()


def _overlay(base, new, old, named, prefix=""):
    """`base` with the values of `new` where they differ from `old`, or whose key is in `named`."""
    out = dict(base)
    for key in [*new, *(k for k in old if k not in new)]:
        path = f"{prefix}{key}"
        value, default = new.get(key, _UNSET), old.get(key, _UNSET)
        if path not in named and value == default and not any(n.startswith(f"{path}.") for n in named):
            continue  # the command line left it: the checkpoint's value
        if path not in named and all(isinstance(v, dict) for v in (value, default, base.get(key))):
            out[key] = _overlay(base[key], value, default, named, f"{path}.")
        elif value is _UNSET:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def check(config):
    """ConfigError for the first unknown key, badly typed value or out-of-range value."""
    config = OmegaConf.to_container(config, resolve=True)
    _check_train(config)  # first: other sections interpolate train.seed, train.monitor, ...
    sections = {
        "train": _declared(OmegaConf.load(CONFIGS / "config.yaml").train),
        "task": _declared(*[OmegaConf.load(p) for p in sorted((CONFIGS / "task").glob("*.yaml"))]),
        "wandb": _wandb_params,
        "trainer": lambda node: _params(_trainer(), skip=SET_BY_THE_RUN, set_by_run=SET_BY_THE_RUN),
        "loader": _loader_params,
        "dataset": _dataset_params,
        "model": _model_params,
        "optimizer": lambda node: _params(_named(registry.optimizer, node, "optimizer"), skip={"params"}),
        "scheduler": lambda node: _params(_named(registry.scheduler, node, "scheduler"), first=1),
        "callbacks": None,  # below
        "encoder": None,  # a name (src/tasks/encoders.py checks it)
        "vars": None,  # values an experiment's presets interpolate (see notice_unread_vars)
        "results": None,  # read by src/results (it checks them)
        "decoder": lambda node: _params(_decoder(node), skip={"d_model", "d_output", "l_output"}),
    }
    _check_keys("", config, {k: inspect.Parameter(k, inspect.Parameter.KEYWORD_ONLY) for k in sections})
    for name, params_of in sections.items():
        node = config.get(name)
        if params_of is not None and isinstance(node, dict):
            _check_section(name, node, params_of)
    for name, node in (config.get("callbacks") or {}).items():
        if node is not None:
            cls = registry.resolve(registry.callbacks, name, "callbacks")
            _check_keys(f"callbacks.{name}", node, _params(cls, skip={"dirpath"}), cls.__name__)
    _check_values(config)


def notice_unread_vars(config):
    """A notice for each `vars.NAME` that no interpolation reads: an experiment's variable (e.g.
    dsf-mqar's vars.state_expansion) that the chosen model's preset does not use. Called on the
    composed config before its interpolations are resolved."""
    names = list((OmegaConf.select(config, "vars") or {}).keys())
    text = OmegaConf.to_yaml(config, resolve=False)
    for name in names:
        if f"${{vars.{name}}}" not in text:
            notice(f"notice: vars.{name}={OmegaConf.select(config, 'vars.' + name)} is read by nothing with "
                   f"model.layer._name_={OmegaConf.select(config, 'model.layer._name_')}")


def _check_section(name, node, params_of):
    params = params_of(node)
    if name == "model":
        entries = [("model.layer", node.get("layer"))]
        entries += [(f"model.layers[{i}]", e) for i, e in enumerate(node.get("layers") or [])]
        for prefix, layer in entries:
            if isinstance(layer, dict):
                cls = registry.resolve(registry.layer, layer.get("_name_"), f"{prefix}._name_")
                cls.check_options({k: v for k, v in layer.items() if k != "_name_"}, prefix)
        params = {k: p for k, p in params.items() if k != "layer"}
        node = {k: v for k, v in node.items() if k != "layer"}
    _check_keys(name, node, params, node.get("_name_") if name in ("dataset", "optimizer", "scheduler") else None)


# --- which keys each consumer takes: {name: inspect.Parameter}, or None for any --------------


def _params(fn, skip=(), first=0, set_by_run=()):
    """The keyword parameters of `fn` (after `first` positional ones), minus `skip`; None when it
    takes **kwargs. Keys in `set_by_run` are reported as such."""
    params = list(inspect.signature(fn).parameters.values())[first:]
    if any(p.kind == p.VAR_KEYWORD for p in params):
        return None
    accepted = {p.name: p for p in params if p.kind != p.VAR_POSITIONAL and p.name not in skip}
    accepted["_name_"] = inspect.Parameter("_name_", inspect.Parameter.KEYWORD_ONLY)
    for name in set_by_run:
        accepted[name] = "set by the run"
    return accepted


def _named(table, node, section):
    return registry.resolve(table, node.get("_name_"), f"{section}._name_")


def _declared(*nodes):
    """Parameters (untyped: _check_values checks their values) for the keys config files declare."""
    keys = {key: inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY) for node in nodes for key in node}
    return lambda node: keys


def _trainer():
    import lightning

    return lightning.Trainer


def _decoder(node):
    from src.tasks.decoders import RetrievalDecoder, SequenceDecoder

    return RetrievalDecoder if node.get("_name_") == "retrieval" else SequenceDecoder


def _dataset_params(node):
    """The dataset's arguments, `eval_sets` and `segments` (src/module.py builds a dataset per set and
    per segment from them)."""
    params = _params(_named(registry.dataset, node, "dataset"))
    if params is not None:
        for key in ("eval_sets", "segments"):
            params[key] = inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=None)
    return params


def _loader_params(node):
    from src.dataloaders.base import BatchDataset

    return _params(BatchDataset.train_dataloader, skip={"self", "rank", "world_size"})


def _wandb_params(node):
    from lightning.pytorch.loggers import WandbLogger

    params = dict(inspect.signature(WandbLogger).parameters)
    try:
        import wandb
    except ImportError:  # wandb.* goes to wandb.init, which cannot be inspected without wandb
        return None
    params.update(inspect.signature(wandb.init).parameters)
    return {k: p for k, p in params.items() if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)}


def _model_params(node):
    from src.models.sequence.backbone import SequenceModel

    # src/module.py passes the encoder, decoder and sizes from the dataset and the top-level config
    return _params(SequenceModel, skip={"encoder", "decoder", "d_input", "n_tokens", "d_output", "l_output",
                                        "max_length"})


# --- the checks -----------------------------------------------------------------------------


def _check_keys(prefix, node, params, owner=None):
    if params is None:  # the consumer takes any keyword
        return
    dotted = lambda key: f"{prefix}.{key}" if prefix else key  # noqa: E731
    known = sorted(k for k, p in params.items() if k != "_name_" and p != "set by the run")
    unknown = [key for key in node if key not in params]
    if len(unknown) == 1:
        close = difflib.get_close_matches(unknown[0], known, n=3, cutoff=0.6)
        where = f"{prefix} ({owner})" if owner and prefix else (prefix or "the config")
        hint = (f"did you mean {', '.join(map(dotted, close))}?" if close else
                f"the keys of {where} are: {', '.join(known)}" if known else f"{where} takes no keys")
        raise ConfigError(f"unknown key {dotted(unknown[0])}: nothing reads it; {hint}")
    if unknown:  # e.g. another layer's options
        where = f"{prefix} ({owner})" if owner and prefix else (prefix or "the config")
        raise ConfigError(f"unknown keys {', '.join(map(dotted, unknown))}: nothing reads them; the keys of {where} "
                          f"are: {', '.join(known)}")
    for key, value in node.items():
        if params[key] == "set by the run":
            raise ConfigError(f"{dotted(key)} is set by the run itself (src/training.py); remove it")
        if value is not None:  # null: the consumer's default (e.g. wandb.save_dir: the run directory)
            _check_type(dotted(key), value, params[key])


def _check_type(key, value, param):
    annotation = param.annotation
    if annotation is not inspect.Parameter.empty:
        ok = _fits(value, annotation)
        wanted = _describe(annotation)
    elif param.default is inspect.Parameter.empty or param.default is None:
        return
    else:
        ok = _fits(value, type(param.default))
        wanted = f"{_describe(type(param.default))} (like the default {param.default!r})"
    if not ok:
        raise ConfigError(f"{key}={value!r} has the wrong type: use {wanted}")


def _fits(value, annotation):
    """Whether `value` (a plain Python value from the config) fits the type `annotation`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is typing.Any or isinstance(annotation, (str, typing.ForwardRef, typing.TypeVar)):
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, a) for a in args)
    if origin is typing.Literal:
        return value in args
    if annotation is type(None):
        return value is None
    if origin is not None:  # list[int], dict[str, int], Iterable[...], Callable: the container only
        annotation = origin
    if not isinstance(annotation, type):
        return True
    if annotation is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if annotation is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if annotation in (list, tuple, collections.abc.Sequence):
        return isinstance(value, (list, tuple))
    if annotation in (str, bool, dict):
        return isinstance(value, annotation)
    if value is None:
        return False
    # Another class (an Accelerator, a Strategy): a config value is never one, but may be
    # something the class is built from; leave those to the consumer.
    return not isinstance(value, (str, int, float, bool, list, dict))


def _describe(annotation):
    names = {int: "an integer", float: "a number", str: "a string", bool: "true or false",
             list: "a list", tuple: "a list", dict: "a mapping", type(None): "null"}
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(annotation))
    if typing.get_origin(annotation) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(annotation))
    annotation = typing.get_origin(annotation) or annotation
    return names.get(annotation, getattr(annotation, "__name__", str(annotation)))


POSITIVE = ["loader.batch_size", "loader.batch_size_eval", "model.d_model", "model.n_layers", "model.layer.d_state",
            "dataset.L", "dataset.samples_per_epoch", "trainer.accumulate_grad_batches"]


def _select(config, key):
    for part in key.split("."):
        config = config.get(part) if isinstance(config, dict) else None
    return config


def _check_values(config):
    for key in POSITIVE:
        value = _select(config, key)
        if value is not None and not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ConfigError(f"{key}={value!r} must be an integer >= 1")
    epochs, steps = _select(config, "trainer.max_epochs"), _select(config, "trainer.max_steps")
    if epochs is not None and not (epochs >= 1 or epochs == -1):
        raise ConfigError(f"trainer.max_epochs={epochs} must be at least 1 (or -1: until trainer.max_steps)")
    if epochs == -1 and (steps is None or steps < 1):
        raise ConfigError("trainer.max_epochs=-1 trains forever unless trainer.max_steps is set (>= 1)")
    if steps is not None and steps != -1 and steps < 1:
        raise ConfigError(f"trainer.max_steps={steps} must be at least 1 (or -1: no limit)")
    workers = _select(config, "loader.num_workers")
    if workers is not None and workers < 0:
        raise ConfigError(f"loader.num_workers={workers} must be at least 0")
    for key in ("optimizer.lr", "optimizer.weight_decay", "model.layer.lr", "model.layer.wd"):
        value = _select(config, key)
        values = value.items() if isinstance(value, dict) else [(None, value)]
        for name, v in values:
            if isinstance(v, (int, float)) and not isinstance(v, bool) and not v >= 0:
                raise ConfigError(f"{key}{'.' + name if name else ''}={v!r} must be >= 0")


def _check_train(config):
    train = config["train"]
    if not (isinstance(train.get("seed"), int) and not isinstance(train["seed"], bool)):
        raise ConfigError(f"train.seed={train.get('seed')!r} has the wrong type: use an integer")
    for key in ("test", "eval_only"):
        if not isinstance(train.get(key, False), bool):
            raise ConfigError(f"train.{key}={train[key]!r} has the wrong type: use true or false")
    if train.get("resume") not in (None, False, "auto"):
        raise ConfigError(f"train.resume={train['resume']!r} is not valid; choose one of: auto, false")
    if train.get("eval_only"):
        if train.get("ckpt") is None:
            raise ConfigError("train.eval_only=true needs train.ckpt=PATH, the checkpoint to evaluate")
        if train.get("resume"):
            raise ConfigError("train.eval_only=true evaluates train.ckpt; it cannot also train.resume")
