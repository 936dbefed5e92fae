"""Short names -> import paths, and `build` to construct an object from its config.

Config groups name what they build with `_name_` (`model.layer._name_=dlr`), as in the S4
repo. Objects are imported lazily, so `import src...` never pulls optional dependencies.
"""

import importlib
import inspect

from src.utils.errors import ConfigError

# Sequence layers: (B, L, D) -> ((B, L, D), state). See DESIGN.md, "Layer".
layer = {
    "dlr": "src.models.sequence.layers.dlr.DLR",
    "dss": "src.models.sequence.layers.dlr.DSS",
    "sgconv": "src.models.sequence.layers.sgconv.SGConv",
    "attn": "src.models.sequence.layers.attention.AttentionBlock",
    "s4": "src.models.sequence.layers.s4.S4",
    "s4d": "src.models.sequence.layers.s4.S4D",
    "rnn": "src.models.sequence.layers.rnn.RNN",
    "mha": "src.models.sequence.layers.mha.MultiHeadAttention",
    "linear_attn": "src.models.sequence.layers.linear_attention.LinearAttention",
    "transformer": "src.models.sequence.layers.transformer.TransformerBlock",
    "mamba": "src.models.sequence.layers.mamba.Mamba",
    "mamba2": "src.models.sequence.layers.mamba.Mamba2",
    "mamba3": "src.models.sequence.layers.mamba3.Mamba3",
    "s6": "src.models.sequence.layers.mamba.S6",
    "dsf_ssd": "src.models.sequence.layers.mamba.DSFSSD",
    "qlstm": "src.models.sequence.layers.qlstm.QLSTM",
    "hawk": "src.models.sequence.layers.hawk.Hawk",
    "mlstm": "src.models.sequence.layers.mlstm.MLSTM",
    "slstm": "src.models.sequence.layers.slstm.SLSTM",
    "lru": "src.models.sequence.layers.lru.LRU",
    "deltanet": "src.models.sequence.layers.deltanet.DeltaNet",
    "gated_deltanet": "src.models.sequence.layers.deltanet.GatedDeltaNet",
    "gated_deltaproduct": "src.models.sequence.layers.deltanet.GatedDeltaProduct",
    "kda": "src.models.sequence.layers.deltanet.KDA",
    "ttt_linear": "src.models.sequence.layers.ttt.TTTLinear",
    "ttt_mlp": "src.models.sequence.layers.ttt.TTTMLP",
    "titans": "src.models.sequence.layers.ttt.Titans",
    "gla": "src.models.sequence.layers.gla.GLA",
    "retnet": "src.models.sequence.layers.gla.RetNet",
    "hgrn2": "src.models.sequence.layers.gla.HGRN2",
    "rwkv6": "src.models.sequence.layers.rwkv.RWKV6",
    "rwkv7": "src.models.sequence.layers.rwkv.RWKV7",
    "based": "src.models.sequence.layers.based.Based",
    "base_conv": "src.models.sequence.layers.base_conv.BaseConv",
    "hyena": "src.models.sequence.layers.hyena.Hyena",
    "h3": "src.models.sequence.layers.h3.H3",
    "rwkv4": "src.models.sequence.layers.rwkv4.RWKV4",
    "stack_rnn": "src.models.sequence.layers.memory_rnn.StackRNN",
    "tape_rnn": "src.models.sequence.layers.memory_rnn.TapeRNN",
    "mesanet": "src.models.sequence.layers.mesanet.MesaNet",
    "log_linear_mamba2": "src.models.sequence.layers.log_linear.LogLinearMamba2",
    "log_linear_gdn": "src.models.sequence.layers.log_linear.LogLinearGatedDeltaNet",
    "fox": "src.models.sequence.layers.fox.ForgettingAttention",
    "path_attn": "src.models.sequence.layers.path_attn.PaTHAttention",
}

