"""IDX reader, load_fashion_mnist's search order, the embedded subset and its generator, and the
FashionMNIST dataset. IDX files are written here byte by byte from the format's definition."""
import gzip
import hashlib
import os
import re
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

import ganfast.data.fashion_mnist as fm
from ganfast.data import FASHION_MNIST_CLASSES, FashionMNIST, load_fashion_mnist, make_fashion_mnist_subset, read_idx

TRAIN_FILES = ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz")
TEST_FILES = ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz")


def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    """IDX: 00 00 <type> <ndim>, big-endian uint32 dims, big-endian data."""
    big_endian = {0x08: ">u1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4"}[type_code]
    header = struct.pack(">BBBB", 0, 0, type_code, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(big_endian).tobytes()


def write_idx(path: Path, array: np.ndarray, gzipped: bool = True, type_code: int = 0x08) -> Path:
    data = idx_bytes(array, type_code)
    path.write_bytes(gzip.compress(data) if gzipped else data)
    return path


def write_fake_fashion_mnist(root: Path, num_train: int = 30, num_test: int = 20, gzipped: bool = True, seed: int = 0):
    """A tiny stand-in for the full files; labels cycle 0..9 so every class is present."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    arrays = {}
    for (images_name, labels_name), count in ((TRAIN_FILES, num_train), (TEST_FILES, num_test)):
        images = rng.integers(0, 256, size=(count, 28, 28), dtype=np.uint8)
        labels = (np.arange(count) * 7 % 10).astype(np.uint8)
        for name, array in ((images_name, images), (labels_name, labels)):
            write_idx(root / (name if gzipped else name.removesuffix(".gz")), array, gzipped)
        arrays[images_name] = (images, labels)
    return arrays[TRAIN_FILES[0]], arrays[TEST_FILES[0]]


@pytest.fixture
def no_system_dataset(monkeypatch, tmp_path):
    """Pretend neither the env var nor /usr/share/datasets/fashion-mnist is there (CI may have it)."""
    monkeypatch.delenv(fm.FASHION_MNIST_ENV, raising=False)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "no-such-system-dir"))


# ---------------------------------------------------------------- read_idx

@pytest.mark.parametrize("gzipped", [True, False])
def test_read_idx_round_trips_uint8_images(tmp_path, gzipped):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = write_idx(tmp_path / ("x.gz" if gzipped else "x"), images, gzipped)
    got = read_idx(path)
    assert got.dtype == np.uint8 and got.shape == (2, 3, 4)
    np.testing.assert_array_equal(got, images)
    got[0, 0, 0] = 7                                           # a writable copy


def test_read_idx_big_endian_int32_and_float32(tmp_path):
    # 258 = 0x00000102 big-endian; a little-endian misread would give 0x02010000.
    ints = np.array([[258, -1], [7, 2**31 - 1]], dtype=np.int32)
    got = read_idx(write_idx(tmp_path / "i", ints, gzipped=False, type_code=0x0C))
    assert got.dtype == np.dtype(np.int32) and got.dtype.isnative
    assert got.tolist() == [[258, -1], [7, 2**31 - 1]]
    floats = np.array([1.5, -2.25], dtype=np.float32)
    assert read_idx(write_idx(tmp_path / "f", floats, type_code=0x0D)).tolist() == [1.5, -2.25]


def test_read_idx_gzip_detected_by_content_not_name(tmp_path):
    labels = np.array([3, 1, 4], dtype=np.uint8)
    path = tmp_path / "labels-without-gz-suffix"
    path.write_bytes(gzip.compress(idx_bytes(labels)))
    assert read_idx(path).tolist() == [3, 1, 4]


def test_read_idx_bad_magic(tmp_path):
    path = tmp_path / "bad"
    path.write_bytes(b"\x12\x34\x08\x01" + struct.pack(">I", 1) + b"\x00")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)
    path.write_bytes(b"\x00\x00\x07\x01" + struct.pack(">I", 1) + b"\x00")    # 0x07 is no IDX type
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(path)


@pytest.mark.parametrize("gzipped", [True, False])
def test_read_idx_truncated_data(tmp_path, gzipped):
    data = idx_bytes(np.zeros((4, 28, 28), dtype=np.uint8))[:-10]
    path = tmp_path / "short"
    path.write_bytes(gzip.compress(data) if gzipped else data)
    with pytest.raises(ValueError, match=r"truncated.*3136 data bytes, found 3126"):
        read_idx(path)


def test_read_idx_truncated_header_and_gzip_stream(tmp_path):
    path = tmp_path / "header"
    path.write_bytes(b"\x00\x00\x08\x03" + struct.pack(">I", 5))        # 3 dims declared, 1 given
    with pytest.raises(ValueError, match="truncated inside its header"):
        read_idx(path)
    path.write_bytes(b"\x00\x00")
    with pytest.raises(ValueError, match="truncated"):
        read_idx(path)
    stream = gzip.compress(idx_bytes(np.zeros((50, 28, 28), dtype=np.uint8)))
    path.write_bytes(stream[: len(stream) // 2])
    with pytest.raises(ValueError, match="damaged or truncated gzip"):
        read_idx(path)


def test_read_idx_trailing_bytes_and_missing_file(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.zeros(3, dtype=np.uint8)) + b"\x00")
    with pytest.raises(ValueError, match="longer than its header"):
        read_idx(path)
    with pytest.raises(FileNotFoundError, match="nope"):
        read_idx(tmp_path / "nope")


# ---------------------------------------------------------------- load_fashion_mnist

def test_embedded_subset_shapes_balance_and_dtypes(no_system_dataset):
    images, labels, source = load_fashion_mnist()
    assert source == "embedded"
    assert images.dtype == np.uint8 and images.shape == (6000, 28, 28)
    assert labels.dtype == np.int64 and labels.shape == (6000,)
    assert np.bincount(labels, minlength=10).tolist() == [600] * 10
    test_images, test_labels, _ = load_fashion_mnist(split="test")
    assert test_images.shape == (1000, 28, 28) and np.bincount(test_labels).tolist() == [100] * 10
    all_images, all_labels, _ = load_fashion_mnist(split="all")
    assert all_images.shape == (7000, 28, 28)
    np.testing.assert_array_equal(all_images[6000:], test_images)
    np.testing.assert_array_equal(all_labels[:6000], labels)


def test_embedded_subset_looks_like_fashion_mnist(no_system_dataset):
    images, labels, _ = load_fashion_mnist()
    # Published statistics of the full training set: mean 0.2860, std 0.3530 (of pixel / 255);
    # a class-balanced 10% subset lands close to them.
    scaled = images / 255.0
    assert abs(scaled.mean() - 0.2860) < 0.01 and abs(scaled.std() - 0.3530) < 0.01
    # Black background: the four corner pixels are almost always 0.
    corners = images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == 0).mean() > 0.95
    # Trousers (1) are narrow, bags (8) are wide: compare the inked width of the middle row.
    width = (images[:, 14, :] > 30).sum(axis=1)
    assert width[labels == 1].mean() < width[labels == 8].mean() - 5


def test_embedded_subset_sha256_matches_its_documentation():
    license_text = (fm.EMBEDDED_SUBSET_PATH.parent / "FASHION_MNIST_LICENSE.txt").read_text()
    assert "MIT" in license_text and "Zalando SE" in license_text
    documented = re.search(r"sha256\s+([0-9a-f]{64})", license_text).group(1)
    assert hashlib.sha256(fm.EMBEDDED_SUBSET_PATH.read_bytes()).hexdigest() == documented
    with np.load(fm.EMBEDDED_SUBSET_PATH) as npz:
        assert sorted(npz.files) == ["test_images", "test_labels", "test_source_index",
                                     "train_images", "train_labels", "train_source_index"]
        assert npz["train_labels"].dtype == np.uint8 and npz["train_images"].dtype == np.uint8
        # First-per-class selection in file order: source indices ascend, all within the full files.
        assert np.all(np.diff(npz["train_source_index"]) > 0) and npz["train_source_index"].max() < 60000
        assert np.all(np.diff(npz["test_source_index"]) > 0) and npz["test_source_index"].max() < 10000


@pytest.mark.parametrize("gzipped", [True, False])
def test_explicit_root_reads_the_full_files(tmp_path, gzipped):
    (train_images, train_labels), (test_images, test_labels) = write_fake_fashion_mnist(tmp_path, gzipped=gzipped)
    images, labels, source = load_fashion_mnist(tmp_path, "train")
    assert source == str(tmp_path)
    np.testing.assert_array_equal(images, train_images)
    assert labels.dtype == np.int64 and labels.tolist() == train_labels.tolist()
    images, labels, _ = load_fashion_mnist(str(tmp_path), "all")
    np.testing.assert_array_equal(images, np.concatenate([train_images, test_images]))
    assert labels.tolist() == train_labels.tolist() + test_labels.tolist()


def test_env_var_then_system_dir_then_embedded(monkeypatch, tmp_path):
    env_root, system_root = tmp_path / "env", tmp_path / "system"
    write_fake_fashion_mnist(env_root, num_train=10, seed=1)
    write_fake_fashion_mnist(system_root, num_train=20, seed=2)
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", str(system_root))
    monkeypatch.setenv(fm.FASHION_MNIST_ENV, str(env_root))
    images, _, source = load_fashion_mnist()
    assert source == str(env_root) and images.shape[0] == 10
    monkeypatch.delenv(fm.FASHION_MNIST_ENV)
    images, _, source = load_fashion_mnist()
    assert source == str(system_root) and images.shape[0] == 20
    monkeypatch.setattr(fm, "FASHION_MNIST_SYSTEM_DIR", str(tmp_path / "absent"))
    assert load_fashion_mnist()[2] == "embedded"


def test_env_var_without_files_is_an_error_not_a_fallback(monkeypatch, tmp_path):
    monkeypatch.setenv(fm.FASHION_MNIST_ENV, str(tmp_path))
    with pytest.raises(FileNotFoundError, match="train-images-idx3-ubyte.gz"):
        load_fashion_mnist()


def test_missing_files_error_names_path_and_files(tmp_path):
    write_idx(tmp_path / TRAIN_FILES[0], np.zeros((1, 28, 28), dtype=np.uint8))   # labels file absent
    with pytest.raises(FileNotFoundError) as info:
        load_fashion_mnist(tmp_path, "train")
    message = str(info.value)
    assert str(tmp_path) in message and all(name in message for name in TRAIN_FILES + TEST_FILES)
    with pytest.raises(FileNotFoundError, match="no-dir"):
        load_fashion_mnist(tmp_path / "no-dir")


def test_load_rejects_bad_split_wrong_shapes_and_labels(tmp_path):
    with pytest.raises(ValueError, match="split"):
        load_fashion_mnist(split="validation")
    write_fake_fashion_mnist(tmp_path)
    write_idx(tmp_path / TRAIN_FILES[1], np.array([0, 1, 10] * 10, dtype=np.uint8))   # 10 is no class
    with pytest.raises(ValueError, match=r"labels .* \[0, 10\]"):
        load_fashion_mnist(tmp_path, "train")
    write_idx(tmp_path / TRAIN_FILES[1], np.zeros(29, dtype=np.uint8))               # one label short
    with pytest.raises(ValueError, match=r"expected \[30\]"):
        load_fashion_mnist(tmp_path, "train")
    write_idx(tmp_path / TRAIN_FILES[0], np.zeros((30, 32, 32), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected uint8 \[N, 28, 28\]"):
        load_fashion_mnist(tmp_path, "train")


# ---------------------------------------------------------------- the subset generator

def test_make_subset_takes_first_per_class_and_is_byte_deterministic(tmp_path):
    (train_images, train_labels), (test_images, test_labels) = write_fake_fashion_mnist(tmp_path / "full", 40, 30)
    first, second = tmp_path / "a.npz", tmp_path / "b.npz"
    assert make_fashion_mnist_subset(tmp_path / "full", first, 3, 2) == {"train": 30, "test": 20}
    make_fashion_mnist_subset(tmp_path / "full", second, 3, 2)
    assert first.read_bytes() == second.read_bytes()
    # labels = i * 7 % 10: class c first appears at i with 7i = c (mod 10), then every 10 items.
    expected = sorted(i for c in range(10) for i in [j for j in range(40) if j * 7 % 10 == c][:3])
    with np.load(first) as npz:
        assert npz["train_source_index"].tolist() == expected
        np.testing.assert_array_equal(npz["train_images"], train_images[expected])
        assert npz["train_labels"].tolist() == train_labels[expected].tolist()
        assert np.bincount(npz["test_labels"]).tolist() == [2] * 10
    with pytest.raises(ValueError, match="has 4 items, 5 requested"):
        make_fashion_mnist_subset(tmp_path / "full", first, 5, 2)


def _full_dataset_root():
    for candidate in (os.environ.get(fm.FASHION_MNIST_ENV, ""), fm.FASHION_MNIST_SYSTEM_DIR):
        if candidate and all(fm._find_split_files(Path(candidate), split) for split in ("train", "test")):
            return Path(candidate)
    return None


@pytest.mark.skipif(_full_dataset_root() is None, reason="the full Fashion-MNIST files are not installed")
def test_shipped_subset_regenerates_byte_for_byte(tmp_path):
    out = tmp_path / "subset.npz"
    make_fashion_mnist_subset(_full_dataset_root(), out)
    assert out.read_bytes() == fm.EMBEDDED_SUBSET_PATH.read_bytes()


# ---------------------------------------------------------------- the FashionMNIST dataset

def test_fashion_mnist_pad_to_32(no_system_dataset):
    raw_images, raw_labels, _ = load_fashion_mnist()
    dataset = FashionMNIST()
    assert (len(dataset), dataset.resolution, dataset.channels, dataset.num_classes) == (6000, 32, 1, 10)
    assert dataset.class_names == FASHION_MNIST_CLASSES and dataset.class_names[0] == "T-shirt/top"
    assert dataset.name == "fashion-mnist" and dataset.source == "embedded"
    for index in (0, 1234, 5999):
        image, label = dataset[index]
        assert image.shape == (1, 32, 32) and image.dtype == torch.float32
        assert label.dtype == torch.int64 and label.ndim == 0 and int(label) == raw_labels[index]
        assert image.min() >= -1 and image.max() <= 1
        border = torch.ones(32, 32, dtype=torch.bool)
        border[2:30, 2:30] = False
        assert torch.all(image[0][border] == -1)               # padded with black
        expected = torch.from_numpy(raw_images[index]).float() / 127.5 - 1
        torch.testing.assert_close(image[0, 2:30, 2:30], expected, rtol=0, atol=0)


def test_fashion_mnist_resize(no_system_dataset):
    raw_images, _, _ = load_fashion_mnist()
    identity = FashionMNIST(resolution=28, pad_mode="resize")
    torch.testing.assert_close(identity[5][0][0], torch.from_numpy(raw_images[5]).float() / 127.5 - 1, rtol=0, atol=0)
    dataset = FashionMNIST(resolution=64, pad_mode="resize")
    image, label = dataset[5]
    assert image.shape == (1, 64, 64) and image.min() >= -1 and image.max() <= 1
    # Interpolation keeps the average brightness: within 1% of the range.
    original_mean = raw_images[5].mean() / 127.5 - 1
    assert abs(float(image.mean()) - original_mean) < 0.02
    assert FashionMNIST(resolution=16, pad_mode="resize")[5][0].shape == (1, 16, 16)


def test_fashion_mnist_options_and_errors(no_system_dataset):
    rgb = FashionMNIST(channels=3)
    image, _ = rgb[3]
    assert image.shape == (3, 32, 32) and torch.equal(image[0], image[2])
    unlabeled = FashionMNIST(labels=False)
    assert unlabeled.num_classes == 0 and unlabeled.class_names == () and int(unlabeled[0][1]) == -1
    assert FashionMNIST(resolution=30)[0][0].shape == (1, 30, 30)
    assert len(FashionMNIST(split="test")) == 1000
    with pytest.raises(ValueError, match="pad_mode='resize'"):
        FashionMNIST(resolution=64 + 1)
    with pytest.raises(ValueError, match="pad_mode='resize'"):
        FashionMNIST(resolution=16)
    with pytest.raises(ValueError, match="pad_mode"):
        FashionMNIST(pad_mode="reflect")
    with pytest.raises(ValueError, match="resolution"):
        FashionMNIST(resolution=0)
    with pytest.raises(ValueError, match="channels"):
        FashionMNIST(channels=2)
