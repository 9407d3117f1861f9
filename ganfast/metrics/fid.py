"""FID, KID and precision/recall, on the features of any network; by default the Fashion-MNIST
classifier's (`ganfast.metrics.classifier`), the Inception network's via `ganfast.metrics.inception`.

* FID (Heusel et al. 2017): Frechet distance between Gaussians fitted to the two feature sets,
  |mu_r - mu_f|^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)); computed by torchmetrics.
* KID (Binkowski et al. 2018): unbiased squared MMD with the kernel (x.y / F + 1)^3, averaged over
  random equally sized subsets (mean and standard deviation); computed by torchmetrics.
* Precision / recall (Kynkaanniemi et al. 2019): each set's manifold is the union of balls around
  its samples, of radius the distance to the sample's k-th nearest neighbour in the same set;
  precision = fraction of fake samples inside the real manifold (quality), recall = fraction of
  real samples inside the fake manifold (coverage).

The statistics take features (`*_from_features`), so one feature pass serves all three metrics.
"""
from __future__ import annotations

import warnings
from typing import Optional, Union

import torch
from torch import nn

from ganfast.metrics.images import as_float_images

DEFAULT_KID_SUBSET_SIZE = 1000   # Binkowski et al.'s subset size
DEFAULT_KID_SUBSETS = 100


class _PrecomputedFeatures(nn.Module):
    """The 'feature extractor' handed to torchmetrics: features already computed pass through, in
    float64 (the KID kernel cubes dot products; float32 loses the small MMD in cancellation)."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features   # read by torchmetrics instead of probing with an image

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features.double()


def _check_feature_sets(real_features: torch.Tensor, fake_features: torch.Tensor, min_samples: int) -> None:
    for name, f in (("real_features", real_features), ("fake_features", fake_features)):
        if not isinstance(f, torch.Tensor) or f.ndim != 2 or not f.is_floating_point():
            got = list(f.shape) if isinstance(f, torch.Tensor) else type(f).__name__
            raise ValueError(f"{name}: expected floating features [N, F], got {got}")
        if f.shape[0] < min_samples:
            raise ValueError(f"{name}: expected at least {min_samples} samples, got {f.shape[0]}")
    if real_features.shape[1] != fake_features.shape[1]:
        raise ValueError(f"real_features, fake_features: feature sizes differ "
                         f"({real_features.shape[1]} vs {fake_features.shape[1]})")


def frechet_distance_from_features(real_features: torch.Tensor, fake_features: torch.Tensor) -> float:
    """FID between feature sets [N_r, F] and [N_f, F] (each N >= 2)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_feature_sets(real_features, fake_features, min_samples=2)
    metric = FrechetInceptionDistance(feature=_PrecomputedFeatures(real_features.shape[1]))
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    return float(metric.compute())


