"""Metrics for image-to-image translation (pix2pix, CycleGAN, UNIT, SRGAN) and `evaluate_img2img`,
one evaluation per task on a held-out split.

Images follow the metric convention of `ganfast.metrics.images` (float in [-1, 1] -- clamped
there -- or uint8, [N, C, R, R], C = 1 or 3); the pixel metrics compute in float64, the
classifier ones on float32 features (distances and statistics in float64).

    function             what it measures                                          better
    l1_error             mean |a - b| in the [-1, 1] scale (so 2x the [0, 1] one)   lower
    psnr                 per-image 10 log10(L^2 / MSE), mean over images            higher
    ssim                 Wang et al. 2004, Gaussian 11x11 window, 'valid' filtering  higher (1 = equal)
    sharpness            mean gradient magnitude (detail; SRGAN trades PSNR for it)  closer to the real
    feature_distance     squared distance of the Fashion-MNIST classifier's features lower (perceptual)
    translation_scores   target-class accuracy and classifier FID of translations   acc higher, FID lower

`evaluate_img2img(G, dataset)` picks the task from `G.img2img` ("paired", "unpaired", "unit", "sr";
the generators of ganfast.models.pix2pix / cyclegan / unit / srgan, the held-out data of
ganfast.data.img2img) and reports each metric next to the trivial baseline of its task (the
untranslated input, the bicubic upsampling), flat {name: float}, JSON-able.
"""
from __future__ import annotations

import math
from typing import Iterator, Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.metrics.classifier import NUM_CLASSES
from ganfast.metrics.fid import (class_accuracy_from_logits, classifier_features, classifier_logits,
                                 frechet_distance_from_features)
from ganfast.metrics.images import as_float_images

# The MSE floor of psnr, relative to data_range^2: identical images score 100 dB instead of inf,
# so a mean over images stays finite (and one perfect image cannot hide the others).
PSNR_MSE_FLOOR = 1e-10
# Wang et al. 2004 (and their MATLAB ssim_index): an 11x11 Gaussian window of sigma 1.5, K1, K2.
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_K1 = 0.01
SSIM_K2 = 0.03
IMG2IMG_TASKS = ("paired", "unpaired", "unit", "sr")

Device = Optional[Union[str, torch.device]]


# --------------------------------------------------------------------------- input checks


def _image_pair(a: torch.Tensor, b: torch.Tensor, names: tuple[str, str] = ("a", "b")
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """Both image batches validated by the metric convention, same shape, as float64 [N, C, H, W]."""
    a = as_float_images(names[0], a)
    b = as_float_images(names[1], b)
    if a.shape != b.shape:
        raise ValueError(f"{names[0]}, {names[1]}: expected the same shape, got {list(a.shape)} and {list(b.shape)}")
    return a.double(), b.double()


def _check_data_range(data_range) -> float:
    if (isinstance(data_range, bool) or not isinstance(data_range, (int, float))
            or not math.isfinite(data_range) or data_range <= 0):
        raise ValueError(f"data_range: expected a finite number > 0 (2.0 for images in [-1, 1]), got {data_range!r}")
    return float(data_range)


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise ValueError(f"{name}: expected True or False, got {value!r}")
    return value


def _reduce(per_image: torch.Tensor, keep: bool) -> Union[float, torch.Tensor]:
    """[N] float64 per-image values -> themselves (keep) or their mean as a Python float."""
    return per_image if keep else float(per_image.mean())


# --------------------------------------------------------------------------- pixel metrics


def l1_error(a: torch.Tensor, b: torch.Tensor, *, per_image: bool = False) -> Union[float, torch.Tensor]:
    """Mean absolute error between image batches a, b [N, C, H, W], in the [-1, 1] scale (twice the
    value on [0, 1] images). per_image=True: float64 [N], each image's mean over C, H, W."""
    keep = _check_flag("per_image", per_image)
    a, b = _image_pair(a, b)
    return _reduce((a - b).abs().mean(dim=(1, 2, 3)), keep)


def psnr(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, *,
         per_image: bool = False) -> Union[float, torch.Tensor]:
    """Peak signal-to-noise ratio in dB: 10 log10(data_range^2 / MSE_i) per image i (MSE over C, H, W),
    then the mean over images -- the per-image mean most super-resolution papers report, not the
    PSNR of the pooled MSE. data_range = 2.0 for images in [-1, 1] (the same numbers as 8-bit
    images with 255). MSE_i is floored at PSNR_MSE_FLOOR * data_range^2, so identical images give
    100 dB rather than inf. per_image=True: float64 [N]."""
    keep = _check_flag("per_image", per_image)
    peak = _check_data_range(data_range) ** 2
    a, b = _image_pair(a, b)
    mse = (a - b).square().mean(dim=(1, 2, 3)).clamp_min(PSNR_MSE_FLOOR * peak)
    return _reduce(10.0 * torch.log10(peak / mse), keep)


def ssim_window_size(resolution: int) -> int:
    """The SSIM window side for images of side `resolution`: 11, or for smaller images the largest
    odd size that fits (the Gaussian keeps sigma 1.5 and is truncated to that window)."""
    if resolution < 1:
        raise ValueError(f"resolution: expected >= 1, got {resolution}")
    return min(SSIM_WINDOW, resolution if resolution % 2 else resolution - 1)


def _gaussian_window(size: int, sigma: float = SSIM_SIGMA) -> torch.Tensor:
    """[size, size] float64, sums to 1 (MATLAB fspecial('gaussian', size, sigma))."""
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-x.square() / (2 * sigma * sigma))
    window = torch.outer(g, g)
    return window / window.sum()


