"""Per-example definitions of MAD's six tasks (src/dataloaders/mad.py): the oracle of
tests/test_mad.py and the baseline of benchmarks/datagen.py.

`instance(task, rng, training=False, **params)` draws one example as MAD's instance functions
(mad/data/instances.py of athms/mad-lab) do, one numpy `Generator` call after another, in the
same order (with `original=true`, the same numbers for the same seed: tests/test_mad.py checks it
against MAD's file); it returns (x, y) as lists. `kv_map(vocab_size, noise_vocab_size, seed,
original)` is memorization's fixed map, `labels(task, x, training=False, **params)` recomputes an
example's labels from its tokens alone (None where the tokens do not determine one: MAD's fuzzy
recall with `original=true` may ask for a key it never showed).

Parameters are those of `mad.py` (seq_len, vocab_size, ...); `training` is MAD's `is_training`.
"""

from itertools import permutations

import numpy as np

from src.utils.labels import IGNORE_INDEX


def vocabularies(task, vocab_size, multi_query=True, noise_vocab_size=0):
    """(key ids, value ids, noise ids) of a recall task, as ranges: the ids MAD keeps for its
    special tokens (copy prefix, pad) come off the top, then the noise ids."""
    special = {"fuzzy_in_context_recall": 1 if multi_query else 2}.get(task, 0 if multi_query else 1)
    n = vocab_size - special - noise_vocab_size
    return range(n // 2), range(n // 2, n), range(n, n + noise_vocab_size)


def _motifs(vocab, size, rng):
    """MAD's motif list: every ordered tuple of `size` distinct ids, shuffled by rng."""
    motifs = list(permutations(vocab, size))
    rng.shuffle(motifs)
    return motifs


def _pick(items, rng):
    return items[rng.choice(len(items))]


def in_context_recall(rng, training=False, vocab_size=16, seq_len=128, multi_query=True, noise_vocab_size=0,
                      frac_noise=0.0):
    keys, values, noise = (np.arange(r.start, r.stop) for r in vocabularies(
        "in_context_recall", vocab_size, multi_query, noise_vocab_size))
    n = seq_len // 2
    keep = rng.choice(n)  # a pair that is not noise (MAD may pick the last, which the loop never reaches)
    tokens, labels, bound = [], [], {}
    for i in range(n - 1):
        if frac_noise > 0 and i != keep and rng.random() < frac_noise:
            tokens += [int(t) for t in rng.choice(noise, size=2, replace=True)]
            labels += [IGNORE_INDEX] * 2
            continue
        k = int(rng.choice(keys))
        repeated = k in bound
        if not repeated:
            bound[k] = int(rng.choice(values))
        tokens += [k, bound[k]]
        labels += [IGNORE_INDEX, bound[k] if repeated and multi_query else IGNORE_INDEX]
    if not bound:  # every pair was noise: MAD fails here (choice from nothing); its runs see the others
        return in_context_recall(rng, training, vocab_size, seq_len, multi_query, noise_vocab_size, frac_noise)
    probe = int(rng.choice(list(bound)))
    prefix = [] if multi_query else [vocab_size - 1]
    tokens += prefix + [probe, bound[probe]]
    labels += [IGNORE_INDEX] * len(prefix) + [IGNORE_INDEX, bound[probe]]
    return tokens[:-1], tokens[1:] if training else labels[1:]


def fuzzy_in_context_recall(rng, training=False, vocab_size=16, seq_len=128, k_motif_size=3, v_motif_size=3,
                            multi_query=True, noise_vocab_size=0, frac_noise=0.0, original=False):
    """MAD's loop: while the sequence is shorter than bound = seq_len - |probe pair| - (K + V),
    draw motif sizes, then insert the probe pair (once the length reaches probe_idx) or draw noise
    or a pair. original=false also inserts the probe pair before the pair that would end the loop,
    if it is not in by then (MAD may leave it out and still ask for it): the pair is then drawn
    before the probe check, and kept."""
    key_vocab, value_vocab, noise = (np.arange(r.start, r.stop) for r in vocabularies(
        "fuzzy_in_context_recall", vocab_size, multi_query, noise_vocab_size))
    K, V = k_motif_size, v_motif_size
    key_sizes = list(range(1, K + 1)) if training else [K]
    keys = {s: _motifs(key_vocab, s, rng) for s in key_sizes}
    values = {s: _motifs(value_vocab, s, rng) for s in range(1, V + 1)}
    k_probe_size = rng.choice(key_sizes) if training else K
    v_probe_size = rng.choice(list(values))
    k_probe, v_probe = _pick(keys[k_probe_size], rng), _pick(values[v_probe_size], rng)
    width = len(k_probe) + len(v_probe)
    probe_idx = rng.choice(seq_len - 2 * width)
    bound = seq_len - width - (K + V)
    tokens, labels, stored, seen, added = [], [], {}, {}, False

    def draw(k_size, v_size):  # noise, or a key and its value: (tokens, key or None, value)
        if frac_noise > 0 and rng.random() < frac_noise:
            return list(rng.choice(noise, size=k_size + v_size, replace=True)), None, None
        k = _pick(keys[k_size], rng)
        if k == k_probe:
            v = v_probe
        elif k in stored:
            v = stored[k]
        else:
            v = stored[k] = _pick(values[v_size], rng)
        return list(k + v), k, v

    while len(tokens) < bound:
        k_size = rng.choice(key_sizes) if training else K
        v_size = rng.choice(list(values))
        drawn = None if original else draw(k_size, v_size)
        if not added and (len(tokens) >= probe_idx or not original and len(tokens) + len(drawn[0]) >= bound):
            tokens += list(k_probe + v_probe)
            labels += [IGNORE_INDEX] * width
            seen[k_probe], added = v_probe, True
            if original or len(tokens) >= bound:
                continue
        part, k, v = drawn or draw(k_size, v_size)
        tokens += part
        if k is None:
            labels += [IGNORE_INDEX] * len(part)
            continue
        labels += [IGNORE_INDEX] * len(k) + (list(v) if k in seen and multi_query else [IGNORE_INDEX] * len(v))
        seen[k], added = v, added or k == k_probe
    prefix = [] if multi_query else [vocab_size - 1]
    tokens += prefix + list(k_probe + v_probe)
    labels += [IGNORE_INDEX] * (len(prefix) + len(k_probe)) + list(v_probe)
    pad = seq_len + 1 - len(tokens)
    tokens = [vocab_size - (1 if multi_query else 2)] * pad + [int(t) for t in tokens]
    labels = [IGNORE_INDEX] * pad + [int(t) for t in labels]
    return tokens[:-1], tokens[1:] if training else labels[1:]


def kv_map(vocab_size=256, noise_vocab_size=0, seed=12345, original=False):
    """memorization's fixed map {key: value}: the keys [0, n/2) and values [n/2, n) of the n ids
    below the insert token (and, unless original, below the noise ids: MAD's benchmark config builds
    its map over vocab_size - 1 ids even with noise, so that values can be noise ids), each list
    shuffled by numpy's default_rng(seed) and zipped, as MAD's generate_kv_map."""
    n = vocab_size - 1 - (0 if original else noise_vocab_size)
    rng = np.random.default_rng(seed)
    keys, values = _motifs(np.arange(n // 2), 1, rng), _motifs(np.arange(n // 2, n), 1, rng)
    return {int(k[0]): int(v[0]) for k, v in zip(keys, values)}


def memorization(rng, training=False, vocab_size=256, seq_len=32, noise_vocab_size=0, frac_noise=0.0,
                 kv_map_seed=12345, original=False, table=None):
    """seq_len / 2 pairs `key <insert>`, the value labelled at <insert> (id vocab_size - 1); a noise
    pair (2 noise ids, unlabelled) with probability frac_noise, but never pair `keep`. table: the
    map, built once (as MAD's benchmark config does), else from the seed."""
    table = table or kv_map(vocab_size, noise_vocab_size, kv_map_seed, original)
    keys = list(table)
    noise = np.arange(vocab_size - 1 - noise_vocab_size, vocab_size - 1)
    n = seq_len // 2
    keep = rng.choice(n)
    tokens, labels = [], []
    for i in range(n):
        if frac_noise > 0 and i != keep and rng.random() < frac_noise:
            tokens += [int(t) for t in rng.choice(noise, size=2, replace=True)]
            labels += [IGNORE_INDEX] * 2
            continue
        k = _pick(keys, rng)
        tokens += [k, vocab_size - 1]
        labels += [IGNORE_INDEX, table[k]]
    return tokens, labels


def compression(rng, training=False, vocab_size=16, seq_len=32, noise_vocab_size=0, frac_noise=0.0, original=False):
    """seq_len - 1 uniform ids below the noise ids, then the compression token (vocab_size - 1);
    each id before it is replaced by a noise id with probability frac_noise. Labels: the input
    itself, with the noise positions unlabelled (original: labelled with the noise id, as MAD
    returns its inputs twice)."""
    n = vocab_size - 1 - noise_vocab_size
    tokens = [int(t) for t in rng.choice(np.arange(n), size=seq_len - 1, replace=True)] + [vocab_size - 1]
    labels = list(tokens)
    if frac_noise > 0:
        noise = np.arange(n, n + noise_vocab_size)
        for i in range(seq_len - 1):
            if rng.random() < frac_noise:
                tokens[i] = int(rng.choice(noise))
                labels[i] = IGNORE_INDEX
    return tokens, list(tokens) if original else labels


def selective_copying(rng, training=False, vocab_size=16, seq_len=256, num_tokens_to_copy=16, original=False):
    """n = num_tokens_to_copy uniform ids below the blank (vocab_size - 2) and copy (vocab_size - 1)
    tokens, with seq_len - 2n - 1 blanks inserted among them, each before a uniform one of the n ids
    or (unless original) after the last; then <copy> and n blanks, labelled with the n ids.
    original: MAD's draw of the insert positions, numpy's legacy global np.random.randint(0, n)
    (not the example's rng; never after the last id)."""
    n, blank = num_tokens_to_copy, vocab_size - 2
    m = seq_len - 2 * n - 1
    data = rng.choice(np.arange(vocab_size - 2), size=n, replace=True)
    where = np.random.randint(0, n, m) if original else rng.integers(0, n + 1, m)
    tokens = [int(t) for t in np.insert(data, where, [blank] * m)] + [vocab_size - 1] + [blank] * n
    return tokens, [IGNORE_INDEX] * (n + m + 1) + [int(t) for t in data]


INSTANCES = {
    "in_context_recall": in_context_recall,
    "noisy_in_context_recall": in_context_recall,
    "fuzzy_in_context_recall": fuzzy_in_context_recall,
    "memorization": memorization,
    "compression": compression,
    "selective_copying": selective_copying,
}


def instance(task, rng, training=False, **params):
    """One example (x, y) of `task`, drawn from the numpy Generator rng."""
    return INSTANCES[task](rng, training, **params)


def _runs(x, kinds):
    """[(kind, start, stop)] of the maximal runs of x whose ids are of one kind (kinds: id -> kind)."""
    runs = []
    for t, token in enumerate(x):
        kind = kinds(token)
        if runs and runs[-1][0] == kind:
            runs[-1][2] = t + 1
        else:
            runs.append([kind, t, t + 1])
    return runs


def recall_labels(task, x, training=False, vocab_size=16, multi_query=True, noise_vocab_size=0, **unused):
    """The labels of a recall example from its tokens: a key is a run of key ids (one id, or a
    motif), its value the run of value ids after it; the value of a key seen before is labelled at
    the key's last position and its value's positions but the last (the label at t is the token at
    t + 1), and the final query always. In the training form the label at t is the token at t + 1,
    and at the last position the final query's last value id (from its earlier binding)."""
    keys, values, noise = vocabularies(task, vocab_size, multi_query, noise_vocab_size)
    kinds = lambda t: "key" if t in keys else "value" if t in values else "noise" if t in noise else t  # noqa: E731
    runs = _runs(x, kinds)
    y, seen, last = [IGNORE_INDEX] * len(x), {}, None
    for i, (kind, start, stop) in enumerate(runs):
        if kind != "key":
            continue
        key = tuple(x[start:stop])
        after = runs[i + 1] if i + 1 < len(runs) else ["value", stop, stop]
        shown = x[after[1]:after[2]]  # the value (without its last id if it ends the input)
        final = after[2] == len(x)
        value = seen.get(key) if final else tuple(shown)
        if value is None:
            value = tuple(shown) + (None,)  # the example asks for a key it never showed
        if not training and (final or key in seen and multi_query):
            y[stop - 1:stop - 1 + len(value)] = list(value)
        seen.setdefault(key, value)
        last = value
    if training:
        y = list(x[1:]) + [last[-1]]
    return y


def labels(task, x, training=False, **params):
    """The labels of example x (a list) of `task`, from its tokens alone (memorization: and its
    map, from the seed)."""
    if task in ("in_context_recall", "noisy_in_context_recall", "fuzzy_in_context_recall"):
        return recall_labels(task, x, training, **params)
    if task == "memorization":
        table = kv_map(params.get("vocab_size", 256), params.get("noise_vocab_size", 0),
                       params.get("kv_map_seed", 12345), params.get("original", False))
        insert = params.get("vocab_size", 256) - 1
        return [table[x[t - 1]] if token == insert else IGNORE_INDEX for t, token in enumerate(x)]
    if task == "compression":
        vocab_size, noise = params.get("vocab_size", 16), params.get("noise_vocab_size", 0)
        is_noise = lambda t: vocab_size - 1 - noise <= t < vocab_size - 1  # noqa: E731
        return [IGNORE_INDEX if is_noise(t) and not params.get("original", False) else t for t in x]
    if task == "selective_copying":
        vocab_size, n = params.get("vocab_size", 16), params.get("num_tokens_to_copy", 16)
        data = [t for t in x[: len(x) - n - 1] if t != vocab_size - 2]
        return [IGNORE_INDEX] * (len(x) - n) + data
    raise ValueError(f"unknown task {task!r}")
