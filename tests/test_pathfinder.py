"""Pathfinder generator and datasets: mask/label invariants, marker placement, determinism over
worker counts, the split, and the error for missing data."""

import math

import numpy as np
import pytest
import torch
from PIL import Image

from src.dataloaders.pathfinder import Pathfinder, PathfinderSegmentation
from src.dataloaders.prepare.pathfinder.__main__ import main as generate
from src.dataloaders.prepare.pathfinder.layout import SETTINGS, relative_path, settings
from src.dataloaders.prepare.pathfinder.snakes import draw_image
from src.utils.errors import ConfigError

N_IMAGES = 40


def generate_files(out, workers=1, resolution=32, n=N_IMAGES):
    generate(["--resolution", str(resolution), "--num_images", str(n), "--num_workers", str(workers),
              "--seed", "5", "--output_dir", str(out)])
    return out


def read(out, folder, i):
    with Image.open(out / folder / relative_path(i)) as image:
        return np.asarray(image)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    return generate_files(tmp_path_factory.mktemp("pathfinder") / "pf32")


def test_connecting_pixels_exist_iff_label_1(files):
    labels = np.load(files / "labels.npy")
    assert labels.shape == (N_IMAGES,) and 7 <= labels.sum() <= 33  # a fair coin: Binomial(40, 1/2), 4 sd
    for i, label in enumerate(labels.tolist()):
        image, mask = read(files, "images", i), read(files, "masks", i)
        assert image.shape == mask.shape == (32, 32) and image.dtype == mask.dtype == np.uint8
        assert set(np.unique(mask).tolist()) <= {0, 1, 2}
        assert (mask == 2).any() == bool(label)
        assert (mask == 1).any()  # the main snake that does not connect (label 1), or both (label 0)
        assert (image[mask > 0] > 0).all()  # the target marks drawn pixels only


@pytest.mark.parametrize("resolution", [32, 128])
def test_markers_sit_on_the_ends_of_the_main_snakes(resolution):
    """Each marker centre is on a main snake (the start of one and the end of one): beside class 2
    pixels at both markers for label 1 and class 1 pixels for label 0; the picture is bright there,
    and the two markers are distinct points."""
    s = settings(resolution)
    for i in range(12 if resolution == 32 else 3):  # a 128 picture takes ~1 s
        image, mask, label, markers = draw_image(s, np.random.default_rng([7, resolution, i]))
        assert markers.shape == (2, 2) and math.dist(*markers) > 0
        for m in markers:
            y, x = np.rint(m).astype(int)
            # The dash ends exactly at the marker centre: a thin dash may light only the pixels
            # beside that point, so look at its 3x3 neighbourhood.
            around = mask[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2]
            assert (2 if label else 1) in around, (i, label, around)
            assert image[y, x] >= 0.5 * 255 * s.snake_contrast


def test_same_files_for_one_and_two_workers(files, tmp_path):
    two = generate_files(tmp_path / "two", workers=2)
    assert (two / "labels.npy").read_bytes() == (files / "labels.npy").read_bytes()
    for i in range(N_IMAGES):
        for folder in ("images", "masks"):
            assert np.array_equal(read(two, folder, i), read(files, folder, i)), (folder, i)


def test_another_seed_gives_other_images(files, tmp_path):
    out = tmp_path / "other"
    generate(["--resolution", "32", "--num_images", "3", "--seed", "6", "--output_dir", str(out)])
    assert not np.array_equal(read(out, "images", 0), read(files, "images", 0))


def test_a_finished_dataset_is_not_overwritten(files):
    with pytest.raises(SystemExit, match="already holds a finished dataset"):
        generate_files(files)


def test_every_resolution_setting_draws_an_image():
    for resolution in SETTINGS:
        if resolution <= 128:  # 256 and 512 take seconds per image; their settings are the spec's
            image, mask, label, _ = draw_image(settings(resolution), np.random.default_rng(resolution))
            assert image.shape == (resolution, resolution) and (mask == 2).any() == bool(label)


def test_segmentation_dataset_reads_pixels_and_masks(files):
    ds = PathfinderSegmentation(resolution=32, data_dir=files, val_split=0.1, test_split=0.1)
    ds.setup()
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {"train": 32, "val": 4, "test": 4}
    indices = np.concatenate([ds.splits[k].indices for k in ("train", "val", "test")])
    assert sorted(indices.tolist()) == list(range(N_IMAGES))  # a partition
    x, y = ds.splits["val"][0]
    i = int(ds.splits["val"].indices[0])
    assert x.shape == (32 * 32, 1) and x.min() >= -1 and x.max() <= 1
    torch.testing.assert_close(x[:, 0], torch.from_numpy(read(files, "images", i).reshape(-1) / 127.5 - 1).float())
    assert torch.equal(y, torch.from_numpy(read(files, "masks", i).reshape(-1).astype(np.int64)))
    again = PathfinderSegmentation(resolution=32, data_dir=files, seed=123)
    again.setup()  # the split depends on split_seed only, not on the training seed
    assert np.array_equal(again.splits["val"].indices, ds.splits["val"].indices)


def test_classification_dataset_gives_the_label(files):
    ds = Pathfinder(resolution=32, data_dir=files)
    ds.setup()
    labels = np.load(files / "labels.npy")
    x, y = ds.splits["train"][5]
    assert x.shape == (1024, 1) and y.item() == labels[ds.splits["train"].indices[5]]


def test_missing_data_names_the_command(tmp_path):
    ds = PathfinderSegmentation(resolution=64, data_dir=tmp_path / "none")
    with pytest.raises(ConfigError, match="python -m src.dataloaders.prepare.pathfinder --resolution 64"):
        ds.setup()


def test_bad_resolution_lists_the_valid_ones():
    with pytest.raises(ConfigError, match=r"dataset.resolution=100.*32, 64, 128, 256, 512"):
        PathfinderSegmentation(resolution=100)