def kernel_distance_from_features(real_features: torch.Tensor, fake_features: torch.Tensor, *,
                                  subset_size: Optional[int] = None, subsets: int = DEFAULT_KID_SUBSETS,
                                  seed: int = 0) -> tuple[float, float]:
    """KID (mean, standard deviation over `subsets` random subsets) between feature sets [N_r, F]
    and [N_f, F]. subset_size=None: min(1000, N_r, N_f). Deterministic for a given seed; the
    global RNG state is restored afterwards."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_feature_sets(real_features, fake_features, min_samples=2)
    largest = min(real_features.shape[0], fake_features.shape[0])
    if subset_size is None:
        subset_size = min(DEFAULT_KID_SUBSET_SIZE, largest)
    if not 2 <= subset_size <= largest:
        raise ValueError(f"subset_size: expected 2 <= subset_size <= min(N_real, N_fake) = {largest}, "
                         f"got {subset_size}")
    if subsets < 1:
        raise ValueError(f"subsets: expected >= 1, got {subsets}")
    with warnings.catch_warnings():
        # torchmetrics warns that KID keeps every feature in memory; here that is the intent.
        warnings.filterwarnings("ignore", message=".*will save all extracted features in buffer")
        metric = KernelInceptionDistance(feature=_PrecomputedFeatures(real_features.shape[1]),
                                         subset_size=subset_size, subsets=subsets)
    metric.update(real_features, real=True)
    metric.update(fake_features, real=False)
    # torchmetrics draws the subsets with torch.randperm from the global generator: seed it, then
    # give the caller back the state it had.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        mean, std = metric.compute()
    return float(mean), float(std)


def manifold_radii(features: torch.Tensor, k: int, batch_size: int = 1024) -> torch.Tensor:
    """Distance from each sample [N, F] to its k-th nearest other sample -> [N]."""
    n = features.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k: expected 1 <= k < number of samples ({n}), got {k}")
    radii = []
    for start in range(0, n, batch_size):
        distances = _distances(features[start:start + batch_size], features)       # [B, N]
        # The sample itself is its own nearest neighbour at distance 0: take the (k+1)-th smallest.
        radii.append(distances.kthvalue(k + 1, dim=1).values)
    return torch.cat(radii)


def _distances(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    # The direct difference form, not the matrix-product one, so duplicates are exactly 0 apart
    # and a sample on a ball's edge is judged consistently.
    return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")


def _fraction_inside(samples: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor,
                     batch_size: int) -> float:
    inside = 0
    for start in range(0, samples.shape[0], batch_size):
        distances = _distances(samples[start:start + batch_size], centres)          # [B, M]
        inside += int((distances <= radii[None, :]).any(dim=1).sum())
    return inside / samples.shape[0]


def precision_recall_from_features(real_features: torch.Tensor, fake_features: torch.Tensor, *,
                                   k: int = 3, batch_size: int = 1024) -> dict[str, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019) of feature sets [N_r, F], [N_f, F];
    a point on a ball's boundary counts as inside."""
    _check_feature_sets(real_features, fake_features, min_samples=k + 1)
    real_features, fake_features = real_features.double(), fake_features.double()
    real_radii = manifold_radii(real_features, k, batch_size)
    fake_radii = manifold_radii(fake_features, k, batch_size)
    return {"precision": _fraction_inside(fake_features, real_features, real_radii, batch_size),
            "recall": _fraction_inside(real_features, fake_features, fake_radii, batch_size)}


def classifier_features(images: torch.Tensor, *, classifier: Optional[nn.Module] = None,
                        batch_size: int = 256, device: Optional[Union[str, torch.device]] = None,
                        name: str = "images") -> torch.Tensor:
    """Penultimate-layer features [N, F] of `classifier` (default: the shipped Fashion-MNIST
    classifier) for images in the metric convention, computed on `device` (default: the images'),
    returned on the CPU."""
    from ganfast.metrics.classifier import load_fmnist_classifier

    images = as_float_images(name, images)
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    model = classifier if classifier is not None else load_fmnist_classifier()
    # Module.to moves in place: the shared cached classifier follows the data to its device.
    model = model.to(device if device is not None else images.device)
    device = next(model.parameters()).device
    with torch.inference_mode():
        return torch.cat([model.features(images[i:i + batch_size].to(device)).float().cpu()
                          for i in range(0, images.shape[0], batch_size)])


def class_accuracy_from_logits(logits: torch.Tensor, labels: torch.Tensor,
                               num_classes: Optional[int] = None) -> dict[str, float]:
    """The classifier's agreement with the requested classes, in percent: {"class_acc": overall,
    "class_acc_min": the worst class's, "class_acc_<k>": class k's} for logits [N, K] and
    labels int64 [N] (the classes a conditional G was asked for). Classes absent from labels get
    no per-class key and do not enter the minimum."""
    if logits.ndim != 2:
        raise ValueError(f"logits: expected [N, classes], got shape {list(logits.shape)}")
    if (not isinstance(labels, torch.Tensor) or labels.is_floating_point() or labels.ndim != 1
            or labels.shape[0] != logits.shape[0]):
        got = f"{labels.dtype} {list(labels.shape)}" if isinstance(labels, torch.Tensor) else type(labels).__name__
        raise ValueError(f"labels: expected integer class indices [{logits.shape[0]}], got {got}")
    k = logits.shape[1] if num_classes is None else num_classes
    labels = labels.to(logits.device)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
        raise ValueError(f"labels: class indices must lie in [0, {k}), got [{int(labels.min())}, {int(labels.max())}]")
    hit = (logits.argmax(dim=1) == labels).double()
    out = {"class_acc": 100.0 * float(hit.mean()) if hit.numel() else float("nan")}
    per = {}
    for cls in range(k):
        mask = labels == cls
        if bool(mask.any()):
            per[f"class_acc_{cls}"] = 100.0 * float(hit[mask].mean())
    out["class_acc_min"] = min(per.values()) if per else float("nan")
    out.update(per)
    return out


