"""Inception FID, KID and Inception Score, with Inception weights the user supplies.

ganfast ships no Inception weights and downloads nothing. Pass the path of a TorchScript file
(`--inception-weights PATH` on the command line) whose module follows this contract:

    module(images, return_features=True)  -> float [N, F]  pool features (F = 2048 for Inception-v3)
    module(images, return_features=False) -> float [N, K]  class probabilities (rows >= 0 summing
                                                            to 1) or logits; either is accepted
    images: uint8 [N, 3, H, W] RGB in [0, 255], at the images' own resolution; the module resizes
            to its input size (299x299 for Inception-v3) itself.

This is the interface of the TorchScript translation of the TensorFlow FID Inception network
(inception-2015-12-05) that the NVlabs StyleGAN2-ADA / StyleGAN3 metrics use: its file
`inception-2015-12-05.pt` works as is, and because its forward also takes `no_output_bias`, the
Inception Score then drops the softmax bias as the original implementation did. Any other
network works once wrapped to this contract and saved with torch.jit.script(...).save(path):
for example an nn.Module whose forward(images: Tensor, return_features: bool = False) converts to
float, resizes to 299x299 (bilinear), normalises as the network expects, and returns the 2048-d
pool features or the logits.

Grayscale images are repeated to three channels. FID and KID go through
`ganfast.metrics.fid` (the same statistics as the classifier metrics); IS is
exp(E_x KL(p(y|x) || p(y))) over `splits` contiguous parts of the fake set (mean and std).
"""
from __future__ import annotations

import functools
import warnings
from pathlib import Path
from typing import Optional, Sequence, Union

import torch

from ganfast.metrics.fid import DEFAULT_KID_SUBSETS, frechet_distance_from_features, kernel_distance_from_features
from ganfast.metrics.images import as_uint8_images

INCEPTION_METRICS = ("fid", "kid", "is")
WEIGHTS_HELP = ("pass --inception-weights PATH (inception_weights= in Python): a TorchScript file whose "
                "module maps uint8 RGB images [N, 3, H, W] to pool features with return_features=True "
                "and to class probabilities or logits with return_features=False, e.g. the "
                "inception-2015-12-05.pt used by the StyleGAN2-ADA metrics; see ganfast.metrics.inception")

WeightsLike = Union[str, Path, torch.jit.ScriptModule]


def load_inception(path: Optional[WeightsLike]) -> torch.jit.ScriptModule:
    """Load (once per path, on the CPU) the TorchScript Inception module described above; an
    already loaded module passes through."""
    if isinstance(path, torch.jit.ScriptModule):
        return path
    if path is None:
        raise ValueError(f"inception_weights: Inception metrics need weights; {WEIGHTS_HELP}")
    resolved = Path(path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"inception_weights: no file at {resolved}; {WEIGHTS_HELP}")
    return _load_cached(str(resolved))


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> torch.jit.ScriptModule:
    try:
        with warnings.catch_warnings():
            # torch marks TorchScript deprecated; the published FID network is TorchScript, so load it.
            warnings.filterwarnings("ignore", category=DeprecationWarning, message=".*torch.jit.load.*")
            module = torch.jit.load(path, map_location="cpu")
    except RuntimeError as error:
        raise ValueError(f"inception_weights: {path} is not a TorchScript file ({error}); {WEIGHTS_HELP}") from error
    if "return_features" not in _forward_arguments(module):
        raise ValueError(f"inception_weights: the module in {path} has forward{_forward_arguments(module)}, "
                         f"without a return_features argument; {WEIGHTS_HELP}")
    return module.eval()


def _forward_arguments(module: torch.jit.ScriptModule) -> tuple[str, ...]:
    return tuple(argument.name for argument in module.forward.schema.arguments if argument.name != "self")


