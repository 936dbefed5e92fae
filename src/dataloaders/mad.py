"""MAD's six synthetic tasks (Poli et al. 2024, athms/mad-lab `mad/data/instances.py`), each
generated a batch at a time from a torch.Generator; `experiment=mad dataset.task=T` trains one
(docs/tasks.md, "MAD"). Per-example definitions: mad_reference.py.

MAD's layout: inputs x, labels y, -100 where nothing is scored, and MAD's two forms of a sample
(`is_training`): the training form labels every position with the next token (language
modelling, y_t = x_{t+1}); the test form labels only the answers. A dataset draws the training
form on its training split and the test form on validation and test (`form: train | test`
forces one). Ids: a task's own tokens first, MAD's special tokens at the top of the vocabulary.

in_context_recall  seq_len / 2 - 1 pairs `k v` (keys [0, n/2), values [n/2, n), n ids below the
    noise ids and, single-query, the copy prefix), a key's value drawn at its first occurrence;
    then ([copy prefix]) `k* v*` for a uniform one of the keys shown. x drops the last token.
    Test labels: v at a repeated key's position (multi_query), and v* at k*.
    Input length seq_len - 1 (multi_query) or seq_len.
noisy_in_context_recall  in_context_recall whose pairs are, with probability frac_noise, two
    uniform noise ids (unlabelled), never pair `keep` ~ U{0..seq_len/2 - 1}.
fuzzy_in_context_recall  keys and values are motifs of 1..K and 1..V distinct ids (test keys:
    K ids); pairs until the length reaches seq_len - |probe pair| - (K + V), the probe pair
    `k* v*` inserted once the length reaches probe_idx; then ([copy prefix]) `k* v*`, left-padded
    to seq_len + 1 with <pad>; x drops the last token. A repeated key is labelled with its value's
    ids (y_t = the next token).
memorization  seq_len / 2 pairs `k <insert>`, labelled at `<insert>` with the value of k under a
    fixed map (numpy's default_rng(kv_map_seed), as MAD's generate_kv_map).
compression  seq_len - 1 uniform ids then `<compress>`; y = x (the model must rebuild the input
    from the bottleneck: model.compress).
selective_copying  n = num_tokens_to_copy ids scattered among seq_len - 2n - 1 blanks, then
    `<copy>` and n blanks labelled with the n ids in order.

MAD's bugs, fixed; `original: true` keeps MAD's behaviour:
  - fuzzy_in_context_recall: the probe pair can miss the context (probe_idx is drawn beyond the
    last length the loop reaches), and is still asked for: at the baseline, 2.3% of the test
    examples (1.7% of the training ones) ask for a key they never showed. Fixed: the probe pair goes
    in before the pair that would end the context if it is not in by then.
  - selective_copying: the blanks' insert positions come from numpy's unseeded global RNG and are
    drawn from [0, n), never after the last id (which is then always next to `<copy>`). Fixed: the
    example's generator, [0, n].
  - compression with noise: MAD returns its inputs as the targets, so the noise ids are labelled.
    Fixed: unlabelled (what its code builds before returning the inputs).
  - memorization with noise: MAD's benchmark builds the map over vocab_size - 1 ids, ignoring the
    noise ids, so values can be noise ids. Fixed: the map is over the ids below the noise ids.
  - in_context_recall with noise: `keep` can be the last pair, which the loop never reaches; if
    every pair is then noise MAD fails (choice from nothing). Here such an example is redrawn (the
    law of MAD's examples given that it did not fail; no option).

Sampling. A key's value is the candidate drawn at its first occurrence (candidates are drawn for
every pair; unused ones do not change the law). Distinct ids: the i-th is the r-th id not taken
yet, r uniform over the n - i left (a uniform ordered sample). fuzzy's loop is laid out
as a stream of pairs, drawn all at once: a pair's length is its key's plus its value's (the
value at the key's first occurrence), their cumulative sums place the probe pair and end the
context, as MAD's loop does one pair at a time.
"""

