"""ListOps datasets, read from the TSV files of `python -m src.dataloaders.prepare.listops`.

Tokens: the expression with parentheses dropped and `]` written X, over a fixed vocabulary
    <pad>=0 <unk>=1 [MIN=2 [MAX=3 [MED=4 [SM=5 X=6, digits 0-9 = 7..16,
padded with <pad> to l_max. Samples must have l_min <= length <= l_max (nothing is truncated).

    listops_subtrees  (B, l_max) tokens -> (B, l_max) labels: at each X the value (0-9) of the
                      subtree it closes, -100 elsewhere. Also, per position, the subtree's height
                      bucket and operator (-1 elsewhere), for accuracy by category.
    listops           (B, l_max) tokens -> (B,) the value of the whole expression (LRA ListOps).

The parsed splits are cached as .npz next to the TSV files (cache/), keyed by each file's size
and modification time, so later runs skip parsing.
"""

import sys
from pathlib import Path

import numpy as np
import torch

from src.dataloaders.files import FileDataset, data_path
from src.dataloaders.prepare.listops.trees import OPERATORS
from src.utils.errors import ConfigError
from src.utils.labels import IGNORE_INDEX

VOCAB = ["<pad>", "<unk>", *OPERATORS, "X", *map(str, range(10))]
PAD, UNK, OP0, X, DIGIT0 = 0, 1, 2, 6, 7
HEIGHT_BUCKETS = [str(h) for h in range(1, 10)] + ["10+"]  # subtree heights 1..9, then 10 and above


def _lookup():
    """Token id by (first character, third character) of a word, and the word's length."""
    ids = np.full((256, 256), UNK, dtype=np.uint8)
    lengths = np.zeros((256, 256), dtype=np.int64)
    for i, word in enumerate(VOCAB[2:], start=2):
        word = "]" if word == "X" else word
        third = ord(word[2]) if len(word) > 2 else 0
        ids[ord(word[0]), third] = i
        lengths[ord(word[0]), third] = len(word)
    return ids, lengths


IDS, LENGTHS = _lookup()


def tokenize(source):
    """Token ids (uint8) of an expression; ValueError on a word that is not in the vocabulary."""
    b = np.frombuffer(source.encode(), dtype=np.uint8).copy()
    b[(b == ord("(")) | (b == ord(")"))] = ord(" ")
    b = np.concatenate([[ord(" ")], b, [ord(" ")] * 3])  # room to read 2 characters past a word
    word = b != ord(" ")
    starts = np.flatnonzero(word[1:] & ~word[:-1]) + 1
    ends = np.flatnonzero(word[:-1] & ~word[1:])  # last character of each word
    third = np.where(ends - starts >= 2, b[starts + 2], 0)
    ids, lengths = IDS[b[starts], third], LENGTHS[b[starts], third]
    bad = lengths != ends - starts + 1
    if bad.any():
        i = np.flatnonzero(bad)[0]
        raise ValueError(f"unknown token {bytes(b[starts[i] : ends[i] + 1]).decode()!r}")
    return ids


def read_tsv(path, columns):
    """{column: [values]} for the wanted columns of a tab-separated file with a header."""
    with open(path) as f:
        header = f.readline().rstrip("\n").split("\t")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ConfigError(f"{path} has no column {missing[0]} (columns: {', '.join(header)})")
        where = [header.index(c) for c in columns]
        rows = [line.rstrip("\n").split("\t") for line in f]
    return {c: [r[i] for r in rows] for c, i in zip(columns, where)}


def parse(path):
    """The arrays of one TSV split: tokens (concatenated) with offsets, the root values, and
    the sub-tree annotations (concatenated) with their offsets."""
    columns = read_tsv(path, ["Source", "Target", "SubTreeEvals", "SubTreeHeights", "SubTreeOps", "SubTreeInds"])
    tokens, labels = [], {"inds": [], "evals": [], "heights": [], "ops": []}
    op_index = {name: i for i, name in enumerate(OPERATORS)}
    for row, source in enumerate(columns["Source"]):
        try:
            tokens.append(tokenize(source))
        except ValueError as e:
            raise ConfigError(f"{path} row {row + 1}: {e}") from None
        labels["inds"].append(np.array(columns["SubTreeInds"][row].split(), dtype=np.int32))
        labels["evals"].append(np.array(columns["SubTreeEvals"][row].split(), dtype=np.uint8))
        labels["heights"].append(np.array(columns["SubTreeHeights"][row].split(), dtype=np.uint8))
        labels["ops"].append(np.array([op_index[o] for o in columns["SubTreeOps"][row].split()], dtype=np.uint8))
    offsets = lambda parts: np.cumsum([0] + [len(p) for p in parts])  # noqa: E731
    return {
        "tokens": np.concatenate(tokens), "token_offsets": offsets(tokens),
        "targets": np.array(columns["Target"], dtype=np.uint8), "label_offsets": offsets(labels["inds"]),
        **{name: np.concatenate(parts) for name, parts in labels.items()},
    }


