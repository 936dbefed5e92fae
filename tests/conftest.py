"""Shared test helpers: compose a config like `python -m train` does and train in-process."""

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("WANDB_MODE", "offline")

# Appended to every command in tests: tiny sizes, CPU, quiet.
CPU_OVERRIDES = [
    "dataset.L=64", "model.layer.d_state=64", "dataset.samples_per_epoch=64", "loader.batch_size=4",
    "trainer.max_epochs=1", "trainer.accelerator=cpu", "loader.num_workers=0",
    "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null",
]


# The experiments of one task family each (`experiment=counting dataset=count_same`), with their
# default task; `experiment=<family>-<task>` is an alias of each.
FAMILIES = {"counting": "count_mod", "chomsky": "even_pairs", "modern-rnns": "parity"}
# Two optimizer steps of a tiny model on an atomic task (experiment dss-sequence1d).
TWO_STEPS = [
    "wandb=null", "experiment=dss-sequence1d", "dataset.L=64", "dataset.samples_per_epoch=8", "dataset.val_split=0.5",
    "loader.batch_size=4", "trainer.max_epochs=1", "trainer.accelerator=cpu", "loader.num_workers=0",
    "trainer.enable_progress_bar=false", "callbacks.rich_model_summary=null", "model.d_model=16", "model.n_layers=2",
]
# Data sizes for a 2-step fit of each experiment (family prefix -> overrides); the others take
# SYNTHETIC. The files are conftest.write_listops_and_pathfinder's and write_lra's.
LISTOPS = ["dataset.l_min=50", "dataset.l_max=256"]
PATHFINDER = ["dataset.resolution=32"]
TEXT = ["dataset.l_max=300"]
MQAR = ["dataset.vocab_size=64", "dataset.L=32", "dataset.num_kv_pairs=2", "dataset.num_train_examples=16",
        "dataset.num_eval_examples=8", "loader.batch_size=4"]
BASED = [*MQAR, "dataset.segments=[{L:16,num_kv_pairs:2,num_examples:8},{L:32,num_kv_pairs:4,num_examples:8}]",
         "dataset.eval_sets=null", "dataset.eval_sets={L64_N8:{L:64,num_kv_pairs:8,num_eval_examples:4}}",
         "dataset.num_eval_examples=4"]
MAD = ["dataset.num_train_examples=16", "dataset.num_eval_examples=8", "loader.batch_size=4"]  # each task's own lengths
SYNTHETIC = ["dataset.L=32", "dataset.samples_per_epoch=8", "dataset.val_split=0.5"]
TOKENS = ["dataset.samples_per_epoch=8", "dataset.val_split=0.5"]  # the token tasks keep their own lengths
ICL = ["dataset.samples_per_epoch=8", "dataset.num_eval_examples=4"]  # the eval sets at their lengths (up to 1024)
EXPERIMENT_SIZES = {
    "dss-listops-subtrees": LISTOPS, "s4-lra-listops": LISTOPS, "dss-pathfinder": PATHFINDER,
    "s4-lra-pathfinder": PATHFINDER, "s4-lra-pathx": PATHFINDER, "s4-lra-imdb": TEXT, "s4-lra-aan": TEXT,
    "s4-lra-cifar": [], "zoology-mqar": MQAR, "dsf-mqar": MQAR, "based-mqar": BASED, "counting": TOKENS,
    "modern-rnns": TOKENS, "chomsky": [*TOKENS, "dataset.eval_sets.ood.L=100"],  # 41..100: the quick variant
    "illusion-of-state": TOKENS, "state-tracking": [*TOKENS, "dataset.eval_sets.ood.L=64"],
    "icl-synthetics": ICL, "selective-copying": ICL,
    "icl-dfa": ["dataset.num_train_examples=8", "dataset.num_eval_examples=4", "dataset.max_len_per_example=6",
                "dataset.min_num_in_context_examples=2", "dataset.max_num_in_context_examples=4"],
    "mad": MAD,
}


def experiment_sizes(experiment):
    """EXPERIMENT_SIZES of the longest family prefix of `experiment` (e.g. counting-count_mod: counting)."""
    family = max((f for f in EXPERIMENT_SIZES if experiment == f or experiment.startswith(f + "-")), key=len,
                 default=None)
    sizes = EXPERIMENT_SIZES[family] if family else SYNTHETIC
    if family == "chomsky" and "modular" in experiment:  # its eval lengths step by 3 from 41
        sizes = [*TOKENS, "dataset.eval_sets.ood.L=99"]
    return sizes


