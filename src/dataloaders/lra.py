"""Long Range Arena text tasks, character by character (LRA's "byte-level"), tokenised as S4 does.

Tokens: each character of a text, cut to its first l_max - 1, then <eos>. The vocabulary is
    <pad>=0 <unk>=1 <eos>=2, then the characters of the training texts that occur at least
    `min_freq` times, by count (most frequent first), ties by code point
(torchtext's build_vocab_from_iterator, as S4 uses it); any other character is <unk>. A batch is
padded with <pad> to its longest sequence and carries {"lengths": (B,)} for the decoder.

    imdb  IMDB reviews (LRA "Text"): DATA_PATH/imdb/aclImdb/{train,test}/{neg,pos}/*.txt, the
          Stanford release that LRA (tfds imdb_reviews) and S4 (HF imdb) read; 25,000 train and
          25,000 test, the test set also validating (val_split 0, as LRA). (B, L) -> (B,) 0 neg / 1 pos.
    aan   ACL Anthology citation pairs (LRA "Retrieval"): DATA_PATH/aan/new_aan_pairs.{train,eval,
          test}.tsv of LRA's release (label, id1, id2, text1, text2 per line, tab-separated). A batch
          of B pairs is (2B, L): the B first texts, then the B second ones, padded to one length;
          the retrieval decoder pools each and compares the two halves. -> (B,) 1 if one cites the other.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence

from src.dataloaders.files import FileDataset, data_path
from src.utils.errors import ConfigError

PAD, UNK, EOS = 0, 1, 2
SPECIALS = ["<pad>", "<unk>", "<eos>"]
LRA_RELEASE = "https://storage.googleapis.com/long-range-arena/lra_release.gz"
ACL_IMDB = "https://ai.stanford.edu/~amaas/data/sentiment/aclImdb_v1.tar.gz"


def code_points(text):
    """The characters of `text` as int64 code points (L,)."""
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32).astype(np.int64)


def build_vocab(texts, min_freq, chunk=1000):
    """Lookup table code point -> token id (int64 (0x110000,)), and the vocabulary size."""
    texts, counts = list(texts), np.zeros(0x110000, dtype=np.int64)
    for i in range(0, len(texts), chunk):  # a chunk at a time: AAN has up to 2 x 147,086 x 3,999
        counts += np.bincount(code_points("".join(texts[i : i + chunk])), minlength=len(counts))
    chars = np.flatnonzero(counts >= min_freq)
    chars = chars[np.lexsort((chars, -counts[chars]))]  # by count descending, then code point
    lookup = np.full(len(counts), UNK, dtype=np.int64)
    lookup[chars] = np.arange(len(SPECIALS), len(SPECIALS) + len(chars))
    return lookup, len(SPECIALS) + len(chars)


def encode(text, lookup):
    """Token ids (L + 1,) int64: the characters of `text`, then <eos>."""
    return torch.from_numpy(np.append(lookup[code_points(text)], EOS))


class Encoded:
    """One split: sample i -> (tuple of its texts' ids, label)."""

    def __init__(self, texts, labels, lookup):
        self.texts, self.labels, self.lookup = texts, labels, lookup

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        y = torch.tensor(self.labels[i])
        return tuple(encode(t, self.lookup) for t in self.texts[i]), y


class TextDataset(FileDataset):
    d_output = 2
    l_output = 0  # one prediction per text
    min_freq = 1

    def __init__(self, l_max, data_dir, seed):
        super().__init__(seed)
        if l_max < 2:
            raise ConfigError(f"dataset.l_max={l_max}: must be at least 2 (a character and <eos>)")
        self.l_max = self.L_input = l_max  # batches are padded to their longest text, at most l_max
        self.root = Path(data_dir) if data_dir else data_path() / self.folder

    def read(self):
        """{split: (list of tuples of texts, labels int64 (N,))}."""
        raise NotImplementedError

    @property
    def n_tokens(self):  # the vocabulary comes from the training texts: read them first
        self.setup()
        return self._n_tokens

    def load(self):
        raw, cut = self.read(), {}
        for split in ("train", "val", "test"):  # each text cut to its first l_max - 1 characters, leaving room for <eos>
            texts, labels = raw[split]
            cut[split] = ([tuple(t[: self.l_max - 1] for t in ts) for ts in texts], labels)
        lookup, self._n_tokens = build_vocab((t for texts in cut["train"][0] for t in texts), self.min_freq)
        splits = {k: Encoded(texts, labels, lookup) for k, (texts, labels) in cut.items()}
        counts = ", ".join(f"{len(s)} {k}" for k, s in splits.items())
        print(f"{type(self).__name__}: {counts}, vocabulary of {self._n_tokens}", file=sys.stderr)
        return splits

    def batch(self, split, epoch, index, rows):
        samples = self.splits[split]
        indices = self._permutation(epoch)[rows.start : rows.stop].tolist() if split == "train" else rows
        texts, ys = zip(*(samples[i] for i in indices))
        seqs = [t for column in zip(*texts) for t in column]  # the first texts, then the second ones
        x = pad_sequence(seqs, batch_first=True, padding_value=PAD)  # (B or 2B, L)
        y = torch.stack(ys)
        return x, y, {"lengths": torch.tensor([len(s) for s in seqs]), "class": y}


class IMDB(TextDataset):
    """`dataset=imdb`: is a review positive? (character level, LRA Text)"""

    folder = "imdb"
    categories = {"class": ["neg", "pos"]}  # val/test accuracy per class

    def __init__(self, l_max=4096, min_freq=15, data_dir=None, seed=0):
        super().__init__(l_max, data_dir, seed)
        self.min_freq = min_freq

    def read(self):
        base = self.root / "aclImdb"
        folders = [base / split / c for split in ("train", "test") for c in ("neg", "pos")]
        missing = [str(f) for f in folders if not f.is_dir()]
        if missing:
            raise ConfigError(
                f"IMDB not found: no {', '.join(missing)} (DATA_PATH={data_path()}); download {ACL_IMDB} "
                f"and extract it into {self.root}"
            )
        raw = {}
        for split in ("train", "test"):
            texts, labels = [], []
            for label, c in enumerate(("neg", "pos")):
                files = sorted((base / split / c).glob("*.txt"))
                texts += [(f.read_text(encoding="utf-8"),) for f in files]
                labels += [label] * len(files)
            raw[split] = (texts, np.array(labels, dtype=np.int64))
        raw["val"] = raw["test"]  # LRA validates on the test set
        return raw


class AAN(TextDataset):
    """`dataset=aan`: does one paper cite the other? (character level, LRA Retrieval)"""

    folder = "aan"
    categories = {"class": ["unrelated", "cites"]}  # val/test accuracy per class
    FILES = {"train": "new_aan_pairs.train.tsv", "val": "new_aan_pairs.eval.tsv", "test": "new_aan_pairs.test.tsv"}

    def __init__(self, l_max=4000, data_dir=None, seed=0):
        super().__init__(l_max, data_dir, seed)

    def read(self):
        missing = [str(self.root / f) for f in self.FILES.values() if not (self.root / f).is_file()]
        if missing:
            raise ConfigError(
                f"AAN not found: no {', '.join(missing)} (DATA_PATH={data_path()}); download {LRA_RELEASE}, "
                f"extract it (tar -xzf) and copy lra_release/tsv_data/new_aan_pairs.*.tsv into {self.root}"
            )
        return {split: self._read_tsv(self.root / name) for split, name in self.FILES.items()}

    @staticmethod
    def _read_tsv(path):
        """Lines `label \\t id1 \\t id2 \\t text1 \\t text2` (no quoting, as LRA reads them)."""
        texts, labels = [], []
        with open(path, encoding="utf-8", newline="\n") as f:
            for n, line in enumerate(f, start=1):
                fields = line.rstrip("\r\n").split("\t")
                if len(fields) != 5:
                    raise ConfigError(f"{path}:{n}: {len(fields)} tab-separated fields, expected 5 (label id1 id2 text1 text2)")
                try:
                    label = float(fields[0])  # LRA reads the labels as floats
                except ValueError:
                    label = None
                if label not in (0.0, 1.0):
                    raise ConfigError(f"{path}:{n}: label {fields[0]!r}, expected 0 or 1")
                labels.append(int(label))
                texts.append((fields[3], fields[4]))
        return texts, np.array(labels, dtype=np.int64)
