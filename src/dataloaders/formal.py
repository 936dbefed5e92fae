"""Formal-language tasks: parity, majority, Dyck (modern RNNs) and the Chomsky-hierarchy regular
tasks (specs/token-tasks.md, "Formal languages"). <pad> is always the last id.

    parity              bits x_t ~ Bernoulli(1/2) (or exactly `num_ones` ones); y_t = (x_1 + .. + x_t) mod 2,
                        1 = odd, at every position (label_at=all) or the last (label_at=last)
    majority            bits; 1 iff more ones than zeros (a tie is 0), at the last position
    dyck                open_i = i, close_i = K + i (K = `types`); y_t = 1 iff x_1..x_t is non-empty,
                        balanced and was never invalid
    even_pairs          bits; 1 iff the number of 01 and 10 transitions is even (x_1 = x_l), at the last position
    cycle_navigation    0, 1, 2 = move -1, 0, +1 on a 5-cycle from 0; the final state at the last position
    modular_arithmetic  n op n op .. n (odd length, n in 0..4 = ids 0..4, + - x = ids 5 6 7); the value mod 5
                        (x before + and -), at the last position

"The last position" is the last non-pad one; elsewhere the label is -100.

Dyck sampling, vectorised over the batch and the positions. The spec's sampler (at each step: if
the remaining length equals the stack size, close everything; else close the top if the stack is
at `depth` or, when non-empty, by a fair coin; else open a uniformly random type) moves the stack
height h as a walk on 0..depth that always steps up at 0, down at depth, and up or down by a fair
coin in between: the free +-1 walk S folded by the triangle wave h = D - |(S mod 2D) - D|. It is
followed until the first t where l - t = h_t, then everything closes. Types: each open draws one,
each close copies the open it matches; matching brackets are the consecutive events of one level
(an open from h to h+1 and a close from h+1 to h are both at level h) in order of position, found
by one stable sort of the positions by level (`previous_in_level`).
With probability 1/2 a sample is corrupted: its suffix after a random balanced prefix end
(0 included) is shuffled, and its labels are recomputed from its tokens (`dyck_labels`).

Modular arithmetic, vectorised: a term is a maximal product n_i x .. x n_j; mod 5 its value is 0 if a
factor is 0, else 2^(sum of the factors' discrete logs base 2) (2 generates the units mod 5).
"""

import numpy as np
import torch

from src.dataloaders.tokens import TokenDataset, random_below, random_bits, stable_argsort
from src.tasks.metrics import IGNORE_INDEX
from src.utils.errors import ConfigError, check_choice


def at_last(values, lengths, L):
    """(B, L) labels: values (B,) at position lengths - 1, -100 elsewhere."""
    y = torch.full((len(lengths), L), IGNORE_INDEX)
    y[torch.arange(len(lengths)), lengths - 1] = values
    return y


def valid_mask(lengths, L):  # (B, L): t < l
    return torch.arange(L) < lengths[:, None]


class Bits(TokenDataset):
    """Bits 0, 1 then <pad>; the label is computed from the bits by `labels`."""

    n_tokens = d_output = 3

    def bits(self, lengths, generator):
        return torch.randint(0, 2, (len(lengths), self.L), generator=generator)

    def tokens(self, lengths, generator):
        x = self.bits(lengths, generator)
        return x, self.labels(x * valid_mask(lengths, self.L), lengths)