def compose_config(overrides):
    """The config `python -m train *overrides` would run, after legacy translation (an unknown key
    given without `+` is passed on with it, as train.py does)."""
    from hydra.errors import ConfigCompositionException

    from src.config import from_checkpoint, prepare, starts_from_checkpoint
    from train import plus_unknown_keys

    try:
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            config = compose("config", overrides=list(overrides))
    except ConfigCompositionException:
        overrides = plus_unknown_keys(overrides)
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            config = compose("config", overrides=overrides)
    if starts_from_checkpoint(config):  # the checkpoint's config, what the overrides change on top
        with initialize_config_dir(config_dir=str(ROOT / "configs"), version_base="1.3"):
            config = from_checkpoint(config, compose("config"), overrides)
    return prepare(config)


def train_in_process(overrides, run_dir):
    """Train as `python -m train` would, into `run_dir`; returns the final metrics."""
    from src.training import fit

    return fit(compose_config(overrides), str(run_dir))


def train_on_data(overrides, tmp_path, monkeypatch, data_path):
    """Train in-process into tmp_path/run with DATA_PATH=data_path; the final metrics (no NaN)."""
    monkeypatch.setenv("DATA_PATH", str(data_path))
    metrics = train_in_process(overrides, tmp_path / "run")
    assert all(v == v for v in metrics.values())  # no NaN
    return metrics


def command_overrides(command):
    """The overrides of a README command line `... python -m train a=b c=d`."""
    words = shlex.split(command)
    return words[words.index("train") + 1 :]


# --- tiny layers: one table for every test -----------------------------------------------------