import inspect

import numpy as np
import torch

from src.dataloaders.tokens import TokenDataset, stable_argsort
from src.utils.errors import ConfigError, check_choice
from src.utils.labels import IGNORE_INDEX

TASKS = ["in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall", "memorization",
         "compression", "selective_copying"]

# MAD's difficulty grid (configs/tasks/*.yml): each key changed alone from the task's baseline
# (the class defaults below), 66 settings with the baselines.
GRID = {
    "in_context_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                          "num_train_examples": [6400, 3200, 1600, 800]},
    "noisy_in_context_recall": {"vocab_size": [48, 80, 144], "seq_len": [256, 512, 1024],
                                "num_train_examples": [6400, 3200, 1600, 800], "frac_noise": [0.4, 0.6, 0.8]},
    "fuzzy_in_context_recall": {"vocab_size": [32, 64, 128], "seq_len": [256, 512, 1024],
                                "num_train_examples": [6400, 3200, 1600, 800]},
    "memorization": {"vocab_size": [512, 1024, 2048, 4096, 8192]},
    "compression": {"vocab_size": [32, 64, 128], "seq_len": [64, 128, 256],
                    "num_train_examples": [6400, 3200, 1600, 800]},
    "selective_copying": {"vocab_size": [32, 64, 128], "seq_len": [512, 1024],
                          "num_train_examples": [6400, 3200, 1600, 800], "num_tokens_to_copy": [32, 64, 96]},
}


def grid():
    """[{task, key: value}]: MAD's 66 settings, each task's baseline first."""
    return [{"task": task} | change for task in TASKS for change in
            [{}] + [{key: value} for key, values in GRID[task].items() for value in values]]


def distinct_ids(shape, size, n, generator):
    """(*shape, size) int64: `size` distinct ids of [0, n) in a uniformly random order, per row."""
    taken = torch.empty(*shape, size, dtype=torch.long)
    for i in range(size):
        r = torch.randint(0, n - i, shape, generator=generator)  # the r-th id not taken yet: s = r + #{taken <= s}
        s = r
        for _ in range(i):  # from below, the least fixed point in at most i steps
            s = r + (taken[..., :i] <= s[..., None]).sum(-1)
        taken[..., i] = s
    return taken


def first_occurrence(ids):
    """(B, T) -> (B, T): the index of the first t' <= t with ids[t'] == ids[t], per row."""
    order = stable_argsort(ids)
    grouped = ids.gather(1, order)
    i = torch.arange(ids.shape[1]).expand_as(ids)
    start = torch.ones_like(grouped, dtype=torch.bool)
    start[:, 1:] = grouped[:, 1:] != grouped[:, :-1]
    first = order.gather(1, (i * start).cummax(-1).values)  # the group's first index, in sorted order
    return torch.empty_like(first).scatter_(1, order, first)


def first_true(mask):
    """(B, n) bool -> (B,): the first True index of each row (n where none)."""
    n = mask.shape[1]
    return torch.where(mask, torch.arange(n), n).min(dim=1).values


def _check(ok, message):
    if not ok:
        raise ConfigError(message)


