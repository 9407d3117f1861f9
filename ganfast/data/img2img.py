"""Datasets for image-to-image translation (pix2pix, CycleGAN, UNIT, SRGAN) and the bicubic
resampling that super-resolution trains and is judged against.

    from ganfast.data import open_img2img_data, batch_iterator
    data = open_img2img_data("edges2fmnist", "paired", resolution=32)
    x, _ = next(batch_iterator(data, batch_size=16))     # [16, 2, 32, 32]: A = x[:, :1], B = x[:, 1:]

Paired and unpaired datasets share one item format: item i is (x, 0) with
    x = cat([A, B], dim=0), float32 [channels_A + channels_B, R, R] in [-1, 1],
so the trainer splits x at `channels_A`. The label is always 0 (the shared contract; num_classes is
0 and nothing reads it). Both are held in memory as one uint8 tensor [N, channels_A + channels_B,
R, R] and subclass InMemoryImages, so ganfast.data.batch_iterator takes its one-gather fast path
and xflip mirrors A and B of an item together (the flip acts on all channels at once).

Specs (open_img2img_data):
  paired (pix2pix):
    "edges2fmnist": built in, nothing downloaded. B = a Fashion-MNIST image (train split for
        "train", test split for "test"), A = its edge map (fmnist_edges: black 1-px lines on white,
        the way edges2shoes was made from photos of shoes); both 1 channel, at `resolution`.
    a folder of aligned images (pix2pix's format): each file holds A and B side by side, A the left
        half (width // 2 columns), B the rest. Sub-folders train/, val/, test/ when present hold
        the splits ("test" reads test/, else val/); without them the folder is the train split.
    a folder with A/ and B/ (pix2pix's combine script's input): files matched by their path
        inside A/ and B/ without the extension (so A/x.jpg pairs with B/x.png); each of A/ and B/
        may be split into train/ val/ test/ the same way. Names found on one side only are left
        out and listed in the one warning.
  unpaired (CycleGAN, UNIT):
    "fmnist:<a>-<b>": built in. Domain A = the Fashion-MNIST images of class a, B = those of class
        b (names in FMNIST_CLASS_NAMES, aliases in FMNIST_CLASS_ALIASES, or the label 0..9), e.g.
        "fmnist:sneaker-ankleboot", "fmnist:tshirt-dress". The domains are disjoint image sets
        because the classes differ; a == b is refused.
    a CycleGAN folder: trainA/ trainB/ testA/ testB/ ("test" falls back to valA/ valB/).
  direction "BtoA" swaps A and B (pix2pix's and CycleGAN's --direction), for both tasks.

Unpaired pairing: with nA, nB images, len = max(nA, nB) (times 2 with xflip) and item i holds
A[i % nA] and B[perm[i] % nB], perm = torch.randperm(max(nA, nB)) from a generator seeded with the
constant PAIRING_SEED. Because perm is a bijection of [0, max(nA, nB)), every A image and every B
image occurs in every epoch, and the stream is a fixed function of the index, so a resumed run
sees the same pairs. CycleGAN's reference loader instead draws B at random for each item; since
the adversarial and cycle losses treat the A and B images of a batch independently (no loss
compares A[k] with B[k]), which B rides along with which A does not change what is learnt.
dataset.domain_images("A" | "B") gives each domain's images once, for metrics.

Folders are decoded once, at construction, into memory (translation sets are small: a few
thousand images). The listing, the hostile-input refusals (max_pixels, symlinks out of the
folder, FIFOs...) and the decoding are ImageFolder's (ganfast.data.datasets); an image that fails
to decode (a truncated file) is left out, and everything left out (unreadable, refused, truncated,
unmatched) is named in ONE warning per dataset and listed in `skipped_files`.

  sr (SRGAN): a plain image dataset (open_dataset's kinds: the HR targets); "test" reads the
    Fashion-MNIST test split for the built-in set, the test/ (else val/) sub-folder of a folder.
    bicubic_downsample makes the LR inputs from a batch, bicubic_upsample the baseline to beat.
"""
from __future__ import annotations

import math
import os
import warnings
from pathlib import Path
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from PIL import ImageOps

from .datasets import (_DECODE_ERRORS, DEFAULT_MAX_PIXELS, FashionMNIST, ImageDataset, ImageFolder, InMemoryImages,
                       _check_channels, _check_max_pixels, _check_resolution, _convert_channels, _open_image,
                       _pil_to_uint8, open_dataset, resize_center_crop, uint8_to_float)

__all__ = [
    "open_img2img_data", "PairedImages", "UnpairedImages", "Edges2FashionMNIST", "FashionMNISTDomains",
    "PairedImageFolder", "UnpairedImageFolder", "fmnist_edges", "fmnist_class_index", "bicubic_downsample",
    "bicubic_upsample", "FMNIST_CLASS_NAMES", "FMNIST_CLASS_ALIASES", "PAIRING_SEED", "IMG2IMG_TASKS",
]

PathLike = Union[str, "os.PathLike[str]"]

IMG2IMG_TASKS = ("paired", "unpaired", "sr")
_SPLITS = ("train", "test")
_DIRECTIONS = ("AtoB", "BtoA")
_DOMAINS = ("A", "B")
_MAX_WARNED = 5          # entries named in a warning (datasets.py names 5 files too)
# Any constant: it fixes which B rides with which A (module docstring). Not the training seed, so
# two runs with different seeds still see the same pairs.
PAIRING_SEED = 20_250_701
# Fashion-MNIST label i is FMNIST_CLASS_NAMES[i] (FASHION_MNIST_CLASSES, in spec-friendly spelling).
FMNIST_CLASS_NAMES = ("tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag",
                      "ankleboot")
