"""A tiny token task for the tests of the token-task foundation (tests/test_tokens.py)."""

import torch

from src.dataloaders.tokens import TokenDataset


class RunningMax(TokenDataset):
    """x_t uniform in 0..V-1; y_t = max(x_1..x_t). Ids: 0..V-1 the digits, V <pad>."""

    def __init__(self, L=16, L_min=None, V=5, samples_per_epoch=64, val_split=0.25, seed=0, num_train_examples=None):
        self.V, self.n_tokens, self.d_output = V, V + 1, V + 1
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        x = torch.randint(0, self.V, (len(lengths), self.L), generator=generator)
        return x, x.cummax(-1).values
