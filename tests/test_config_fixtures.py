"""Every command of the DLR README (and `python -m train`) resolves to the configuration it had
before model configs became deltas of configs/model/base.yaml (tests/fixtures/dlr_readme_configs.json,
recorded from commit 8de32b6 by composing each command).

Intended differences (also in the README):
  - new backbone keys, each at a value that builds the same model as before (NEUTRAL);
  - model.bidirectional, which the layer's own `bidirectional` now follows: equal to it;
  - model.final_norm: null, a final norm exactly where there was one before (prenorm, norm=layer);
  - model.pos_max_len: null now means "the dataset's longest input" instead of `dataset.L`; it
    sizes learned positions and position augmentation only, which these commands do not use;
  - the reliability work: callbacks.last_checkpoint is this repository's own callback (last.ckpt
    at every epoch end as before, and now also every 10 minutes), so Lightning's save_last /
    save_top_k keys are gone; train.resume and train.eval_only are new, off; train.threads is new, auto;
  - train.eval_sets_every_n_epochs: new, 1 (every eval set at every validation, as before);
  - the results block (what `python -m src.results` shows of the run by default): new;
  - one registry name per layer class: `model.layer.kernel_type` is gone (the layer's name says
    it), and so are the dlr, dss and sgconv configs' `chunk_size` and `attn_ff`, which only
    `kernel_type=attn` read. A command with `model.layer.kernel_type=attn` builds the layer `attn`
    (src/utils/legacy.py) from the options attn's config declares, as before, so its
    `model.layer` is now attn's config: the old config's values of attn's keys, `n_heads` 4.
"""

import json

import pytest
from omegaconf import OmegaConf

from conftest import ROOT, compose_config, command_overrides

FIXTURES = json.loads((ROOT / "tests" / "fixtures" / "dlr_readme_configs.json").read_text())
NEUTRAL = {"model.state_mixer": "none", "model.mlp_expand": 4, "model.mlp_activation": "gelu",
           "model.embedding_dropout": 0.0, "model.tie_embeddings": False, "model.init": "default",
           "dataset.num_train_examples": None, "dataset.eval_sets": None, "model.layers": None,
           "train.resume": False, "train.eval_only": False,
           "results.best_over": [], "results.by": [], "results.plots": [],
           "train.eval_passes": 1, "train.threads": "auto", "train.eval_sets_every_n_epochs": 1}  # (sequence1d only; and dataset.eval_sets: null)


def flat(tree, prefix=""):
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_every_readme_command_is_recorded():
    assert len(FIXTURES) == 25 and "python -m train" in FIXTURES


def as_now(old):
    """The recorded config with the layer keys as one name per class resolves them."""
    kernel = old.pop("model.layer.kernel_type")
    if kernel == "attn":
        attn = OmegaConf.load(ROOT / "configs" / "model" / "layer" / "attn.yaml")
        old = {k: v for k, v in old.items() if not k.startswith("model.layer.") or k.split(".", 2)[2] in attn}
        return {**old, "model.layer._name_": "attn", "model.layer.n_heads": attn.n_heads}
    assert kernel == old["model.layer._name_"]
    return {k: v for k, v in old.items() if k not in ("model.layer.chunk_size", "model.layer.attn_ff")}


@pytest.mark.parametrize("command", sorted(FIXTURES), ids=range(len(FIXTURES)))
def test_command_resolves_as_before(command):
    old = as_now(flat(FIXTURES[command]))
    new = flat(OmegaConf.to_container(compose_config(command_overrides(command)), resolve=True))
    assert old["model.pos_emb"] == "none" and old["model.pos_aug"] == "none"
    old.pop("model.pos_max_len")
    assert new.pop("model.pos_max_len") is None
    assert new.pop("model.bidirectional") == old.get("model.layer.bidirectional", False)
    assert new.pop("model.final_norm") is None  # null: a final norm after prenorm blocks with norm=layer, as before
    assert (old.pop("callbacks.last_checkpoint.save_last"), old.pop("callbacks.last_checkpoint.save_top_k")) == (True, 0)
    assert new.pop("callbacks.last_checkpoint.every_n_minutes") == 10
    assert new.pop("results.metric") == new["train.monitor"]
    for key, value in NEUTRAL.items():
        assert new.pop(key, value) == value, key
    assert new == old