FMNIST_CLASS_ALIASES = {"t-shirt": "tshirt", "top": "tshirt", "ankle-boot": "ankleboot", "boot": "ankleboot"}


# ---------------------------------------------------------------- edges

def _gaussian_taps(sigma: float) -> List[float]:
    radius = max(1, math.ceil(2.5 * sigma))
    taps = [math.exp(-offset * offset / (2 * sigma * sigma)) for offset in range(-radius, radius + 1)]
    return [tap / sum(taps) for tap in taps]


# Small separable filters as sums of shifted slices: on the CPU, conv2d and max_pool2d over
# one-channel 32 x 32 images cost ~20x more than these few elementwise passes.
def _correlate(images: torch.Tensor, taps: Sequence[float], dim: int) -> torch.Tensor:
    """images float [N, H, W] correlated with `taps` (odd length, centred) along dim 1 or 2, zero
    outside: out[i] = sum_k taps[k] * images[i + k - radius]."""
    radius = len(taps) // 2
    size = images.shape[dim]
    out = images * taps[radius]
    for offset in range(-radius, radius + 1):
        overlap = size - abs(offset)
        if offset and taps[radius + offset] and overlap > 0:
            out.narrow(dim, max(0, -offset), overlap).add_(images.narrow(dim, max(0, offset), overlap),
                                                           alpha=taps[radius + offset])
    return out