def _run(module, images: torch.Tensor, name: str, return_features: bool, batch_size: int,
         device: Optional[Union[str, torch.device]]) -> torch.Tensor:
    """The module's output [N, F or K] for images in the metric convention, in float64 on the CPU."""
    images = as_uint8_images(name, images)
    if images.shape[1] == 1:
        images = images.expand(-1, 3, -1, -1)
    module = module.to(device if device is not None else images.device)   # in place, like the classifier
    target = next(iter(module.parameters()), images).device
    options = {"return_features": return_features}
    if not return_features and "no_output_bias" in _forward_arguments(module):
        options["no_output_bias"] = True   # the original IS ignores the softmax bias
    outputs = []
    with torch.inference_mode():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start:start + batch_size].to(target).contiguous()   # [B, 3, H, W] uint8
            out = module(batch, **options)
            if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[0] != batch.shape[0]:
                got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
                raise ValueError(f"inception_weights: the module returned {got} for {batch.shape[0]} images, "
                                 f"expected [{batch.shape[0]}, F] (return_features={return_features}); "
                                 f"{WEIGHTS_HELP}")
            outputs.append(out.double().cpu())
    return torch.cat(outputs)


def class_probabilities(outputs: torch.Tensor) -> torch.Tensor:
    """[N, K] class probabilities, or logits -> probabilities: rows that are non-negative and sum
    to 1 (within 1e-3) are taken as probabilities, anything else as logits (softmax)."""
    if bool((outputs >= 0).all()) and bool(((outputs.sum(dim=1) - 1).abs() <= 1e-3).all()):
        return outputs / outputs.sum(dim=1, keepdim=True)
    return outputs.softmax(dim=1)


def inception_score_from_probabilities(probabilities: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """IS = exp(mean_x KL(p(y|x) || p(y))) per contiguous split of [N, K] probabilities, p(y) the
    split's mean -> (mean, population std) over the splits."""
    n = probabilities.shape[0]
    if not 1 <= splits <= n:
        raise ValueError(f"splits: expected 1 <= splits <= number of images ({n}), got {splits}")
    p = probabilities.double()
    scores = []
    for i in range(splits):
        part = p[i * n // splits:(i + 1) * n // splits]                                  # [n_i, K]
        marginal = part.mean(dim=0, keepdim=True)                                           # [1, K]
        # xlogy: 0 * log 0 = 0 for classes a confident prediction rules out.
        kl = (torch.special.xlogy(part, part) - torch.special.xlogy(part, marginal)).sum(dim=1)
        scores.append(torch.exp(kl.mean()))
    scores = torch.stack(scores)
    return float(scores.mean()), float(scores.std(unbiased=False))


def inception_metrics(real: Optional[torch.Tensor], fake: torch.Tensor, weights: Optional[WeightsLike],
                      metrics: Sequence[str] = INCEPTION_METRICS, *, batch_size: int = 64,
                      kid_subset_size: Optional[int] = None, kid_subsets: int = DEFAULT_KID_SUBSETS,
                      is_splits: int = 10, seed: int = 0,
                      device: Optional[Union[str, torch.device]] = None) -> dict[str, float]:
    """Inception-network metrics of fake (and real) images [N, C, R, R], metric convention.

    weights: a path to the TorchScript file (contract in the module docstring) or the loaded module.
    metrics: any of "fid", "kid", "is" -> keys "inception_fid"; "inception_kid" and
    "inception_kid_std"; "is" and "is_std". real may be None when only "is" is asked for.
    """
    unknown = [m for m in metrics if m not in INCEPTION_METRICS]
    if unknown or not metrics:
        raise ValueError(f"metrics: expected a non-empty selection of {INCEPTION_METRICS}, got {tuple(metrics)}")
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    module = load_inception(weights)
    result: dict[str, float] = {}
    if "fid" in metrics or "kid" in metrics:
        if real is None:
            raise ValueError("real: Inception FID and KID compare against real images; got None")
        real_features = _run(module, real, "real", True, batch_size, device)
        fake_features = _run(module, fake, "fake", True, batch_size, device)
        if "fid" in metrics:
            result["inception_fid"] = frechet_distance_from_features(real_features, fake_features)
        if "kid" in metrics:
            result["inception_kid"], result["inception_kid_std"] = kernel_distance_from_features(
                real_features, fake_features, subset_size=kid_subset_size, subsets=kid_subsets, seed=seed)
    if "is" in metrics:
        probabilities = class_probabilities(_run(module, fake, "fake", False, batch_size, device))
        result["is"], result["is_std"] = inception_score_from_probabilities(probabilities, is_splits)
    return result
