"""Rebuild ganfast/data/builtin/fashion_mnist_subset.npz, the Fashion-MNIST subset shipped in the
package, from the full IDX files (e.g. the Debian package dataset-fashion-mnist):

    python tools/make_fashion_mnist_subset.py --root /usr/share/datasets/fashion-mnist \
        --out ganfast/data/builtin/fashion_mnist_subset.npz

The selection (first N of each class, in file order) and the file bytes are deterministic: the
same input files give the same output file. See ganfast/data/fashion_mnist.py.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import sys

# Run from a checkout without installing: the package lives one level up.
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganfast.data.fashion_mnist import (EMBEDDED_SUBSET_PATH, SUBSET_TEST_PER_CLASS,  # noqa: E402
                                        SUBSET_TRAIN_PER_CLASS, make_fashion_mnist_subset)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", required=True, help="directory holding the four Fashion-MNIST IDX files")
    parser.add_argument("--out", default=str(EMBEDDED_SUBSET_PATH), help="output .npz (default: %(default)s)")
    parser.add_argument("--train-per-class", type=int, default=SUBSET_TRAIN_PER_CLASS)
    parser.add_argument("--test-per-class", type=int, default=SUBSET_TEST_PER_CLASS)
    args = parser.parse_args()
    counts = make_fashion_mnist_subset(args.root, args.out, args.train_per_class, args.test_per_class)
    with open(args.out, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    print(f"wrote {args.out}: {counts['train']} train + {counts['test']} test images, "
          f"{os.path.getsize(args.out)} bytes, sha256 {digest}")


if __name__ == "__main__":
    main()