def _erode(mask: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W] -> bool [N, H, W]: set where all of the 3 x 3 neighbourhood is set (unset outside)."""
    return ~_dilate(~mask) & F.pad(torch.ones_like(mask[:, 2:, 2:]), (1, 1, 1, 1))


def _dilate(mask: torch.Tensor) -> torch.Tensor:
    """bool [N, H, W] -> bool [N, H, W]: set where any of the 3 x 3 neighbourhood is set."""
    padded = F.pad(mask.to(torch.uint8), (1, 1, 1, 1))
    rows = padded[:, :, :-2] | padded[:, :, 1:-1] | padded[:, :, 2:]
    return (rows[:, :-2] | rows[:, 1:-1] | rows[:, 2:]).bool()


_PEAK_QUANTILE = 0.97
_GARMENT_LEVEL = 6 / 255          # above Fashion-MNIST's black background and its JPEG-like noise


def fmnist_edges(images: Union[torch.Tensor, np.ndarray], sigma: float = 0.7, high: float = 0.3,
                 low: float = 0.12) -> Union[torch.Tensor, np.ndarray]:
    """Edge maps of grayscale images, as edges2shoes' A side: black (0) one-pixel lines on white (255).

    images: uint8 [N, H, W] (a torch tensor or a numpy array); returns uint8 [N, H, W] of the same
    kind, every pixel 0 (edge) or 255. Deterministic; a Canny-style detector, per image:
      1. blur with a separable Gaussian of std `sigma` px (smooths the pixel noise of the
         downscaled Fashion-MNIST photos; light, so thin interior lines survive);
      2. Sobel gradients gx, gy (the image continues as black, Fashion-MNIST's background, beyond
         its border, so an object touching the border keeps its outline there); magnitude
         |g| = sqrt(gx^2 + gy^2);
      3. non-maximum suppression: a pixel stays a candidate only where |g| is >= both neighbours
         along the gradient direction (rounded to 0, 45, 90 or 135 degrees), which thins every
         ridge of |g| to one pixel;
      4. hysteresis with thresholds relative to the image's strong gradients (its 97th
         percentile of |g|, so dark and bright garments give the same line density, and one
         bright print does not set the scale): candidates >= high * that start lines, and lines
         grow through 8-connected candidates >= low * that. An absolute floor (1/64 of the full
         black-to-white step) keeps a blank image blank instead of outlining its noise;
      5. the silhouette: candidates in the 3-px band around the garment's outline (where the
         blurred image rises above 6/255, Fashion-MNIST's black background) are lines whatever
         their strength, so a near-black garment still gets its outline.
    Result: a closed-ish one-pixel outline of every garment, plus its main interior lines (seams,
    collars, zips, soles, laces, bag handles, print and pattern outlines: a plaid shirt gets a
    grid); about 11% of a 32 x 32 image's pixels on average (6-28% per image).
    """
    if isinstance(images, np.ndarray):
        return fmnist_edges(torch.from_numpy(np.ascontiguousarray(images)), sigma, high, low).numpy()
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 3:
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"fmnist_edges: images must be uint8 [N, H, W] (tensor or array), got {got}")
    if not (sigma > 0 and 0 < low <= high <= 1):
        raise ValueError(f"fmnist_edges: need sigma > 0 and 0 < low <= high <= 1, got sigma={sigma}, "
                         f"low={low}, high={high}")
    num, height, width = images.shape
    if num == 0 or height < 3 or width < 3:
        return torch.full_like(images, 255)
    taps = _gaussian_taps(sigma)
    x = _correlate(_correlate(images.to(torch.float32), [tap / 255 for tap in taps], 2), taps, 1)   # [N, H, W] in [0, 1]
    # Sobel as smoothing [1, 2, 1] times the central difference [-1, 0, 1], scaled so that a unit
    # step gives 0.5; y grows downwards.
    gx = _correlate(_correlate(x, (-1.0, 0.0, 1.0), 2), (1 / 8, 2 / 8, 1 / 8), 1)
    gy = _correlate(_correlate(x, (-1.0, 0.0, 1.0), 1), (1 / 8, 2 / 8, 1 / 8), 2)
    magnitude = torch.hypot(gx, gy)
    padded = F.pad(magnitude, (1, 1, 1, 1))

    def shifted(dy: int, dx: int) -> torch.Tensor:                       # magnitude at (y + dy, x + dx)
        return padded[:, 1 + dy:1 + dy + height, 1 + dx:1 + dx + width]

    tan_22_5 = math.tan(math.pi / 8)
    abs_x, abs_y = gx.abs(), gy.abs()
    along_x = abs_y <= abs_x * tan_22_5
    along_y = abs_x <= abs_y * tan_22_5
    down_right = gx * gy > 0                                             # else the gradient points down-left
    ahead = torch.where(along_x, shifted(0, 1), torch.where(along_y, shifted(1, 0),
                        torch.where(down_right, shifted(1, 1), shifted(1, -1))))
    behind = torch.where(along_x, shifted(0, -1), torch.where(along_y, shifted(-1, 0),
                         torch.where(down_right, shifted(-1, -1), shifted(-1, 1))))
    ridge = (magnitude >= ahead) & (magnitude >= behind)
    # The image's typical strong gradient: a high percentile, not the maximum, so that one bright
    # button on a dark shirt does not push the shirt's whole outline below the thresholds.
    rank = max(1, math.ceil(_PEAK_QUANTILE * height * width))
    peak = magnitude.flatten(1).kthvalue(rank, dim=1).values.view(num, 1, 1)
    floor = 0.5 / 64
    # The silhouette: ridge pixels in the 3-px band around the garment's outline (where the
    # blurred image leaves the black background) are lines whatever their strength, so a
    # near-black garment with a bright print keeps its outline.
    garment = x > _GARMENT_LEVEL
    outline = _dilate(garment) & ~_erode(garment)
    silhouette = ridge & outline & (magnitude >= floor)
    weak = (ridge & (magnitude >= torch.clamp(low * peak, min=floor))) | silhouette
    strong = (weak & (magnitude >= torch.clamp(high * peak, min=floor))) | silhouette
    # Grow the lines one pixel a round through weak candidates, each round only over the images
    # that changed in the last one; ends when none does (at most H * W rounds, ~10 in practice).
    active = torch.arange(num)
    for _ in range(height * width):
        before = strong[active]
        grown = weak[active] & _dilate(before)
        changed = (grown != before).flatten(1).any(dim=1)
        if not bool(changed.any()):
            break
        active = active[changed]
        strong[active] = grown[changed]
    return torch.where(strong, 0, 255).to(torch.uint8)


# ---------------------------------------------------------------- in-memory paired / unpaired sets

def _check_choice(where: str, name: str, value: object, choices: Sequence[str]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{where}: {name} must be one of {tuple(choices)}, got {value!r}")


def _as_channels(images: torch.Tensor, channels: Optional[int]) -> torch.Tensor:
    """uint8 [N, 1 or 3, R, R] with `channels` channels (None keeps them): luma as datasets.py
    computes it for 1, gray repeated for 3."""
    images = _convert_channels(images, channels)
    if channels == 3 and images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    return images


def _check_domain_images(where: str, name: str, images: torch.Tensor) -> None:
    if (not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4
            or images.shape[1] not in (1, 3) or images.shape[2] != images.shape[3] or images.shape[0] == 0):
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: {name} must be a non-empty uint8 tensor [N, 1 or 3, R, R], got {got}")


class PairedImages(InMemoryImages):
    """Aligned pairs (A[k], B[k]) held in memory; item k is (cat([A[k], B[k]]) float [-1, 1], 0).

    images_A: uint8 [N, 1 or 3, R, R]; images_B: uint8 [N, 1 or 3, R, R] (same N and R).
    channels: None keeps each domain's own, 1 or 3 forces both (datasets.py's conversions).
    direction "BtoA" swaps the domains. xflip doubles the set with mirrored pairs.
    Attributes: channels_A, channels_B, channels (their sum), resolution, name, num_A, num_B,
    class_A / class_B (Fashion-MNIST label of a domain, or None), num_classes = 0,
    class_names = (), direction.
    """

    def __init__(self, images_A: torch.Tensor, images_B: torch.Tensor, name: str, channels: Optional[int] = None,
                 xflip: bool = False, direction: str = "AtoB", class_A: Optional[int] = None,
                 class_B: Optional[int] = None):
        where = type(self).__name__
        _check_domain_images(where, "images_A", images_A)
        _check_domain_images(where, "images_B", images_B)
        if images_A.shape[0] != images_B.shape[0] or images_A.shape[-1] != images_B.shape[-1]:
            raise ValueError(f"{where}: images_A {list(images_A.shape)} and images_B {list(images_B.shape)} "
                             f"must hold the same number of images at the same resolution")
        images_A, images_B, class_A, class_B = _oriented(where, direction, images_A, images_B, class_A, class_B)
        self._store(images_A, images_B, torch.arange(images_A.shape[0]), torch.arange(images_B.shape[0]),
                    name, channels, xflip, direction, class_A, class_B)

    def _store(self, images_A: torch.Tensor, images_B: torch.Tensor, index_A: torch.Tensor, index_B: torch.Tensor,
               name: str, channels: Optional[int], xflip: bool, direction: str, class_A: Optional[int],
               class_B: Optional[int]) -> None:
        """Items k = (A[index_A[k]], B[index_B[k]]) (already oriented); both index lists cover their domain."""
        _check_channels(type(self).__name__, channels)
        images_A, images_B = _as_channels(images_A, channels), _as_channels(images_B, channels)
        # InMemoryImages.__init__ accepts 1 or 3 channels only; the attributes it sets are set here,
        # so its _load / get_batch / __getitem__ work unchanged on the A+B channels.
        self.images = torch.cat([images_A[index_A], images_B[index_B]], dim=1).contiguous()   # [N, cA + cB, R, R]
        self.labels = torch.zeros(self.images.shape[0], dtype=torch.int64)
        self.num_classes, self.class_names = 0, ()
        self.name = name
        self.resolution = int(self.images.shape[-1])
        self.channels_A, self.channels_B = int(images_A.shape[1]), int(images_B.shape[1])
        self.channels = self.channels_A + self.channels_B
        self.xflip = bool(xflip)
        self.direction = direction
        self.class_A, self.class_B = class_A, class_B
        self.num_A, self.num_B = int(images_A.shape[0]), int(images_B.shape[0])
        # Rows of self.images that hold each image of a domain once (domain_images).
        self._domain_rows = {"A": _first_rows(index_A, self.num_A), "B": _first_rows(index_B, self.num_B)}

    def domain_images(self, domain: str) -> torch.Tensor:
        """All images of `domain` ("A" or "B"), each once, unmirrored: float32 [n, C, R, R] in [-1, 1]."""
        _check_choice(f"{type(self).__name__}.domain_images", "domain", domain, _DOMAINS)
        channel_slice = slice(0, self.channels_A) if domain == "A" else slice(self.channels_A, self.channels)
        return uint8_to_float(self.images[self._domain_rows[domain], channel_slice])

    def split_item(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """x [..., channels_A + channels_B, R, R] (an item or a batch) -> (A, B), views."""
        return x[..., :self.channels_A, :, :], x[..., self.channels_A:, :, :]

    def __repr__(self) -> str:
        return (f"{type(self).__name__}(name={self.name!r}, len={len(self)}, resolution={self.resolution}, "
                f"channels_A={self.channels_A}, channels_B={self.channels_B}, xflip={self.xflip}, "
                f"direction={self.direction!r})")


def _oriented(where: str, direction: str, images_A: torch.Tensor, images_B: torch.Tensor, class_A: Optional[int],
              class_B: Optional[int]) -> Tuple[torch.Tensor, torch.Tensor, Optional[int], Optional[int]]:
    """The domains in `direction`'s order: "BtoA" swaps A and B (and their classes)."""
    _check_choice(where, "direction", direction, _DIRECTIONS)
    if direction == "BtoA":
        return images_B, images_A, class_B, class_A
    return images_A, images_B, class_A, class_B