class MADTask(TokenDataset):
    """Shared parts: MAD's vocabulary (no <pad> of the repository's: fixed length), its training
    and test forms, its training-set and test-set sizes."""

    pads = False
    name = None

    def __init__(self, vocab_size, length, form, samples_per_epoch, val_split, seed, num_train_examples,
                 num_eval_examples):
        for key, value in (("vocab_size", vocab_size), ("seq_len", self.seq_len)):
            _check(isinstance(value, int) and not isinstance(value, bool) and value >= 2,
                   f"dataset.{key}={value!r} must be an integer >= 2 ({self.name})")
        self.vocab_size = vocab_size
        self.form = None if form is None else check_choice("dataset.form", form, ["train", "test"])
        self.n_tokens = self.d_output = vocab_size
        super().__init__(length, None, samples_per_epoch, val_split, seed, num_train_examples, num_eval_examples)

    def draw(self, batch_size, generator, training):
        """(x, y) of `batch_size` examples in MAD's training form (training) or test form."""
        raise NotImplementedError

    def generate(self, batch_size, generator):
        return self.draw(batch_size, generator, self.form == "train")

    def generate_split(self, batch_size, generator, split):
        return self.draw(batch_size, generator, (self.form or ("train" if split == "train" else "test")) == "train")

    def _noise(self, noise_vocab_size, frac_noise):
        _check(isinstance(frac_noise, (int, float)) and 0 <= frac_noise < 1,
               f"dataset.frac_noise={frac_noise!r} must be in [0, 1) ({self.name})")
        _check(isinstance(noise_vocab_size, int) and noise_vocab_size >= 0
               and (noise_vocab_size > 0 or frac_noise == 0),
               f"dataset.noise_vocab_size={noise_vocab_size!r} must be a non-negative integer, positive when "
               f"dataset.frac_noise > 0 ({self.name})")
        self.noise_vocab_size, self.frac_noise = noise_vocab_size, frac_noise

    def _noise_pairs(self, B, n, generator, keep=None):
        """(B, n) bool: which pairs are noise (each with probability frac_noise, never pair `keep`)."""
        if not self.frac_noise:
            return torch.zeros(B, n, dtype=torch.bool)
        noise = torch.rand(B, n, generator=generator) < self.frac_noise
        return noise if keep is None else noise & (torch.arange(n) != keep[:, None])


class InContextRecall(MADTask):
    name = "in_context_recall"

    def __init__(self, vocab_size=16, seq_len=128, multi_query=True, noise_vocab_size=0, frac_noise=0.0, form=None,
                 num_train_examples=12800, num_eval_examples=1280, samples_per_epoch=12800, val_split=0.1, seed=0):
        self.seq_len, self.multi_query = seq_len, bool(multi_query)
        super().__init__(vocab_size, seq_len - 1 if multi_query else seq_len, form, samples_per_epoch, val_split,
                         seed, num_train_examples, num_eval_examples)
        self._noise(noise_vocab_size, frac_noise)
        _check(seq_len % 2 == 0 and seq_len >= 4, f"dataset.seq_len={seq_len} must be even and >= 4 ({self.name})")
        n = vocab_size - (0 if multi_query else 1) - noise_vocab_size
        _check(n >= 2, f"dataset.vocab_size={vocab_size} leaves {n} key and value ids below the noise ids "
                       f"(dataset.noise_vocab_size={noise_vocab_size}); they need 2 ({self.name})")
        self.n_keys, self.n_ids = n // 2, n

    def draw(self, B, generator, training):
        P, nk = self.seq_len // 2 - 1, self.n_keys
        keep = torch.randint(0, P + 1, (B,), generator=generator)  # MAD's not_noise_idx: one of P + 1 pairs
        noise = self._noise_pairs(B, P, generator, keep)
        while len(rows := noise.all(dim=1).nonzero()[:, 0]):  # every pair noise (MAD fails): redraw
            keep[rows] = torch.randint(0, P + 1, (len(rows),), generator=generator)
            noise[rows] = self._noise_pairs(len(rows), P, generator, keep[rows])
        keys = torch.randint(0, nk, (B, P), generator=generator)
        candidates = torch.randint(nk, self.n_ids, (B, P), generator=generator)
        noise_ids = self.n_ids + torch.randint(0, max(self.noise_vocab_size, 1), (B, P, 2), generator=generator)
        ids = torch.where(noise, nk, keys)  # noise pairs: a key column of their own
        first = torch.full((B, nk + 1), P).scatter_reduce_(1, ids, torch.arange(P).expand(B, P), "amin")
        at = first.gather(1, ids)  # (B, P): the pair where the key first occurs
        values = candidates.gather(1, at.clamp_max(P - 1))
        repeated = ~noise & (at < torch.arange(P))
        shown = first[:, :nk] < P  # (B, nk)
        probe = torch.rand(B, nk, generator=generator).masked_fill_(~shown, -1).argmax(dim=1)  # uniform over shown
        answer = candidates.gather(1, first.gather(1, probe[:, None]))[:, 0]
        pairs = torch.stack([torch.where(noise, noise_ids[..., 0], keys),
                             torch.where(noise, noise_ids[..., 1], values)], 2)
        answers = torch.where(repeated & self.multi_query, values, IGNORE_INDEX)
        labels = torch.stack([torch.full_like(answers, IGNORE_INDEX), answers], 2)
        prefix = [] if self.multi_query else [torch.full((B, 1), self.vocab_size - 1)]
        tokens = torch.cat([pairs.reshape(B, 2 * P), *prefix, probe[:, None], answer[:, None]], 1)
        labels = torch.cat([labels.reshape(B, 2 * P), *[torch.full((B, 1), IGNORE_INDEX)] * len(prefix),
                            torch.full((B, 1), IGNORE_INDEX), answer[:, None]], 1)
        return tokens[:, :-1], tokens[:, 1:] if training else labels[:, 1:]