class Parity(Bits):
    def __init__(self, L=32, L_min=None, num_ones=None, label_at="all", samples_per_epoch=16000, val_split=0.1,
                 seed=0, num_train_examples=None):
        self.label_at = check_choice("dataset.label_at", label_at, ["all", "last"])
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)
        if num_ones is not None and (not isinstance(num_ones, int) or not 0 <= num_ones <= self.L_min):
            raise ConfigError(f"dataset.num_ones={num_ones!r} must be null or an integer in 0..L_min={self.L_min}")
        self.num_ones = num_ones

    def bits(self, lengths, generator):
        if self.num_ones is None:
            return super().bits(lengths, generator)
        keys = torch.rand(len(lengths), self.L, generator=generator).masked_fill(~valid_mask(lengths, self.L), 2.0)
        rank = keys.argsort(-1).argsort(-1)  # (B, L): the rank of each position's key
        return (rank < self.num_ones).long()  # num_ones random positions among the first l

    def labels(self, x, lengths):
        odd = x.cumsum(-1) % 2  # (B, L), 1 = odd
        return odd if self.label_at == "all" else at_last(odd[torch.arange(len(x)), lengths - 1], lengths, self.L)


class Majority(Bits):
    def __init__(self, L=40, L_min=1, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None):
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def labels(self, x, lengths):
        return at_last((2 * x.sum(-1) > lengths).long(), lengths, self.L)


class EvenPairs(Bits):
    def __init__(self, L=40, L_min=1, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None):
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def labels(self, x, lengths):
        changes = (x[:, 1:] != x[:, :-1]) & valid_mask(lengths - 1, self.L - 1)  # (B, L - 1)
        return at_last((changes.sum(-1) % 2 == 0).long(), lengths, self.L)


class CycleNavigation(TokenDataset):
    n_tokens, d_output = 4, 5  # moves 0 1 2, <pad>; states 0..4

    def __init__(self, L=40, L_min=1, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None):
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        x = torch.randint(0, 3, (len(lengths), self.L), generator=generator)
        state = ((x - 1) * valid_mask(lengths, self.L)).sum(-1) % 5
        return x, at_last(state, lengths, self.L)


DISCRETE_LOG = torch.tensor([0, 0, 1, 3, 2])  # 2^log = n mod 5 for n = 1..4 (index 0 unused)
POWERS = torch.tensor([1, 2, 4, 3])


