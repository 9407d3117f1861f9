"""The attention core's backward on CPU: ganfast's blocked exact backward (cpu.attention_backward)
against the flash backward it replaced (torch.ops.aten._scaled_dot_product_flash_attention_for_cpu
_backward, which rebuilds P from the forward's fp32 log-sum-exp), at SAGAN's 64x64 layer.

Cases: B = 4 images, N = 64 * 64 queries, M = 32 * 32 keys (pool 2);
  heads   D = Dv = 128: what self_attention2d's block hands the core (C = 256: q and k padded with
          zero columns to the value width C/2 by zero rows of the stacked projection weight)
  narrow  D = 32, Dv = 128: attention() on SAGAN's own widths (C/8, C/2); the flash kernel needs one
          width, so q and k are zero-padded to 128 first, as the previous cpu.attention_backward did
fp32 and bf16 (bf16: the blocked backward computes in fp32; the flash kernel uses bf16 GEMMs).
Variants: flash-backward; blocked-backward at the default block (cpu._BLOCK elements of scores)
and, with --blocks, others. Each timed call is one whole backward (fresh outputs); --warmup untimed
calls, then --repeats timed ones, the variants taking turns call by call: median, 20th and
80th percentiles. Threads: --threads (2 by
default: the CPU CI machine). Rows are appended to bench/results/self_attention_cpu_backward.jsonl;
ratio_vs_eager there is flash median / this median (> 1: faster than the flash backward).

    python bench/self_attention_cpu_backward.py
    python bench/self_attention_cpu_backward.py --blocks 65536 262144 1048576 --repeats 9
"""
from __future__ import annotations

import argparse
import datetime
import os
import statistics
import sys
import time
import uuid

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from ganfast.bench.environment import environment, load_average  # noqa: E402
from ganfast.bench.results import append_rows, complete_row  # noqa: E402
from ganfast.ops.self_attention import cpu  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "self_attention_cpu_backward.jsonl")
CASES = {"heads": (4, 4096, 1024, 128, 128), "narrow": (4, 4096, 1024, 32, 128)}   # B, N, M, D, Dv
_flash_backward = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu_backward.default


def flash_backward(do, q, k, v, o, lse):
    """The replaced backward: q and k zero-padded to v's width, the flash kernel on one head."""
    d, d_v = q.shape[-1], v.shape[-1]
    if d < d_v:
        q, k = F.pad(q, (0, d_v - d)), F.pad(k, (0, d_v - d))
    h = lambda t: t.unsqueeze(1)
    dq, dk, dv = _flash_backward(h(do), h(q), h(k), h(v), h(o), lse.unsqueeze(1), 0.0, False, scale=1.0)
    return dq.squeeze(1)[..., :d], dk.squeeze(1)[..., :d], dv.squeeze(1)


def blocked_backward(block):
    def run(do, q, k, v, o, lse):
        saved, cpu._BLOCK = cpu._BLOCK, block
        try:
            return cpu.attention_backward(do, q, k, v, o, lse)
        finally:
            cpu._BLOCK = saved
    return run


def timed(fns, args, warmup, repeats):
    """Per function, (median, p20, p80) ms of `repeats` calls, the functions taking turns call by
    call (a load that comes and goes falls on all of them alike)."""
    for fn in fns:
        for _ in range(warmup):
            fn(*args)
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for fn, t in zip(fns, ts):
            t0 = time.perf_counter()
            fn(*args)
            t.append((time.perf_counter() - t0) * 1e3)
    out = []
    for t in ts:
        t.sort()
        pick = lambda f: t[min(len(t) - 1, round(f * (len(t) - 1)))]
        out.append((statistics.median(t), pick(0.2), pick(0.8)))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    ap.add_argument("--dtypes", nargs="+", default=["float32", "bfloat16"])
    ap.add_argument("--blocks", nargs="*", type=int, default=[], help="more cpu._BLOCK values to time")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--no-write", action="store_true", help="print only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    env, run_id = environment(torch.device("cpu")), datetime.datetime.now().strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:4]
    rows = []
    for case in args.cases:
        b, n, m, d, d_v = CASES[case]
        flops = 2 * b * n * m * (3 * d + 2 * d_v)       # S, dQ, dK (width D); dP, dV (width Dv)
        for dtype_name in args.dtypes:
            dtype = getattr(torch, dtype_name)
            gen = torch.Generator().manual_seed(0)
            q, k = (torch.randn(b, r, d, generator=gen).to(dtype) for r in (n, m))
            v, do = (torch.randn(b, r, d_v, generator=gen).to(dtype) for r in (m, n))
            o, lse = cpu.attention_forward(q, k, v)
            variants = [("flash-backward", None, flash_backward)]
            for block in dict.fromkeys([cpu._BLOCK] + args.blocks):
                variants.append(("blocked-backward", block, blocked_backward(block)))
            stats = timed([fn for _, _, fn in variants], (do, q, k, v, o, lse), args.warmup, args.repeats)
            flash_ms = stats[0][0]
            for (name, block, _), (med, p20, p80) in zip(variants, stats):
                row = dict(op="self_attention_cpu_backward", shape_set="sagan-64x64", shape_label=case,
                           shape=[b, n, m, d, d_v], params={"block": block, "threads": args.threads},
                           dtype=dtype_name, device="cpu", backend=name, mode="backward", status="ok",
                           median_ms=round(med, 3), p20_ms=round(p20, 3), p80_ms=round(p80, 3),
                           repeats=args.repeats, warmup=args.warmup, flops=flops,
                           tflops=round(flops / med / 1e9, 4), ratio_vs_eager=round(flash_ms / med, 3),
                           load_avg=load_average(), timestamp=datetime.datetime.now(datetime.timezone.utc).isoformat(),
                           run_id=run_id, **env)
                rows.append(complete_row(row))
                print(f"{case:7s} {dtype_name:9s} {name:17s} block={block!s:8s} median {med:8.1f} ms "
                      f"(p20 {p20:.1f}, p80 {p80:.1f})  flash/this {flash_ms / med:.2f}  load {load_average()}",
                      flush=True)
    if not args.no_write:
        append_rows(RESULTS, rows)


if __name__ == "__main__":
    main()