def ssim(a: torch.Tensor, b: torch.Tensor, data_range: float = 2.0, *,
         per_image: bool = False) -> Union[float, torch.Tensor]:
    """Structural similarity (Wang, Bovik, Sheikh, Simoncelli 2004) between image batches
    a, b [N, C, H, W]: local means, variances and covariance under an 11x11 Gaussian window
    (sigma 1.5), 'valid' filtering (no padding, as the original MATLAB ssim_index), K1 = 0.01,
    K2 = 0.03; the SSIM map is averaged over positions and channels per image, then over images.
    Images smaller than 11 px use the largest odd window that fits (see ssim_window_size).

    SSIM's luminance term is not shift-invariant and is defined on non-negative intensities, so
    the images are shifted from [-1, 1] to [0, 2] first; with data_range = 2.0 (L) that gives the
    same numbers as SSIM on the 8-bit images with L = 255 (SSIM is invariant to scaling images
    and L together). per_image=True: float64 [N]."""
    keep = _check_flag("per_image", per_image)
    dynamic = _check_data_range(data_range)
    a, b = _image_pair(a, b)
    a, b = a + 1.0, b + 1.0
    n, c, h, _ = a.shape
    size = ssim_window_size(h)
    window = _gaussian_window(size).to(a.device).expand(c, 1, size, size)   # [C, 1, k, k], depthwise
    # The five local moments in one depthwise convolution: [5N, C, H-k+1, W-k+1].
    moments = F.conv2d(torch.cat([a, b, a * a, b * b, a * b]), window, groups=c)
    mu_a, mu_b, e_aa, e_bb, e_ab = moments.split(n)
    var_a = e_aa - mu_a.square()
    var_b = e_bb - mu_b.square()
    cov = e_ab - mu_a * mu_b
    c1 = (SSIM_K1 * dynamic) ** 2
    c2 = (SSIM_K2 * dynamic) ** 2
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a.square() + mu_b.square() + c1) * (var_a + var_b + c2))
    return _reduce(ssim_map.mean(dim=(1, 2, 3)), keep)


def sharpness(images: torch.Tensor, *, per_image: bool = False) -> Union[float, torch.Tensor]:
    """Mean gradient magnitude of images [N, C, H, W] (H >= 2), in [-1, 1] units per pixel:
    sqrt(dx^2 + dy^2) with forward differences at each pixel of the first H-1 rows and W-1
    columns, averaged over those pixels and channels per image, then over images. Higher means
    more fine detail; compare an output with its real images (hr_sharpness), not with 'more'.
    per_image=True: float64 [N]."""
    keep = _check_flag("per_image", per_image)
    x = as_float_images("images", images).double()
    if x.shape[-1] < 2:
        raise ValueError(f"images: sharpness needs images of at least 2x2 px, got shape {list(x.shape)}")
    corner = x[..., :-1, :-1]
    dx = x[..., :-1, 1:] - corner
    dy = x[..., 1:, :-1] - corner
    return _reduce(torch.sqrt(dx.square() + dy.square()).mean(dim=(1, 2, 3)), keep)