def _first_rows(index: torch.Tensor, count: int) -> torch.Tensor:
    """For each value v in [0, count), the first position k with index[k] == v: int64 [count]."""
    rows = torch.full((count,), -1, dtype=torch.int64)
    positions = torch.arange(index.numel())
    rows.scatter_reduce_(0, index, positions, reduce="amin", include_self=False)
    if int(rows.min()) < 0:
        raise RuntimeError("img2img: a pairing left out an image of a domain (a bug: it must cover both)")
    return rows


class UnpairedImages(PairedImages):
    """Two unaligned domains held in memory, paired by a fixed permutation (module docstring).

    images_A: uint8 [nA, 1 or 3, R, R]; images_B: uint8 [nB, 1 or 3, R, R] (same R). len is
    max(nA, nB) (x2 with xflip); item i holds A[i % nA] and B[perm[i] % nB].
    Other arguments and attributes as PairedImages.
    """

    def __init__(self, images_A: torch.Tensor, images_B: torch.Tensor, name: str, channels: Optional[int] = None,
                 xflip: bool = False, direction: str = "AtoB", class_A: Optional[int] = None,
                 class_B: Optional[int] = None):
        where = type(self).__name__
        _check_domain_images(where, "images_A", images_A)
        _check_domain_images(where, "images_B", images_B)
        if images_A.shape[-1] != images_B.shape[-1]:
            raise ValueError(f"{where}: images_A {list(images_A.shape)} and images_B {list(images_B.shape)} "
                             f"must have the same resolution")
        images_A, images_B, class_A, class_B = _oriented(where, direction, images_A, images_B, class_A, class_B)
        num_A, num_B = images_A.shape[0], images_B.shape[0]
        length = max(num_A, num_B)
        perm = torch.randperm(length, generator=torch.Generator().manual_seed(PAIRING_SEED))
        self._store(images_A, images_B, torch.arange(length) % num_A, perm % num_B, name, channels, xflip,
                    direction, class_A, class_B)


# ---------------------------------------------------------------- Fashion-MNIST built-ins

