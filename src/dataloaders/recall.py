"""Associative recall (docs/tasks.md, "Recall"): zoology's multi-query associative recall
(`mqar`), its forgetting and compositional variants. Every example is generated for the whole
batch at once from a torch.Generator.

mqar (vocab V, length L, N pairs, P passes): keys k_1..k_N distinct in [1, V/2), values v_1..v_N
distinct in [V/2, V), key i bound to value i; id 0 is the filler. The context
`k1 v1 ... kN vN` (C = 2N tokens) is repeated P times; the remaining L - C P positions form
S = (L - C P) / 2 query slots at even offsets, of which N are drawn without replacement with
P(slot g) proportional to (g + 1)^(power_a - 1) (successive draws, as numpy's
`choice(replace=False, p=...)`), and key i is written at offset 2 g_i after the context. The label
at a query key's own position is its value (-100 elsewhere: exactly N labels per example).

    V=12, L=16, N=2:  x = 2 8 4 7 0 0 4 0 0 0 0 0 2 0 0 0,  labels 7 at t=6 and 8 at t=12

Options beyond zoology: `query_order=end` puts the N queries in the first N slots, in random
order; `unique_keys=false` draws keys with replacement, a key bound twice answering its latest
value. `random_non_queries=true` replaces every filler by a uniform draw from [0, V) (zoology's
default; its paper configs turn it off). Zoology also asserts V > L, which the task does not
need (its own docstring example, V=12 and L=16, breaks it): here the key and value ranges must
only hold N distinct ids.

Sampling. N distinct ids from a range: N uniform draws, the repeated ones redrawn until none
repeats. The law of the result is invariant under any relabelling of the range, and relabellings
map any ordered tuple of distinct ids to any other: it is the uniform ordered sample. Weighted
draws without replacement: exponential clocks E_g / w_g (E_g ~ Exp(1)), the N that ring first, in
the order they ring, which is the law of successive draws (the Gumbel top-k trick, exponentiated).
Rows are sorted by numpy (~10x torch's sort on short rows).
"""

import math

import numpy as np
import torch

from src.dataloaders.tokens import TokenDataset
from src.utils.errors import ConfigError, check_choice
from src.utils.labels import IGNORE_INDEX


def distinct(batch_size, n, low, high, generator):
    """(B, n) int64: in each row n distinct ids from [low, high), a uniform ordered sample."""
    x = torch.randint(low, high, (batch_size, n), generator=generator)
    rows = torch.arange(batch_size)
    while len(rows):  # the rows that may still repeat an id
        part = x[rows]
        order = torch.from_numpy(np.argsort(part.numpy(), axis=1))
        values = part.gather(1, order)
        repeated = torch.zeros_like(values, dtype=torch.bool)
        repeated[:, 1:] = values[:, 1:] == values[:, :-1]  # all but one of each run of equal ids
        keep = repeated.any(dim=1)
        rows, part, repeated, order = rows[keep], part[keep], repeated[keep], order[keep]
        redraw = torch.zeros_like(repeated).scatter_(1, order, repeated)
        part[redraw] = torch.randint(low, high, (int(redraw.sum()),), generator=generator)
        x[rows] = part
    return x


def shuffle(x, generator):
    """Each row of x (B, n) in a uniformly random order."""
    return x.gather(1, torch.rand(x.shape, generator=generator).argsort(dim=1))


def power_law_slots(batch_size, n, n_slots, power_a, generator):
    """(B, n) int64: n distinct slots of 0..n_slots-1 per row, drawn one after another with
    P(g) proportional to (g + 1)^(power_a - 1) among the slots not drawn yet."""
    inverse_w = torch.arange(1, n_slots + 1, dtype=torch.float32) ** (1 - power_a)  # 1 / w_g: (S,)
    clocks = torch.rand(batch_size, n_slots, generator=generator).clamp_min_(1e-30).log_().mul_(-inverse_w)
    return torch.from_numpy(np.argsort(clocks.numpy(), axis=1)[:, :n].astype(np.int64))  # first n, in draw order