# --------------------------------------------------------------------------- classifier metrics


def feature_distance(a: torch.Tensor, b: torch.Tensor, *, per_image: bool = False, batch_size: int = 256,
                     classifier: Optional[nn.Module] = None, device: Device = None) -> Union[float, torch.Tensor]:
    """A perceptual distance in the spirit of LPIPS: the squared Euclidean distance between the
    shipped Fashion-MNIST classifier's features [128] (see classifier_features) of a[i] and b[i],
    summed over features, averaged over images. The classifier sees gray images: 3-channel input
    is converted to luma (ITU-R BT.601) first, and sizes other than 32 (28: padded) are resized
    to 32x32. Meaningful for Fashion-MNIST-like data only. per_image=True: float64 [N]."""
    keep = _check_flag("per_image", per_image)
    a, b = _image_pair(a, b)
    features_a = classifier_features(a.float(), classifier=classifier, batch_size=batch_size, device=device, name="a")
    features_b = classifier_features(b.float(), classifier=classifier, batch_size=batch_size, device=device, name="b")
    return _reduce((features_a.double() - features_b.double()).square().sum(dim=1), keep)


def _target_accuracy(features: torch.Tensor, target_class: int, classifier: Optional[nn.Module]) -> float:
    labels = torch.full((features.shape[0],), target_class, dtype=torch.int64)
    return class_accuracy_from_logits(classifier_logits(features, classifier), labels)["class_acc"] / 100.0


def translation_scores(translated: torch.Tensor, target_class: int, target_reals: torch.Tensor, *,
                       source: Optional[torch.Tensor] = None, batch_size: int = 256,
                       classifier: Optional[nn.Module] = None, device: Device = None) -> dict[str, float]:
    """How well images were translated into a Fashion-MNIST class, by the shipped classifier.

    translated [N, C, R, R]: the translations (N >= 2); target_class: the class index (0..9) they
    should show; target_reals [M, C', R', R'] (M >= 2): real images of that class.
    Returns {"target_acc": fraction of translated classified as target_class,
             "fid": classifier FID of translated against target_reals}.
    source [K, ...] (optional, K >= 2): the untranslated inputs -- the trivial baseline, a
    translator that does nothing -- adds "source_target_acc" and "source_fid", the same two
    numbers for them. The classifier's own accuracy on real held-out images (its metadata) is
    the ceiling of target_acc."""
    if isinstance(target_class, bool) or not isinstance(target_class, int) or not 0 <= target_class < NUM_CLASSES:
        raise ValueError(f"target_class: expected a class index in [0, {NUM_CLASSES}), got {target_class!r}")
    sets = {"translated": translated, "target_reals": target_reals}
    if source is not None:
        sets["source"] = source
    for name, images in sets.items():
        if isinstance(images, torch.Tensor) and images.ndim == 4 and images.shape[0] < 2:
            raise ValueError(f"{name}: the FID needs at least 2 images, got {images.shape[0]}")
    features = {name: classifier_features(images, classifier=classifier, batch_size=batch_size, device=device,
                                          name=name)
                for name, images in sets.items()}
    result = {"target_acc": _target_accuracy(features["translated"], target_class, classifier),
              "fid": frechet_distance_from_features(features["target_reals"], features["translated"])}
    if source is not None:
        result["source_target_acc"] = _target_accuracy(features["source"], target_class, classifier)
        result["source_fid"] = frechet_distance_from_features(features["target_reals"], features["source"])
    return result


# --------------------------------------------------------------------------- evaluation


def _item_batches(dataset, count: int, batch: int) -> Iterator[torch.Tensor]:
    """The first `count` items' tensors (item[0]) in batches [<= batch, ...]; with the dataset's
    get_batch when it has one (in-memory sets: one indexing op per batch)."""
    get_batch = getattr(dataset, "get_batch", None)
    for start in range(0, count, batch):
        indices = list(range(start, min(start + batch, count)))
        if get_batch is not None:
            yield get_batch(indices)[0]
        else:
            yield torch.stack([dataset[i][0] for i in indices])


def _generate(G: nn.Module, x: torch.Tensor, expected: tuple, device: torch.device, **kwargs) -> torch.Tensor:
    """G(x, **kwargs) on `device`, checked to have shape `expected`, as float32 on the CPU."""
    out = G(x.to(device), **kwargs)
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != tuple(expected):
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        call = ", ".join([f"[{', '.join(map(str, x.shape))}]"] + [f"{k}={v!r}" for k, v in kwargs.items()])
        raise ValueError(f"G: G({call}) returned {got}, expected a tensor {list(expected)}")
    return out.float().cpu()


