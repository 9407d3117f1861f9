"""A StyleGAN2 training iteration, ganfast's fused ops vs the same model on the reference ops,
fp32 and bf16 autocast: images/s and sec/kimg as the StyleGAN2 codebases report them.

The reference ops are the baseline: since issue 28 each is the fastest plain-PyTorch formulation
of its op (depthwise convolutions for upfirdn2d, the faster modulated-convolution formulation per
shape, ...), so "ganfast / reference" is the edge over good plain PyTorch, not over a slow spec.
Rows carry the per-phase ratio too (`phase_speedup_vs_reference`).

One iteration = D main phase + G main phase + lazy R1 (every 16 D steps) + lazy path length
(every 4 G steps) + EMA. Each phase is timed on its own (Trainer.phase_seconds) with every phase
running every step, and the iteration time is their amortized sum:
    t_iter = t(D main) + t(G main) + t(D reg) / 16 + t(G reg) / 4 + t(EMA)
    images/s = batch / t_iter          sec/kimg = 1000 * t_iter / batch
(a phase costs the same whatever its interval; running them all each step measures the rare ones
without 16 steps per sample). Median over the measured steps after `--warmup` steps. Rows (JSONL)
go to bench/results/train_step.jsonl with the machine, versions and git SHA.

    python bench/train_step.py                                  # stylegan2-32, batch 8, CPU
    python bench/train_step.py --preset stylegan2-32-fmnist --batch 32
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import statistics
import sys
import uuid

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ganfast.models as gm  # noqa: E402
from ganfast.bench.environment import environment  # noqa: E402
from ganfast.data import InMemoryImages  # noqa: E402
from ganfast.training.loop import Trainer, TrainingConfig  # noqa: E402
from ganfast.training.recipes import recipe_for  # noqa: E402

R1_INTERVAL, PL_INTERVAL = 16, 4
PHASES = ("D main", "G main", "D reg", "G reg", "EMA")


def measure(G, D, batch: int, amp: str, steps: int, warmup: int, device: torch.device) -> dict:
    gen = torch.Generator().manual_seed(0)
    res, ch = G.img_resolution, G.img_channels
    data = InMemoryImages(torch.randint(0, 256, (max(256, batch), ch, res, res), dtype=torch.uint8, generator=gen),
                          None, name="noise")
    fields = recipe_for("stylegan2", res, batch)
    fields.update(batch=batch, amp=amp, r1_interval=1, pl_interval=1)     # every phase every step (see above)
    trainer = Trainer(G, D, data, TrainingConfig(**fields), device=device)
    trainer.profile_phases = True
    for _ in range(warmup):
        trainer.step()
    trainer.phase_seconds.clear()
    for _ in range(steps):
        trainer.step()
    med = {name: statistics.median(trainer.phase_seconds[name]) for name in PHASES}
    t_iter = med["D main"] + med["G main"] + med["D reg"] / R1_INTERVAL + med["G reg"] / PL_INTERVAL + med["EMA"]
    return {"phase_seconds": med, "iteration_seconds": t_iter, "images_per_second": batch / t_iter,
            "sec_per_kimg": 1000 * t_iter / batch}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--preset", default="stylegan2-32")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16", "fp16"])
    ap.add_argument("--steps", type=int, default=3, help="measured steps per configuration")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--label", default="", help="free text stored in every row (what the run measures)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "train_step.jsonl"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    env = environment(device)
    run_id = uuid.uuid4().hex[:8]
    base = gm.create(args.preset, seed=0)
    print(f"{args.preset} G {base.parameter_counts()['G']:,} D {base.parameter_counts()['D']:,}, batch {args.batch}, "
          f"{args.steps} steps after {args.warmup} warm-up, on {env['machine']}", flush=True)
    rows = []
    for amp in args.amp:
        result = {}
        for ops in ("ganfast", "reference"):
            G, D = copy.deepcopy(base.G), copy.deepcopy(base.D)
            if ops == "reference":
                gm.set_backend(G, "reference")
                gm.set_backend(D, "reference")
            torch.manual_seed(0)
            r = measure(G, D, args.batch, amp, args.steps, args.warmup, device)
            result[ops] = r
            row = {"bench": "train_step", "run_id": run_id, "time": datetime.datetime.now(datetime.timezone.utc)
                   .isoformat(timespec="seconds"), "preset": args.preset, "label": args.label,
                   "baseline": "reference ops, fastest plain-PyTorch formulations (issue 28)", "batch": args.batch, "amp": amp, "ops": ops,
                   "r1_interval": R1_INTERVAL, "pl_interval": PL_INTERVAL, "steps": args.steps, **r, **env}
            rows.append(row)
            print(f"  amp={amp:5s} {ops:9s}: {r['images_per_second']:7.2f} img/s, {r['sec_per_kimg']:8.1f} sec/kimg  "
                  + " ".join(f"{k} {v * 1000:.0f} ms" for k, v in r["phase_seconds"].items()), flush=True)
        speedup = result["ganfast"]["images_per_second"] / result["reference"]["images_per_second"]
        per_phase = {k: result["reference"]["phase_seconds"][k] / result["ganfast"]["phase_seconds"][k] for k in PHASES}
        for row in rows[-2:]:
            row["speedup_vs_reference"], row["phase_speedup_vs_reference"] = speedup, per_phase
        print(f"  amp={amp}: ganfast {speedup:.2f}x the reference (per phase: "
              + ", ".join(f"{k} {v:.2f}x" for k, v in per_phase.items()) + ")", flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row, default=str) + "\n")
    print(f"rows appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