def load_split(path):
    """`parse(path)`, from the cache when it was made from this very file."""
    stat = path.stat()
    key = np.array([stat.st_size, stat.st_mtime_ns])
    cache = path.parent / "cache" / f"{path.stem}.npz"
    if cache.exists():
        with np.load(cache) as cached:
            if np.array_equal(cached["source_key"], key):
                return dict(cached)
    arrays = parse(path)
    cache.parent.mkdir(exist_ok=True)
    partial = cache.with_suffix(f".{id(arrays)}.tmp.npz")  # ranks may parse at once: write, then rename
    np.savez(partial, source_key=key, **arrays)
    partial.replace(cache)
    return arrays


class ListOpsSamples:
    """One split: sample i -> (tokens (l_max,), labels (l_max,) or (), categories)."""

    def __init__(self, arrays, l_max, subtrees):
        self.a, self.l_max, self.subtrees = arrays, l_max, subtrees

    def __len__(self):
        return len(self.a["targets"])

    def __getitem__(self, i):
        a = self.a
        tokens = a["tokens"][a["token_offsets"][i] : a["token_offsets"][i + 1]]
        x = torch.zeros(self.l_max, dtype=torch.long)
        x[: tokens.size] = torch.from_numpy(tokens.astype(np.int64))
        if not self.subtrees:
            return x, torch.tensor(int(a["targets"][i]))
        lo, hi = a["label_offsets"][i], a["label_offsets"][i + 1]
        where = torch.from_numpy(a["inds"][lo:hi].astype(np.int64))
        y = torch.full((self.l_max,), IGNORE_INDEX, dtype=torch.long)
        y[where] = torch.from_numpy(a["evals"][lo:hi].astype(np.int64))
        height = torch.full((self.l_max,), -1, dtype=torch.long)
        height[where] = torch.from_numpy(np.minimum(a["heights"][lo:hi], len(HEIGHT_BUCKETS)).astype(np.int64) - 1)
        op = torch.full((self.l_max,), -1, dtype=torch.long)
        op[where] = torch.from_numpy(a["ops"][lo:hi].astype(np.int64))
        return x, y, {"height": height, "op": op}


class ListOps(FileDataset):
    """`dataset=listops`: LRA ListOps, one label (the value of the expression) per sample."""

    subtrees = False
    prefix = "basic"
    folder = "listops"
    d_output = 10
    l_output = 0  # one prediction per expression
    n_tokens = len(VOCAB)
    generate_options = "--max_depth 10 --max_args 10"
    max_length = 2000  # the generator keeps length < max_length: LRA's setting (2000)

    def __init__(self, l_min=500, l_max=2048, data_dir=None, seed=0):
        super().__init__(seed)
        self.l_min, self.l_max = l_min, l_max
        self.L_input = l_max  # inputs are padded to l_max
        self.data_dir = Path(data_dir) if data_dir else data_path() / self.folder

    def command(self):
        """The command that generates this dataset's files."""
        return (
            f"python -m src.dataloaders.prepare.listops --task {self.prefix} --output_dir {self.data_dir} "
            f"--num_train_samples 96000 --num_valid_samples 2000 --num_test_samples 2000 {self.generate_options} "
            f"--min_length {self.l_min} --max_length {min(self.l_max + 1, self.max_length)} --num_workers 2"
        )

    def load(self):
        splits = {}
        for split in ("train", "val", "test"):
            path = self.data_dir / f"{self.prefix}_{split}.tsv"
            if not path.exists():
                raise ConfigError(f"{path} not found (DATA_PATH={data_path()}); generate the data with:\n  {self.command()}")
            arrays = load_split(path)
            lengths = np.diff(arrays["token_offsets"])
            outside = np.flatnonzero((lengths < self.l_min) | (lengths > self.l_max))
            if outside.size:
                raise ConfigError(
                    f"dataset.l_min={self.l_min} dataset.l_max={self.l_max}: {path} row {outside[0] + 1} has "
                    f"{lengths[outside[0]]} tokens (lengths in the file: {lengths.min()}..{lengths.max()})"
                )
            splits[split] = ListOpsSamples(arrays, self.l_max, self.subtrees)
        print(f"{type(self).__name__}: " + ", ".join(f"{len(s)} {k}" for k, s in splits.items()), file=sys.stderr)
        return splits


class ListOpsSubTrees(ListOps):
    """`dataset=listops_subtrees`: the value of every sub-expression, predicted at its `]`."""

    subtrees = True
    prefix = "subtrees"
    folder = "listops_subtrees"
    l_output = None  # a prediction at every position
    categories = {"height": HEIGHT_BUCKETS, "op": [o.lstrip("[") for o in OPERATORS]}
    generate_options = "--no_paranthesis --unique_templates --max_depth 15 --max_args 9"
    max_length = 8180  # the DLR paper's (README): 7000 < length < 8180

    def __init__(self, l_min=7000, l_max=8192, data_dir=None, seed=0):
        super().__init__(l_min, l_max, data_dir, seed)