class NoisyInContextRecall(InContextRecall):
    name = "noisy_in_context_recall"

    def __init__(self, vocab_size=32, seq_len=128, multi_query=True, noise_vocab_size=16, frac_noise=0.2, form=None,
                 num_train_examples=12800, num_eval_examples=1280, samples_per_epoch=12800, val_split=0.1, seed=0):
        super().__init__(vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise, form, num_train_examples,
                         num_eval_examples, samples_per_epoch, val_split, seed)


def motif_code(tokens, sizes, n):
    """(..., K) ids < n and (...) sizes -> (...) int64: one number per motif tokens[..., :size]
    (its ids + 1 as the digits, base n + 1), equal only for equal motifs."""
    digits = torch.where(torch.arange(tokens.shape[-1]) < sizes[..., None], tokens + 1, 0)
    return (digits * (n + 1) ** torch.arange(tokens.shape[-1])).sum(-1)


def lay_out(keys, key_sizes, values, value_sizes):
    """The ids of motif pairs `key value`, (..., K) and (..., V) with their sizes, in K + V slots:
    (ids (..., K + V), value slot (...,  K + V) bool, used slot (..., K + V) bool)."""
    K, V = keys.shape[-1], values.shape[-1]
    s = torch.arange(K + V)
    in_value = s >= key_sizes[..., None]
    key_ids = torch.cat([keys, torch.zeros_like(keys[..., :1]).expand(*keys.shape[:-1], V)], -1)
    value_ids = values.gather(-1, (s - key_sizes[..., None]).clamp(0, V - 1))
    return torch.where(in_value, value_ids, key_ids), in_value, s < (key_sizes + value_sizes)[..., None]