LAYER_CONFIGS = sorted(p.stem for p in (ROOT / "configs" / "model" / "layer").glob("*.yaml"))
D_TINY = 16
# Options over configs/model/layer/<stem>.yaml that make each layer tiny at d_model D_TINY (the
# defaults are relative to d_model where the originals allow; these are the absolute ones).
TINY = {
    "dlr": dict(d_state=12), "dss": dict(d_state=6), "s4": dict(d_state=8), "s4d": dict(d_state=8),
    "sgconv": dict(d_state=4), "h3": dict(d_state=4, head_dim=2), "mamba": dict(d_state=5),
    "mamba2": dict(d_state=6, headdim=4, chunk_size=4), "mamba3": dict(d_state=6, headdim=4, chunk_size=4),
    "s6": dict(d_state=5), "dsf_ssd": dict(d_state=5),
    "qlstm": dict(d_state=12), "lru": dict(d_state=7), "retnet": dict(n_heads=2), "rwkv7": dict(head_dim=8),
    "based": dict(n_heads=4, feature_dim=4), "gated_deltanet": dict(n_heads=2), "attn": dict(n_heads=2),
    "gated_deltaproduct": dict(n_heads=2), "kda": dict(n_heads=2), "mlstm": dict(proj_multiple_of=8, n_heads=2),
    "slstm": dict(n_heads=2), "mha": dict(n_heads=2), "transformer": dict(n_heads=2), "linear_attn": dict(n_heads=2),
    "norm_attn": dict(n_heads=2), "lstm": dict(d_hidden=4), "gru": dict(d_hidden=4), "rnn": dict(d_hidden=4),
    "ttt_linear": dict(mini_batch_size=4), "ttt_mlp": dict(mini_batch_size=4, mlp_expand=2),
    "titans": dict(mini_batch_size=4),
    "stack_rnn": dict(d_hidden=6, stack_size=5, stack_cell_size=3),
    "tape_rnn": dict(d_hidden=6, memory_size=5, memory_cell_size=3, mlp_layers_size=[4, 3]),
    "mesanet": dict(n_heads=2), "log_linear_mamba2": dict(d_state=6, headdim=4), "log_linear_gdn": dict(n_heads=2),
    "fox": dict(n_heads=2), "path_attn": dict(n_heads=2, w_rank=4),
}
# Option variants whose contract may differ from the default's (another recurrence, non-causal,
# truncated, another discretisation): name -> (layer config stem, options over TINY[stem]).
VARIANTS = {
    **{f"dlr-{v or 'default'}-{r}": ("dlr", dict(version=v, kernel_to_real=r))
       for v in ["", "Lambda_imag", "Lambda_imag_W_real", "Lambda_real_W_real"]
       for r in ["real", "imag", "sum", "prod", "real-prod"]
       if v != "Lambda_real_W_real" or r in ("real", "sum")},  # a real kernel: the others are refused
    **{f"dss-{v}": ("dss", dict(version=v))
       for v in ["softmax", "exp-re-im", "exp-no-scale", "exp-no-scale-real", "clip", "clip-no-scale"]},
    **{f"dss-{i}": ("dss", dict(Lambda_init=i)) for i in ["lin", "randn"]},
    "dss-sep-dt": ("dss", dict(sep_dt_re_im=True)),
    "dlr-bidirectional-glu": ("dlr", dict(bidirectional=True, postact="glu", channels=2)),
    "dlr-truncated": ("dlr", dict(max_kernel_length=3)),
    "s4-legt": ("s4", dict(measure="legt", rank=2)),
    "s4-fourier": ("s4", dict(measure="fourier")),
    "s4-rank3": ("s4", dict(d_state=6, rank=3)),
    **{f"s4d-{i}-{d}": ("s4d", dict(init=i, disc=d))
       for i in ["legs", "lin", "inv"] for d in ["zoh", "bilinear", "dss"]},
    "s4-bidirectional": ("s4", dict(bidirectional=True, channels=2)),
    "s4d-bidirectional-glu": ("s4d", dict(bidirectional=True, postact="glu")),
    "attn-bidirectional": ("attn", dict(bidirectional=True)),
    "attn-local": ("attn", dict(chunk_size=4)),
    "attn-local-bidirectional": ("attn", dict(chunk_size=4, bidirectional=True)),
    "attn-ff": ("attn", dict(attn_ff=2)),
    "mha-dqk": ("mha", dict(d_qk=4)),
    "mha-rope": ("mha", dict(d_qk=12, rope=True)),
    "mha-window": ("mha", dict(window=3)),
    "mha-window-rope": ("mha", dict(window=4, rope=True)),
    "mha-bidirectional": ("mha", dict(causal=False)),
    "mha-bidirectional-window": ("mha", dict(causal=False, window=2)),
    "linear_attn-identity": ("linear_attn", dict(feature_map="identity", normalizer="none")),
    "linear_attn-bidirectional": ("linear_attn", dict(d_qk=6, causal=False)),
    "norm_attn-dqk": ("norm_attn", dict(n_heads=4, d_qk=4)),
    "norm_attn-softplus": ("norm_attn", dict(normalizer="softplus")),
    "transformer-window-rope": ("transformer", dict(window=3, rope=True, expand=2)),
    "transformer-bidirectional": ("transformer", dict(causal=False)),
    "mamba-conv2-rank3": ("mamba", dict(d_state=3, d_conv=2, dt_rank=3, dt_init="constant")),
    "mamba2-groups": ("mamba2", dict(d_state=3, headdim=2, ngroups=2, chunk_size=8)),
    "mamba2-options": ("mamba2", dict(d_state=4, D_has_hdim=True, rmsnorm=False, dt_limit=[0.01, 0.05])),
    "mamba2-norm-first": ("mamba2", dict(d_state=4, ngroups=2, chunk_size=8, norm_before_gate=True)),
    # signed transitions, with steps long enough that many are negative (dt A down to -5 and -8)
    "mamba-neg-eigval": ("mamba", dict(allow_neg_eigval=True, dt_min=0.2, dt_max=1.0)),
    "mamba2-neg-eigval": ("mamba2", dict(allow_neg_eigval=True, ngroups=2, dt_min=0.05, dt_max=0.5)),
    "mamba3-groups-norm-rope1": ("mamba3", dict(d_state=4, ngroups=2, rope_fraction=1.0, is_outproj_norm=True)),
    "qlstm-reversed": ("qlstm", dict(d_state=None, expand=1, forget_gate="reversed_sigmoid", d_conv=3)),
    "lru-ring": ("lru", dict(r_min=0.4, r_max=0.99, max_phase=3.14)),
    "deltanet-neg-gate-noconv": ("deltanet", dict(allow_neg_eigval=True, use_gate=True, use_short_conv=False)),
    "deltanet-relu": ("deltanet", dict(qk_activation="relu", expand_v=2.0, n_heads=2)),
    "gated_deltanet-sigmoid": ("gated_deltanet", dict(n_heads=1, head_dim=4, expand_v=1.0,
                                                      output_gate_activation="sigmoid", allow_neg_eigval=True)),
    "gated_deltaproduct-3-nogate-noconv": ("gated_deltaproduct", dict(num_householder=3, use_forget_gate=False,
                                                                       allow_neg_eigval=False, use_short_conv=False)),
    "kda-lower-bound-neg": ("kda", dict(lower_bound=-5.0, allow_neg_eigval=True, expand_v=2.0)),
    "gla-conv-nogate": ("gla", dict(use_short_conv=True, use_output_gate=False, clamp_min=-0.05)),
    # gate_logit_normalizer 1: a = 2 sigmoid(x) - 1 takes both signs (at 16, a < 0 needs logits x < -11)
    "gla-neg-eigval": ("gla", dict(allow_neg_eigval=True, gate_logit_normalizer=1)),
    "gla-neg-eigval-torch": ("gla", dict(allow_neg_eigval=True, gate_logit_normalizer=1, backend="torch")),  # chunked
    "hgrn2-neg-eigval": ("hgrn2", dict(allow_neg_eigval=True)),
    "hgrn2-ratio": ("hgrn2", dict(expand_ratio=4)),
    "hgrn2-conv": ("hgrn2", dict(n_heads=2, use_short_conv=True)),
    "rwkv6-time-only": ("rwkv6", dict(channel_mixing=False, n_heads=2)),
    "rwkv7-time-only": ("rwkv7", dict(head_dim=4, channel_mixing=False)),
    "base_conv-long-implicit": ("base_conv", dict(kernel_size=-1)),
    "base_conv-long-explicit": ("base_conv", dict(kernel_size=-1, implicit_long_conv=False)),
    "rwkv4-channel-mix": ("rwkv4", dict(channel_mix=True)),
    "lstm-glu": ("lstm", dict(postact="glu")),
    "tape_rnn-jump-linear": ("tape_rnn", dict(jump=7, mlp_layers_size=[])),  # jumps past the tape's end; f one Linear
    "stack_rnn-torch": ("stack_rnn", dict(backend="torch")),
    "mesanet-exact-gate": ("mesanet", dict(cg_steps=None, use_output_gate=True)),
    "log_linear_mamba2-groups": ("log_linear_mamba2", dict(ngroups=2, D_has_hdim=True)),
    "log_linear_gdn-no-conv-neg": ("log_linear_gdn", dict(use_short_conv=False, allow_neg_eigval=True)),
    "fox-pro": ("fox", dict(qkv_bias=True, qk_norm=True, use_output_gate=True)),
    "path_attn-fox-full-w": ("path_attn", dict(use_forget_gate=True, use_qk_norm=True, use_low_rank_w=False)),
    "path_attn-noconv": ("path_attn", dict(use_w_shortconv=False)),
}
CASES = {**{stem: (stem, {}) for stem in LAYER_CONFIGS}, **VARIANTS}