def class_accuracy(images: torch.Tensor, labels: torch.Tensor, *, batch_size: int = 256,
                   classifier: Optional[nn.Module] = None,
                   device: Optional[Union[str, torch.device]] = None) -> dict[str, float]:
    """Per-class accuracy of a conditional generator: how often the classifier (default: the shipped
    Fashion-MNIST one) puts each image in the class it was generated for (labels int64 [N]).
    See class_accuracy_from_logits for the keys. The same classifier's accuracy on real held-out
    images (its metadata's test accuracy) is the ceiling to read these numbers against."""
    from ganfast.metrics.classifier import load_fmnist_classifier
    model = classifier if classifier is not None else load_fmnist_classifier()
    features = classifier_features(images, classifier=model, batch_size=batch_size, device=device, name="images")
    return class_accuracy_from_logits(classifier_logits(features, model), labels)


def classifier_logits(features: torch.Tensor, classifier: Optional[nn.Module] = None) -> torch.Tensor:
    """The classifier's class logits [N, K] from its features [N, F] (classifier_features' output):
    its head in eval mode (no dropout), on the CPU."""
    from ganfast.metrics.classifier import load_fmnist_classifier
    model = classifier if classifier is not None else load_fmnist_classifier()
    head = model.head
    with torch.inference_mode():
        return torch.nn.functional.linear(features.float(), head.weight.detach().float().cpu(),
                                          None if head.bias is None else head.bias.detach().float().cpu())


def classifier_fid(real: torch.Tensor, fake: torch.Tensor, *, batch_size: int = 256,
                   classifier: Optional[nn.Module] = None,
                   device: Optional[Union[str, torch.device]] = None) -> float:
    """FID on the Fashion-MNIST classifier's features between image sets [N, C, R, R]."""
    features = _feature_pair(real, fake, batch_size, classifier, device)
    return frechet_distance_from_features(*features)


def classifier_kid(real: torch.Tensor, fake: torch.Tensor, *, subset_size: Optional[int] = None,
                   subsets: int = DEFAULT_KID_SUBSETS, seed: int = 0, batch_size: int = 256,
                   classifier: Optional[nn.Module] = None,
                   device: Optional[Union[str, torch.device]] = None) -> tuple[float, float]:
    """KID (mean, std) on the Fashion-MNIST classifier's features; see kernel_distance_from_features."""
    features = _feature_pair(real, fake, batch_size, classifier, device)
    return kernel_distance_from_features(*features, subset_size=subset_size, subsets=subsets, seed=seed)


def precision_recall(real: torch.Tensor, fake: torch.Tensor, *, k: int = 3, batch_size: int = 256,
                     classifier: Optional[nn.Module] = None,
                     device: Optional[Union[str, torch.device]] = None) -> dict[str, float]:
    """{"precision", "recall"} on the Fashion-MNIST classifier's features (k-NN manifolds)."""
    features = _feature_pair(real, fake, batch_size, classifier, device)
    return precision_recall_from_features(*features, k=k)


def _feature_pair(real, fake, batch_size, classifier, device) -> tuple[torch.Tensor, torch.Tensor]:
    return (classifier_features(real, classifier=classifier, batch_size=batch_size, device=device, name="real"),
            classifier_features(fake, classifier=classifier, batch_size=batch_size, device=device, name="fake"))
