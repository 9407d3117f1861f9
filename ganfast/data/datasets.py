"""Image datasets for GAN training, all with one item format and one set of attributes.

Every dataset is a torch Dataset whose item i is
    (image float32 [C, R, R] in [-1, 1] (uint8 v -> v / 127.5 - 1), label int64 scalar tensor)
and which has `resolution` (R), `channels` (C), `num_classes` (0 when unlabeled; the label is then
-1, so code that forgot to pass c=None to an unconditional model fails loudly), `class_names`,
`name` and `__len__`.

xflip=True doubles the length: item i >= N (N images) is item i - N mirrored left-right. This is
a fixed function of the index, no random numbers, so a resumed run sees exactly the same images.

Geometry: every image is center-cropped to a square of its shorter side, then resized to R x R
with torch.nn.functional.interpolate (antialias=True; bicubic, bilinear for Fashion-MNIST). This is
"resize the shorter side to R, then center-crop" without rounding the longer side. When the side
is not even, the extra row/column is dropped from the bottom/right.

Channels: channels=None keeps grayscale sources grayscale (C = 1) and makes everything else RGB
(C = 3); 3 turns grayscale into RGB, 1 turns RGB into luma (Pillow's integer ITU-R 601-2 formula).
Alpha (RGBA, LA, palettes with transparency) is composited over black, the -1 background; 16-bit
grayscale keeps its top 8 bits; an EXIF orientation tag is applied.

Unreadable files (ImageFolder, ZipImages): at construction every file's header is opened (cheap:
Pillow reads only the first bytes, ~0.1 ms a file); files that fail are left out, counted in
`num_skipped` / `skipped_files` and reported in ONE warning. A file that passes that check but
fails to decode later (e.g. a truncated JPEG) is replaced, at that and every later access, by the
next readable index ((i + 1) mod N, then i + 2, ...), so training never dies on one bad image and
the replacement is deterministic; each such file is warned about once per process and recorded
in `skipped_files` of the process that read it (a DataLoader worker's copy, with num_workers > 0).

Hostile data (ImageFolder, ZipImages): ganfast never extracts anything, but labels come from path
components and decoding costs memory, so these are refused at construction, before any pixel is
decoded, and named in that same one warning with the reason:
  - images whose header declares more than `max_pixels` pixels (default DEFAULT_MAX_PIXELS = 2^26,
    8192 x 8192: a one-colour 30000 x 30000 RGB PNG is 2.6 MB on disk and 2.7 GB decoded).
    This is ganfast's own limit, checked from the header that Image.open reads; Pillow's global
    Image.MAX_IMAGE_PIXELS is never changed and still applies on top (its DecompressionBombError
    is one more reason to skip a file);
  - zip members named with an absolute path, a drive letter, a backslash or a '..' component,
    names that occur more than once, symlink entries, encrypted members, members that declare more
    than 1 GiB uncompressed, and members of 1 MiB or more compressed more than 1100:1 (deflate
    cannot exceed 1032:1: the declared size is a lie or another compressor made a bomb);
  - in a folder: symlinks whose target lies outside the folder (the root's own real path; a
    dataset assembled from symlinks to elsewhere must point ImageFolder at the real folder),
    broken symlinks and anything that is not a regular file (a FIFO named x.png would block the
    reader forever). Symlinked folders inside the root are followed once, so a symlink loop ends.
A directory named like an image (x.png/) is a folder, walked like any other, never opened.
Only names with an image extension are ever considered: other files are ignored silently.
"""
from __future__ import annotations

import os
import re
import stat
import struct
import warnings
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import BinaryIO, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .fashion_mnist import FASHION_MNIST_CLASSES, load_fashion_mnist

__all__ = [
    "IMAGE_EXTENSIONS", "DEFAULT_MAX_PIXELS", "uint8_to_float", "resize_center_crop",
    "ImageDataset", "InMemoryImages", "FashionMNIST", "NpzImages", "ImageFolder", "ZipImages", "open_dataset",
]

PathLike = Union[str, "os.PathLike[str]"]
LabelsArg = Union[str, bool]

IMAGE_EXTENSIONS = (".bmp", ".jpeg", ".jpg", ".png", ".webp")
# Errors Pillow raises on bad image data, and zipfile on a bad member (NotImplementedError: a
# compression method it lacks, e.g. Deflate64). Caught only around decoding, so a bug elsewhere
# still surfaces.
_DECODE_ERRORS = (OSError, ValueError, SyntaxError, EOFError, struct.error, zlib.error,
                  zipfile.BadZipFile, NotImplementedError, Image.DecompressionBombError)
