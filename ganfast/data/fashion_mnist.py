"""Fashion-MNIST: the IDX reader, the loader, and the small subset shipped inside the package.

Where the images come from (`load_fashion_mnist(root=None)`), first match wins:
  1. `root`, when given;
  2. the directory in the environment variable GANFAST_FASHION_MNIST, when set;
  3. /usr/share/datasets/fashion-mnist, when it exists (Debian/Ubuntu package dataset-fashion-mnist);
  4. the embedded subset ganfast/data/builtin/fashion_mnist_subset.npz.
A directory named by 1 or 2 must hold the four files (`FASHION_MNIST_FILES`, gzipped or not);
otherwise FileNotFoundError, never a silent switch to the subset. Nothing is downloaded, ever.

The embedded subset holds the first `SUBSET_TRAIN_PER_CLASS` images of each class of the training
file and the first `SUBSET_TEST_PER_CLASS` of each class of the test file, in file order (the
files are already shuffled), with their indices in the full files. `make_fashion_mnist_subset`
rebuilds it byte for byte (tools/make_fashion_mnist_subset.py is its command line).

IDX format (LeCun's MNIST files): two zero bytes, a type code byte, the number of dimensions
byte, one big-endian uint32 per dimension, then the values big-endian in C order. read_idx reads
at most MAX_IDX_BYTES (256 MiB; the largest Fashion-MNIST file is 47 MB) from a file or out of
its gzip stream, so a gzip bomb named train-images-idx3-ubyte.gz fails with an error naming it
instead of filling the memory.
"""
from __future__ import annotations

import gzip
import io
import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import numpy as np

__all__ = [
    "FASHION_MNIST_CLASSES", "FASHION_MNIST_FILES", "FASHION_MNIST_ENV", "FASHION_MNIST_SYSTEM_DIR",
    "EMBEDDED_SUBSET_PATH", "SUBSET_TRAIN_PER_CLASS", "SUBSET_TEST_PER_CLASS",
    "MAX_IDX_BYTES", "read_idx", "load_fashion_mnist", "select_first_per_class", "make_fashion_mnist_subset",
    "save_npz_deterministic",
]

PathLike = Union[str, "os.PathLike[str]"]

# Label i is FASHION_MNIST_CLASSES[i] (the dataset's README).
FASHION_MNIST_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
                         "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
# split -> (images file, labels file); each may also be present without the .gz suffix.
FASHION_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
FASHION_MNIST_ENV = "GANFAST_FASHION_MNIST"
FASHION_MNIST_SYSTEM_DIR = "/usr/share/datasets/fashion-mnist"
EMBEDDED_SUBSET_PATH = Path(__file__).resolve().parent / "builtin" / "fashion_mnist_subset.npz"
SUBSET_TRAIN_PER_CLASS = 600
SUBSET_TEST_PER_CLASS = 100

_IDX_DTYPES = {0x08: np.dtype("u1"), 0x09: np.dtype("i1"), 0x0B: np.dtype(">i2"),
               0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8")}
_GZIP_MAGIC = b"\x1f\x8b"
MAX_IDX_BYTES = 2 ** 28
_SPLITS = ("train", "test", "all")


def _read_maybe_gzipped(path: Path) -> bytes:
    """The file's bytes, gunzipped when it starts with the gzip magic (the name is not trusted);
    ValueError beyond MAX_IDX_BYTES either way."""
    too_large = (f"read_idx: {str(path)!r} holds more than {MAX_IDX_BYTES} bytes{{}}, more than any "
                 f"IDX file this reader expects (ganfast.data.fashion_mnist.MAX_IDX_BYTES)")
    if path.stat().st_size > MAX_IDX_BYTES:
        raise ValueError(too_large.format(""))
    raw = path.read_bytes()
    if not raw.startswith(_GZIP_MAGIC):
        return raw
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) as stream:
            data = stream.read(MAX_IDX_BYTES + 1)        # bounded: never more than the limit in memory
    except (EOFError, OSError, zlib.error) as err:   # EOFError: the gzip stream was cut short
        raise ValueError(f"read_idx: {str(path)!r} is a damaged or truncated gzip file ({err})") from err
    if len(data) > MAX_IDX_BYTES:
        raise ValueError(too_large.format(" uncompressed"))
    return data