def _fashion_mnist(resolution: int, split: str, root: Optional[PathLike]) -> FashionMNIST:
    # As open_dataset: padded with black to 32 (the usual size), resized otherwise.
    return FashionMNIST(resolution=resolution, root=root, split=split,
                        pad_mode="pad" if resolution == 32 else "resize")


class Edges2FashionMNIST(PairedImages):
    """edges2fmnist: A = fmnist_edges(B) (1 channel, black lines on white), B = a Fashion-MNIST
    image (1 channel) at `resolution` (padded to 32, resized otherwise, as FashionMNIST); the
    edges are computed at that resolution, so lines stay one pixel wide. split "train" / "test":
    the Fashion-MNIST split (the embedded subset: 6000 / 1000). root: as load_fashion_mnist."""

    def __init__(self, resolution: int = 32, split: str = "train", channels: Optional[int] = None,
                 xflip: bool = False, direction: str = "AtoB", root: Optional[PathLike] = None):
        _check_choice("Edges2FashionMNIST", "split", split, _SPLITS)
        photos = _fashion_mnist(resolution, split, root).images                # [N, 1, R, R]
        edges = fmnist_edges(photos[:, 0]).unsqueeze(1)
        super().__init__(edges, photos, name="edges2fmnist", channels=channels, xflip=xflip, direction=direction)
        self.split = split


def fmnist_class_index(name: Union[str, int]) -> int:
    """A Fashion-MNIST class as its label 0..9: a name of FMNIST_CLASS_NAMES, an alias of
    FMNIST_CLASS_ALIASES (any case), or the label itself (int or digit string)."""
    if isinstance(name, (int, np.integer)) and not isinstance(name, bool) and 0 <= name < len(FMNIST_CLASS_NAMES):
        return int(name)
    if isinstance(name, str):
        key = name.strip().lower()
        key = FMNIST_CLASS_ALIASES.get(key, key)
        if key in FMNIST_CLASS_NAMES:
            return FMNIST_CLASS_NAMES.index(key)
        if key.isdigit() and int(key) < len(FMNIST_CLASS_NAMES):
            return int(key)
    raise ValueError(f"unknown Fashion-MNIST class {name!r}; valid: {', '.join(FMNIST_CLASS_NAMES)} "
                     f"(aliases: {', '.join(f'{k}={v}' for k, v in FMNIST_CLASS_ALIASES.items())}) or 0-9")


def _parse_fmnist_domains(spec: str) -> Tuple[int, int]:
    """'fmnist:<a>-<b>' -> (a, b) labels. Names may hold '-' (t-shirt, ankle-boot): every cut at
    a '-' is tried and exactly one must give two valid names."""
    body = spec.split(":", 1)[1]
    parses = set()
    for cut in [i for i, char in enumerate(body) if char == "-"]:
        try:
            parses.add((fmnist_class_index(body[:cut]), fmnist_class_index(body[cut + 1:])))
        except ValueError:
            continue
    if len(parses) != 1:
        problem = "is ambiguous" if parses else "does not name two classes"
        raise ValueError(f"open_img2img_data: {spec!r} {problem}; expected 'fmnist:<a>-<b>' with a, b among "
                         f"{', '.join(FMNIST_CLASS_NAMES)} (aliases: "
                         f"{', '.join(f'{k}={v}' for k, v in FMNIST_CLASS_ALIASES.items())}), "
                         f"e.g. 'fmnist:sneaker-ankleboot'")
    return parses.pop()


class FashionMNISTDomains(UnpairedImages):
    """fmnist:<a>-<b>: domain A = the Fashion-MNIST images of class `class_A`, B = those of
    `class_B` (names or labels, see fmnist_class_index), 1 channel at `resolution`, from the
    `split` split. Disjoint by construction (different classes; the same class twice is refused)."""

    def __init__(self, class_A: Union[str, int], class_B: Union[str, int], resolution: int = 32,
                 split: str = "train", channels: Optional[int] = None, xflip: bool = False,
                 direction: str = "AtoB", root: Optional[PathLike] = None):
        where = "FashionMNISTDomains"
        _check_choice(where, "split", split, _SPLITS)
        label_A, label_B = fmnist_class_index(class_A), fmnist_class_index(class_B)
        if label_A == label_B:
            raise ValueError(f"{where}: the two domains must be different classes, got {class_A!r} and {class_B!r} "
                             f"(both {FMNIST_CLASS_NAMES[label_A]})")
        source = _fashion_mnist(resolution, split, root)
        super().__init__(source.images[source.labels == label_A], source.images[source.labels == label_B],
                         name=f"fmnist:{FMNIST_CLASS_NAMES[label_A]}-{FMNIST_CLASS_NAMES[label_B]}",
                         channels=channels, xflip=xflip, direction=direction, class_A=label_A, class_B=label_B)
        self.split = split


# ---------------------------------------------------------------- folders

def _split_folder(root: Path, split: str, where: str) -> Path:
    """The folder holding `split` inside root: root/train or root/test (else root/val) when root
    has any of those sub-folders; root itself for "train" when it has none."""
    present = [name for name in ("train", "val", "test") if (root / name).is_dir()]
    if not present:
        if split == "train":
            return root
        raise ValueError(f"{where}: split='test' needs a test/ or val/ sub-folder in {str(root)!r}, which has "
                         f"no train/, val/ or test/ sub-folder (its images are the train split)")
    wanted = ("train",) if split == "train" else ("test", "val")
    for name in wanted:
        if name in present:
            return root / name
    raise ValueError(f"{where}: split={split!r} needs a {' or '.join(f'{n}/' for n in wanted)} sub-folder in "
                     f"{str(root)!r}; it has {', '.join(f'{n}/' for n in present)}")


