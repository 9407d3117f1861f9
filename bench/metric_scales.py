"""The scales of ganfast.metrics on Fashion-MNIST: what a distance of X means. Two disjoint halves
of the test split (5,000 images each by default), and the first half against degraded copies of
the second: blurred (3x3 box), noise (uniform in [-1, 1]), one class repeated (mode collapse).
Rows (JSONL) go to bench/results/metric_scales.jsonl with the machine, versions, git SHA and the
seconds each evaluation took. Needs the full set (GANFAST_FASHION_MNIST or the Debian package
dataset-fashion-mnist); the shipped subset's 1,000 test images give --n 500.

    python bench/metric_scales.py                      # swd, fid, kid, pr on 2 x 5,000
    python bench/metric_scales.py --n 500 --metrics swd,fid
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import time
import uuid

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganfast.bench.environment import environment  # noqa: E402
from ganfast.data.datasets import FashionMNIST  # noqa: E402
from ganfast.metrics import compute_metrics  # noqa: E402


def degraded(images: torch.Tensor, labels: torch.Tensor, kind: str, gen: torch.Generator) -> torch.Tensor:
    if kind == "real":
        return images
    if kind == "blur3":
        return F.avg_pool2d(F.pad(images, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    if kind == "noise":
        return torch.rand(images.shape, generator=gen) * 2 - 1
    if kind == "one_class":
        pick = images[labels == labels[0]]
        return pick[torch.randint(0, len(pick), (len(images),), generator=gen)]
    raise ValueError(kind)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000, help="images per half")
    ap.add_argument("--metrics", default="swd,fid,kid,pr")
    ap.add_argument("--kinds", default="real,blur3,noise,one_class")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                   "metric_scales.jsonl"))
    args = ap.parse_args(argv)
    data = FashionMNIST(32, split="test", labels=True)
    if len(data) < 2 * args.n:
        raise SystemExit(f"--n {args.n}: the test split here has {len(data)} images (the shipped subset?); "
                         f"use --n {len(data) // 2} or point GANFAST_FASHION_MNIST at the full set")
    images = torch.stack([data[i][0] for i in range(2 * args.n)])          # float in [-1, 1]
    labels = torch.tensor([int(data[i][1]) for i in range(2 * args.n)])
    first, second, second_labels = images[:args.n], images[args.n:], labels[args.n:]
    env = environment(torch.device("cpu"))
    run = uuid.uuid4().hex[:8]
    names = [m for m in args.metrics.split(",") if m]
    with open(args.out, "a") as f:
        for kind in args.kinds.split(","):
            other = degraded(second, second_labels, kind, torch.Generator().manual_seed(0))
            t0 = time.time()
            values = compute_metrics(names, first, other, seed=0)
            row = {"bench": "metric_scales", "run": run, "when": datetime.datetime.now().isoformat(timespec="seconds"),
                   "n": args.n, "kind": kind, "metrics": values, "seconds": round(time.time() - t0, 2), **env}
            f.write(json.dumps(row) + "\n")
            print(kind, {k: round(v, 4) for k, v in values.items()}, f"{row['seconds']} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
