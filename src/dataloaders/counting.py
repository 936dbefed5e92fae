"""Counting tasks of the inductive-counting paper (docs/tasks.md, "Counting").

Ids (count_same, count_shifted, count_mod): the numbers 0..max_count are ids 0..max_count (shared
by inputs and labels), then the `symbols` symbols (1: 'a'; 26: letters), then <bos>, then <pad>.
`L` is the input length (<bos> or the start number included), every sample of length l in
L_min..L. With t = 0..l-1 and k = t + 1 - bos the number of symbols read so far:

    count_same      x = [<bos>] s_1 .. s_c         y_t = k                  (-100 on <bos>)
    count_mod       x = [<bos>] s_1 .. s_c         y_t = ((k - 1) mod m) + 1
    count_shifted   x = n, a .. a (c = l - 1 a's)  y_0 = -100, y_t = n + t  (n ~ U{shift_min..max_count - c})
    count_selective x = [<bos>] x_1 .. x_c from 0..items-1, no item more than `cap` times
                    y_t = #{s < t: x_s = x_t} (earlier occurrences), mod `modulus` if > 0

count_selective's ids: 0..V-1 (V = max(items, cap)) for both the items and the counts, then <bos>,
<pad>. With a cap, a sample is the first c tokens of a random permutation of the multiset
{each item `cap` times} (a uniform draw without replacement); cap=null draws the items uniformly
(then a modulus is needed, so that the labels stay below V).
"""

import torch

from src.dataloaders.tokens import TokenDataset, random_permutations, stable_argsort
from src.utils.errors import ConfigError
from src.utils.labels import IGNORE_INDEX


def _positive(key, value, allow_zero=False):
    if not isinstance(value, int) or isinstance(value, bool) or value < (0 if allow_zero else 1):
        raise ConfigError(f"dataset.{key}={value!r} must be a {'non-negative' if allow_zero else 'positive'} integer")


class Counting(TokenDataset):
    """Numbers 0..max_count, `symbols` symbols, <bos>, <pad>; subclasses write the labels."""

    def __init__(self, L, L_min, max_count, symbols, bos, samples_per_epoch, val_split, seed, num_train_examples):
        _positive("max_count", max_count)
        if symbols not in (1, 26):
            raise ConfigError(f"dataset.symbols={symbols!r} is not valid; choose one of: 1, 26")
        self.max_count, self.symbols, self.bos = max_count, symbols, bool(bos)
        self.symbol_id, self.bos_id = max_count + 1, max_count + 1 + symbols
        self.n_tokens = self.d_output = max_count + symbols + 3
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)
        if self.bos and L_min < 2:
            raise ConfigError(f"dataset.L_min={L_min}: with dataset.bos=true a sample needs <bos> and a symbol "
                              "(L_min >= 2)")

    def symbol_tokens(self, B, generator):  # (B, L): [<bos>] then symbols
        if self.symbols == 1:
            x = torch.full((B, self.L), self.symbol_id)
        else:
            x = self.symbol_id + torch.randint(0, self.symbols, (B, self.L), generator=generator)
        if self.bos:
            x[:, 0] = self.bos_id
        return x

    def seen(self):  # (L,): k = t + 1 - bos, the symbols read up to position t
        return torch.arange(self.L) + 1 - int(self.bos)

    def unlabelled_bos(self, y):
        if self.bos:
            y[:, 0] = IGNORE_INDEX
        return y


class CountSame(Counting):
    """y_t = the number of symbols so far."""

    def __init__(self, L=50, L_min=1, max_count=100, symbols=1, bos=False, samples_per_epoch=16000, val_split=0.1,
                 seed=0, num_train_examples=None):
        super().__init__(L, L_min, max_count, symbols, bos, samples_per_epoch, val_split, seed, num_train_examples)
        if L - self.bos > max_count:
            raise ConfigError(f"dataset.L={L} counts past dataset.max_count={max_count}: raise max_count or lower L")

    def tokens(self, lengths, generator):
        x = self.symbol_tokens(len(lengths), generator)
        return x, self.unlabelled_bos(self.seen().expand_as(x).clone())


