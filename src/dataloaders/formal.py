"""Formal-language tasks: parity, majority, Dyck (modern RNNs) and the Chomsky-hierarchy regular
tasks (docs/tasks.md, "Formal languages"). <pad> is always the last id.

    parity              bits x_t ~ Bernoulli(1/2) (or exactly `num_ones` ones); y_t = (x_1 + .. + x_t) mod 2,
                        1 = odd, at every position (label_at=all) or the last (label_at=last)
    majority            bits; 1 iff more ones than zeros (a tie is 0), at the last position
    dyck                open_i = i, close_i = K + i (K = `types`); y_t = 1 iff x_1..x_t is non-empty,
                        balanced and was never invalid
    even_pairs          bits; 1 iff the number of 01 and 10 transitions is even (x_1 = x_l), at the last position
    cycle_navigation    0, 1, 2 = move -1, 0, +1 on a 5-cycle from 0; the final state at the last position
    modular_arithmetic  n op n op .. n (odd length; n in 0..m-1 = ids 0..m-1, m = `modulus` (5); + - x = ids
                        m, m+1, m+2); the value mod m (x before + and -), at the last position; with
                        equals=true the expression is followed by = (id m+3), where it is labelled

"The last position" is the last non-pad one; elsewhere the label is -100.

Dyck sampling, vectorised over the batch and the positions (numpy, small integer types: the
batch is ~30 element-wise ops, each a few microseconds, and three sorts). The spec's sampler (at
each step: if the remaining length equals the stack size, close everything; else close the top if
the stack is at `depth` or, when non-empty, by a fair coin; else open a uniformly random type)
moves the stack height h as a walk on 0..depth that always steps up at 0, down at depth, and up or
down by a fair coin in between: the free +-1 walk S folded by the triangle wave
h = D - |(S mod 2D) - D|. It is followed until the first t where l - t = h_t, then everything
closes. Types: matching brackets are the consecutive events of one level (an open from h to h+1
and a close from h+1 to h are both at level h), so with the brackets sorted by (level, t) each
close comes right after its open and copies its type; each open draws one. The sorts are of codes
packing several fields into one int32 (`packed_sort`), which numpy sorts with SIMD.
With probability 1/2 a sample is corrupted: its suffix after a random balanced prefix end
(0 included) is shuffled (`shuffle_suffix`), and its labels are recomputed from its tokens
(`dyck_labels`). The random draws come from a numpy generator seeded by one draw of the batch's
torch generator.

Modular arithmetic, vectorised for any modulus m: the value is the sum of the terms (maximal
products n_i x .. x n_j), each with the sign of the operator before it, which is folded into its
first number (-n = m - n mod m). The term products are a segmented prefix product mod m by
log-depth doubling over the numbers: (v_j, first_j) <- (v_j if first_j else v_{j-s} v_j mod m,
first_{j-s} or first_j) for strides s = 1, 2, 4, .., which leaves v_j = the product from its term's
first number to n_j. Each product is a lookup in the m x m table of products mod m (numpy's take
of int32 indices: ~2x faster than a multiply and a modulo), and the doubling stops once every
first_j holds (terms are short: at L 511, ~5 strides instead of 8). The label is the sum of v_j
over each term's last number, mod m. `modulus` <= 1024 keeps the table small.
"""

import numpy as np
import torch

from src.dataloaders.tokens import TokenDataset
from src.utils.errors import ConfigError, check_choice
from src.utils.labels import IGNORE_INDEX


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


def term_products(n, starts, modulus):
    """(B, k): each number's term product up to it, mod `modulus`, of numbers n (B, k) whose terms
    start where `starts` (B, k) bool: a segmented prefix product by log-depth doubling (module
    docstring), each product a lookup in the m x m table of products mod m."""
    residues = np.arange(modulus, dtype=np.int32)
    table = (residues[:, None] * residues % modulus).ravel()  # table[a m + b] = a b mod m
    v, first, s = n.numpy().astype(np.int32), starts.numpy().copy(), 1
    while s < v.shape[1] and not first.all():  # once every window holds a term start, every v_j is final
        index = v[:, :-s] * modulus
        index += v[:, s:]
        np.copyto(v[:, s:], np.take(table, index), where=~first[:, s:])
        first[:, s:] |= first[:, :-s]
        s *= 2
    return torch.from_numpy(v.astype(np.int64))