def layer_options(stem, **options):
    """configs/model/layer/<stem>.yaml resolved (model.bidirectional false, no dropout), with
    TINY[stem] and `options` over it: a `model.layer` config."""
    from omegaconf import OmegaConf

    import src.config  # noqa: F401 - registers the configs' resolvers (${not:...})

    node = OmegaConf.create({"bidirectional": False, "dropout": 0.0,
                             "layer": OmegaConf.load(ROOT / "configs" / "model" / "layer" / f"{stem}.yaml")})
    return {**OmegaConf.to_container(node, resolve=True)["layer"], **TINY.get(stem, {}), **options}


def tiny_layer(case, d_model=D_TINY, max_length=128, dtype=torch.float32, seed=0, **options):
    """The layer of CASES[case] (a layer config stem, or a variant) at d_model, built as the
    backbone builds it (block 1 of 2), in `dtype`."""
    from src.models.sequence.backbone import build_layer

    stem, variant = CASES[case]
    torch.manual_seed(seed)
    config = layer_options(stem, **variant, **options)
    return build_layer(config, d_model, max_length=max_length, layer_idx=1, n_layers=2).to(dtype)


def tiny(model, d_model=D_TINY, n_layers=2):
    """Overrides that shrink `python -m train model=<model>` to a tiny model: the backbone's width
    and depth, and TINY's options for the model's layer config (configs/model/<model>.yaml)."""
    from omegaconf import OmegaConf

    config = OmegaConf.load(ROOT / "configs" / "model" / f"{model}.yaml")
    defaults = [d for d in config.get("defaults", []) if not isinstance(d, str)]
    layer = next((str(d["layer"]) for d in defaults if "layer" in d), model)
    return [f"model.d_model={d_model}", f"model.n_layers={n_layers}",
            *(f"model.layer.{k}={v}" for k, v in TINY.get(layer, {}).items())]


