"""A small Fashion-MNIST classifier whose penultimate layer is the feature space of the
classifier FID / KID / precision-recall (`ganfast.metrics.fid`).

Inception features (ImageNet photographs at 299x299) describe 28x28 grayscale clothing poorly and
the Inception weights cannot ship here; a classifier trained on the data itself is the usual
substitute for MNIST-like sets. Numbers from it compare runs with each other, not with papers.

The trained weights ship in ganfast/metrics/weights/fmnist_classifier.safetensors, made by
tools/train_fmnist_classifier.py (its metadata records the script, epochs, seed, data and test
accuracy; `load_fmnist_classifier(...).metadata`).
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional, Union

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.metrics.images import as_float_images, rgb_to_gray

DEFAULT_WEIGHTS = Path(__file__).resolve().parent / "weights" / "fmnist_classifier.safetensors"
INPUT_RESOLUTION = 32
NUM_CLASSES = 10
CLASS_NAMES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
               "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def _conv_bn_relu_pool(in_channels: int, out_channels: int) -> nn.Sequential:
    # BatchNorm makes the few-epoch CPU training converge; in eval mode it is a fixed affine map.
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


def prepare_classifier_input(images: torch.Tensor) -> torch.Tensor:
    """Images in the metric convention -> float32 [N, 1, 32, 32] in [-1, 1].

    RGB becomes gray (ITU-R BT.601 luma); 28x28 (raw Fashion-MNIST) is padded to 32 with -1, the
    background value, as the ganfast 32x32 models are trained; 32x32 passes; any other size is
    resized to 32x32 (bilinear, antialiased).
    """
    x = rgb_to_gray(as_float_images("images", images))
    size = x.shape[-1]
    if size == 28:
        return F.pad(x, (2, 2, 2, 2), value=-1.0)
    if size != INPUT_RESOLUTION:
        x = F.interpolate(x, size=(INPUT_RESOLUTION, INPUT_RESOLUTION), mode="bilinear",
                          align_corners=False, antialias=True)
    return x


class FashionMNISTClassifier(nn.Module):
    """Three conv blocks (32 -> 16 -> 8 -> 4) and two linear layers.

    forward(images) -> logits [N, 10]; features(images) -> [N, 128], the ReLU output of the first
    linear layer. `images` follow the metric convention (see `prepare_classifier_input`).
    """

    num_features = 128   # torchmetrics reads this instead of probing the network

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(
            _conv_bn_relu_pool(1, 32),     # [N, 32, 16, 16]
            _conv_bn_relu_pool(32, 64),    # [N, 64, 8, 8]
            _conv_bn_relu_pool(64, 128),   # [N, 128, 4, 4]
            nn.AvgPool2d(2),               # [N, 128, 2, 2]
            nn.Flatten(),                  # [N, 512]
        )
        self.embed = nn.Linear(512, self.num_features)
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(self.num_features, NUM_CLASSES)
        self.metadata: dict = {}

    def features(self, images: torch.Tensor) -> torch.Tensor:
        x = prepare_classifier_input(images).to(self.embed.weight.device)
        return F.relu(self.embed(self.trunk(x)))          # [N, 128]

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(images)))   # [N, 10]


def load_fmnist_classifier(path: Optional[Union[str, Path]] = None) -> FashionMNISTClassifier:
    """The trained classifier (eval mode, no gradients), loaded once per path and then shared:
    treat it as read-only (copy.deepcopy it to change it). path=None: the shipped weights."""
    resolved = Path(DEFAULT_WEIGHTS if path is None else path).expanduser().resolve()
    if not resolved.is_file():
        raise FileNotFoundError(f"path: no Fashion-MNIST classifier weights at {resolved} "
                                f"(make them with tools/train_fmnist_classifier.py)")
    return _load_cached(str(resolved))


@functools.lru_cache(maxsize=None)
def _load_cached(path: str) -> FashionMNISTClassifier:
    from safetensors import safe_open
    from safetensors.torch import load_file

    model = FashionMNISTClassifier()
    model.load_state_dict(load_file(path, device="cpu"))   # strict: a mismatched file raises
    with safe_open(path, framework="pt") as f:
        model.metadata = dict(f.metadata() or {})
    return model.eval().requires_grad_(False)