def _folder_root(where: str, path: PathLike, split: str) -> Path:
    """A folder dataset's root, checked (it exists; split is one of _SPLITS)."""
    _check_choice(where, "split", split, _SPLITS)
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(f"{where}: no such directory {str(root)!r}")
    return root


class _FolderReader:
    """Opens folders with ImageFolder (listing, hostile-input refusals, header checks) and decodes
    every image at once, collecting what was left out for one warning at the end."""

    def __init__(self, where: str, resolution: int, channels: Optional[int], max_pixels: int):
        _check_resolution(where, resolution)
        _check_channels(where, channels)
        _check_max_pixels(where, max_pixels)
        self.where, self.resolution, self.channels, self.max_pixels = where, resolution, channels, max_pixels
        self.problems: List[str] = []            # "description (reason)" each, for the warning
        self.skipped_files: List[str] = []

    def open(self, path: Path) -> ImageFolder:
        # ImageFolder warns about the files it refuses; that text joins this dataset's one warning
        # (or is passed on as it was, when ImageFolder gives up on the folder).
        failure: Optional[Exception] = None
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                folder = ImageFolder(path, self.resolution, channels=self.channels, labels=False,
                                     max_pixels=self.max_pixels)
            except (ValueError, OSError) as err:
                failure = err
        listed = (f"ImageFolder: skipped {len(folder.skipped_files)} unreadable or refused image file(s) "
                  if failure is None else None)
        for warning in caught:
            message = str(warning.message)
            if listed is not None and issubclass(warning.category, UserWarning) and message.startswith(listed):
                # Keep "in directory '...': a.png (reason); ..." (already cut at 5 names).
                self.problems.append(message[len(listed):].removesuffix(" (listed in .skipped_files)"))
            else:
                warnings.warn_explicit(warning.message, warning.category, warning.filename, warning.lineno)
        if failure is not None:
            raise failure
        self.skipped_files.extend(folder.skipped_files)
        return folder

    def decode(self, folder: ImageFolder, index: int, halves: bool = False
               ) -> Optional[Union[torch.Tensor, Tuple[torch.Tensor, torch.Tensor]]]:
        """Image `index` of `folder` as uint8 [C, R, R], or with halves=True its left and right
        halves, each made square and resized; None (and noted) when it cannot be decoded."""
        try:
            if not halves:
                return folder._decode(index)
            with folder._open_entry(folder.names[index]) as file, _open_image(file, self.max_pixels) as image:
                image.load()
                pixels = torch.from_numpy(_pil_to_uint8(ImageOps.exif_transpose(image), folder.channels))
        except _DECODE_ERRORS as err:
            self.leave_out(folder._describe(folder.names[index]), f"{type(err).__name__}: {err}")
            return None
        pixels = pixels.unsqueeze(0) if pixels.ndim == 2 else pixels.permute(2, 0, 1)   # [C, H, W]
        half = pixels.shape[-1] // 2                  # pix2pix's split: A = the first width // 2 columns
        if half == 0:
            self.leave_out(folder._describe(folder.names[index]), "1 pixel wide: no A and B halves")
            return None
        return (resize_center_crop(pixels[None, :, :, :half], self.resolution)[0],
                resize_center_crop(pixels[None, :, :, half:], self.resolution)[0])

    def leave_out(self, described: str, reason: str) -> None:
        self.problems.append(f"{described} ({reason})")
        self.skipped_files.append(described)

    def warn(self, location: str) -> None:
        """The dataset's one warning. Not datasets._warn_skipped, which counts its entries: here one
        entry is ImageFolder's list of a whole sub-folder, and unmatched names are not unreadable."""
        if not self.problems:
            return
        shown = "; ".join(self.problems[:_MAX_WARNED])
        more = f"; and {len(self.problems) - _MAX_WARNED} more" if len(self.problems) > _MAX_WARNED else ""
        warnings.warn(f"{self.where}: left out {len(self.skipped_files)} image file(s) of {location}: {shown}{more} "
                      f"(listed in .skipped_files)", stacklevel=4)


def _match(folder_A: ImageFolder, folder_B: ImageFolder, reader: _FolderReader) -> List[Tuple[int, int]]:
    """(index in A, index in B) of the files whose names match without their extension, in A's
    (sorted) order; the others are left out through `reader`, as are names that two files of one
    side share (x.jpg and x.png: which one pairs would be a guess)."""
    def by_stem(folder: ImageFolder) -> dict:
        stems: dict = {}
        for index, name in enumerate(folder.names):
            stems.setdefault(os.path.splitext(name)[0], []).append(index)
        unique = {}
        for stem, indices in stems.items():
            if len(indices) > 1:
                for index in indices:
                    reader.leave_out(folder._describe(folder.names[index]),
                                     f"{len(indices)} files named {stem!r} with different extensions")
            else:
                unique[stem] = indices[0]
        return unique

    stems_A, stems_B = by_stem(folder_A), by_stem(folder_B)
    for stems, folder, other in ((stems_A, folder_A, stems_B), (stems_B, folder_B, stems_A)):
        for stem, index in stems.items():
            if stem not in other:
                side = "B" if folder is folder_A else "A"
                reader.leave_out(folder._describe(folder.names[index]), f"no file {stem}.* in {side}/")
    return [(index, stems_B[stem]) for stem, index in stems_A.items() if stem in stems_B]