def run_steps(module, x):
    """`module.step` over x (B, L, ...) from its default state: the outputs stacked on dim 1, and
    the last state (a layer or a whole SequenceModel)."""
    state, outputs = module.default_state(x.shape[0]), []
    for t in range(x.shape[1]):
        y_t, state = module.step(x[:, t], state)
        outputs.append(y_t)
    return torch.stack(outputs, dim=1), state


def floats(state):
    """Floats per sequence in a (nested) state: a complex number counts 2, an integer (a position)
    none."""
    if isinstance(state, torch.Tensor):
        return state[0].numel() * (2 if state.is_complex() else 1) if state.is_floating_point() or state.is_complex() else 0
    if isinstance(state, dict):
        return sum(floats(v) for v in state.values())
    if isinstance(state, (list, tuple)):
        return sum(floats(v) for v in state)
    return 0


def doc_section(page, title):
    """The section `## <title>` of the manual page `page` (README.md, docs/experiments.md, ...),
    up to the next `## ` heading."""
    text = (ROOT / page).read_text()
    start = text.index(f"\n## {title}\n") + 1
    end = text.find("\n## ", start)
    return text[start : end if end >= 0 else len(text)]


def readme_commands(page, title):
    """The `CUDA_VISIBLE_DEVICES=... python -m train ...` lines of the section `## <title>` of the
    manual page `page` (e.g. `readme_commands("docs/experiments.md", "DLR paper experiments: atomic tasks")`)."""
    section = doc_section(page, title)
    return [line for line in section.splitlines() if re.match(r"CUDA_VISIBLE_DEVICES=\S+ python -m train", line)]


