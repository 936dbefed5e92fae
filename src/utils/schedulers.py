"""Step-wise learning-rate schedules with warmup, as LambdaLR multipliers of the base lr.

With w = num_warmup_steps, T = num_training_steps and t the optimizer step:
    constant:         1
    constant_warmup:  min(1, t / w)
    linear_warmup:    t / w for t < w, then max(0, (T - t) / (T - w))
    cosine_warmup:    t / w for t < w, then (1 + cos(pi * (t - w) / (T - w))) / 2, floored at 0
The epoch-wise schedules (cosine, step, multistep, plateau) are torch's own (see registry).
"""

import math

from torch.optim.lr_scheduler import LambdaLR


def constant(optimizer):
    return LambdaLR(optimizer, lambda t: 1.0)


def constant_warmup(optimizer, num_warmup_steps):
    return LambdaLR(optimizer, lambda t: min(1.0, t / max(1, num_warmup_steps)))


def _decayed_warmup(optimizer, num_warmup_steps, num_training_steps, decay):
    def multiplier(t):
        if t < num_warmup_steps:
            return t / max(1, num_warmup_steps)
        progress = (t - num_warmup_steps) / max(1, num_training_steps - num_warmup_steps)
        return max(0.0, decay(min(1.0, progress)))

    return LambdaLR(optimizer, multiplier)


def linear_warmup(optimizer, num_warmup_steps, num_training_steps):
    return _decayed_warmup(optimizer, num_warmup_steps, num_training_steps, lambda p: 1.0 - p)


def cosine_warmup(optimizer, num_warmup_steps, num_training_steps):
    return _decayed_warmup(
        optimizer, num_warmup_steps, num_training_steps, lambda p: 0.5 * (1.0 + math.cos(math.pi * p))
    )