_GRAYSCALE_MODES = frozenset({"1", "L", "LA", "La", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"})
_RESIZE_CHUNK = 1024           # images per interpolate call: bounds the float32 temporary
_MAX_WARNED_NAMES = 5
# Larger than any photo a GAN is trained from (a 50-megapixel camera is below it), small enough
# that one decoded image (<= 192 MiB as RGB uint8) cannot exhaust a DataLoader worker.
DEFAULT_MAX_PIXELS = 2 ** 26
_MAX_ZIP_MEMBER_BYTES = 2 ** 30
_MAX_ZIP_RATIO = 1100          # deflate's ceiling is ~1032:1
_ZIP_RATIO_MIN_BYTES = 2 ** 20  # smaller members cannot hurt, whatever their ratio
_DRIVE_LETTER = re.compile(r"^[A-Za-z]:")


def uint8_to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [..., C, H, W] in 0..255 -> float32 in [-1, 1] (0 -> -1, 255 -> 1). Elementwise, so a
    batch gives bitwise the same values as its items one by one."""
    return images.to(torch.float32) / 127.5 - 1.0


def resize_center_crop(images: torch.Tensor, resolution: int, mode: str = "bicubic") -> torch.Tensor:
    """Center-crop uint8 images [N, C, H, W] to a square of side min(H, W), then resize it to
    [N, C, resolution, resolution] (interpolate with antialias; `mode` "bicubic" or "bilinear")."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError(f"resize_center_crop: images must be uint8 [N, C, H, W], "
                         f"got {images.dtype} {list(images.shape)}")
    _check_resolution("resize_center_crop", resolution)
    height, width = images.shape[-2:]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = images[:, :, top:top + side, left:left + side]
    if side == resolution:
        return square.contiguous()
    resized = []
    for chunk in square.split(_RESIZE_CHUNK):
        scaled = F.interpolate(chunk.to(torch.float32), size=(resolution, resolution), mode=mode,
                               align_corners=False, antialias=True)
        resized.append(scaled.round_().clamp_(0, 255).to(torch.uint8))   # bicubic overshoots
    return torch.cat(resized)


def _check_resolution(where: str, resolution: int) -> None:
    if isinstance(resolution, bool) or not isinstance(resolution, (int, np.integer)) or resolution < 1:
        raise ValueError(f"{where}: resolution must be a positive int, got {resolution!r}")


def _check_channels(where: str, channels: Optional[int]) -> None:
    if channels not in (None, 1, 3):
        raise ValueError(f"{where}: channels must be None (from the data), 1 or 3, got {channels!r}")


def _check_labels_arg(where: str, labels: LabelsArg) -> None:
    if not (labels is True or labels is False or (isinstance(labels, str) and labels == "auto")):
        raise ValueError(f"{where}: labels must be 'auto', True or False, got {labels!r}")


def _rgb_to_luma(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 3, H, W] -> [N, 1, H, W], L = (19595 R + 38470 G + 7471 B + 2^15) >> 16, the
    integer form of 0.299 R + 0.587 G + 0.114 B that Pillow's convert("L") uses."""
    weights = torch.tensor([19595, 38470, 7471], dtype=torch.int32).view(1, 3, 1, 1)
    return ((rgb.to(torch.int32) * weights).sum(dim=1, keepdim=True) + 32768).bitwise_right_shift(16).to(torch.uint8)


def _composite_over_black(rgba: torch.Tensor) -> torch.Tensor:
    """uint8 [N, 4, H, W] -> [N, 3, H, W]: color * alpha / 255, rounded."""
    color, alpha = rgba[:, :3].to(torch.int32), rgba[:, 3:].to(torch.int32)
    return ((color * alpha + 127) // 255).to(torch.uint8)


class ImageDataset(torch.utils.data.Dataset):
    """The shared interface and item format (see the module docstring). Subclasses set the
    attributes and implement `_load(index) -> (uint8 [C, R, R], label int)` for 0 <= index < N."""

    name: str
    resolution: int
    channels: int
    num_classes: int
    class_names: Tuple[str, ...]
    xflip: bool

    def _num_images(self) -> int:
        raise NotImplementedError

    def _load(self, index: int) -> Tuple[torch.Tensor, int]:
        raise NotImplementedError

    def __len__(self) -> int:
        return self._num_images() * (2 if self.xflip else 1)

    def _base_index(self, index: int) -> Tuple[int, bool]:
        """(image index in [0, N), mirrored?) for a dataset index in [-len, len)."""
        length = len(self)
        index = int(index)
        if not -length <= index < length:
            raise IndexError(f"{type(self).__name__}: index {index} out of range for length {length}")
        index %= length
        num_images = self._num_images()
        return index % num_images, index >= num_images

    def __getitem__(self, index: int) -> Tuple[torch.Tensor, torch.Tensor]:
        base, mirrored = self._base_index(index)
        image, label = self._load(base)                       # uint8 [C, R, R]
        if mirrored:
            image = image.flip(-1)
        return uint8_to_float(image), torch.tensor(label, dtype=torch.int64)

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, len={len(self)}, resolution={self.resolution}, "
                f"channels={self.channels}, num_classes={self.num_classes}, xflip={self.xflip})")


class InMemoryImages(ImageDataset):
    """Images held in memory as one uint8 tensor: no decoding per item, and `get_batch` gathers
    a whole batch with one indexing op (batch_iterator's fast path).

    images: uint8 [N, C, R, R] (C = 1 or 3); labels: int64-convertible [N] or None (unlabeled);
    channels: None keeps C, 3 repeats a grayscale C = 1 on read (stored once), 1 requires C = 1.
    """

    def __init__(self, images: torch.Tensor, labels: Optional[torch.Tensor], name: str,
                 class_names: Optional[Sequence[str]] = None, channels: Optional[int] = None,
                 xflip: bool = False):
        where = type(self).__name__
        if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4
                or images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3] or images.shape[0] == 0):
            got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"{where}: images must be a non-empty uint8 tensor [N, 1 or 3, R, R], got {got}")
        _check_channels(where, channels)
        stored_channels = images.shape[1]
        if channels is not None and channels != stored_channels and not (channels == 3 and stored_channels == 1):
            raise ValueError(f"{where}: cannot show {stored_channels}-channel images as channels={channels}; "
                             f"convert them to grayscale first")
        num = images.shape[0]
        if labels is None:
            self.labels = torch.full((num,), -1, dtype=torch.int64)
            self.num_classes, self.class_names = 0, ()
        else:
            self.labels = torch.as_tensor(labels).to(torch.int64).reshape(-1)
            if self.labels.shape[0] != num:
                raise ValueError(f"{where}: labels must be [{num}], got {list(self.labels.shape)}")
            if int(self.labels.min()) < 0:
                raise ValueError(f"{where}: labels must be >= 0, got min {int(self.labels.min())}")
            self.num_classes = int(self.labels.max()) + 1
            if class_names is not None and len(class_names) < self.num_classes:
                raise ValueError(f"{where}: {len(class_names)} class names for labels up to {self.num_classes - 1}")
            self.class_names = (tuple(class_names) if class_names is not None
                                else tuple(str(i) for i in range(self.num_classes)))
            self.num_classes = len(self.class_names)
        self.images = images.contiguous()                       # [N, C_stored, R, R] uint8
        self.name = name
        self.resolution = int(images.shape[-1])
        self.channels = channels if channels is not None else stored_channels
        self.xflip = bool(xflip)

    def _num_images(self) -> int:
        return self.images.shape[0]

    def _load(self, index: int) -> Tuple[torch.Tensor, int]:
        return self.images[index].expand(self.channels, -1, -1), int(self.labels[index])

    def get_batch(self, indices: Union[torch.Tensor, Sequence[int]]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Items `indices` [B] stacked: (images float32 [B, C, R, R], labels int64 [B]); bitwise the
        same as stacking dataset[i] for each i."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        length = len(self)
        if indices.numel() and (int(indices.min()) < -length or int(indices.max()) >= length):
            raise IndexError(f"{type(self).__name__}.get_batch: indices must lie in [-{length}, {length}), got "
                             f"[{int(indices.min())}, {int(indices.max())}]")
        indices = indices % length
        base = indices % self.images.shape[0]
        images = self.images[base]                              # [B, C_stored, R, R], a copy
        mirrored = indices >= self.images.shape[0]
        if bool(mirrored.any()):
            images[mirrored] = images[mirrored].flip(-1)
        images = images.expand(-1, self.channels, -1, -1)
        return uint8_to_float(images), self.labels[base]


class FashionMNIST(InMemoryImages):
    """Fashion-MNIST (see ganfast.data.fashion_mnist for where the files come from; `source` says
    which were read), 10 classes, grayscale on a black background.

    pad_mode="pad" surrounds the 28 x 28 images with black (-1) up to `resolution` (>= 28, and
    resolution - 28 even; 32 is the usual choice); "resize" rescales them to any resolution
    (bilinear, antialiased). channels=3 repeats the gray channel; labels=False drops the labels.
    """

    def __init__(self, resolution: int = 32, root: Optional[PathLike] = None, split: str = "train",
                 xflip: bool = False, pad_mode: str = "pad", channels: Optional[int] = None,
                 labels: LabelsArg = True):
        _check_resolution("FashionMNIST", resolution)
        _check_labels_arg("FashionMNIST", labels)
        if pad_mode not in ("pad", "resize"):
            raise ValueError(f"FashionMNIST: pad_mode must be 'pad' or 'resize', got {pad_mode!r}")
        if pad_mode == "pad" and (resolution < 28 or (resolution - 28) % 2):
            raise ValueError(f"FashionMNIST: pad_mode='pad' needs resolution >= 28 with resolution - 28 even "
                             f"(e.g. 32), got {resolution}; use pad_mode='resize'")
        images_np, labels_np, source = load_fashion_mnist(root, split)
        images = torch.from_numpy(images_np).unsqueeze(1)       # [N, 1, 28, 28]
        if pad_mode == "pad":
            margin = (resolution - 28) // 2
            images = F.pad(images, (margin, margin, margin, margin), value=0)
        else:
            images = resize_center_crop(images, resolution, mode="bilinear")
        super().__init__(images, torch.from_numpy(labels_np) if labels is not False else None,
                         name="fashion-mnist", class_names=FASHION_MNIST_CLASSES if labels is not False else None,
                         channels=channels, xflip=xflip)
        self.source = source
        self.split = split


def _array_to_uint8_nchw(array: np.ndarray, where: str) -> torch.Tensor:
    """An image array as uint8 [N, C, H, W], C in {1, 3, 4} (see NpzImages for what is accepted)."""
    if array.ndim == 3:
        array = array[:, None]
    elif array.ndim == 4:
        channels_first = array.shape[1] in (1, 3, 4)
        channels_last = array.shape[3] in (1, 3, 4)
        if channels_first and channels_last:     # e.g. [N, 3, 4, 4] vs [N, 4, 4, 3]: the square reading wins
            channels_first = array.shape[2] == array.shape[3] and array.shape[1] != array.shape[2]
        if not channels_first and not channels_last:
            raise ValueError(f"{where}: cannot find the channel axis of shape {list(array.shape)}; expected "
                             f"[N, H, W, C] or [N, C, H, W] with C in (1, 3, 4)")
        if not channels_first:
            array = array.transpose(0, 3, 1, 2)
    else:
        raise ValueError(f"{where}: images must be [N, H, W], [N, H, W, C] or [N, C, H, W], "
                         f"got shape {list(array.shape)}")
    if array.shape[0] == 0:
        raise ValueError(f"{where}: the image array is empty")
    if array.dtype == np.uint8:
        converted = array
    elif np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all():
            raise ValueError(f"{where}: float images contain NaN or inf")
        low, high = float(array.min()), float(array.max())
        tolerance = 1e-3
        if low >= -tolerance and high <= 1 + tolerance:
            scaled = array * 255.0                     # [0, 1]
        elif low >= -1 - tolerance and high <= 1 + tolerance:
            scaled = (array + 1.0) * 127.5             # [-1, 1]
        else:
            raise ValueError(f"{where}: float images must lie in [0, 1] or [-1, 1], got [{low}, {high}]")
        converted = np.clip(np.rint(scaled), 0, 255).astype(np.uint8)
    elif np.issubdtype(array.dtype, np.integer):
        low, high = int(array.min()), int(array.max())
        if low < 0 or high > 255:
            raise ValueError(f"{where}: integer images must lie in [0, 255], got [{low}, {high}]")
        converted = array.astype(np.uint8)
    else:
        raise ValueError(f"{where}: images must be uint8, integer in [0, 255] or float, got dtype {array.dtype}")
    return torch.from_numpy(np.ascontiguousarray(converted))


def _convert_channels(images: torch.Tensor, channels: Optional[int]) -> torch.Tensor:
    """uint8 [N, C in (1, 3, 4), H, W] -> [N, 1 or 3, H, W] (channels=3 from gray is done on read)."""
    if images.shape[1] == 4:
        images = _composite_over_black(images)
    if channels == 1 and images.shape[1] == 3:
        images = _rgb_to_luma(images)
    return images


class NpzImages(InMemoryImages):
    """Images from an array in a .npz file, held in memory.

    key: the image array's name; None picks the only array, else the one named "images".
    Accepted: [N, H, W] (grayscale), [N, H, W, C] or [N, C, H, W] with C = 1, 3 or 4 (alpha
    composited over black), of dtype uint8 (0..255), another integer type with values in 0..255,
    or float in [0, 1] (read as such when its minimum is >= 0) or in [-1, 1] (minimum < 0).
    Labels: labels_key names an integer [N] array; None uses the array "labels" when present.
    labels="auto" uses them when found, True requires them, False ignores them.
    resolution None keeps the shorter side; channels as in the module docstring.
    """

    def __init__(self, path: PathLike, key: Optional[str] = None, labels_key: Optional[str] = None,
                 resolution: Optional[int] = None, channels: Optional[int] = None, xflip: bool = False,
                 labels: LabelsArg = "auto"):
        where = "NpzImages"
        _check_channels(where, channels)
        _check_labels_arg(where, labels)
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"{where}: no such file {str(path)!r}")
        try:
            npz = np.load(path, allow_pickle=False)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise ValueError(f"{where}: {str(path)!r} is not a readable .npz file ({err})") from err
        if not isinstance(npz, np.lib.npyio.NpzFile):
            raise ValueError(f"{where}: {str(path)!r} holds a single array (.npy data), expected a .npz archive")
        with npz:
            names = list(npz.files)
            if key is None:
                key = names[0] if len(names) == 1 else "images"
            if key not in names:
                raise ValueError(f"{where}: {str(path)!r} has no array {key!r}; it holds {names} (pass key=)")
            images = _array_to_uint8_nchw(_npz_array(npz, key, path, where), f"{where}({str(path)!r})[{key!r}]")
            label_array = None
            if labels is not False:
                label_name = labels_key if labels_key is not None else "labels"
                if label_name in names and label_name != key:
                    label_array = _npz_array(npz, label_name, path, where)
                elif labels is True or labels_key is not None:
                    raise ValueError(f"{where}: {str(path)!r} has no label array {label_name!r}; it holds {names}")
        if label_array is not None:
            if label_array.shape != (images.shape[0],) or not np.issubdtype(label_array.dtype, np.integer):
                raise ValueError(f"{where}: labels must be an integer array [{images.shape[0]}], got "
                                 f"{label_array.dtype} {list(label_array.shape)}")
            label_array = torch.from_numpy(label_array.astype(np.int64))
        if resolution is None:
            resolution = min(images.shape[-2:])
        images = resize_center_crop(_convert_channels(images, channels), resolution)
        super().__init__(images, label_array, name=path.stem, channels=channels, xflip=xflip)
        self.path = path