def _stack(images: List[torch.Tensor], where: str, location: str) -> torch.Tensor:
    if not images:
        raise ValueError(f"{where}: no usable images in {location}")
    return torch.stack(images)


class PairedImageFolder(PairedImages):
    """A pix2pix folder: aligned files (A left, B right) or A/ and B/ with matching names
    (module docstring); decoded at construction. `layout` says which ("aligned" or "A/B");
    `skipped_files` lists what was left out (named in one warning). The images are made square
    (center crop) and resized to `resolution` as ImageFolder does, each half separately."""

    def __init__(self, path: PathLike, resolution: int, split: str = "train", channels: Optional[int] = None,
                 xflip: bool = False, direction: str = "AtoB", max_pixels: int = DEFAULT_MAX_PIXELS):
        where = "PairedImageFolder"
        self.path = root = _folder_root(where, path, split)
        reader = _FolderReader(where, resolution, channels, max_pixels)
        location = f"directory {str(root)!r}"
        if (root / "A").is_dir() and (root / "B").is_dir():
            self.layout = "A/B"
            # Each domain keeps its own channels when channels is None (e.g. gray edges, RGB photos).
            folder_A = reader.open(_split_folder(root / "A", split, where))
            folder_B = reader.open(_split_folder(root / "B", split, where))
            images_A, images_B = [], []
            pairs = _match(folder_A, folder_B, reader)
            for index_A, index_B in pairs:
                image_A, image_B = reader.decode(folder_A, index_A), reader.decode(folder_B, index_B)
                if image_A is not None and image_B is not None:
                    images_A.append(image_A)
                    images_B.append(image_B)
                elif image_A is not None or image_B is not None:
                    folder, index = (folder_A, index_A) if image_A is not None else (folder_B, index_B)
                    reader.leave_out(folder._describe(folder.names[index]), "its partner could not be decoded")
        else:
            self.layout = "aligned"
            folder = reader.open(_split_folder(root, split, where))
            images_A, images_B = [], []
            for index in range(len(folder.names)):
                halves = reader.decode(folder, index, halves=True)
                if halves is not None:
                    images_A.append(halves[0])
                    images_B.append(halves[1])
        reader.warn(location)
        super().__init__(_stack(images_A, where, location), _stack(images_B, where, location), name=root.name,
                         channels=channels, xflip=xflip, direction=direction)
        self.split = split
        self.skipped_files = reader.skipped_files


class UnpairedImageFolder(UnpairedImages):
    """A CycleGAN folder: trainA/ trainB/ testA/ testB/ ("test" falls back to valA/ valB/ when
    testA/ testB/ are absent), decoded at construction and paired as UnpairedImages. Each domain
    keeps its own channels when channels is None. `skipped_files` lists what was left out."""

    def __init__(self, path: PathLike, resolution: int, split: str = "train", channels: Optional[int] = None,
                 xflip: bool = False, direction: str = "AtoB", max_pixels: int = DEFAULT_MAX_PIXELS):
        where = "UnpairedImageFolder"
        self.path = root = _folder_root(where, path, split)
        prefixes = ("train",) if split == "train" else ("test", "val")
        prefix = next((p for p in prefixes if (root / f"{p}A").is_dir() and (root / f"{p}B").is_dir()), None)
        if prefix is None:
            wanted = " or ".join(f"{p}A/ and {p}B/" for p in prefixes)
            found = sorted(entry.name + "/" for entry in root.iterdir() if entry.is_dir())
            raise ValueError(f"{where}: split={split!r} needs the sub-folders {wanted} in {str(root)!r} "
                             f"(CycleGAN's layout: trainA/ trainB/ testA/ testB/); found {found or 'none'}")
        reader = _FolderReader(where, resolution, channels, max_pixels)
        location = f"directory {str(root)!r}"
        domains = []
        for side in _DOMAINS:
            folder = reader.open(root / f"{prefix}{side}")
            decoded = [reader.decode(folder, index) for index in range(len(folder.names))]
            domains.append([image for image in decoded if image is not None])
        reader.warn(location)
        super().__init__(_stack(domains[0], where, f"{str(root / (prefix + 'A'))!r}"),
                         _stack(domains[1], where, f"{str(root / (prefix + 'B'))!r}"), name=root.name,
                         channels=channels, xflip=xflip, direction=direction)
        self.split = split
        self.skipped_files = reader.skipped_files


# ---------------------------------------------------------------- super-resolution

def _check_scale_args(where: str, images: torch.Tensor, scale: int) -> None:
    if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
        got = f"{images.dtype} {list(images.shape)}" if isinstance(images, torch.Tensor) else type(images).__name__
        raise ValueError(f"{where}: images must be a float tensor [N, C, H, W], got {got}")
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or scale < 1:
        raise ValueError(f"{where}: scale must be an int >= 1, got {scale!r}")


