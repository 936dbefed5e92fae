"""Sequential CIFAR-10 (sCIFAR, LRA's Image task): a 32x32 picture as a sequence of 1,024 pixels.

Read from torchvision's layout of the Python release, DATA_PATH/cifar/cifar-10-batches-py/
(`data_batch_1` .. `data_batch_5`, `test_batch`: pickled dicts whose b"data" is uint8 (10000,
3072), each row the red, green and blue 32x32 planes row-major, and b"labels" the 10 classes).
torchvision itself is not used: its PyPI wheels are built against CUDA torch and do not import
beside the CPU build of torch 2.13 (torchvision::nms is missing), so the batches are unpickled here.

Pixels are read row-major, as S4 does (torchvision's ToTensor + Normalize):
    grayscale  g = (19595 R + 38470 G + 7471 B + 2^15) >> 16   (PIL's convert("L"), an integer)
               x = (g - 122.6) / 61                                              (L, 1)
    colour     x_c = (v_c / 255 - mean_c) / std_c,  mean (0.4914, 0.4822, 0.4465),
               std (0.247, 0.243, 0.261)                                         (L, 3)
Splits (S4's): the 50,000 training pictures are permuted by torch.randperm(50000) from a generator
seeded with `split_seed` (torch's random_split); the first 1 - val_split (45,000) train, the rest
(5,000) validate; the 10,000 test pictures test.
"""

import hashlib
import pickle
import sys
import tarfile
import urllib.request
from pathlib import Path

import numpy as np
import torch

from src.dataloaders.files import FileDataset, data_path
from src.utils.errors import ConfigError

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
TRAIN_FILES = [f"data_batch_{i}" for i in range(1, 6)]
TEST_FILES = ["test_batch"]
URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
GRAY_MEAN, GRAY_STD = 122.6, 61.0
RGB_MEAN, RGB_STD = (0.4914, 0.4822, 0.4465), (0.247, 0.243, 0.261)


def read_batches(folder, names):
    """(pictures uint8 (N, 32, 32, 3), labels int64 (N,)) of the pickled batches `names`."""
    pictures, labels = [], []
    for name in names:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        pictures.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1))
        labels.append(np.asarray(batch[b"labels"], dtype=np.int64))
    return np.concatenate(pictures), np.concatenate(labels)


def grayscale(pictures):
    """PIL's RGB -> L: (19595 R + 38470 G + 7471 B + 2^15) >> 16, uint8 (..., 32, 32)."""
    rgb = pictures.astype(np.int64)
    return ((19595 * rgb[..., 0] + 38470 * rgb[..., 1] + 7471 * rgb[..., 2] + (1 << 15)) >> 16).astype(np.uint8)


def download(root):
    """Fetch and unpack the Python release into `root` (checked against its MD5)."""
    root.mkdir(parents=True, exist_ok=True)
    archive = root / URL.rsplit("/", 1)[1]
    print(f"CIFAR10: downloading {URL} to {archive}", file=sys.stderr)
    try:
        urllib.request.urlretrieve(URL, archive)
    except OSError as e:
        raise ConfigError(f"cannot download {URL} ({e}); put its contents in {root / FOLDER} by hand") from e
    if hashlib.md5(archive.read_bytes()).hexdigest() != MD5:
        raise ConfigError(f"{archive} does not have the MD5 {MD5} of the CIFAR-10 release; delete it and retry")
    with tarfile.open(archive) as tar:
        tar.extractall(root, filter="data")
    archive.unlink()


class CIFARSamples:
    """One split: sample k -> (pixels (1024, C) float32, label (), {"class": label})."""

    def __init__(self, pixels, labels):
        self.pixels, self.labels = pixels, labels  # (N, 1024, C) uint8, (N,) int64

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, k):
        x = torch.from_numpy(self.pixels[k].astype(np.float32))
        if x.shape[-1] == 1:
            x = (x - GRAY_MEAN) / GRAY_STD
        else:
            x = (x / 255 - torch.tensor(RGB_MEAN)) / torch.tensor(RGB_STD)
        y = torch.tensor(self.labels[k])
        return x, y, {"class": y}


class CIFAR10(FileDataset):
    """`dataset=cifar`: the class (10) of a picture read pixel by pixel."""

    d_output = 10
    l_output = 0  # one prediction per picture
    L_input = 1024  # 32 x 32 pixels, row-major
    categories = {"class": CLASSES}  # val/test accuracy per class

    def __init__(self, grayscale=False, val_split=0.1, split_seed=42, data_dir=None, download=False, seed=0):
        super().__init__(seed)
        if not 0 < val_split < 1:
            raise ConfigError(f"dataset.val_split={val_split}: must be > 0 and < 1")
        self.grayscale, self.val_split, self.split_seed, self.download = grayscale, val_split, split_seed, download
        self.root = Path(data_dir) if data_dir else data_path() / "cifar"
        self.d_input = 1 if grayscale else 3

    def load(self):
        folder = self.root / FOLDER
        missing = [name for name in TRAIN_FILES + TEST_FILES if not (folder / name).exists()]
        if missing and self.download:
            download(self.root)
        elif missing:
            raise ConfigError(
                f"CIFAR-10 not found: {folder} lacks {', '.join(missing)}; run with dataset.download=true, or "
                f"download {URL} and extract it into {self.root} (DATA_PATH={data_path()})"
            )
        splits = {}
        for split, names in (("train", TRAIN_FILES), ("test", TEST_FILES)):
            pictures, labels = read_batches(folder, names)
            pixels = grayscale(pictures)[..., None] if self.grayscale else pictures
            splits[split] = (pixels.reshape(len(labels), 1024, -1), labels)  # (N, 1024, C) row-major
        pixels, labels = splits["train"]
        n_train = int(len(labels) * (1 - self.val_split))
        order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(self.split_seed)).numpy()
        splits["train"], splits["val"] = ((pixels[i], labels[i]) for i in (order[:n_train], order[n_train:]))
        splits = {k: CIFARSamples(*splits[k]) for k in ("train", "val", "test")}
        print("CIFAR10: " + ", ".join(f"{len(s)} {k}" for k, s in splits.items()), file=sys.stderr)
        return splits