def _npz_array(npz: "np.lib.npyio.NpzFile", key: str, path: Path, where: str) -> np.ndarray:
    """npz[key], with numpy's refusals (an object array needs pickle, which np.load(allow_pickle=False)
    never runs; a damaged member) turned into an error naming the file and the array."""
    try:
        return npz[key]
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error) as err:
        raise ValueError(f"{where}: cannot read array {key!r} of {str(path)!r} ({type(err).__name__}: {err})") from err


def _pil_to_uint8(image: Image.Image, channels: int) -> np.ndarray:
    """A decoded Pillow image as uint8 [H, W] (channels=1) or [H, W, 3] (channels=3)."""
    if image.mode.startswith("I;16") or image.mode == "I":
        # 16-bit gray (Pillow opens 16-bit PNGs as I;16 or I): keep the top 8 bits.
        wide = np.asarray(image).astype(np.int64)
        image = Image.fromarray((np.clip(wide, 0, 65535) >> 8).astype(np.uint8))   # 2-d uint8 -> mode L
    elif image.mode == "F":
        image = Image.fromarray(np.clip(np.rint(np.asarray(image)), 0, 255).astype(np.uint8))   # 2-d uint8 -> mode L
    palette_alpha = image.mode == "P" and "transparency" in image.info
    if image.mode in ("RGBA", "LA", "La", "RGBa", "PA") or palette_alpha:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return np.array(image.convert("L" if channels == 1 else "RGB"))    # a writable copy, as torch wants