class FuzzyInContextRecall(MADTask):
    name = "fuzzy_in_context_recall"

    def __init__(self, vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3, multi_query=True,
                 noise_vocab_size=0, frac_noise=0.0, original=False, form=None, num_train_examples=12800,
                 num_eval_examples=1280, samples_per_epoch=12800, val_split=0.1, seed=0):
        self.seq_len, self.multi_query, self.original = seq_len, bool(multi_query), bool(original)
        super().__init__(vocab_size, seq_len, form, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)
        self._noise(noise_vocab_size, frac_noise)
        self.pad_token = vocab_size - (1 if multi_query else 2)
        n = self.pad_token - noise_vocab_size
        self.n_ids, self.n_keys = n, n // 2
        K, V = self.K, self.V = k_motif_size, v_motif_size
        for key, size in (("k_motif_size", K), ("v_motif_size", V)):
            _check(isinstance(size, int) and size >= 1, f"dataset.{key}={size!r} must be a positive integer")
        _check(self.n_keys >= K and n - self.n_keys >= V,
               f"dataset.vocab_size={vocab_size}: the {self.n_keys} key and {n - self.n_keys} value ids cannot hold "
               f"motifs of {K} and {V} distinct ids ({self.name})")
        _check(seq_len > 2 * (K + V), f"dataset.seq_len={seq_len} must be > 2 (k_motif_size + v_motif_size) = "
                                      f"{2 * (K + V)} ({self.name})")

    def draw(self, B, generator, training):
        K, V, L, nk, g = self.K, self.V, self.seq_len, self.n_keys, generator
        sizes = lambda top, shape: torch.randint(1, top + 1, shape, generator=g)  # noqa: E731
        probe_k = sizes(K, (B,)) if training else torch.full((B,), K)
        probe_v = sizes(V, (B,))
        probe_keys = distinct_ids((B,), K, nk, g)
        probe_values = nk + distinct_ids((B,), V, self.n_ids - nk, g)
        width = probe_k + probe_v
        probe_idx = (torch.rand(B, generator=g, dtype=torch.float64) * (L - 2 * width)).long()
        bound = L - width - (K + V)  # (B,): the loop draws pairs while the length is below
        T = L // ((1 if training else K) + 1) + 1  # more pairs than any example holds (each has >= 1 + 1 ids)
        k_size = sizes(K, (B, T)) if training else torch.full((B, T), K)
        v_size = sizes(V, (B, T))
        noise = self._noise_pairs(B, T, g)
        keys = distinct_ids((B, T), K, nk, g)
        candidates = nk + distinct_ids((B, T), V, self.n_ids - nk, g)
        noise_ids = self.n_ids + torch.randint(0, max(self.noise_vocab_size, 1), (B, T, K + V), generator=g)
        t = torch.arange(T)
        code = motif_code(keys, k_size, nk)
        is_probe = ~noise & (code == motif_code(probe_keys, probe_k, nk)[:, None])
        first = first_occurrence(torch.where(noise, -1 - t, code))  # noise pairs: each its own
        seen = ~noise & (first < t)
        v_len = torch.where(is_probe, probe_v[:, None], v_size.gather(1, first))
        values = torch.where(is_probe[..., None], probe_values[:, None],
                             candidates.gather(1, first[..., None].expand(B, T, V)))
        length = k_size + torch.where(noise, v_size, v_len)
        S = torch.cat([torch.zeros(B, 1, dtype=torch.long), length.cumsum(1)], 1)  # (B, T + 1): length before pair j
        reach = S[:, :T] >= probe_idx[:, None]
        if not self.original:  # or the pair would end the loop
            reach |= S[:, 1:] >= bound[:, None]
        j = first_true(reach)  # (B,) the probe pair goes in before pair j ...
        inserted = ~(is_probe & (t < j[:, None])).any(1) & (S.gather(1, j[:, None])[:, 0] < bound)  # ... unless
        E = S + width[:, None] * (inserted[:, None] & (torch.arange(T + 1) >= j[:, None]))  # with the probe pair
        J = first_true(E >= bound[:, None])  # the pairs drawn: 0..J-1
        presented = seen | is_probe & inserted[:, None] & (t >= j[:, None])
        end = E.gather(1, J[:, None])[:, 0]
        pad = L + 1 - (end + width + (0 if self.multi_query else 1))
        out = torch.full((B, L + 2), self.pad_token)  # column L + 1 takes the unused slots
        target = torch.full((B, L + 2), IGNORE_INDEX)
        rows = torch.arange(B)

        def put(start, ids, in_value, used, labelled):  # the ids of (B, ..., slots) at start + slot
            at = start[..., None] + torch.arange(ids.shape[-1])
            out.scatter_(1, torch.where(used, at, L + 1).view(B, -1), ids.reshape(B, -1))
            answer = used & in_value & labelled[..., None]
            target.scatter_(1, torch.where(answer, at, L + 1).view(B, -1), ids.reshape(B, -1))

        ids, in_value, used = lay_out(keys, k_size, values, v_len)
        ids = torch.where(noise[..., None], noise_ids, ids)
        put(pad[:, None] + E[:, :T], ids, in_value & ~noise[..., None], used & (t < J[:, None])[..., None],
            presented & self.multi_query)
        probe, in_value, used = lay_out(probe_keys, probe_k, probe_values, probe_v)
        put(pad + S.gather(1, j[:, None])[:, 0], probe, in_value, used & inserted[:, None],
            torch.zeros(B, dtype=torch.bool))
        start = pad + end
        if not self.multi_query:
            out[rows, start] = self.vocab_size - 1  # the copy prefix
            start = start + 1
        put(start, probe, in_value, used, torch.ones(B, dtype=torch.bool))
        return out[:, :L], out[:, 1 : L + 1] if training else target[:, 1 : L + 1]