class Recall(TokenDataset):
    """Shared parts of the recall tasks: zoology's vocabulary (no <pad>: fixed length), the query
    slots, the labels and the optional random filler."""

    pads = False

    def __init__(self, vocab_size, L, num_kv_pairs, power_a, random_non_queries, samples_per_epoch, val_split,
                 seed, num_train_examples, num_eval_examples):
        self.vocab_size, self.num_kv_pairs, self.power_a = vocab_size, num_kv_pairs, power_a
        self.random_non_queries = random_non_queries
        self.n_tokens = self.d_output = vocab_size
        super().__init__(L, None, samples_per_epoch, val_split, seed, num_train_examples, num_eval_examples)
        if not isinstance(num_kv_pairs, int) or num_kv_pairs < 1:
            raise ConfigError(f"dataset.num_kv_pairs={num_kv_pairs!r} must be a positive integer")
        if not isinstance(power_a, (int, float)) or not 0 < power_a <= 1:
            raise ConfigError(f"dataset.power_a={power_a!r} must be in (0, 1] (1: uniform query slots)")

    def _require(self, ok, what):
        if not ok:
            raise ConfigError(f"{type(self).__name__}: {what} (dataset.L={self.L}, dataset.num_kv_pairs="
                              f"{self.num_kv_pairs}, dataset.vocab_size={self.vocab_size})")

    def slots(self, batch_size, n_slots, generator):
        return power_law_slots(batch_size, self.num_kv_pairs, n_slots, self.power_a, generator)

    def finish(self, x, y, generator):
        """Fill the zeros of x with uniform ids when random_non_queries (the labels stay)."""
        if self.random_non_queries:
            noise = torch.randint(0, self.vocab_size, x.shape, generator=generator)
            x = torch.where(x == 0, noise, x)
        return x, y