def bicubic_downsample(hr: torch.Tensor, scale: int) -> torch.Tensor:
    """SR inputs from targets: hr float [N, C, H, W] in [-1, 1], H and W divisible by `scale` ->
    lr [N, C, H / scale, W / scale], bicubic with antialiasing (as PIL's and MATLAB's imresize
    shrink: the kernel is stretched by `scale`, so no aliasing), clamped to [-1, 1] (bicubic
    overshoots at edges). A constant image stays that constant."""
    _check_scale_args("bicubic_downsample", hr, scale)
    height, width = hr.shape[-2:]
    if height % scale or width % scale:
        raise ValueError(f"bicubic_downsample: H and W must be divisible by scale={scale}, got {height}x{width}")
    lr = F.interpolate(hr, size=(height // scale, width // scale), mode="bicubic", align_corners=False,
                       antialias=True)
    return lr.clamp_(-1.0, 1.0)


def bicubic_upsample(lr: torch.Tensor, scale: int) -> torch.Tensor:
    """The bicubic baseline an SR generator must beat: lr float [N, C, h, w] -> [N, C, h * scale,
    w * scale] (bicubic, align_corners=False), clamped to [-1, 1]."""
    _check_scale_args("bicubic_upsample", lr, scale)
    height, width = lr.shape[-2:]
    hr = F.interpolate(lr, size=(height * scale, width * scale), mode="bicubic", align_corners=False)
    return hr.clamp_(-1.0, 1.0)


def _open_sr_data(spec: Optional[PathLike], resolution: int, channels: Optional[int], split: str, xflip: bool,
                  max_pixels: int) -> ImageDataset:
    where = "open_img2img_data"
    builtin = spec is None or (isinstance(spec, str) and spec.lower() in ("fashion-mnist", "fashion_mnist"))
    if builtin and split == "test":
        _check_resolution(where, resolution)
        _check_channels(where, channels)
        return FashionMNIST(resolution=resolution, split="test", xflip=xflip, channels=channels,
                            pad_mode="pad" if resolution == 32 else "resize")
    if not builtin and isinstance(spec, (str, os.PathLike)) and Path(spec).expanduser().is_dir():
        spec = _split_folder(Path(spec).expanduser(), split, where)
    elif not builtin and split == "test":
        raise ValueError(f"{where}: split='test' for task 'sr' needs the built-in Fashion-MNIST or a folder with a "
                         f"test/ or val/ sub-folder, got {spec!r}")
    return open_dataset(spec, resolution, channels=channels, xflip=xflip, max_pixels=max_pixels)


# ---------------------------------------------------------------- the entry point

def open_img2img_data(spec: Optional[PathLike], task: str, resolution: int, channels: Optional[int] = None,
                      split: str = "train", xflip: bool = False, direction: str = "AtoB",
                      max_pixels: int = DEFAULT_MAX_PIXELS) -> ImageDataset:
    """The translation dataset `spec` names for `task` (module docstring for the specs):
      "paired": "edges2fmnist" or a pix2pix folder -> PairedImages (Edges2FashionMNIST, PairedImageFolder);
      "unpaired": "fmnist:<a>-<b>" or a CycleGAN folder -> UnpairedImages (FashionMNISTDomains,
          UnpairedImageFolder);
      "sr": None / "fashion-mnist" or anything open_dataset reads -> its dataset (the HR images).
    Paired / unpaired items: (cat([A, B]) float32 [channels_A + channels_B, R, R] in [-1, 1], 0).
    split: "train" or "test"; channels: None (the data's own), 1 or 3; direction: "AtoB" or "BtoA"
    (paired / unpaired only); max_pixels: the largest image a folder may hold (datasets.py).
    """
    where = "open_img2img_data"
    _check_choice(where, "task", task, IMG2IMG_TASKS)
    _check_choice(where, "split", split, _SPLITS)
    _check_choice(where, "direction", direction, _DIRECTIONS)
    _check_resolution(where, resolution)
    _check_max_pixels(where, max_pixels)
    if task == "sr":
        if direction != "AtoB":
            raise ValueError(f"{where}: direction applies to tasks 'paired' and 'unpaired', not 'sr'; got {direction!r}")
        return _open_sr_data(spec, resolution, channels, split, xflip, max_pixels)
    accepted = {"paired": "'edges2fmnist' or a pix2pix folder (aligned A|B images, or A/ and B/)",
                "unpaired": "'fmnist:<a>-<b>' (e.g. 'fmnist:sneaker-ankleboot') or a CycleGAN folder "
                            "(trainA/ trainB/ testA/ testB/)"}[task]
    if not isinstance(spec, (str, os.PathLike)):
        raise ValueError(f"{where}: spec for task {task!r} must be {accepted}; got {spec!r}")
    text = os.fspath(spec)
    if task == "paired" and text.lower() == "edges2fmnist":
        return Edges2FashionMNIST(resolution, split=split, channels=channels, xflip=xflip, direction=direction)
    if task == "unpaired" and text.lower().startswith("fmnist:"):
        label_A, label_B = _parse_fmnist_domains(text)
        return FashionMNISTDomains(label_A, label_B, resolution, split=split, channels=channels, xflip=xflip,
                                   direction=direction)
    path = Path(text).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"{where}: {text!r} is neither a built-in spec nor a directory; "
                                f"task {task!r} accepts {accepted}")
    folder_class = PairedImageFolder if task == "paired" else UnpairedImageFolder
    return folder_class(path, resolution, split=split, channels=channels, xflip=xflip, direction=direction,
                        max_pixels=max_pixels)
