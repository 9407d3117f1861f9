"""GAN quality metrics on image sets.

Images: tensors [N, C, R, R], C = 1 or 3, float in [-1, 1] (generator output) or uint8 in
[0, 255] (`ganfast.metrics.images`).

    name            keys in the result                      features
    swd             swd_<R>, ..., swd_16, swd_avg (x1e3)     Laplacian-pyramid patches (no network)
    fid             fid                                      Fashion-MNIST classifier (shipped)
    kid             kid, kid_std                             Fashion-MNIST classifier
    pr              precision, recall                        Fashion-MNIST classifier
    class_acc       class_acc, class_acc_min, class_acc_<k>  Fashion-MNIST classifier (fake images of a
                    (percent: the classifier agrees with      conditional G and the labels they were
                    the requested class)                      generated for; `fake_labels`)
    inception_fid   inception_fid                            Inception (user-supplied weights)
    inception_kid   inception_kid, inception_kid_std         Inception
    is              is, is_std                               Inception (fake images only)

Image-to-image translation (`ganfast.metrics.img2img`): l1_error, psnr, ssim, sharpness,
feature_distance, translation_scores, and evaluate_img2img(G, held-out dataset) -> {name: float}.

The classifier metrics suit Fashion-MNIST-like data (32x32 grayscale; RGB is converted to gray);
their values compare runs with each other, not with published Inception numbers.
"""
from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from ganfast.metrics.classifier import FashionMNISTClassifier, load_fmnist_classifier
from ganfast.metrics.fid import (class_accuracy, class_accuracy_from_logits, classifier_features, classifier_fid,
                                 classifier_kid, classifier_logits,
                                 frechet_distance_from_features, kernel_distance_from_features,
                                 precision_recall, precision_recall_from_features)
from ganfast.metrics.images import as_float_images, as_uint8_images
from ganfast.metrics.img2img import (evaluate_img2img, feature_distance, l1_error, psnr, sharpness, ssim,
                                     translation_scores)
from ganfast.metrics.inception import inception_metrics, inception_score_from_probabilities, load_inception
from ganfast.metrics.swd import sliced_wasserstein

CLASSIFIER_METRICS = ("fid", "kid", "pr", "class_acc")
# compute_metrics name -> inception_metrics name
_INCEPTION_NAMES = {"inception_fid": "fid", "inception_kid": "kid", "is": "is"}
METRICS = ("swd",) + CLASSIFIER_METRICS + tuple(_INCEPTION_NAMES)


def compute_metrics(names: Union[str, Sequence[str]], real: torch.Tensor, fake: torch.Tensor, *,
                    inception_weights=None, seed: int = 0,
                    device: Optional[Union[str, torch.device]] = None,
                    fake_labels: Optional[torch.Tensor] = None) -> dict[str, float]:
    """The named metrics (see the module docstring for names and result keys) of fake against
    real images. Classifier features are computed once for fid/kid/pr together, Inception outputs
    once for the Inception metrics. inception_weights: path of the TorchScript Inception file
    (or the loaded module), needed only for inception_fid, inception_kid and is. seed drives the
    random choices of SWD and KID. fake_labels: int64 [N], the class each fake image was generated
    for; needed by class_acc (a conditional generator's per-class accuracy)."""
    names = (names,) if isinstance(names, str) else tuple(names)
    unknown = [n for n in names if n not in METRICS]
    if unknown or not names:
        raise ValueError(f"names: unknown metric(s) {unknown or '(none given)'}; valid: {', '.join(METRICS)}")
    if "class_acc" in names and fake_labels is None:
        raise ValueError("class_acc: needs fake_labels, the class each fake image was generated for "
                         "(it measures a conditional generator)")
    inception_requested = [_INCEPTION_NAMES[n] for n in names if n in _INCEPTION_NAMES]
    # Fail on missing weights before spending time on the other metrics.
    inception = load_inception(inception_weights) if inception_requested else None

    result: dict[str, float] = {}
    if "swd" in names:
        result.update(sliced_wasserstein(real, fake, seed=seed))
    if any(n in names for n in CLASSIFIER_METRICS):
        needs_real = any(n in names for n in ("fid", "kid", "pr"))
        real_features = classifier_features(real, device=device, name="real") if needs_real else None
        fake_features = classifier_features(fake, device=device, name="fake")
        if "fid" in names:
            result["fid"] = frechet_distance_from_features(real_features, fake_features)
        if "kid" in names:
            result["kid"], result["kid_std"] = kernel_distance_from_features(real_features, fake_features, seed=seed)
        if "pr" in names:
            result.update(precision_recall_from_features(real_features, fake_features))
        if "class_acc" in names:
            result.update(class_accuracy_from_logits(classifier_logits(fake_features), fake_labels))
    if inception_requested:
        result.update(inception_metrics(real, fake, inception, inception_requested, seed=seed, device=device))
    return result


__all__ = [
    "METRICS", "compute_metrics",
    "sliced_wasserstein",
    "FashionMNISTClassifier", "load_fmnist_classifier", "classifier_features",
    "classifier_fid", "classifier_kid", "precision_recall", "class_accuracy", "class_accuracy_from_logits",
    "classifier_logits",
    "frechet_distance_from_features", "kernel_distance_from_features", "precision_recall_from_features",
    "load_inception", "inception_metrics", "inception_score_from_probabilities",
    "as_float_images", "as_uint8_images",
    "l1_error", "psnr", "ssim", "sharpness", "feature_distance", "translation_scores", "evaluate_img2img",
]