class ModularArithmetic(TokenDataset):
    n_tokens = d_output = 9  # 0..4, + - x, <pad>
    length_step = 2

    def __init__(self, L=39, L_min=1, samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None):
        if L % 2 == 0 or (L_min is not None and L_min % 2 == 0):
            raise ConfigError(f"dataset.L={L}, dataset.L_min={L_min}: modular_arithmetic needs odd lengths")
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        B, m = len(lengths), (self.L + 1) // 2
        n = torch.randint(0, 5, (B, m), generator=generator)  # the numbers
        ops = torch.randint(5, 8, (B, m - 1), generator=generator)  # the operators between them
        x = torch.empty(B, self.L, dtype=torch.long)
        x[:, 0::2], x[:, 1::2] = n, ops
        used = valid_mask((lengths + 1) // 2, m)  # (B, m): the numbers of each sample
        starts = torch.cat([torch.ones(B, 1, dtype=torch.bool), ops != 7], 1)  # a term starts after + or -
        term = starts.cumsum(-1) - 1  # (B, m): the term of each number
        sign = torch.cat([torch.ones(B, 1, dtype=torch.long), torch.where(ops == 6, -1, 1)], 1) * starts * used
        zeros = torch.zeros(B, m, dtype=torch.long).scatter_add_(1, term, ((n == 0) & used).long())
        logs = torch.zeros(B, m, dtype=torch.long).scatter_add_(1, term, DISCRETE_LOG[n] * used)
        signs = torch.zeros(B, m, dtype=torch.long).scatter_add_(1, term, sign)  # each term's sign (+-1)
        value = torch.where(zeros > 0, 0, POWERS[logs % 4])  # (B, m): each term mod 5 (0 beyond the last)
        return x, at_last((signs * value).sum(-1) % 5, lengths, self.L)


def previous_in_level(level):
    """(B, L): for each position, the position before it among those of its level (itself for the
    first of the lowest level)."""
    order = stable_argsort(level, bound=level.shape[1] + 1)  # levels are in -L..L+1
    before = torch.cat([order[:, :1], order[:, :-1]], 1)
    return torch.empty_like(order).scatter_(1, order, before)


def dyck_labels(x, lengths, types):
    """(B, L) labels of bracket tokens x (B, L): 1 where the prefix is non-empty, balanced and
    never invalid; 0 elsewhere in the sample; -100 on padding."""
    B, L = x.shape
    t = torch.arange(L)
    valid = valid_mask(lengths, L)
    opens = x < types
    depth = ((2 * opens - 1) * valid).cumsum(-1)  # (B, L): after x_t
    level = (depth - opens.long()).masked_fill(~valid, L + 1)  # the edge each bracket crosses
    partner = previous_in_level(level)  # (B, L): for a close, its open if the prefix is valid
    kind = x % types  # the bracket type
    matched = opens | (opens.gather(1, partner) & (kind.gather(1, partner) == kind) & (partner < t))
    error = (~matched | (depth < 0)) & valid
    never_invalid = error.long().cumsum(-1) == 0
    return (never_invalid & (depth == 0)).long().masked_fill(~valid, IGNORE_INDEX)


class Dyck(TokenDataset):
    length_step = 2

    def __init__(self, L=32, L_min=None, types=3, depth=6, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        for key, value in (("types", types), ("depth", depth)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"dataset.{key}={value!r} must be a positive integer")
        if L % 2:
            raise ConfigError(f"dataset.L={L}: dyck needs an even length")
        self.types, self.depth = types, depth
        self.n_tokens = self.d_output = 2 * types + 1
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        B, L, D = len(lengths), self.L, self.depth
        t = torch.arange(L, dtype=torch.int32)
        coins = random_bits(B, L, generator)  # the free walk's steps
        walk = torch.nn.functional.pad((2 * coins - 1).int().cumsum(-1, dtype=torch.int32), (1, 0))
        folded = D - ((walk % (2 * D)) - D).abs()  # (B, L + 1): the stack height before step t, folded from S
        height, up = folded[:, :-1], folded[:, 1:] > folded[:, :-1]  # (B, L): height before step t; open?
        first = (lengths[:, None] - t == height).to(torch.uint8).argmax(-1, keepdim=True)  # (B, 1): 1st forced step
        forced = t >= first  # from here on: close all
        height = torch.where(forced, height.gather(1, first) - (t - first), height)
        up = up & ~forced
        level = (height - 1 + up).masked_fill(~valid_mask(lengths, L), L + 1)
        partner = previous_in_level(level)  # events of one level alternate open, close: a close's open
        kinds = random_below(self.types, (B, L), generator)
        kind = torch.where(up, kinds, kinds.gather(1, partner))
        x = kind + self.types * ~up
        y = (height + 2 * up - 1 == 0).long()  # valid: balanced where the height after is 0
        rows = random_bits(B, 1, generator)[:, 0].nonzero()[:, 0]  # the samples to corrupt
        x[rows] = self.shuffle_suffix(x[rows], height[rows], lengths[rows], generator)
        y[rows] = dyck_labels(x[rows], lengths[rows], self.types)
        return x, y

    def shuffle_suffix(self, x, height, lengths, generator):
        """x with its suffix after a random balanced prefix end e (height 0 before step e, e < l)
        shuffled in place."""
        B, L = x.shape
        t = torch.arange(L)
        ends = (height == 0) & valid_mask(lengths, L)
        counted = ends.cumsum(-1)
        k = random_below(counted[:, -1:], (B, 1), generator)  # (B, 1): the k-th end (0-indexed), uniform
        e = (ends & (counted == k + 1)).to(torch.uint8).argmax(-1, keepdim=True)  # (B, 1)
        shuffle = (t >= e) & valid_mask(lengths, L)
        spread = torch.rand(B, L, generator=generator, dtype=torch.float64) * (lengths[:, None] - e)
        keys = torch.where(shuffle, e + spread, t.double())
        return x.gather(1, torch.from_numpy(np.argsort(keys.numpy(), axis=-1)))
