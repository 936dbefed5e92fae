"""Tiny files in the real formats of CIFAR-10 (pickled batches), IMDB (aclImdb) and LRA's AAN TSVs."""

import pickle

import numpy as np

from src.dataloaders.cifar import FOLDER, TEST_FILES, TRAIN_FILES


def write_cifar(root, per_batch=8, seed=0):
    """DATA_PATH/cifar/cifar-10-batches-py/ with 5 x `per_batch` training and `per_batch` test
    pictures, as the release pickles them; returns {file name: (data (N, 3072) uint8, labels)}."""
    rng = np.random.default_rng(seed)
    folder = root / "cifar" / FOLDER
    folder.mkdir(parents=True)
    written = {}
    for name in TRAIN_FILES + TEST_FILES:
        data = rng.integers(0, 256, (per_batch, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, per_batch).tolist()
        batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data,
                 b"filenames": [f"{name}_{i}.png".encode() for i in range(per_batch)]}
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        written[name] = (data, labels)
    return written


def write_imdb(root, texts):
    """DATA_PATH/imdb/aclImdb/{split}/{neg,pos}/<i>_<rating>.txt from {(split, class): [texts]}."""
    for (split, c), reviews in texts.items():
        folder = root / "imdb" / "aclImdb" / split / c
        folder.mkdir(parents=True)
        for i, review in enumerate(reviews):
            (folder / f"{i}_{8 if c == 'pos' else 2}.txt").write_text(review, encoding="utf-8")


def write_aan(root, pairs):
    """DATA_PATH/aan/new_aan_pairs.{train,eval,test}.tsv from {split: [(label, text1, text2)]}, the
    label written as LRA's files have it (a float)."""
    folder = root / "aan"
    folder.mkdir(parents=True)
    for split, rows in pairs.items():
        lines = [f"{float(y)}\tid{i}a\tid{i}b\t{t1}\t{t2}\n" for i, (y, t1, t2) in enumerate(rows)]
        (folder / f"new_aan_pairs.{split}.tsv").write_text("".join(lines), encoding="utf-8")


def random_text(rng, n, alphabet="abcdefgh ij.,klmnop"):
    return "".join(rng.choice(list(alphabet), n))
