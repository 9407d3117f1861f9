"""Activation memory a training step keeps for the backward: the bytes of the distinct tensors
autograd saves during the forward (torch.autograd.graph.saved_tensors_hooks), per formulation.
The CPU allocator keeps no peak statistics, so this is the CPU stand-in for peak memory; on a GPU
the bench harness records torch.cuda.max_memory_allocated instead.

    python bench/saved_memory.py --op modulated_conv2d     # rows to bench/results/<op>_saved_memory.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from ganfast.bench import get_spec


def saved_bytes(fn, inputs) -> int:
    seen: dict[tuple, int] = {}

    def pack(t):
        if t.device.type != "meta":
            key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
            seen[key] = t.untyped_storage().nbytes()
        return t

    leaves = [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(*leaves)
    # the inputs themselves are held by the caller anyway: count only what the op adds
    input_keys = {(t.untyped_storage().data_ptr(), t.untyped_storage().nbytes()) for t in leaves}
    del out
    return sum(v for k, v in seen.items() if k not in input_keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", default="modulated_conv2d")
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    spec = get_spec(args.op)
    rows = []
    for case in spec.cases(args.shapes or spec.default_shape_set, spec.default_batch):
        inputs = spec.make_inputs(case, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))
        for name, fn in (("eager-reference", spec.reference(case)), (args.backend, spec.ganfast(case, args.backend))):
            mb = saved_bytes(fn, inputs) / 2 ** 20
            rows.append({"op": args.op, "shape_label": case.label,
                         "shape": list(case.shape), "params": dict(case.params), "backend": name,
                         "saved_for_backward_mb": round(mb, 3)})
            print(f"{case.label:24s} {name:16s} saved for backward {mb:8.1f} MB")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.op}_saved_memory.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