class Memorization(MADTask):
    name = "memorization"

    def __init__(self, vocab_size=256, seq_len=32, noise_vocab_size=0, frac_noise=0.0, kv_map_seed=12345,
                 original=False, form=None, num_train_examples=256, num_eval_examples=1280, samples_per_epoch=12800,
                 val_split=0.1, seed=0):
        self.seq_len = seq_len
        super().__init__(vocab_size, seq_len - seq_len % 2, form, samples_per_epoch, val_split, seed,
                         num_train_examples, num_eval_examples)
        self._noise(noise_vocab_size, frac_noise)
        n = vocab_size - 1 - (0 if original else noise_vocab_size)
        _check(n >= 2 and noise_vocab_size < vocab_size - 1,
               f"dataset.vocab_size={vocab_size} leaves no key and value ids ({self.name})")
        self.kv_map_seed, self.original = kv_map_seed, bool(original)
        rng = np.random.default_rng(kv_map_seed)  # MAD's generate_kv_map: each list shuffled in turn, zipped
        keys, values = rng.permutation(n // 2), n // 2 + rng.permutation(n - n // 2)
        self.table = torch.empty(n // 2, dtype=torch.long)
        self.table[torch.from_numpy(keys)] = torch.from_numpy(values[: n // 2])

    def draw(self, B, generator, training):
        P, nk, insert = self.seq_len // 2, len(self.table), self.vocab_size - 1
        keep = torch.randint(0, P, (B,), generator=generator)
        noise = self._noise_pairs(B, P, generator, keep)
        keys = torch.randint(0, nk, (B, P), generator=generator)
        noise_ids = insert - self.noise_vocab_size + torch.randint(0, max(self.noise_vocab_size, 1), (B, P, 2),
                                                                     generator=generator)
        x = torch.stack([keys, torch.full_like(keys, insert)], 2)
        y = torch.stack([torch.full_like(keys, IGNORE_INDEX), self.table[keys]], 2)
        x = torch.where(noise[..., None], noise_ids, x)
        y = y.masked_fill(noise[..., None], IGNORE_INDEX)
        return x.reshape(B, 2 * P), y.reshape(B, 2 * P)


class Compression(MADTask):
    """The label at t is x_t itself: a causal model would copy it, so the model must compress
    (model.compress: the backbone decodes every position from the last one's state)."""

    name = "compression"
    causal = False
    compress = True

    def __init__(self, vocab_size=16, seq_len=32, noise_vocab_size=0, frac_noise=0.0, original=False, form=None,
                 num_train_examples=12800, num_eval_examples=1280, samples_per_epoch=12800, val_split=0.1, seed=0):
        self.seq_len, self.original = seq_len, bool(original)
        super().__init__(vocab_size, seq_len, form, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)
        self._noise(noise_vocab_size, frac_noise)
        self.n_ids = vocab_size - 1 - noise_vocab_size
        _check(self.n_ids >= 1, f"dataset.vocab_size={vocab_size} leaves no ids below the noise ids ({self.name})")

    def draw(self, B, generator, training):
        L = self.seq_len
        x = torch.randint(0, self.n_ids, (B, L), generator=generator)
        x[:, -1] = self.vocab_size - 1  # <compress>
        noise = self._noise_pairs(B, L, generator)
        noise[:, -1] = False
        noise_ids = self.n_ids + torch.randint(0, max(self.noise_vocab_size, 1), (B, L), generator=generator)
        x = torch.where(noise, noise_ids, x)
        return x, x.clone() if self.original else x.masked_fill(noise, IGNORE_INDEX)


class SelectiveCopying(MADTask):
    name = "selective_copying"

    def __init__(self, vocab_size=16, seq_len=256, num_tokens_to_copy=16, original=False, form=None,
                 num_train_examples=12800, num_eval_examples=1280, samples_per_epoch=12800, val_split=0.1, seed=0):
        self.seq_len, self.n, self.original = seq_len, num_tokens_to_copy, bool(original)
        super().__init__(vocab_size, seq_len, form, samples_per_epoch, val_split, seed, num_train_examples,
                         num_eval_examples)
        _check(isinstance(self.n, int) and self.n >= 1 and seq_len > 2 * self.n + 1,
               f"dataset.num_tokens_to_copy={self.n!r} must be a positive integer with seq_len={seq_len} > "
               f"2 num_tokens_to_copy + 1 ({self.name})")
        _check(vocab_size >= 3, f"dataset.vocab_size={vocab_size} must be >= 3 (blank, copy and an id; {self.name})")

    def draw(self, B, generator, training):
        L, n, blank = self.seq_len, self.n, self.vocab_size - 2
        data = torch.randint(0, blank, (B, n), generator=generator)
        gaps = torch.randint(0, n + (0 if self.original else 1), (B, L - 2 * n - 1), generator=generator)
        before = torch.zeros(B, n + 1, dtype=torch.long).scatter_add_(1, gaps, torch.ones_like(gaps))  # blanks per gap
        x = torch.full((B, L), blank).scatter_(1, torch.arange(n) + before[:, :n].cumsum(1), data)
        x[:, L - n - 1] = self.vocab_size - 1  # <copy>
        y = torch.full((B, L), IGNORE_INDEX)
        y[:, L - n:] = data
        return x, y


CLASSES = {"in_context_recall": InContextRecall, "noisy_in_context_recall": NoisyInContextRecall,
           "fuzzy_in_context_recall": FuzzyInContextRecall, "memorization": Memorization,
           "compression": Compression, "selective_copying": SelectiveCopying}


def mad_task(task="in_context_recall", vocab_size=None, seq_len=None, num_train_examples=None,
             num_eval_examples=None, multi_query=None, noise_vocab_size=None, frac_noise=None, k_motif_size=None,
             v_motif_size=None, num_tokens_to_copy=None, kv_map_seed=None, original=None, form=None,
             samples_per_epoch=12800, val_split=0.1, seed=0):
    """`dataset=mad`: MAD's task `task` at its baseline setting (configs/tasks/<task>.yml), with
    every key that is not null over it; a key the task does not take is refused."""
    given = {k: v for k, v in locals().items() if k != "task" and v is not None}
    cls = CLASSES[check_choice("dataset.task", task, TASKS)]
    takes = list(inspect.signature(cls).parameters)
    other = sorted(set(given) - set(takes))
    if other:
        raise ConfigError(f"dataset.{other[0]}={given[other[0]]!r} does not apply to dataset.task={task}; "
                          f"set it to null (its keys: {', '.join(takes)})")
    return cls(**given)