dataset = {
    "sequence1d": "src.dataloaders.sequence1d.Sequence1D",
    "listops": "src.dataloaders.listops.ListOps",
    "listops_subtrees": "src.dataloaders.listops.ListOpsSubTrees",
    "pathfinder": "src.dataloaders.pathfinder.Pathfinder",
    "pathfinder_segmentation": "src.dataloaders.pathfinder.PathfinderSegmentation",
    "cifar": "src.dataloaders.cifar.CIFAR10",
    "imdb": "src.dataloaders.lra.IMDB",
    "aan": "src.dataloaders.lra.AAN",
    "mqar": "src.dataloaders.recall.MQAR",
    "mqar_forgetting": "src.dataloaders.recall.MQARForgetting",
    "mqar_compositional": "src.dataloaders.recall.MQARCompositional",
    "count_same": "src.dataloaders.counting.CountSame",
    "count_shifted": "src.dataloaders.counting.CountShifted",
    "count_mod": "src.dataloaders.counting.CountMod",
    "count_selective": "src.dataloaders.counting.CountSelective",
    "parity": "src.dataloaders.formal.Parity",
    "majority": "src.dataloaders.formal.Majority",
    "dyck": "src.dataloaders.formal.Dyck",
    "even_pairs": "src.dataloaders.formal.EvenPairs",
    "cycle_navigation": "src.dataloaders.formal.CycleNavigation",
    "modular_arithmetic": "src.dataloaders.formal.ModularArithmetic",
    "word_problem": "src.dataloaders.state_tracking.WordProblem",
    "modular_arithmetic_brackets": "src.dataloaders.chomsky.ModularArithmeticBrackets",
    "reverse_string": "src.dataloaders.chomsky.ReverseString",
    "stack_manipulation": "src.dataloaders.chomsky.StackManipulation",
    "solve_equation": "src.dataloaders.chomsky.SolveEquation",
    "duplicate_string": "src.dataloaders.chomsky.DuplicateString",
    "missing_duplicate_string": "src.dataloaders.chomsky.MissingDuplicateString",
    "odds_first": "src.dataloaders.chomsky.OddsFirst",
    "binary_addition": "src.dataloaders.chomsky.BinaryAddition",
    "binary_multiplication": "src.dataloaders.chomsky.BinaryMultiplication",
    "compute_sqrt": "src.dataloaders.chomsky.ComputeSqrt",
    "bucket_sort": "src.dataloaders.chomsky.BucketSort",
    "induction_head": "src.dataloaders.icl.InductionHead",
    "associative_recall": "src.dataloaders.icl.AssociativeRecall",
    "copying": "src.dataloaders.icl.Copying",
    "icl_dfa": "src.dataloaders.dfa.ICLDFA",
    "mad": "src.dataloaders.mad.mad_task",
}

optimizer = {
    "adam": "torch.optim.Adam",
    "adamw": "torch.optim.AdamW",
    "sgd": "torch.optim.SGD",
}

scheduler = {
    "constant": "src.utils.schedulers.constant",
    "constant_warmup": "src.utils.schedulers.constant_warmup",
    "linear_warmup": "src.utils.schedulers.linear_warmup",
    "cosine_warmup": "src.utils.schedulers.cosine_warmup",
    "cosine": "torch.optim.lr_scheduler.CosineAnnealingLR",
    "step": "torch.optim.lr_scheduler.StepLR",
    "multistep": "torch.optim.lr_scheduler.MultiStepLR",
    "plateau": "torch.optim.lr_scheduler.ReduceLROnPlateau",
}


callbacks = {
    "learning_rate_monitor": "lightning.pytorch.callbacks.LearningRateMonitor",
    "model_checkpoint": "src.callbacks.checkpoints.BestCheckpoint",
    "last_checkpoint": "src.callbacks.checkpoints.LastCheckpoint",
    "rich_progress_bar": "src.callbacks.progress.ProgressBar",
    "rich_model_summary": "lightning.pytorch.callbacks.RichModelSummary",
    "grad_norm": "src.callbacks.grad_norm.GradNorm",
    "early_stopping": "lightning.pytorch.callbacks.EarlyStopping",
}


def resolve(registry, name, key="_name_"):
    """The class or function registered under `name`; ConfigError listing the valid names."""
    if name not in registry:
        valid = ", ".join(sorted(registry))
        raise ConfigError(f"{key}={name!r} is not registered; choose one of: {valid}")
    module, attr = registry[name].rsplit(".", 1)
    return getattr(importlib.import_module(module), attr)


def build(registry, config, *args, key="_name_", **kwargs):
    """Construct `registry[config["_name_"]](*args, **rest_of_config, **kwargs)`."""
    config = dict(config)
    name = config.pop("_name_")
    return resolve(registry, name, key)(*args, **config, **kwargs)


def check_kwargs(cls, kwargs, what):
    """ConfigError naming the keys of `kwargs` that `cls` does not take (unless it takes **kwargs),
    e.g. a layer given another layer's options by an experiment."""
    params = inspect.signature(cls).parameters
    if any(p.kind == p.VAR_KEYWORD for p in params.values()):
        return
    unknown = sorted(set(kwargs) - set(params))
    if unknown:
        valid = ", ".join(name for name, p in params.items() if p.kind != p.VAR_POSITIONAL)
        raise ConfigError(f"{what} does not take {', '.join(unknown)}; its options are: {valid}")
