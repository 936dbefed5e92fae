"""Real pictures in CIFAR-10's pickled format, for a learning run where CIFAR-10 cannot be fetched.

    python -m benchmarks.digits_as_cifar DIGITS_CSV_GZ OUT_DIR

DIGITS_CSV_GZ: the UCI handwritten digits that scikit-learn ships (sklearn/datasets/data/
digits.csv.gz in its wheel: 1,797 8x8 pictures of 0..16, then the digit). Each picture is scaled
to 0..255 (round(v * 255 / 16)), enlarged to 32x32 (4x4 blocks), and written as the same gray in
R, G and B (so grayscale reads it back exactly). The first 1,500 are split over data_batch_1..5,
the other 297 make test_batch, in OUT_DIR/cifar/cifar-10-batches-py/: run with DATA_PATH=OUT_DIR.
"""

import argparse
import pickle
from pathlib import Path

import numpy as np

from src.dataloaders.cifar import FOLDER, TEST_FILES, TRAIN_FILES

N_TRAIN = 1500


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("digits_csv_gz", type=Path)
    parser.add_argument("out_dir", type=Path)
    args = parser.parse_args(argv)
    table = np.loadtxt(args.digits_csv_gz, delimiter=",", dtype=np.int64)  # (1797, 65)
    pictures = np.rint(table[:, :64] * 255 / 16).astype(np.uint8).reshape(-1, 8, 8)
    pictures = pictures.repeat(4, axis=1).repeat(4, axis=2)  # (N, 32, 32)
    data = np.tile(pictures.reshape(-1, 1024), (1, 3))  # (N, 3072): R, G, B planes
    labels = table[:, 64]
    folder = args.out_dir / "cifar" / FOLDER
    folder.mkdir(parents=True, exist_ok=False)
    parts = np.array_split(np.arange(N_TRAIN), len(TRAIN_FILES)) + [np.arange(N_TRAIN, len(labels))]
    for name, rows in zip(TRAIN_FILES + TEST_FILES, parts):
        batch = {b"batch_label": name.encode(), b"labels": labels[rows].tolist(), b"data": data[rows]}
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        print(f"{folder / name}: {len(rows)} pictures")


if __name__ == "__main__":
    main()