def _class_labels(names: Sequence[str], labels: LabelsArg, where: str
                  ) -> Tuple[Optional[List[int]], Tuple[str, ...]]:
    """Per-name class indices from the first path component (sorted folder names), or None.

    "auto": labels when every image lies in a first-level sub-folder and there are >= 2 of them.
    True: labels whenever every image lies in a sub-folder; False: never.
    """
    if labels is False:
        return None, ()
    tops = [name.split("/", 1)[0] if "/" in name else None for name in names]
    folders = sorted({top for top in tops if top is not None})
    at_top_level = sum(top is None for top in tops)
    usable = bool(folders) and not at_top_level
    if labels == "auto" and not (usable and len(folders) >= 2):
        return None, ()
    if not usable:
        raise ValueError(f"{where}: labels=True needs every image in a first-level sub-folder (one per class); "
                         f"found {len(folders)} sub-folders and {at_top_level} images at the top level")
    index = {folder: i for i, folder in enumerate(folders)}
    return [index[top] for top in tops], tuple(folders)


def _is_hidden(name: str) -> bool:
    """A hidden component (.DS_Store, macOS '._x.png' forks, __MACOSX/) in a '/'-separated name."""
    return any(part.startswith(".") or part == "__MACOSX" for part in name.split("/"))


def _is_image_name(name: str) -> bool:
    """Image extension, and no hidden component."""
    return not _is_hidden(name) and name.lower().endswith(IMAGE_EXTENSIONS)


