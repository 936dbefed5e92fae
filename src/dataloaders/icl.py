"""In-context tasks of the H3, Hyena and Mamba papers (docs/tasks.md, "In-context tasks"): induction
heads and associative recall as HazyResearch/safari's synthetics.py generates them (the H3 and Hyena
papers' code, and berlino/seq_icl's, which is the same file), and the copying task of the S4
repository (state-spaces/s4, dataloaders/datasets/copying.py) whose random-position form is Mamba's
selective copying. Fixed length, no <pad>; every batch is drawn at once from a torch.Generator.

induction_head and associative_recall (vocabulary V = `vocab_size`, the original's count, which
includes its two special tokens): symbols 0..V-3, then `=>` (V-2, the original's copy prefix), then
`.` (V-1, the original's noop: associative_recall's answer to a key that was never bound).

    induction_head      s = L symbols uniform over 0..V-3, then `=>`. With probability 1/2 one trigger,
                        else `num_triggers`: positions p ~ U{0..L-k-2} (k = `induction_len`), drawn with
                        replacement and sorted, a position kept when it is more than k after the last kept
                        one. c = the k symbols after the first kept p (before any write); at every kept p,
                        s[p] = `=>` and s[p+1..p+k] = c. Then c is appended: |s| = L + 1 + k.
    associative_recall  keys 0..K-1 (K = (V-2) // 2), values K..V-3; a key is a tuple of n = `num_keys`
                        keys. Each of the K^n keys is bound to a value drawn uniformly (with replacement),
                        afresh for every example. s = P = L // (n + 1) pairs `key value`, each key uniform
                        over the K^n, then `=>`, a query key q and its value. q is uniform over the K^n;
                        with allow_dot=false (the original's default), a q that is not in the context is
                        redrawn once, uniformly over the distinct keys that are; with allow_dot=true it stays
                        and is answered by `.`. |s| = P (n + 1) + n + 2.

x = s[:-1], and the labels are s[1:] (the original's language-modelling targets) with loss_on=all,
or only the answer (the last k labels of induction_head, the last one of associative_recall) with
loss_on=answer. Validation and test sets (eval sets too) always score the answer only, as the
original's test set masks every other label: `accuracy` there is the papers' accuracy. `L` is the
original's `input_seq_len` (the context before the query); the model reads L_input = |s| - 1 tokens.

copying (S4's torch_copying_data; A = `vocab_size`, M = `M`, L noise positions): M data tokens
uniform over 1..A-2, written in order at M positions of an (L + M)-long stretch of noise tokens 0 --
its first M positions with variable=false (the classic copying task), M uniformly random distinct
positions with variable=true (Mamba's selective copying) -- then M markers A-1. The label at marker j
is data token j (S4's decoder reads the last M outputs: the same positions); -100 elsewhere.
L_input = L + 2M.

Mamba's selective-copying configuration was never published (state-spaces/mamba issue #343). Its
paper (section 4.1.1, appendix E.1) describes length-4096 sequences, a vocabulary of 16 tokens
including the noise token, 16 data tokens to memorise, 2-layer models of width 64, 400K steps of
batch 64 at a constant lr 1e-4. Here that reads as S4's copying with variable=true, vocab_size=16
(noise 0, data 1..14, marker 15), M=16 and L=4064 noise positions, so that L + 2M = 4096 tokens
(configs/experiment/selective-copying.yaml names the overrides).

Differences from the originals, none in the law of a batch: the originals build fixed sets of
distinct examples (safari) or fixed sets (S4's eval set); here the sets are drawn like any
synthetic set (num_train_examples / num_eval_examples), a duplicate example having probability
~V^-L. The originals number their tokens by sorting strings ("0", "1", "10", .., "=>"): a
relabelling, under which the law is the same (its key half is the first half of that order).
"""

import numpy as np
import torch

from src.dataloaders.tokens import TokenDataset
from src.utils.errors import ConfigError, check_choice
from src.utils.labels import IGNORE_INDEX


def _integer(key, value, low):
    if not isinstance(value, int) or isinstance(value, bool) or value < low:
        raise ConfigError(f"dataset.{key}={value!r} must be an integer >= {low}")