class MQAR(Recall):
    def __init__(self, vocab_size=8192, L=64, num_kv_pairs=4, power_a=0.01, random_non_queries=False, num_passes=1,
                 query_order="power_law", unique_keys=True, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None, num_eval_examples=None):
        super().__init__(vocab_size, L, num_kv_pairs, power_a, random_non_queries, samples_per_epoch, val_split, seed,
                         num_train_examples, num_eval_examples)
        self.num_passes, self.unique_keys = num_passes, unique_keys
        self.query_order = check_choice("dataset.query_order", query_order, ["power_law", "end"])
        if not isinstance(num_passes, int) or num_passes < 1:
            raise ConfigError(f"dataset.num_passes={num_passes!r} must be a positive integer")
        N = num_kv_pairs
        self._require(L % 2 == 0, "L must be even")
        self._require(N <= vocab_size // 2 - 1, "the keys [1, V/2) and values [V/2, V) must hold N distinct ids")
        self._require(2 * N * num_passes + 2 * N <= L, f"2 N num_passes + 2 N = {2 * N * num_passes + 2 * N} must be <= L")

    def tokens(self, lengths, generator):
        B, N, V, L = len(lengths), self.num_kv_pairs, self.vocab_size, self.L
        if self.unique_keys:
            keys = distinct(B, N, 1, V // 2, generator)  # (B, N)
        else:
            keys = torch.randint(1, V // 2, (B, N), generator=generator)
        values = distinct(B, N, V // 2, V, generator)  # (B, N)
        context = torch.stack([keys, values], dim=2).reshape(B, 2 * N).repeat(1, self.num_passes)  # (B, C P)
        start = context.shape[1]
        if self.query_order == "end":
            slots = shuffle(torch.arange(N).expand(B, N), generator)
        else:
            slots = self.slots(B, (L - start) // 2, generator)  # (B, N)
        answers = values
        if not self.unique_keys:  # a key bound twice answers the value of its last binding
            same = keys[:, :, None] == keys[:, None, :]  # (B, N, N)
            answers = values.gather(1, (same * torch.arange(1, N + 1)).argmax(dim=2))
        x = torch.zeros(B, L, dtype=torch.long)
        x[:, :start] = context
        at = start + 2 * slots  # (B, N) positions of the query keys
        x.scatter_(1, at, keys)
        y = torch.full((B, L), IGNORE_INDEX, dtype=torch.long).scatter_(1, at, answers)
        return self.finish(x, y, generator)


class MQARForgetting(Recall):
    """mqar whose context goes on with U update pairs: U distinct keys of the N rebound to new
    values, each drawn uniformly from the values other than its key's old one (zoology compares
    against the wrong key's value and can repeat the old one: fixed). Context 2 (N + U); every key
    is queried once, as in mqar, and answers its latest value."""

    def __init__(self, vocab_size=8192, L=64, num_kv_pairs=4, num_updates=4, power_a=0.01, random_non_queries=False,
                 samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None, num_eval_examples=None):
        super().__init__(vocab_size, L, num_kv_pairs, power_a, random_non_queries, samples_per_epoch, val_split, seed,
                         num_train_examples, num_eval_examples)
        N, U = num_kv_pairs, num_updates
        if not isinstance(U, int) or not 1 <= U <= N:
            raise ConfigError(f"dataset.num_updates={U!r} must be an integer in 1..num_kv_pairs={N}")
        self.num_updates = U
        self._require(L % 2 == 0, "L must be even")
        self._require(N <= vocab_size // 2 - 1, "the keys [1, V/2) and values [V/2, V) must hold N distinct ids")
        self._require(2 * (N + U) + 2 * N <= L, f"2 (N + U) + 2 N = {2 * (N + U) + 2 * N} must be <= L")

    def tokens(self, lengths, generator):
        B, N, U, V, L = len(lengths), self.num_kv_pairs, self.num_updates, self.vocab_size, self.L
        keys = distinct(B, N, 1, V // 2, generator)  # (B, N)
        values = distinct(B, N, V // 2, V, generator)
        which = torch.rand(B, N, generator=generator).argsort(dim=1)[:, :U]  # (B, U) the rebound keys
        old = values.gather(1, which)
        new = torch.randint(V // 2, V - 1, (B, U), generator=generator)
        new = new + (new >= old)  # uniform over the values other than old
        latest = values.scatter(1, which, new)
        context = torch.cat([torch.stack([keys, values], 2).reshape(B, 2 * N),
                             torch.stack([keys.gather(1, which), new], 2).reshape(B, 2 * U)], dim=1)
        start = 2 * (N + U)
        at = start + 2 * self.slots(B, (L - start) // 2, generator)  # (B, N)
        x = torch.zeros(B, L, dtype=torch.long)
        x[:, :start] = context
        x.scatter_(1, at, keys)
        y = torch.full((B, L), IGNORE_INDEX, dtype=torch.long).scatter_(1, at, latest)
        return self.finish(x, y, generator)


class MQARCompositional(Recall):
    """Compound keys: the vocabulary in thirds (first parts [1, V/3), second parts [V/3, 2V/3),
    values [2V/3, V)); g first and g second parts give the g x g grid of keys (a_i, b_j), N = g^2,
    each bound to a distinct value, the context being the N triples `a b v` in random order. The
    query region after it has slots of 2 tokens; N distinct slots are drawn as in mqar and the
    query `a b` is labelled with its value at the position of b. Needs 3N + 2N <= L."""

    def __init__(self, vocab_size=8192, L=64, num_kv_pairs=4, power_a=0.01, random_non_queries=False,
                 samples_per_epoch=16000, val_split=0.1, seed=0, num_train_examples=None, num_eval_examples=None):
        super().__init__(vocab_size, L, num_kv_pairs, power_a, random_non_queries, samples_per_epoch, val_split, seed,
                         num_train_examples, num_eval_examples)
        N, g = num_kv_pairs, math.isqrt(num_kv_pairs)
        self._require(g * g == N, "num_kv_pairs must be a square (4, 9, 16, ...)")
        self._require(5 * N <= L, f"3 N + 2 N = {5 * N} must be <= L")
        self._require(vocab_size // 3 - 1 >= g and vocab_size - 2 * (vocab_size // 3) >= N,
                      "each third of the vocabulary must hold the parts and values")
        self.grid = g

    def tokens(self, lengths, generator):
        B, N, g, V, L = len(lengths), self.num_kv_pairs, self.grid, self.vocab_size, self.L
        third = V // 3
        a = distinct(B, g, 1, third, generator).repeat_interleave(g, dim=1)  # (B, N): a_1 a_1 .. a_2 ..
        b = distinct(B, g, third, 2 * third, generator).repeat(1, g)  # (B, N): b_1 b_2 .. b_1 ..
        order = torch.rand(B, N, generator=generator).argsort(dim=1)  # the triples in random order
        a, b = a.gather(1, order), b.gather(1, order)
        values = distinct(B, N, 2 * third, V, generator)
        start = 3 * N
        at = start + 2 * self.slots(B, (L - start) // 2, generator)  # (B, N) positions of the a's
        x = torch.zeros(B, L, dtype=torch.long)
        x[:, :start] = torch.stack([a, b, values], dim=2).reshape(B, start)
        x.scatter_(1, at, a).scatter_(1, at + 1, b)
        y = torch.full((B, L), IGNORE_INDEX, dtype=torch.long).scatter_(1, at + 1, values)
        return self.finish(x, y, generator)