class _PerImageMeans:
    """Running per-image metric values across batches; means() -> {key: float}."""

    def __init__(self):
        self.values: dict[str, list[torch.Tensor]] = {}

    def add(self, key: str, per_image: torch.Tensor) -> None:
        self.values.setdefault(key, []).append(per_image)

    def means(self) -> dict[str, float]:
        return {key: float(torch.cat(parts).mean()) for key, parts in self.values.items()}


def _add_pixel_metrics(acc: _PerImageMeans, prefix: str, out: torch.Tensor, target: torch.Tensor,
                       names=("l1", "psnr", "ssim")) -> None:
    functions = {"l1": l1_error, "psnr": psnr, "ssim": ssim}
    for name in names:
        acc.add(prefix + name, functions[name](out, target, per_image=True))


def _dataset_channels(dataset, name: str) -> int:
    value = getattr(dataset, name, None)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"dataset: a paired/unpaired dataset needs the attribute {name} (an int >= 1), "
                         f"got {value!r}")
    return value


def _evaluate_paired(G, dataset, count, batch, device) -> dict[str, float]:
    channels_a = _dataset_channels(dataset, "channels_A")
    channels_b = _dataset_channels(dataset, "channels_B")
    acc = _PerImageMeans()
    for x in _item_batches(dataset, count, batch):
        a, b = x[:, :channels_a], x[:, channels_a:]
        out = _generate(G, a, b.shape, device)
        _add_pixel_metrics(acc, "", out, b)
        if channels_a == channels_b:
            _add_pixel_metrics(acc, "input_", a, b)
    return acc.means()


def _evaluate_unpaired(G, dataset, count, batch, device, classifier_device) -> dict[str, float]:
    channels_a = _dataset_channels(dataset, "channels_A")
    _dataset_channels(dataset, "channels_B")
    class_a, class_b = getattr(dataset, "class_A", None), getattr(dataset, "class_B", None)
    with_classes = class_a is not None and class_b is not None
    acc = _PerImageMeans()
    kept = {"A": [], "B": [], "AB": [], "BA": []}
    for x in _item_batches(dataset, count, batch):
        a, b = x[:, :channels_a], x[:, channels_a:]
        ab = _generate(G, a, b.shape, device, direction="AB")
        ba = _generate(G, b, a.shape, device, direction="BA")
        aba = _generate(G, ab, a.shape, device, direction="BA")
        bab = _generate(G, ba, b.shape, device, direction="AB")
        for domain, original, cycled in (("A", a, aba), ("B", b, bab)):
            acc.add(f"cycle_l1_{domain}", l1_error(cycled, original, per_image=True))
            acc.add(f"cycle_psnr_{domain}", psnr(cycled, original, per_image=True))
        if with_classes:
            for key, images in (("A", a), ("B", b), ("AB", ab), ("BA", ba)):
                kept[key].append(images)
    result = acc.means()
    if with_classes:
        kept = {key: torch.cat(parts) for key, parts in kept.items()}
        for direction, source, target, target_class in (("AB", "A", "B", class_b), ("BA", "B", "A", class_a)):
            scores = translation_scores(kept[direction], int(target_class), dataset.domain_images(target),
                                        source=kept[source], device=classifier_device)
            result.update({f"{direction}_{key}": value for key, value in scores.items()})
    return result


def _evaluate_sr(G, dataset, count, batch, device, classifier_device) -> dict[str, float]:
    from ganfast.data.img2img import bicubic_downsample, bicubic_upsample   # lazily: data depends on nothing here

    scale = getattr(G, "scale", None)
    if isinstance(scale, bool) or not isinstance(scale, int) or scale < 1:
        raise ValueError(f"G: a super-resolution generator needs an int attribute scale >= 1, got {scale!r}")
    acc = _PerImageMeans()
    for hr in _item_batches(dataset, count, batch):
        lr = bicubic_downsample(hr, scale)
        sr = _generate(G, lr, hr.shape, device)
        baseline = bicubic_upsample(lr, scale)
        acc.add("hr_sharpness", sharpness(hr, per_image=True))
        for prefix, out in (("", sr), ("bicubic_", baseline)):
            _add_pixel_metrics(acc, prefix, out, hr, names=("psnr", "ssim"))
            acc.add(prefix + "sharpness", sharpness(out, per_image=True))
            if hr.shape[1] == 1:   # the distance's classifier is a grayscale Fashion-MNIST one
                acc.add(prefix + "feature_distance",
                        feature_distance(out, hr, per_image=True, device=classifier_device))
    return acc.means()