def sorted_subsets(batch_size, M, n, generator):
    """(B, M) int64: a uniform M-subset of 0..n-1 per row, sorted. M uniform draws, sorted; a row
    with a repeated draw is drawn again whole (rejection: the accepted rows are uniform over the
    ordered draws of distinct values, hence their sorted rows over the subsets). For M << n (copying:
    16 of 4080) a row repeats with probability ~M^2 / 2n; with M^2 > n, the first M of a random order.
    The draws are torch's (the batch's generator); the sorts and checks numpy's, ~1 us an op on
    these (B, M) arrays against torch's ~10."""
    if M * M > n:  # many repeats: the first M of a random order
        return torch.rand(batch_size, n, generator=generator).argsort(dim=1)[:, :M].sort(dim=1).values
    at = np.sort(torch.randint(0, n, (batch_size, M), generator=generator).numpy(), axis=1)
    again = np.flatnonzero((at[:, 1:] == at[:, :-1]).any(axis=1))
    while len(again):
        part = np.sort(torch.randint(0, n, (len(again), M), generator=generator).numpy(), axis=1)
        at[again] = part
        again = again[(part[:, 1:] == part[:, :-1]).any(axis=1)]
    return torch.from_numpy(at)


class InContext(TokenDataset):
    """Shared parts of induction_head and associative_recall: the vocabulary, the language-model
    labels and the answer-only labels of evaluation. Subclasses set `answers` (how many labels at
    the end are the answer) and L_input, and implement `sequences(B, generator) -> s (B, L_input + 1)`."""

    pads = False
    answers = 1

    def __init__(self, vocab_size, L, loss_on, samples_per_epoch, val_split, seed, num_train_examples,
                 num_eval_examples):
        _integer("vocab_size", vocab_size, 4)
        self.vocab_size, self.n_tokens, self.d_output = vocab_size, vocab_size, vocab_size
        self.prefix_id, self.dot_id = vocab_size - 2, vocab_size - 1  # `=>`, `.`
        self.loss_on = check_choice("dataset.loss_on", loss_on, ["all", "answer"])
        super().__init__(L, None, samples_per_epoch, val_split, seed, num_train_examples, num_eval_examples)

    def sequences(self, batch_size, generator):
        raise NotImplementedError

    def tokens(self, lengths, generator):
        s = self.sequences(len(lengths), generator)  # (B, L_input + 1)
        x, y = s[:, :-1], s[:, 1:].clone()
        if self.loss_on == "answer":
            y[:, : -self.answers] = IGNORE_INDEX
        return x, y

    def batch(self, split, epoch, index, rows):
        x, y = super().batch(split, epoch, index, rows)
        if split != "train":  # the original's test set scores the answer only
            y = y.clone()
            y[:, : -self.answers] = IGNORE_INDEX
        return x, y


class InductionHead(InContext):
    """L random symbols holding a trigger `=>` and the symbol(s) after it, then `=>`: the answer is that symbol (safari)."""

    def __init__(self, vocab_size=20, L=30, induction_len=1, num_triggers=1, loss_on="all", samples_per_epoch=16000,
                 val_split=0.1, seed=0, num_train_examples=None, num_eval_examples=None):
        _integer("induction_len", induction_len, 1)
        _integer("num_triggers", num_triggers, 1)
        self.induction_len, self.num_triggers, self.answers = induction_len, num_triggers, induction_len
        super().__init__(vocab_size, L, loss_on, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)
        if L < induction_len + 2:
            raise ConfigError(f"dataset.L={L} must be >= induction_len + 2 = {induction_len + 2} (a trigger and "
                              "its copy inside the context)")
        self.L_input = L + induction_len

    def sequences(self, B, generator):
        L, k = self.L, self.induction_len
        s = torch.randint(0, self.vocab_size - 2, (B, L + 1 + k), generator=generator)
        s[:, L] = self.prefix_id
        many = torch.rand(B, generator=generator) >= 0.5  # else one trigger
        n = self.num_triggers
        pos = torch.randint(0, L - k - 1, (B, n), generator=generator)
        pos[~many, 1:] = L  # one trigger: only the first draw counts (past the others once sorted)
        pos = pos.sort(dim=1).values  # (B, n)
        keep = torch.zeros(B, n, dtype=torch.bool)
        keep[:, 0] = True
        last = pos[:, 0]
        for i in range(1, n):  # greedy: kept when more than k after the last kept trigger
            keep[:, i] = many & (pos[:, i] - last > k)
            last = torch.where(keep[:, i], pos[:, i], last)
        j = torch.arange(1, k + 1)
        copy = s.gather(1, pos[:, :1] + j)  # (B, k): the symbols after the first trigger
        for i in range(n):
            rows = keep[:, i].nonzero().squeeze(1)
            at = pos[rows, i, None]  # (R, 1)
            s[rows, at[:, 0]] = self.prefix_id
            s[rows[:, None], at + j] = copy[rows]
        s[:, L + 1 :] = copy
        return s