class CountMod(Counting):
    """y_t = ((k - 1) mod m) + 1 for the k-th symbol: 1, 2, .., m, 1, 2, .."""

    def __init__(self, L=50, L_min=1, modulus=10, max_count=100, symbols=1, bos=False, samples_per_epoch=16000,
                 val_split=0.1, seed=0, num_train_examples=None):
        _positive("modulus", modulus)
        if modulus > max_count:
            raise ConfigError(f"dataset.modulus={modulus} must be <= dataset.max_count={max_count} (labels 1..modulus)")
        self.modulus = modulus
        super().__init__(L, L_min, max_count, symbols, bos, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        x = self.symbol_tokens(len(lengths), generator)
        y = (self.seen() - 1) % self.modulus + 1
        return x, self.unlabelled_bos(y.expand_as(x).clone())


class CountShifted(Counting):
    """x = n a a .. a, y_t = n + t: count on from a given start n (unlabelled at the start)."""

    def __init__(self, L=51, L_min=None, shift_min=0, max_count=100, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        _positive("shift_min", shift_min, allow_zero=True)
        self.shift_min = shift_min
        super().__init__(L, L_min, max_count, 1, False, samples_per_epoch, val_split, seed, num_train_examples)
        if self.L_min < 2 or shift_min + L - 1 > max_count:
            raise ConfigError(f"dataset.L_min={self.L_min}, dataset.L={L}: count_shifted needs 2 <= L_min and "
                              f"shift_min + L - 1 <= max_count ({shift_min} + {L - 1} > {max_count})")

    def tokens(self, lengths, generator):
        B = len(lengths)
        top = self.max_count - (lengths - 1)  # (B,): the largest start that stays <= max_count
        start = self.shift_min + (torch.rand(B, generator=generator) * (top - self.shift_min + 1)).long()
        x = torch.full((B, self.L), self.symbol_id)
        x[:, 0] = start
        y = start[:, None] + torch.arange(self.L)  # (B, L)
        y[:, 0] = IGNORE_INDEX
        return x, y


def earlier_occurrences(items):
    """(B, c) -> (B, c): #{s < t: items_s = items_t}, each token's rank among its equals (a stable
    sort by token groups the equals in order; a rank is the distance to its group's start)."""
    order = stable_argsort(items)
    grouped = items.gather(1, order)
    i = torch.arange(items.shape[1])
    start = torch.cat([torch.ones_like(grouped[:, :1], dtype=torch.bool), grouped[:, 1:] != grouped[:, :-1]], 1)
    rank = i - (i * start).cummax(-1).values  # (B, c) in sorted order
    return torch.empty_like(rank).scatter_(1, order, rank)


class CountSelective(TokenDataset):
    """y_t = the number of earlier occurrences of x_t (mod `modulus` if > 0)."""

    def __init__(self, L=50, L_min=None, items=10, cap=10, modulus=0, bos=False, samples_per_epoch=16000,
                 val_split=0.1, seed=0, num_train_examples=None):
        _positive("items", items)
        _positive("modulus", modulus, allow_zero=True)
        if cap is not None:
            _positive("cap", cap)
        self.items, self.cap, self.modulus, self.bos = items, cap, modulus, bool(bos)
        V = max(items, cap or 0)
        self.bos_id, self.n_tokens, self.d_output = V, V + 2, V + 2
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)
        c = L - self.bos
        if cap is not None and c > items * cap:
            raise ConfigError(f"dataset.L={L}: {c} tokens cannot hold {items} items at most dataset.cap={cap} "
                              "times each")
        if cap is None and not 0 < modulus <= V:
            raise ConfigError(f"dataset.cap=null needs dataset.modulus in 1..items={items} (the counts must be "
                              f"ids < {V})")
        if modulus > V:
            raise ConfigError(f"dataset.modulus={modulus} must be <= max(items, cap)={V} (the labels are ids < {V})")
        if self.bos and self.L_min < 2:
            raise ConfigError(f"dataset.L_min={self.L_min}: with dataset.bos=true a sample needs <bos> and a token")

    def tokens(self, lengths, generator):
        B, c = len(lengths), self.L - self.bos
        if self.cap is None:
            items = torch.randint(0, self.items, (B, c), generator=generator)
        else:  # the first c of a random permutation of the multiset {item i, cap times}
            items = random_permutations(B, self.items * self.cap, generator)[:, :c] // self.cap  # (B, c)
        earlier = earlier_occurrences(items)
        if self.modulus:
            earlier = earlier % self.modulus
        if not self.bos:
            return items, earlier
        bos = torch.full((B, 1), self.bos_id)
        return torch.cat([bos, items], 1), torch.cat([torch.full((B, 1), IGNORE_INDEX), earlier], 1)