def run_cli(args, cwd=ROOT, timeout=600, env=None):
    """Run `python -m train *args` in a subprocess; returns the CompletedProcess."""
    env = {**os.environ, "WANDB_MODE": "offline", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "train", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture
def run_dir(tmp_path):
    return tmp_path / "run"


def need_c_loop(op="linear_scan"):
    """Skips the test, saying why, where the C loop of the op src/ops/<op> cannot run for want of a
    C compiler. Where there is one, a loop that does not compile or whose smoke call disagrees
    with the torch path fails the test instead: a broken loop must not pass as a skip."""
    import importlib
    import os
    import shutil

    import torch

    why = importlib.import_module(f"src.ops.{op}").DISPATCH.why_unusable("cpu", torch.device("cpu"))
    if why:
        cc = os.environ.get("CC", "cc")
        (pytest.fail if shutil.which(cc) else pytest.skip)(f"the {op} C loop is not usable here ({cc}): {why}")


def write_listops_and_pathfinder(root):
    """Tiny generated data under `root` (a DATA_PATH): ListOpsSubTrees and LRA ListOps trees of
    50-200 tokens, and 40 Pathfinder pictures at 32x32."""
    from src.dataloaders.prepare.listops.__main__ import main as listops
    from src.dataloaders.prepare.pathfinder.__main__ import main as pathfinder

    sizes = ["--num_train_samples", "24", "--num_valid_samples", "8", "--num_test_samples", "8", "--min_length", "50",
             "--max_length", "200", "--max_depth", "8", "--max_args", "5"]
    listops(["--task", "subtrees", *sizes, "--no_paranthesis", "--unique_templates",
             "--output_dir", str(root / "listops_subtrees")])
    listops(["--task", "basic", *sizes, "--output_dir", str(root / "listops")])
    pathfinder(["--resolution", "32", "--num_images", "40", "--seed", "1",
                "--output_dir", str(root / "pathfinder_segmentation" / "pathfinder32_segmentation")])
    return root


def write_lra(root):
    """Tiny files in the real formats of CIFAR-10, IMDB and AAN under `root` (a DATA_PATH)."""
    import numpy as np

    from lra_files import random_text, write_aan, write_cifar, write_imdb

    rng = np.random.default_rng(0)
    write_cifar(root)
    write_imdb(root, {(s, c): [random_text(rng, rng.integers(20, 400)) for _ in range(6)]
                      for s in ("train", "test") for c in ("neg", "pos")})
    write_aan(root, {s: [(i % 2, random_text(rng, rng.integers(1, 400)), random_text(rng, rng.integers(1, 400)))
                         for i in range(12)] for s in ("train", "eval", "test")})
    return root


def fla_naive(relative, edits=()):
    """The module fla/ops/<relative> (a naive.py reference) loaded by its path from the installed
    pure-Python fla-core wheel (importing fla.ops would pull Triton); skips with the reason if absent.
    edits: (old, new) replacements made in its source first (each old must be there), e.g. its
    float32 casts made float64."""
    import importlib.util
    import types

    spec = importlib.util.find_spec("fla")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("fla-core is not installed (pip install fla-core): no oracle from fla's naive loops")
    path = Path(spec.submodule_search_locations[0]) / "ops" / relative
    if not path.exists():
        pytest.skip(f"this fla-core has no {path}")
    name = f"fla_naive_{relative.replace('/', '_')[:-3]}"
    if edits:
        text = path.read_text()
        for old, new in edits:
            assert old in text, f"fla's {relative} no longer has {old!r}: look at what changed"
            text = text.replace(old, new)
        module = types.ModuleType(name)
        exec(compile(text, str(path), "exec"), module.__dict__)
        return module
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


XLSTM_INSTALL = "pip install --no-deps xlstm"


def xlstm_backends():
    """xlstm's mLSTM backends (xlstm/blocks/mlstm/backends.py, pure torch: the parallel and the
    recurrent stabilised forms), loaded by its path from the installed wheel without importing the
    package; skips with the reason if absent."""
    import importlib.util

    spec = importlib.util.find_spec("xlstm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"xlstm is not installed ({XLSTM_INSTALL}): no oracle from xlstm's mLSTM backends")
    path = Path(spec.submodule_search_locations[0]) / "blocks" / "mlstm" / "backends.py"
    if not path.exists():
        pytest.skip(f"this xlstm has no {path}")
    module_spec = importlib.util.spec_from_file_location("xlstm_mlstm_backends", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module



def xlstm_slstm_vanilla():
    """xlstm's vanilla sLSTM backend (xlstm/blocks/slstm/src/vanilla/: slstm_forward and its
    pointwise steps, pure torch), loaded by its path as a package of its own without importing
    xlstm; skips with the reason if absent."""
    import importlib.util
    import sys

    spec = importlib.util.find_spec("xlstm")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(f"xlstm is not installed ({XLSTM_INSTALL}): no oracle from xlstm's vanilla sLSTM")
    folder = Path(spec.submodule_search_locations[0]) / "blocks" / "slstm" / "src" / "vanilla"
    if not (folder / "__init__.py").exists():
        pytest.skip(f"this xlstm has no {folder}")
    name = "xlstm_slstm_vanilla"
    if name not in sys.modules:  # its __init__ imports its siblings relatively
        module_spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                             submodule_search_locations=[str(folder)])
        module = importlib.util.module_from_spec(module_spec)
        sys.modules[name] = module
        module_spec.loader.exec_module(module)
    return sys.modules[name]

def recurrentgemma_torch():
    """recurrentgemma's torch modules (layers, modules), loaded by path (benchmarks/rg_lru.py);
    skips with the reason if the wheel or what its torch code imports is absent."""
    from benchmarks.rg_lru import recurrentgemma_torch as load

    try:
        return load()
    except ImportError as e:
        pytest.skip(f"no oracle from recurrentgemma's torch code: {e}")


@pytest.fixture
def two_threads():
    """torch on 2 threads for the test (the C loops split their heads over torch's threads)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


def same_outputs_and_input_gradients(theirs, ours, x):
    """An original's module and ours on the same float64 input x: outputs and the input's gradient
    (of a fixed random weighting) equal to 1e-10; ours returns (y, state). The parameters'
    gradients are left for the caller to compare."""
    x_theirs, x_ours = x.clone().requires_grad_(), x.clone().requires_grad_()
    y_theirs, (y_ours, _) = theirs(x_theirs), ours(x_ours)
    torch.testing.assert_close(y_ours, y_theirs, rtol=1e-10, atol=1e-10)
    weights = torch.randn_like(y_ours)
    (y_theirs * weights).sum().backward()
    (y_ours * weights).sum().backward()
    torch.testing.assert_close(x_ours.grad, x_theirs.grad, rtol=1e-10, atol=1e-10)


FLASH = {"aten::_scaled_dot_product_flash_attention_for_cpu",  # torch's CPU flash kernel, forward and backward
         "aten::_scaled_dot_product_flash_attention_for_cpu_backward"}


def attention_kernels(run):
    """The fused-attention kernels that `run()` (a forward and backward) calls: torch's CPU flash
    kernel only where q, k and v have one width, else its dense L x L fallback (`..._math`)."""
    with torch.profiler.profile() as profile:
        run()
    return {e.key for e in profile.key_averages() if e.key.startswith("aten::_scaled_dot_product")}