class AssociativeRecall(InContext):
    """`key value` pairs from one random map, then `=>` and a key of the context: the answer is its value (safari)."""

    def __init__(self, vocab_size=20, L=40, num_keys=1, allow_dot=False, loss_on="all", samples_per_epoch=16000,
                 val_split=0.1, seed=0, num_train_examples=None, num_eval_examples=None):
        _integer("num_keys", num_keys, 1)
        self.num_keys, self.allow_dot = num_keys, bool(allow_dot)
        super().__init__(vocab_size, L, loss_on, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)
        self.K = (vocab_size - 2) // 2
        self.pairs = L // (num_keys + 1)
        if self.pairs < 1:
            raise ConfigError(f"dataset.L={L} holds no `key value` pair of num_keys={num_keys} keys: L >= {num_keys + 1}")
        if self.K ** num_keys > 2**24:
            raise ConfigError(f"dataset.num_keys={num_keys}: {self.K}^{num_keys} compound keys, each bound to a value "
                              "per example, is too many; lower num_keys or vocab_size")
        self.L_input = self.pairs * (num_keys + 1) + num_keys + 1

    def sequences(self, B, generator):
        n, K, P = self.num_keys, self.K, self.pairs
        n_keys = K**n
        table = torch.randint(self.K, self.vocab_size - 2, (B, n_keys), generator=generator)  # each key's value
        keys = torch.randint(0, n_keys, (B, P), generator=generator)  # compound key ids
        present = torch.zeros(B, n_keys, dtype=torch.bool).scatter_(1, keys, True)
        query = torch.randint(0, n_keys, (B,), generator=generator)
        found = present.gather(1, query[:, None])[:, 0]
        if not self.allow_dot:  # one redraw, uniform over the distinct keys of the context
            clocks = torch.rand(B, n_keys, generator=generator).masked_fill_(~present, -1.0)
            query = torch.where(found, query, clocks.argmax(dim=1))
            found = torch.ones_like(found)
        answer = torch.where(found, table.gather(1, query[:, None])[:, 0], self.dot_id)
        digits = K ** torch.arange(n - 1, -1, -1)  # a compound id's keys, most significant first
        pairs = torch.cat([keys[..., None] // digits % K, table.gather(1, keys)[..., None]], dim=2)  # (B, P, n + 1)
        tail = torch.cat([torch.full((B, 1), self.prefix_id), query[:, None] // digits % K, answer[:, None]], dim=1)
        return torch.cat([pairs.reshape(B, P * (n + 1)), tail], dim=1)


class Copying(TokenDataset):
    """M data tokens among L noise tokens, recalled in order at M markers; at random positions with variable=true (Mamba's selective copying)."""

    pads = False

    def __init__(self, vocab_size=16, L=4064, M=16, variable=True, samples_per_epoch=16000, val_split=0.1, seed=0,
                 num_train_examples=None, num_eval_examples=None):
        _integer("vocab_size", vocab_size, 3)
        _integer("M", M, 1)
        self.vocab_size, self.M, self.variable = vocab_size, M, bool(variable)
        self.n_tokens = self.d_output = vocab_size
        super().__init__(L, None, samples_per_epoch, val_split, seed, num_train_examples, num_eval_examples)
        self.L_input = L + 2 * M

    def tokens(self, lengths, generator):
        B, L, M = len(lengths), self.L, self.M
        data = torch.randint(1, self.vocab_size - 1, (B, M), generator=generator)
        if self.variable:  # a uniform M-subset of the L + M positions, in order
            at = sorted_subsets(B, M, L + M, generator)
        else:
            at = torch.arange(M).expand(B, M)
        x, y = np.empty((2, B, L + 2 * M), np.int64)  # one allocation (one page-fault cost); numpy: ~1 us a write
        x[:, : L + M], x[:, L + M :] = 0, self.vocab_size - 1
        np.put_along_axis(x, at.numpy(), data.numpy(), 1)
        y[:, : L + M], y[:, L + M :] = IGNORE_INDEX, data
        return torch.from_numpy(x), torch.from_numpy(y)