class _ImageTooLarge(ValueError):
    """An image whose header declares more pixels than the dataset's max_pixels."""


def _check_max_pixels(where: str, max_pixels: int) -> None:
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, (int, np.integer)) or max_pixels < 1:
        raise ValueError(f"{where}: max_pixels must be a positive int, got {max_pixels!r}")


def _open_image(file: BinaryIO, max_pixels: int) -> Image.Image:
    """Image.open (it reads the header only), refused with _ImageTooLarge before any decoding when
    the header declares more than max_pixels pixels."""
    image = Image.open(file)
    width, height = image.size
    if width * height > max_pixels:
        image.close()
        raise _ImageTooLarge(f"{width}x{height} = {width * height} pixels declared, more than "
                             f"max_pixels={max_pixels}; not decoded")
    return image


def _zip_member_problem(info: zipfile.ZipInfo, count: int) -> Optional[str]:
    """Why a zip member is refused (module docstring), or None. count: members with its name."""
    name = info.filename
    if name.startswith("/"):
        return "absolute path"
    if _DRIVE_LETTER.match(name):
        return "drive letter in the path"
    if "\\" in name:
        return "backslash in the path"
    if ".." in name.split("/"):
        return "'..' component in the path"
    if count > 1:
        return f"the name occurs {count} times in the archive"
    if stat.S_ISLNK(info.external_attr >> 16):
        return "symlink entry"
    if info.flag_bits & 0x1:
        return "encrypted"
    if info.file_size > _MAX_ZIP_MEMBER_BYTES:
        return f"declares {info.file_size} bytes uncompressed, more than {_MAX_ZIP_MEMBER_BYTES}"
    if info.file_size >= _ZIP_RATIO_MIN_BYTES and info.file_size > _MAX_ZIP_RATIO * info.compress_size:
        return (f"declares {info.file_size} bytes uncompressed from {info.compress_size} compressed, "
                f"a ratio above {_MAX_ZIP_RATIO}:1")
    return None


