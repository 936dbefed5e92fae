"""Sequential CIFAR-10 on tiny files in the release's pickled format: reading, pixel order,
S4's normalisation and split, the missing-data message and the download path."""

import hashlib
import io
import pickle
import shutil
import tarfile

import numpy as np
import pytest
import torch
from PIL import Image

from lra_files import write_cifar
from src.dataloaders import cifar
from src.dataloaders.cifar import CIFAR10
from src.utils.errors import ConfigError


@pytest.fixture
def written(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    return write_cifar(tmp_path)


def loaded(**kwargs):
    dataset = CIFAR10(**kwargs)
    dataset.setup()
    return dataset


def test_splits_are_s4s_random_split(written):
    dataset = loaded(grayscale=False)
    assert [len(dataset.splits[k]) for k in ("train", "val", "test")] == [36, 4, 8]  # 40 * 0.9, the rest; test
    data = np.concatenate([written[f"data_batch_{i}"][0] for i in range(1, 6)])
    labels = sum((written[f"data_batch_{i}"][1] for i in range(1, 6)), [])
    train, val = torch.utils.data.random_split(range(40), [36, 4], generator=torch.Generator().manual_seed(42))
    for split, subset in (("train", train), ("val", val)):
        for k, i in enumerate(subset.indices):
            x, y, extra = dataset.splits[split][k]
            assert y == labels[i] and extra["class"] == y
            red = torch.tensor(data[i, :1024], dtype=torch.float32)  # the red plane, row-major
            torch.testing.assert_close(x[:, 0], (red / 255 - 0.4914) / 0.247)
    x, y, _ = dataset.splits["test"][3]
    assert y == written["test_batch"][1][3]
    torch.testing.assert_close(x[:, 2], (torch.tensor(written["test_batch"][0][3, 2048:], dtype=torch.float32) / 255 - 0.4465) / 0.261)


def test_pixels_are_read_row_major_and_normalised_by_hand(tmp_path, monkeypatch):
    """One picture: pixel (r, c) is red 255 at (0, 0), else R = c, G = r, B = 0; position 32 r + c."""
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    write_cifar(tmp_path, per_batch=1)
    picture = np.zeros((32, 32, 3), dtype=np.uint8)
    picture[..., 0] = np.arange(32)[None, :]
    picture[..., 1] = np.arange(32)[:, None]
    picture[0, 0] = (255, 0, 0)
    path = tmp_path / "cifar" / cifar.FOLDER / "test_batch"
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch[b"data"] = picture.transpose(2, 0, 1).reshape(1, 3072)
    path.write_bytes(pickle.dumps(batch, protocol=2))

    rgb = loaded(grayscale=False).splits["test"][0][0]
    assert rgb.shape == (1024, 3)
    assert rgb[0].tolist() == pytest.approx([(1 - 0.4914) / 0.247, -0.4822 / 0.243, -0.4465 / 0.261])
    assert rgb[32 * 5 + 7].tolist() == pytest.approx([(7 / 255 - 0.4914) / 0.247, (5 / 255 - 0.4822) / 0.243, -0.4465 / 0.261])

    gray = loaded(grayscale=True).splits["test"][0][0]
    assert gray.shape == (1024, 1)
    # (19595 * 255 + 2^15) >> 16 = 76; (19595 * 7 + 38470 * 5 + 2^15) >> 16 = 5
    assert gray[0, 0].item() == pytest.approx((76 - 122.6) / 61)
    assert gray[32 * 5 + 7, 0].item() == pytest.approx((5 - 122.6) / 61)
    pil = np.asarray(Image.fromarray(picture).convert("L")).reshape(-1)  # torchvision's Grayscale
    torch.testing.assert_close(gray[:, 0], (torch.tensor(pil, dtype=torch.float32) - 122.6) / 61)


def test_batches_carry_the_class_for_per_class_accuracy(written):
    dataset = loaded(grayscale=True)
    x, y, extra = dataset.batch("val", 0, 0, range(0, 4))
    assert x.shape == (4, 1024, 1) and y.shape == (4,) and torch.equal(extra["class"], y)
    assert dataset.d_input == 1 and dataset.d_output == 10 and len(dataset.categories["class"]) == 10


def test_missing_data_says_where_to_put_it_and_how_to_fetch_it(tmp_path, monkeypatch):
    monkeypatch.setenv("DATA_PATH", str(tmp_path))
    with pytest.raises(ConfigError) as e:
        loaded()
    message = str(e.value)
    assert "\n" not in message and str(tmp_path / "cifar" / "cifar-10-batches-py") in message
    assert "data_batch_1" in message and "dataset.download=true" in message and cifar.URL in message


def _release_archive(tmp_path):
    write_cifar(tmp_path / "release")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        tar.add(tmp_path / "release" / "cifar" / cifar.FOLDER, arcname=cifar.FOLDER)
    archive = tmp_path / "archive.tar.gz"
    archive.write_bytes(buffer.getvalue())
    return archive


def test_download_fetches_checks_and_unpacks_the_release(tmp_path, monkeypatch):
    archive = _release_archive(tmp_path)
    monkeypatch.setattr(cifar, "MD5", hashlib.md5(archive.read_bytes()).hexdigest())
    fetched = []
    monkeypatch.setattr(cifar.urllib.request, "urlretrieve", lambda url, to: fetched.append(url) or shutil.copy(archive, to))
    dataset = loaded(data_dir=str(tmp_path / "data"), download=True)
    assert fetched == [cifar.URL] and len(dataset.splits["train"]) == 36
    assert not (tmp_path / "data" / "cifar-10-python.tar.gz").exists()  # the archive is removed once unpacked


def test_download_refuses_a_corrupt_archive(tmp_path, monkeypatch):
    archive = _release_archive(tmp_path)
    monkeypatch.setattr(cifar.urllib.request, "urlretrieve", lambda url, to: shutil.copy(archive, to))
    with pytest.raises(ConfigError, match="does not have the MD5"):
        loaded(data_dir=str(tmp_path / "data"), download=True)


def test_download_without_network_says_so(tmp_path, monkeypatch):
    def offline(url, to):
        raise OSError("no route to host")

    monkeypatch.setattr(cifar.urllib.request, "urlretrieve", offline)
    with pytest.raises(ConfigError, match="cannot download .*no route to host.*by hand"):
        loaded(data_dir=str(tmp_path / "data"), download=True)