def evaluate_img2img(G: nn.Module, dataset, n: Optional[int] = None, device: Device = "cpu", batch: int = 64,
                     seed: int = 0) -> dict[str, float]:
    """Evaluate an image-to-image generator on a held-out split (`open_img2img_data(..., split="test")`
    for paired / unpaired models, a plain image dataset for "sr"), by G.img2img:

    * "paired" (pix2pix): item x = cat([A, B]) (dataset.channels_A / channels_B); out = G(A).
      Keys l1, psnr, ssim of out vs B; when A and B have the same channels also input_l1,
      input_psnr, input_ssim: the input A itself vs B, the do-nothing baseline.
    * "unpaired" (CycleGAN), "unit" (UNIT): AB = G(A, direction="AB"), BA = G(B, direction="BA").
      Keys cycle_l1_A, cycle_psnr_A (G(AB, "BA") vs A), cycle_l1_B, cycle_psnr_B. When the dataset
      has class_A and class_B (Fashion-MNIST class pairs), translation_scores in both directions
      against the real images of the target domain (dataset.domain_images(domain)): AB_target_acc,
      AB_fid, and the baseline of the untranslated A images AB_source_target_acc, AB_source_fid;
      the same with BA_.
    * "sr" (SRGAN): hr = item image, lr = bicubic_downsample(hr, G.scale), sr = G(lr). Keys psnr,
      ssim, sharpness and (1-channel data) feature_distance of sr vs hr; the same of the bicubic
      upsampling of lr prefixed bicubic_; hr_sharpness, the sharpness of the real images.

    Every result also has n, the number of items evaluated. n: the first n items (None, or more
    than the dataset holds: all). G runs in eval mode under torch.no_grad on `device` (moved there
    for the call; None: where G's parameters are), batch items at a time; afterwards every submodule's training flag and G's
    device are restored. The global RNG is seeded with `seed` for the call and restored, so a G
    that draws noise gives repeatable numbers. Values are Python floats (JSON-able).
    """
    task = getattr(G, "img2img", None)
    if not isinstance(G, nn.Module) or task not in IMG2IMG_TASKS:
        raise ValueError(f"G: expected an image-to-image generator module with img2img in {IMG2IMG_TASKS}, "
                         f"got {type(G).__name__} with img2img={task!r}")
    if n is not None and (isinstance(n, bool) or not isinstance(n, int) or n < 1):
        raise ValueError(f"n: expected None (all items) or an int >= 1, got {n!r}")
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"batch: expected an int >= 1, got {batch!r}")
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed: expected an int, got {seed!r}")
    try:
        length = len(dataset)
    except TypeError:
        raise ValueError(f"dataset: expected a dataset with len() and items, got {type(dataset).__name__}") from None
    if length == 0:
        raise ValueError("dataset: is empty")
    count = length if n is None else min(n, length)
    training = {module: module.training for module in G.modules()}
    parameter = next(iter(G.parameters()), None)
    home = parameter.device if parameter is not None else None
    device = torch.device(device) if device is not None else (home or torch.device("cpu"))
    rng_devices = [device] if device.type == "cuda" else []
    try:
        G.to(device).eval()
        with torch.no_grad(), torch.random.fork_rng(devices=rng_devices):
            torch.manual_seed(seed)
            if task == "paired":
                result = _evaluate_paired(G, dataset, count, batch, device)
            elif task == "sr":
                result = _evaluate_sr(G, dataset, count, batch, device, device)
            else:
                result = _evaluate_unpaired(G, dataset, count, batch, device, device)
    finally:
        if home is not None:
            G.to(home)
        for module, flag in training.items():
            module.training = flag
    result["n"] = float(count)
    return result


__all__ = ["l1_error", "psnr", "ssim", "ssim_window_size", "sharpness", "feature_distance",
           "translation_scores", "evaluate_img2img", "PSNR_MSE_FLOOR", "IMG2IMG_TASKS"]
