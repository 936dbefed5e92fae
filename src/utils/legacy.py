"""Translation of the legacy keys that the DLR / S4 commands and older configs use.

Each key that is set is moved to its Lightning 2.x (or this repo's) place with a one-line
notice; none is dropped silently. Runs on the composed config before anything is built.

Layers (model.layer, and each entry of model.layers):
    kernel_type=K (the DLR repo: `model=dlr model.layer.kernel_type=attn`)
        -> the layer K (configs/model/layer/K.yaml), keeping the options K declares; the
           notice lists the ones K does not take. kernel_type equal to the layer's own name is
           dropped.
    _name_=ssd                        -> _name_=dsf_ssd (its name before the rename)
    model=lstm|gru|rnn (layer rnn)    -> cell=...
Trainer:
    trainer.gpus=N                    -> trainer.devices=N (accelerator gpu unless set)
    trainer.resume_from_checkpoint=P  -> train.ckpt=P
    trainer.find_unused_parameters=B  -> trainer.strategy=ddp_find_unused_parameters_{b}
                                         (only when more than one device is used)
    trainer.save_val_outputs=B        -> train.save_val_outputs=B
    trainer.weights_summary=top|full|null -> callbacks.rich_model_summary.max_depth 1 | -1 | off
    trainer.progress_bar_refresh_rate=N   -> callbacks.rich_progress_bar.refresh_rate=N (0: off)
    trainer.track_grad_norm=p         -> callbacks.grad_norm.norm_type=p (-1: off)
"""

from pathlib import Path

from omegaconf import OmegaConf, open_dict

from src.utils.errors import ConfigError, check_choice
from src.utils.notice import notice

LAYER_CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model" / "layer"
RENAMED_LAYERS = {"ssd": "dsf_ssd"}
KERNEL_TYPES = ["attn", "dlr", "dss", "s4", "s4d", "sgconv"]  # the DLR repo's; each is a layer here

LEGACY_KEYS = (
    "gpus",
    "resume_from_checkpoint",
    "find_unused_parameters",
    "save_val_outputs",
    "weights_summary",
    "progress_bar_refresh_rate",
    "track_grad_norm",
)


def translate(config):
    """Rewrite the legacy keys of `config` in place, with a notice for each move."""
    with open_dict(config):
        model = config.get("model") or {}
        if model.get("layer") is not None:
            model.layer = _translate_layer(model.layer, "model.layer")
        for i, entry in enumerate(model.get("layers") or []):
            model.layers[i] = _translate_layer(entry, f"model.layers[{i}]")
        trainer = config.trainer
        for key in LEGACY_KEYS:
            value = trainer.pop(key, None)
            if value is None:
                continue
            moved = _translate_one(config, key, value)
            notice(f"notice: trainer.{key}={value} is a Lightning 1.x key; using {moved}")


def _translate_layer(layer, where):
    """A layer config with its legacy keys translated (see the module docstring)."""
    name = layer.get("_name_")
    if name in RENAMED_LAYERS:
        notice(f"notice: {where}._name_={name} is now {RENAMED_LAYERS[name]}; using {RENAMED_LAYERS[name]}")
        layer._name_ = name = RENAMED_LAYERS[name]
    if name == "rnn" and "model" in layer:
        notice(f"notice: {where}.model={layer.model} is now {where}.cell; using cell={layer.model}")
        layer.cell = layer.pop("model")
    kernel = layer.pop("kernel_type", None)
    if kernel is None or kernel == name:
        return layer
    check_choice(f"{where}.kernel_type", kernel, KERNEL_TYPES)
    new = OmegaConf.load(LAYER_CONFIGS / f"{kernel}.yaml")
    kept = {k: v for k, v in layer.items_ex(resolve=False) if k in new and k != "_name_"}
    unused = sorted(k for k in layer if k not in new)
    notice(f"notice: {where}.kernel_type={kernel} is a DLR-repo key; building layer '{kernel}'"
           + (f"; not used: {', '.join(unused)}" if unused else ""))
    return OmegaConf.merge(new, kept)


def _translate_one(config, key, value):
    trainer, callbacks = config.trainer, config.callbacks
    if key == "gpus":
        devices = value if isinstance(value, int) else len(str(value).split(","))
        trainer.devices = devices
        if devices == 0:
            trainer.accelerator, trainer.devices = "cpu", 1
        elif trainer.accelerator == "auto":
            trainer.accelerator = "gpu"
        return f"trainer.accelerator={trainer.accelerator} trainer.devices={trainer.devices}"
    if key == "resume_from_checkpoint":
        config.train.ckpt = value
        return f"train.ckpt={value}"
    if key == "find_unused_parameters":
        if not isinstance(value, bool):
            raise ConfigError(f"trainer.find_unused_parameters={value!r} must be true or false")
        if _n_devices(trainer) <= 1:
            return "nothing (a single device needs no DDP strategy)"
        if trainer.strategy not in ("auto", "ddp"):
            raise ConfigError(
                f"trainer.find_unused_parameters={value} conflicts with trainer.strategy={trainer.strategy}; "
                "set only one of them"
            )
        trainer.strategy = f"ddp_find_unused_parameters_{str(value).lower()}"
        return f"trainer.strategy={trainer.strategy}"
    if key == "save_val_outputs":
        config.train.save_val_outputs = bool(value)
        return f"train.save_val_outputs={bool(value)}"
    if key == "weights_summary":
        check_choice("trainer.weights_summary", value, ["top", "full"])
        callbacks.rich_model_summary = {"max_depth": 1 if value == "top" else -1}
        return f"callbacks.rich_model_summary.max_depth={callbacks.rich_model_summary.max_depth}"
    if key == "progress_bar_refresh_rate":
        if value == 0:
            trainer.enable_progress_bar = False
            return "trainer.enable_progress_bar=false"
        callbacks.rich_progress_bar = {"refresh_rate": int(value)}
        return f"callbacks.rich_progress_bar.refresh_rate={int(value)}"
    if key == "track_grad_norm":
        if float(value) == -1:
            callbacks.pop("grad_norm", None)
            return "no gradient-norm logging"
        callbacks.grad_norm = {"norm_type": float(value)}
        return f"callbacks.grad_norm.norm_type={float(value)}"
    raise AssertionError(key)


def _n_devices(trainer):
    devices = trainer.devices
    if isinstance(devices, int):
        return devices * trainer.num_nodes
    if OmegaConf.is_list(devices) or isinstance(devices, list):
        return len(devices) * trainer.num_nodes
    return 2  # "auto" or "-1": possibly several
