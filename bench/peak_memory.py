"""Peak memory of one training step (forward + backward) on CPU, per formulation, measured.

The CPU allocator keeps no peak statistics, so each (case, formulation) runs in a fresh process
and reports how far the process's resident high-water mark (getrusage ru_maxrss) rose during the
step, over the mark after its inputs and incoming gradient were made. The child runs with
MALLOC_MMAP_THRESHOLD_=131072, so glibc serves every block over 128 KiB with mmap and unmaps it on
free (by default the threshold grows after each large free, and later blocks stay on the heap),
and the mark follows the live tensors. One warm-up step on a small input of the same op runs first, so library loading is not
counted. On a GPU the bench harness records torch.cuda.max_memory_allocated instead.

    python bench/peak_memory.py --op self_attention     # rows to bench/results/<op>_peak_memory.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

_CHILD = r"""
import json, resource, sys
import torch
from ganfast.bench import get_spec
from ganfast.bench.spec import BenchCase
op, label, shape_set, batch, backend = sys.argv[1:6]
spec = get_spec(op)
case = [c for c in spec.cases(shape_set, int(batch)) if c.label == label][0]
fn = spec.reference(case) if backend == "eager-reference" else spec.ganfast(case, backend)
def step(c):
    ins = [t.detach().requires_grad_(t.is_floating_point()) for t in spec.make_inputs(c, torch.float32, torch.device("cpu"), torch.Generator().manual_seed(0))]
    return ins
small = BenchCase(case.shape_set, "warmup", (1,) + tuple(max(4, s // 8) if i >= 1 else s for i, s in enumerate(case.shape[1:])), case.params)
ins = step(small)
out = fn(*ins); torch.autograd.grad(out, [t for t in ins if t.requires_grad], torch.ones_like(out))
del ins, out
ins = step(case)
dy = torch.randn(case.shape, generator=torch.Generator().manual_seed(1))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
out = fn(*ins)
grads = torch.autograd.grad(out, [t for t in ins if t.requires_grad], dy)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"peak_step_mb": round((after - before) / 1024, 1), "inputs_mb": round(sum(t.numel() * t.element_size() for t in ins) / 2**20, 1)}))
"""


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--op", default="self_attention")
    ap.add_argument("--shapes", default=None)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results"))
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    from ganfast.bench import get_spec
    spec = get_spec(args.op)
    shape_set = args.shapes or spec.default_shape_set
    batch = args.batch or spec.default_batch
    rows = []
    for case in spec.cases(shape_set, batch):
        for name in ("eager-reference", args.backend):
            proc = subprocess.run([sys.executable, "-c", _CHILD, args.op, case.label, shape_set, str(batch), name],
                                  capture_output=True, text=True, env=dict(os.environ, MALLOC_MMAP_THRESHOLD_="131072",
                                                                OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "2")))
            if proc.returncode != 0:
                print(proc.stderr[-2000:], file=sys.stderr)
                return 1
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append({"op": args.op, "shape_set": shape_set, "shape_label": case.label, "shape": list(case.shape),
                         "params": dict(case.params), "dtype": "float32", "device": "cpu", "backend": name,
                         "mode": "forward+backward", **res,
                         "method": "ru_maxrss rise over one fwd+bwd step in a fresh process (inputs made before)"})
            print(f"{case.label:24s} {name:16s} peak step memory {res['peak_step_mb']:8.1f} MB (inputs {res['inputs_mb']} MB)")
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, f"{args.op}_peak_memory.jsonl"), "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