class ModularArithmetic(TokenDataset):
    length_step = 2

    def __init__(self, L=39, L_min=1, modulus=5, equals=False, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None):
        if not isinstance(modulus, int) or not 2 <= modulus <= 1024:
            raise ConfigError(f"dataset.modulus={modulus!r} must be an integer in 2..1024")
        if not isinstance(equals, bool):
            raise ConfigError(f"dataset.equals={equals!r} must be true or false")
        if (L + equals) % 2 == 0 or (L_min is not None and (L_min + equals) % 2 == 0):
            kind = "even lengths (an odd expression, then =)" if equals else "odd lengths"
            raise ConfigError(f"dataset.L={L}, dataset.L_min={L_min}: modular_arithmetic with equals={equals} "
                              f"needs {kind}")
        self.modulus, self.equals = modulus, equals
        self.n_tokens = self.d_output = modulus + 4 + equals  # 0..m-1, + - x, [=], <pad>
        super().__init__(L, L_min, samples_per_epoch, val_split, seed, num_train_examples)

    def tokens(self, lengths, generator):
        m, e = self.modulus, int(self.equals)
        E = self.L - e  # the longest expression (odd)
        B, k = len(lengths), (E + 1) // 2
        n = torch.randint(0, m, (B, k), generator=generator)  # the numbers
        ops = torch.randint(m, m + 3, (B, k - 1), generator=generator)  # the operators between them: + - x
        x = torch.empty(B, self.L, dtype=torch.long)
        x[:, 0:E:2], x[:, 1:E:2] = n, ops
        if self.equals:
            x[torch.arange(B), lengths - 1] = m + 3
        used = valid_mask((lengths - e + 1) // 2, k)  # (B, k): the numbers of each sample
        starts = torch.cat([torch.ones(B, 1, dtype=torch.bool), ops != m + 2], 1)  # a term starts after + or -
        minus = torch.cat([torch.zeros(B, 1, dtype=torch.bool), ops == m + 1], 1)
        signed = torch.where(minus & (n > 0), m - n, n)  # a term's sign folded into its first number
        v = term_products(signed, starts, m)  # (B, k)
        ends = used & ~torch.cat([used[:, 1:] & ~starts[:, 1:], torch.zeros(B, 1, dtype=torch.bool)], 1)
        return x, at_last((v * ends).sum(-1) % m, lengths, self.L)


def packed_sort(fields):
    """Each row sorted by the packed code sum_i v_i 2^(offset_i) of fields [(v (B, n) integers >= 0,
    bits), ...], most significant first; unpack a field with `unpack`. The codes are int32 when they
    fit: numpy sorts those with SIMD, ~15x its argsort of the same rows."""
    total = sum(bits for _, bits in fields)
    if total > 63:
        raise ValueError(f"packed_sort: {total} bits do not fit in int64")
    dtype = np.int32 if total <= 31 else np.int64
    code = np.zeros(fields[0][0].shape, dtype)
    for values, bits in fields:
        code <<= bits
        code |= values.astype(dtype, copy=False)
    return np.sort(code, axis=-1)


def unpack(code, shift, bits):
    return (code >> shift) & ((1 << bits) - 1)


def width(n):  # bits of the integers 0..n
    return max(int(n).bit_length(), 1)


def cumsum(steps, dtype):  # torch's integer cumsum is ~3x numpy's
    return torch.from_numpy(steps).cumsum(-1, dtype=dtype).numpy()


def dyck_labels(x, lengths, types):
    """(B, L) labels of bracket tokens x (B, L): 1 where the prefix is non-empty, balanced and
    never invalid; 0 elsewhere in the sample; -100 on padding.

    A close at time t is matched iff the event just before it on its level (the edge it crosses,
    depth after for a close, before for an open) is an open of its type: while the prefix is valid
    that event is the open it closes, and a close below depth 0 has none. The first unmatched close
    ends validity."""
    B, L = x.shape
    x, lengths = np.asarray(x), np.asarray(lengths)
    t = np.arange(L)
    valid = t < lengths[:, None]
    opens = x < types
    depth = cumsum(np.where(valid, 2 * opens.astype(np.int32) - 1, 0), torch.int32)  # (B, L): after x_t
    level = np.where(valid, depth - opens + L, 2 * L)  # in 0..2L - 1; 2L on padding
    s = packed_sort([(level, width(2 * L)), (t, width(L - 1)), (np.where(valid, x, 0), width(2 * types - 1))])
    x_bits, t_bits = width(2 * types - 1), width(L - 1)
    x_s, t_s, level_s = unpack(s, 0, x_bits), unpack(s, x_bits, t_bits), s >> (x_bits + t_bits)
    before = np.s_[:, :-1]  # the slot before, on the same level or not
    matched = np.zeros((B, L), bool)  # the first slot has no event before it
    matched[:, 1:] = (level_s[before] == level_s[:, 1:]) & (x_s[before] == x_s[:, 1:] - types)
    error = ~(matched | (x_s < types)) & (level_s < 2 * L)
    first_error = np.where(error, t_s, L).min(-1, keepdims=True)  # (B, 1)
    y = ((t < first_error) & (depth == 0)).astype(np.int64)
    return torch.from_numpy(np.where(valid, y, IGNORE_INDEX))


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
        rng = np.random.default_rng(torch.randint(0, 2**63 - 1, (), generator=generator).item())
        B, L, D, K = len(lengths), self.L, self.depth, self.types
        lengths, t = lengths.numpy().astype(np.int32), np.arange(L, dtype=np.int32)  # int32: half int64's time
        coins = np.unpackbits(rng.integers(0, 256, (B, -(-L // 8)), dtype=np.uint8), axis=-1)[:, :L]
        walk = cumsum(2 * coins.astype(np.int32) - 1, torch.int32)  # (B, L): the free walk S after step t
        fold = D - np.abs(np.arange(-L, L + 1, dtype=np.int32) % (2 * D) - D)  # the triangle wave at S = -L..L
        after = fold[walk + L]  # (B, L): the stack height after step t
        height = np.concatenate([np.zeros((B, 1), after.dtype), after[:, :-1]], 1)  # before step t
        up = after > height  # open?
        first = (lengths[:, None] - t == height).argmax(-1)[:, None]  # (B, 1): the first forced step
        forced = t >= first  # from here on: close all
        height = np.where(forced, np.take_along_axis(height, first, 1) - (t - first), height)
        up &= ~forced
        valid = t < lengths[:, None]
        level = np.where(valid, height - 1 + up, D)  # the edge each bracket crosses; D on padding
        # a level's events alternate open, close: sorted by (level, t), a close follows its open
        s = packed_sort([(level, width(D)), (t, width(L - 1)), (up, 1)])
        up_s, t_s = (s & 1).astype(bool), torch.from_numpy(unpack(s, 1, width(L - 1)).astype(np.int64))
        kinds = rng.integers(0, K, (B, L), dtype=np.int32)  # a slot's: an open's own, a close copies the one before
        kind_s = np.where(up_s, kinds, np.concatenate([kinds[:, :1], kinds[:, :-1]], 1))
        x = torch.empty(B, L, dtype=torch.long).scatter_(1, t_s, torch.from_numpy(kind_s + K * ~up_s))
        y = torch.from_numpy((height + 2 * up - 1 == 0).astype(np.int64))  # balanced where the height after is 0
        rows = rng.integers(0, 2, B).nonzero()[0]  # the samples to corrupt
        x[rows] = torch.from_numpy(shuffle_suffix(x[rows].numpy(), height[rows], lengths[rows], K, rng))
        y[rows] = dyck_labels(x[rows], lengths[rows], K)
        return x, y


def shuffle_suffix(x, height, lengths, types, rng):
    """x (B, L) with its suffix after a random balanced prefix end e (height 0 before step e, e < l)
    uniformly shuffled: rows sorted by (group, key, token) with group 0 before e, 1 in e..l-1, 2 on
    padding, and key = t outside the suffix, random in it. Rows whose suffix keys tie are redrawn,
    so the order given distinct keys, uniform, is exact."""
    B, L = x.shape
    t = np.arange(L, dtype=np.int32)
    valid = t < lengths[:, None]
    ends = (height == 0) & valid
    counted = np.cumsum(ends, -1)
    k = rng.integers(0, counted[:, -1])[:, None]  # (B, 1): the k-th end (0-indexed), uniform
    e = (counted > k).argmax(-1)[:, None]  # (B, 1)
    group = (t >= e).astype(np.int32) + ~valid
    x_bits = width(2 * types - 1)
    small = 2 * width(L) + 6 <= 29 - x_bits  # int32 codes, ties in <= 2^-6 of the rows
    key_bits, key_type = (29 - x_bits, np.int32) if small else (61 - x_bits, np.int64)
    if width(L - 1) > key_bits:
        raise ValueError(f"shuffle_suffix: L={L} and types={types} do not fit the packed keys")
    todo = np.arange(B)
    while len(todo):
        keys = np.where(group[todo] == 1, rng.integers(0, 2**key_bits, (len(todo), L), key_type), t)
        s = packed_sort([(group[todo], 2), (keys, key_bits), (x[todo], x_bits)])
        x[todo] = unpack(s, 0, x_bits)
        tie = (s[:, 1:] >> x_bits == s[:, :-1] >> x_bits).any(-1)  # only suffix keys can tie
        todo = todo[tie]
    return x
