"""Optimizer parameter groups from per-parameter `_optim` hyperparameters.

A layer marks a parameter that needs its own learning rate or weight decay with
`param._optim = {"lr": ..., "weight_decay": ...}` (as in the S4 repo). Every parameter without
`_optim` goes into the first group with the optimizer's config; each distinct `_optim` dict
gets one more group, ordered by its sorted items so that the order (and so the checkpointed
optimizer state) does not depend on module construction order.
"""

from src.utils import registry


def param_groups(module):
    """[{"params": [...]} (plain), {"params": [...], **hp} for each distinct _optim hp]."""
    plain, special = [], {}
    for p in module.parameters():
        if not p.requires_grad:
            continue
        hp = getattr(p, "_optim", None)
        if not hp:
            plain.append(p)
        else:
            special.setdefault(tuple(sorted(hp.items())), []).append(p)
    groups = [{"params": plain}]
    groups += [{"params": params, **dict(hp)} for hp, params in sorted(special.items())]
    return [g for g in groups if g["params"]]


def build_optimizer(module, config):
    """The optimizer of `config` (`_name_`, lr, ...) over `param_groups(module)`."""
    return registry.build(registry.optimizer, config, param_groups(module), key="optimizer._name_")