def _warn_skipped(where: str, skipped: Sequence[str], location: str) -> None:
    """The one warning for the files a dataset leaves out at construction ("name (reason)" each)."""
    shown = "; ".join(skipped[:_MAX_WARNED_NAMES])
    more = f"; and {len(skipped) - _MAX_WARNED_NAMES} more" if len(skipped) > _MAX_WARNED_NAMES else ""
    warnings.warn(f"{where}: skipped {len(skipped)} unreadable or refused image file(s) in {location}: "
                  f"{shown}{more} (listed in .skipped_files)", stacklevel=4)


class _EncodedImages(ImageDataset):
    """Encoded image files (png, jpg, ...) decoded per item; subclasses list them and open them.
    refused: (description, reason) of files the subclass left out already (hostile names,
    symlinks...), reported in the same one warning."""

    def __init__(self, names: Sequence[str], resolution: int, channels: Optional[int], xflip: bool,
                 labels: LabelsArg, name: str, location: str, max_pixels: int,
                 refused: Sequence[Tuple[str, str]] = ()):
        where = type(self).__name__
        _check_resolution(where, resolution)
        _check_channels(where, channels)
        _check_labels_arg(where, labels)
        _check_max_pixels(where, max_pixels)
        self.max_pixels = int(max_pixels)
        names = sorted(n for n in names if _is_image_name(n))
        self.skipped_files: List[str] = [described for described, _ in refused]
        failures = [f"{described} ({reason})" for described, reason in refused]
        if not names:
            if failures:
                _warn_skipped(where, failures, location)
            raise ValueError(f"{where}: no images ({', '.join(IMAGE_EXTENSIONS)}) in {location}")
        # Classes come from all image names, so a class folder of bad files does not renumber the rest.
        all_labels, self.class_names = _class_labels(names, labels, where)
        self.num_classes = len(self.class_names)
        readable, modes = [], []
        with warnings.catch_warnings():
            # max_pixels decides (Pillow warns about images above its own, higher, threshold).
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            for position, entry in enumerate(names):
                try:
                    with self._open_entry(entry) as file, _open_image(file, self.max_pixels) as image:
                        modes.append(image.mode)
                    readable.append(position)
                except _DECODE_ERRORS as err:
                    failures.append(f"{self._describe(entry)} ({type(err).__name__}: {err})")
                    self.skipped_files.append(self._describe(entry))
        if failures:
            _warn_skipped(where, failures, location)
        if not readable:
            raise ValueError(f"{where}: none of the {len(names)} image files in {location} could be read")
        self.names = [names[p] for p in readable]
        self.labels = [all_labels[p] for p in readable] if all_labels is not None else [-1] * len(readable)
        self.channels = channels if channels is not None else (
            1 if all(mode in _GRAYSCALE_MODES for mode in modes) else 3)
        self.resolution = int(resolution)
        self.xflip = bool(xflip)
        self.name = name
        self._failed_indices: set = set()

    @property
    def num_skipped(self) -> int:
        return len(self.skipped_files)

    def _open_entry(self, entry: str) -> BinaryIO:
        raise NotImplementedError

    def _describe(self, entry: str) -> str:
        raise NotImplementedError

    def _num_images(self) -> int:
        return len(self.names)

    def _decode(self, index: int) -> torch.Tensor:
        # max_pixels again: the file may have changed since construction checked it.
        with self._open_entry(self.names[index]) as file, _open_image(file, self.max_pixels) as image:
            image.load()
            # Cameras store "rotate me" in EXIF instead of rotating the pixels.
            pixels = _pil_to_uint8(ImageOps.exif_transpose(image), self.channels)   # [H, W] or [H, W, 3]
        tensor = torch.from_numpy(pixels)
        tensor = tensor.unsqueeze(0) if tensor.ndim == 2 else tensor.permute(2, 0, 1)
        return resize_center_crop(tensor.unsqueeze(0), self.resolution)[0]   # [C, R, R]

    def _load(self, index: int) -> Tuple[torch.Tensor, int]:
        num = len(self.names)
        for step in range(num):
            candidate = (index + step) % num
            if candidate in self._failed_indices:
                continue
            try:
                return self._decode(candidate), self.labels[candidate]
            except _DECODE_ERRORS as err:
                self._failed_indices.add(candidate)
                self.skipped_files.append(self._describe(self.names[candidate]))
                warnings.warn(f"{type(self).__name__}: cannot decode {self._describe(self.names[candidate])} "
                              f"({type(err).__name__}: {err}); using the next readable image in its place",
                              stacklevel=3)
        raise RuntimeError(f"{type(self).__name__}: none of the {num} images could be decoded")


