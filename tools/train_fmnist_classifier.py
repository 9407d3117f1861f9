#!/usr/bin/env python
"""Train the Fashion-MNIST classifier behind the classifier FID / KID / precision-recall.

    python tools/train_fmnist_classifier.py --root DIR --epochs 6 \
        --out ganfast/metrics/weights/fmnist_classifier.safetensors

DIR holds the four original IDX files (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz,
t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz), read by ganfast.data.load_fashion_mnist;
without --root that function's search order applies (down to the small embedded subset).
Training uses the train split only; the test split is used once, at the end, for the accuracy
stored in the weights' metadata.
Deterministic for a given --seed and --threads (thread count changes float summation order).
"""
from __future__ import annotations

import argparse
import functools
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))   # run from a checkout

from ganfast.data.fashion_mnist import load_fashion_mnist  # noqa: E402
from ganfast.metrics.classifier import FashionMNISTClassifier, prepare_classifier_input  # noqa: E402


def _as_inputs(images: np.ndarray) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float32 [N, 1, 32, 32] in [-1, 1], as the classifier sees them."""
    return prepare_classifier_input(torch.from_numpy(images).unsqueeze(1))


def _augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random horizontal flip and a random shift of up to 2 pixels (one per batch), so the
    features do not hinge on exact centring, which generated images do not guarantee."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    x = torch.where(flip.view(-1, 1, 1, 1), x.flip(-1), x)
    dy, dx = (int(v) for v in torch.randint(-2, 3, (2,), generator=generator))
    padded = F.pad(x, (2, 2, 2, 2), value=-1.0)
    size = x.shape[-1]
    return padded[:, :, 2 + dy:2 + dy + size, 2 + dx:2 + dx + size]


@torch.no_grad()
def accuracy(model: FashionMNISTClassifier, inputs: torch.Tensor, labels: torch.Tensor,
             batch_size: int = 1000) -> float:
    model.eval()
    correct = sum(int((model(inputs[i:i + batch_size]).argmax(1) == labels[i:i + batch_size]).sum())
                  for i in range(0, len(labels), batch_size))
    return correct / len(labels)


def train(train_images: np.ndarray, train_labels: np.ndarray, *, epochs: int, seed: int = 0,
          batch_size: int = 128, lr: float = 3e-3, log=functools.partial(print, flush=True)) -> FashionMNISTClassifier:
    """AdamW with a one-cycle learning rate; returns the model in eval mode."""
    torch.manual_seed(seed)   # parameter init and dropout draw from the global generator
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = _as_inputs(train_images), torch.from_numpy(train_labels)
    model = FashionMNISTClassifier()
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=5e-4)
    steps_per_epoch = (len(labels) + batch_size - 1) // batch_size
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(labels), generator=generator)
        total_loss = 0.0
        for i in range(0, len(labels), batch_size):
            batch = order[i:i + batch_size]
            loss = F.cross_entropy(model(_augment(inputs[batch], generator)), labels[batch])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total_loss += float(loss.detach()) * len(batch)
        log(f"epoch {epoch + 1}/{epochs}: train loss {total_loss / len(labels):.4f}")
    return model.eval()


def save_classifier(model: FashionMNISTClassifier, path: Path, metadata: dict) -> None:
    from safetensors.torch import save_file

    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    save_file(state, str(path), metadata={k: str(v) for k, v in metadata.items()})


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=None,
                        help="folder with the Fashion-MNIST IDX files (default: ganfast.data's search order, "
                             "which ends at the embedded subset)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--out", type=Path, required=True, help="output .safetensors path")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads (part of reproducibility)")
    args = parser.parse_args(argv)
    if args.epochs < 1:
        parser.error("--epochs must be >= 1")

    torch.set_num_threads(args.threads)
    torch.use_deterministic_algorithms(True)
    train_images, train_labels, source = load_fashion_mnist(args.root, split="train")
    test_images, test_labels, _ = load_fashion_mnist(args.root, split="test")
    start = time.perf_counter()
    model = train(train_images, train_labels, epochs=args.epochs, seed=args.seed)
    seconds = time.perf_counter() - start
    test_accuracy = accuracy(model, _as_inputs(test_images), torch.from_numpy(test_labels))
    print(f"test accuracy {test_accuracy:.4f} after {args.epochs} epochs, {seconds:.0f} s training")
    save_classifier(model, args.out, {
        "format": "ganfast-fmnist-classifier-v1",
        "training_script": "tools/train_fmnist_classifier.py",
        "epochs": args.epochs,
        "seed": args.seed,
        "threads": args.threads,
        "data": f"Fashion-MNIST train split ({len(train_labels)} images, from {source}); "
                f"test split ({len(test_labels)} images) for test_accuracy only",
        "test_accuracy": f"{test_accuracy:.4f}",
        "training_seconds": f"{seconds:.0f}",
        "torch_version": torch.__version__,
    })
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