def read_idx(path: PathLike) -> np.ndarray:
    """The array stored in an IDX file (raw or gzipped), in native byte order.

    Returns an array of the file's dtype (uint8 for the Fashion-MNIST files) and shape
    (e.g. [60000, 28, 28] for images, [60000] for labels). Raises FileNotFoundError when the file
    is absent and ValueError when the header is not IDX or the data is shorter or longer than
    the header says.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"read_idx: no such file {str(path)!r}")
    data = _read_maybe_gzipped(path)
    if len(data) < 4:
        raise ValueError(f"read_idx: {str(path)!r} is truncated: {len(data)} bytes, an IDX header needs at least 4")
    zero0, zero1, type_code, ndim = data[0], data[1], data[2], data[3]
    if zero0 != 0 or zero1 != 0 or type_code not in _IDX_DTYPES:
        raise ValueError(f"read_idx: {str(path)!r} is not an IDX file: magic bytes {data[:4].hex()}, expected "
                         f"00 00 <type in {sorted(_IDX_DTYPES)}> <ndim>")
    if ndim == 0:
        raise ValueError(f"read_idx: {str(path)!r} declares 0 dimensions; expected at least 1")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise ValueError(f"read_idx: {str(path)!r} is truncated inside its header "
                         f"({len(data)} bytes, the header of a {ndim}-d array needs {header_len})")
    shape = tuple(int(d) for d in np.frombuffer(data, dtype=">u4", count=ndim, offset=4))
    dtype = _IDX_DTYPES[type_code]
    expected = math.prod(shape) * dtype.itemsize       # Python ints: a hostile header cannot overflow it
    found = len(data) - header_len
    if found != expected:
        what = "truncated" if found < expected else "longer than its header says"
        raise ValueError(f"read_idx: {str(path)!r} is {what}: shape {list(shape)} of {dtype.name} needs "
                         f"{expected} data bytes, found {found}")
    array = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(shape)
    return array.astype(dtype.newbyteorder("="))   # a writable copy in native byte order


def _find_split_files(root: Path, split: str) -> Optional[Tuple[Path, Path]]:
    """(images, labels) files of `split` under root, each gzipped or not; None when one is absent."""
    found = []
    for name in FASHION_MNIST_FILES[split]:
        candidates = [root / name, root / name[: -len(".gz")]]
        existing = [c for c in candidates if c.is_file()]
        if not existing:
            return None
        found.append(existing[0])
    return found[0], found[1]


def _expected_files_text() -> str:
    names = [n for pair in FASHION_MNIST_FILES.values() for n in pair]
    return ", ".join(names) + " (each may also be uncompressed, without .gz)"


def _load_full_split(root: Path, split: str) -> Tuple[np.ndarray, np.ndarray]:
    files = _find_split_files(root, split)
    if files is None:
        raise FileNotFoundError(f"load_fashion_mnist: {str(root)!r} does not hold the Fashion-MNIST {split!r} "
                                f"files; expected {_expected_files_text()}")
    images, labels = read_idx(files[0]), read_idx(files[1])
    if images.ndim != 3 or images.shape[1:] != (28, 28) or images.dtype != np.uint8:
        raise ValueError(f"load_fashion_mnist: {str(files[0])!r} holds {images.dtype} {list(images.shape)}, "
                         f"expected uint8 [N, 28, 28]")
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise ValueError(f"load_fashion_mnist: {str(files[1])!r} holds labels {list(labels.shape)}, "
                         f"expected [{images.shape[0]}] to match the images")
    return images, labels


def _load_embedded_split(split: str) -> Tuple[np.ndarray, np.ndarray]:
    if not EMBEDDED_SUBSET_PATH.is_file():
        raise FileNotFoundError(f"load_fashion_mnist: the embedded subset {str(EMBEDDED_SUBSET_PATH)!r} is missing "
                                f"from this installation; pass root= a directory with {_expected_files_text()}")
    with np.load(EMBEDDED_SUBSET_PATH, allow_pickle=False) as npz:
        return npz[f"{split}_images"], npz[f"{split}_labels"]


def _default_root() -> Optional[Path]:
    """The directory to read when no root is given, or None for the embedded subset."""
    from_env = os.environ.get(FASHION_MNIST_ENV, "")
    if from_env:
        return Path(from_env).expanduser()
    system = Path(FASHION_MNIST_SYSTEM_DIR)
    return system if system.is_dir() else None


def load_fashion_mnist(root: Optional[PathLike] = None, split: str = "train"
                       ) -> Tuple[np.ndarray, np.ndarray, str]:
    """Fashion-MNIST images and labels.

    root: a directory holding the IDX files, or None for the search order in the module docstring.
    split: "train" (60000 in the full set), "test" (10000) or "all" (train then test).
    Returns (images uint8 [N, 28, 28] with 0 = black background, labels int64 [N] in [0, 10),
    source), where source is "embedded" for the shipped subset, else the directory read.
    """
    if split not in _SPLITS:
        raise ValueError(f"load_fashion_mnist: split must be one of {_SPLITS}, got {split!r}")
    directory = Path(root).expanduser() if root is not None else _default_root()
    parts = ("train", "test") if split == "all" else (split,)
    if directory is None:
        loaded = [_load_embedded_split(s) for s in parts]
        source = "embedded"
    else:
        if not directory.is_dir():
            raise FileNotFoundError(f"load_fashion_mnist: no such directory {str(directory)!r}; expected one "
                                    f"holding {_expected_files_text()}")
        loaded = [_load_full_split(directory, s) for s in parts]
        source = str(directory)
    images = np.concatenate([im for im, _ in loaded]) if len(loaded) > 1 else loaded[0][0]
    labels = np.concatenate([lb for _, lb in loaded]).astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= len(FASHION_MNIST_CLASSES)):
        raise ValueError(f"load_fashion_mnist: labels from {source!r} lie in [{labels.min()}, {labels.max()}], "
                         f"expected [0, {len(FASHION_MNIST_CLASSES)})")
    return images, labels, source


def select_first_per_class(labels: np.ndarray, per_class: int, num_classes: int) -> np.ndarray:
    """Indices (int64, ascending) of the first `per_class` items of each class 0..num_classes-1 in
    `labels` [N]. Raises ValueError when a class has fewer."""
    labels = np.asarray(labels)
    chosen = []
    for cls in range(num_classes):
        of_class = np.flatnonzero(labels == cls)
        if of_class.size < per_class:
            raise ValueError(f"select_first_per_class: class {cls} has {of_class.size} items, {per_class} requested")
        chosen.append(of_class[:per_class])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def save_npz_deterministic(path: PathLike, arrays: Dict[str, np.ndarray]) -> None:
    """Like np.savez_compressed (np.load reads it), but the same arrays always give the same
    bytes: np.savez stamps each member with the current time, this writes a fixed 1980-01-01."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as archive:
        for key in sorted(arrays):
            buffer = io.BytesIO()
            np.lib.format.write_array(buffer, np.ascontiguousarray(arrays[key]), allow_pickle=False)
            info = zipfile.ZipInfo(f"{key}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, buffer.getvalue(), compresslevel=9)


def make_fashion_mnist_subset(root: PathLike, out: PathLike,
                              train_per_class: int = SUBSET_TRAIN_PER_CLASS,
                              test_per_class: int = SUBSET_TEST_PER_CLASS) -> Dict[str, int]:
    """Write the class-balanced subset of the full set in `root` to `out` (see module docstring).

    The file holds train_images / test_images uint8 [n, 28, 28], train_labels / test_labels uint8
    [n] and train_source_index / test_source_index int32 [n] (positions in the full IDX files).
    Returns the number of images per split.
    """
    arrays: Dict[str, np.ndarray] = {}
    counts = {}
    for split, per_class in (("train", train_per_class), ("test", test_per_class)):
        images, labels = _load_full_split(Path(root), split)
        index = select_first_per_class(labels, per_class, len(FASHION_MNIST_CLASSES))
        arrays[f"{split}_images"] = images[index]
        arrays[f"{split}_labels"] = labels[index].astype(np.uint8)
        arrays[f"{split}_source_index"] = index.astype(np.int32)
        counts[split] = int(index.size)
    save_npz_deterministic(out, arrays)
    return counts
