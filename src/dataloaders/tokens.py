"""Base of the token tasks (MQAR, counting, parity, Dyck, ...): int64 inputs x (B, L) and labels
y (B, L), one label per input position, -100 where nothing is scored (docs/tasks.md).

Variable length (`L_min < L`): each sample draws its length l ~ U{L_min, L_min + s, ..., L}
(s = the task's `length_step`, e.g. 2 for tasks made of pairs), is generated at that length and
right-padded to L with <pad> (the last id, n_tokens - 1), labelled -100, so a causal model's
outputs before the padding do not depend on it. A task that does not pad (`pads = False`,
e.g. MQAR with zoology's vocabulary) refuses L_min < L.

Subclasses set `n_tokens` (<pad> included where they pad) and `d_output` (the label ids: a label
is the id of the token it names, so usually n_tokens), and implement
`tokens(lengths, generator) -> (x, y)`, both (B, L) int64, where sample b is a valid sample of
length lengths[b] in its first lengths[b] positions (what follows is overwritten by the padding).
"""

import numpy as np
import torch

from src.dataloaders.base import SyntheticDataset
from src.utils.errors import ConfigError
from src.utils.labels import IGNORE_INDEX


def stable_argsort(keys):
    """(B, n) integer keys -> (B, n): each row's positions sorted by key, ties in position order.
    numpy's stable sort is a radix sort for 16-bit keys, several times torch's CPU sort."""
    bound = max(-keys.min().item(), keys.max().item())
    keys = (keys.short() if bound <= torch.iinfo(torch.int16).max else keys.long()).numpy(force=True)
    return torch.from_numpy(np.argsort(keys, axis=-1, kind="stable"))


def random_permutations(batch_size, n, generator):
    """(B, n): a uniform random permutation of 0..n-1 per row (the order of random keys)."""
    return torch.from_numpy(np.argsort(torch.rand(batch_size, n, generator=generator).numpy(), axis=-1))


class TokenDataset(SyntheticDataset):
    l_output = None  # a prediction at every position
    causal = True
    length_step = 1
    pads = True

    def __init__(self, L, L_min=None, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None,
                 num_eval_examples=None):
        super().__init__(samples_per_epoch, val_split, seed, num_train_examples, num_eval_examples)
        L_min = L if L_min is None else L_min
        if not isinstance(L, int) or L < 1:
            raise ConfigError(f"dataset.L={L!r} must be a positive integer")
        if not isinstance(L_min, int) or not 1 <= L_min <= L:
            raise ConfigError(f"dataset.L_min={L_min!r} must be an integer in 1..dataset.L={L} (or null: L)")
        if L_min < L and not self.pads:
            raise ConfigError(f"dataset.L_min={L_min}: {type(self).__name__} has no <pad> token; set L_min=null")
        if (L - L_min) % self.length_step:
            raise ConfigError(f"dataset.L={L} and dataset.L_min={L_min} must differ by a multiple of "
                              f"{self.length_step} for {type(self).__name__}")
        self.L, self.L_min, self.L_input = L, L_min, L

    @property
    def pad_id(self):
        return self.n_tokens - 1

    def tokens(self, lengths, generator):
        raise NotImplementedError

    def lengths(self, batch_size, generator):  # (B,) int64 in {L_min, L_min + step, ..., L}
        if self.L_min == self.L:
            return torch.full((batch_size,), self.L)
        steps = (self.L - self.L_min) // self.length_step + 1
        return self.L_min + self.length_step * torch.randint(0, steps, (batch_size,), generator=generator)

    def generate(self, batch_size, generator):
        lengths = self.lengths(batch_size, generator)
        x, y = self.tokens(lengths, generator)  # (B, L), (B, L)
        if self.L_min == self.L:
            return x, y
        pad = torch.arange(self.L) >= lengths[:, None]  # (B, L)
        return x.masked_fill(pad, self.pad_id), y.masked_fill(pad, IGNORE_INDEX)