class ImageFolder(_EncodedImages):
    """Image files (png, jpg, jpeg, webp, bmp; any case) anywhere under `path`, in sorted order,
    decoded per item. Labels from first-level sub-folder names (see `_class_labels`); hidden
    files and folders are ignored; symlinks inside the folder are followed (folders once), those
    leading outside it are refused (module docstring); images above max_pixels are skipped."""

    def __init__(self, path: PathLike, resolution: int, channels: Optional[int] = None, xflip: bool = False,
                 labels: LabelsArg = "auto", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.path = Path(path).expanduser()
        if not self.path.exists():
            raise FileNotFoundError(f"ImageFolder: no such directory {str(self.path)!r}")
        if not self.path.is_dir():
            raise ValueError(f"ImageFolder: {str(self.path)!r} is not a directory")
        names, refused = self._list_files()
        super().__init__(names, resolution, channels, xflip, labels, name=self.path.name or str(self.path),
                         location=f"directory {str(self.path)!r}", max_pixels=max_pixels, refused=refused)

    def _list_files(self) -> Tuple[List[str], List[Tuple[str, str]]]:
        """(relative names of the image files inside the folder, (description, reason) of those refused)."""
        root = os.path.realpath(self.path)

        def inside(real: str) -> bool:
            return real == root or real.startswith(root.rstrip(os.sep) + os.sep)

        names, refused = [], []
        visited = {root}
        for directory, subdirectories, files in os.walk(self.path, followlinks=True):
            relative = Path(directory).relative_to(self.path)
            kept = []
            for sub in sorted(subdirectories):            # sorted: which of two links to one folder wins is fixed
                real = os.path.realpath(os.path.join(directory, sub))
                if not inside(real):
                    folder = (relative / sub).as_posix()
                    if not _is_hidden(folder):
                        refused.append((self._describe(folder), f"symlinked folder -> {real}, outside the folder; "
                                                                "not followed"))
                elif real not in visited:                 # else a symlink loop, or a second link to one folder
                    visited.add(real)
                    kept.append(sub)
            subdirectories[:] = kept
            for file in files:
                name, full = (relative / file).as_posix(), os.path.join(directory, file)
                if not _is_image_name(name):
                    continue
                real = os.path.realpath(full)
                try:
                    is_regular = stat.S_ISREG(os.stat(full).st_mode)
                except OSError as err:                    # a broken symlink, a permission denied
                    refused.append((self._describe(name), f"{type(err).__name__}: {err.strerror or err}"))
                    continue
                if not inside(real):
                    refused.append((self._describe(name), f"symlink -> {real}, outside the folder"))
                elif not is_regular:
                    refused.append((self._describe(name), "not a regular file (a FIFO, device or socket)"))
                else:
                    names.append(name)
        return names, refused

    def _open_entry(self, entry: str) -> BinaryIO:
        return open(self.path / entry, "rb")

    def _describe(self, entry: str) -> str:
        return str(self.path / entry)


class ZipImages(_EncodedImages):
    """Image files inside a .zip archive, read per item, like ImageFolder otherwise. A single
    folder enclosing everything (as `zip -r data.zip data/` makes) is not a class: labels come
    from the level below it. The archive is reopened in each process (DataLoader workers) on
    first use, never shared across a fork. Hostile members (module docstring) are refused."""

    def __init__(self, path: PathLike, resolution: int, channels: Optional[int] = None, xflip: bool = False,
                 labels: LabelsArg = "auto", max_pixels: int = DEFAULT_MAX_PIXELS):
        self.path = Path(path).expanduser()
        if not self.path.is_file():
            raise FileNotFoundError(f"ZipImages: no such file {str(self.path)!r}")
        self._archive_handle: Optional[zipfile.ZipFile] = None
        self._archive_pid = -1
        try:
            infos = [info for info in self._archive().infolist() if not info.is_dir()]
        except zipfile.BadZipFile as err:
            raise ValueError(f"ZipImages: {str(self.path)!r} is not a zip archive ({err})") from err
        counts = Counter(info.filename for info in infos)
        members, refused = [], {}
        for info in infos:
            problem = _zip_member_problem(info, counts[info.filename])
            if problem is None:
                members.append(info.filename)
            elif info.filename.lower().endswith(IMAGE_EXTENSIONS):   # others are never read anyway
                refused.setdefault(f"{self.path}:{info.filename}", problem)   # a duplicate once
        images = [m for m in members if _is_image_name(m)]
        tops = {m.split("/", 1)[0] if "/" in m else None for m in images}
        self._prefix = f"{next(iter(tops))}/" if len(tops) == 1 and None not in tops else ""
        super().__init__([m[len(self._prefix):] for m in members if m.startswith(self._prefix)], resolution,
                         channels, xflip, labels, name=self.path.stem, location=f"archive {str(self.path)!r}",
                         max_pixels=max_pixels, refused=list(refused.items()))

    def _archive(self) -> zipfile.ZipFile:
        if self._archive_handle is None or self._archive_pid != os.getpid():
            self._archive_handle = zipfile.ZipFile(self.path)
            self._archive_pid = os.getpid()
        return self._archive_handle

    def __getstate__(self) -> Dict:
        state = self.__dict__.copy()
        state["_archive_handle"], state["_archive_pid"] = None, -1    # a ZipFile does not pickle
        return state

    def _open_entry(self, entry: str) -> BinaryIO:
        # A streaming, seekable member: the header check at construction decompresses only the
        # first bytes of each image, not the whole archive.
        return self._archive().open(self._prefix + entry)

    def _describe(self, entry: str) -> str:
        return f"{self.path}:{self._prefix}{entry}"


def open_dataset(spec: Optional[PathLike], resolution: int, channels: Optional[int] = None, xflip: bool = False,
                 labels: LabelsArg = "auto", max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """The dataset `spec` names:
      None or "fashion-mnist" -> FashionMNIST (padded to 32 when resolution is 32, else resized);
      a directory -> ImageFolder; a *.zip file -> ZipImages; a *.npz file -> NpzImages.
    max_pixels: the largest image ImageFolder / ZipImages decode (module docstring).
    """
    accepted = "None or 'fashion-mnist', a directory of images, a .zip archive of images, or a .npz file"
    _check_max_pixels("open_dataset", max_pixels)
    if spec is None or (isinstance(spec, str) and spec.lower() in ("fashion-mnist", "fashion_mnist")):
        return FashionMNIST(resolution=resolution, xflip=xflip, pad_mode="pad" if resolution == 32 else "resize",
                            channels=channels, labels=labels if labels is False else True)
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"open_dataset: spec must be {accepted}; got {type(spec).__name__}")
    path = Path(spec).expanduser()
    if not path.exists():
        raise FileNotFoundError(f"open_dataset: no such file or directory {str(path)!r} (accepted: {accepted})")
    if path.is_dir():
        return ImageFolder(path, resolution, channels=channels, xflip=xflip, labels=labels, max_pixels=max_pixels)
    suffix = path.suffix.lower()
    if suffix == ".zip":
        return ZipImages(path, resolution, channels=channels, xflip=xflip, labels=labels, max_pixels=max_pixels)
    if suffix == ".npz":
        return NpzImages(path, resolution=resolution, channels=channels, xflip=xflip, labels=labels)
    raise ValueError(f"open_dataset: cannot read {str(path)!r} as a dataset; accepted: {accepted}")
