"""The image-to-image presets trained on their built-in data with `ganfast train`, one after the
other, each for a budget that takes about 10 minutes on a 2-core CPU; one JSON row per run in
bench/results/img2img_runs.jsonl: the preset, budget, time, the first (untrained) and last
held-out metrics with their trivial baselines (ganfast.metrics.img2img.evaluate_img2img), and the
machine. The README's image-to-image table is made from these rows.

    python bench/img2img_runs.py                       # all four, the budgets below
    python bench/img2img_runs.py --presets srgan-32 --kimg 60 --out runs/img2img
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

from ganfast.bench.environment import environment
from ganfast.training.visualize import read_jsonl

# thousands of training pairs (images for SR) per preset: about 10 minutes each on a quiet 2-core CPU
BUDGETS = {"pix2pix-32": 100.0, "cyclegan-32": 30.0, "unit-32": 28.0, "srgan-32": 60.0}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--presets", default=",".join(BUDGETS), help="comma-separated (default: all four)")
    p.add_argument("--kimg", type=float, default=None, help="one budget for every preset (default: BUDGETS)")
    p.add_argument("--out", default="runs/img2img", help="parent of the run directories")
    p.add_argument("--results", default="bench/results/img2img_runs.jsonl")
    args = p.parse_args(argv)
    for preset in args.presets.split(","):
        kimg = args.kimg if args.kimg is not None else BUDGETS[preset]
        out = Path(args.out) / preset
        command = [sys.executable, "-m", "ganfast.cli", "train", "--preset", preset, "--kimg", str(kimg),
                   "--snap", str(kimg / 4), "--tick", str(kimg / 20), "--out", str(out), "--no-progress"]
        t0 = time.time()
        done = subprocess.run(command)
        seconds = time.time() - t0
        if done.returncode:
            print(f"{preset}: ganfast train exited with {done.returncode}", file=sys.stderr)
            return done.returncode
        metrics = read_jsonl(out / "metrics.jsonl")
        summary = json.loads((out / "summary.json").read_text())
        row = {"preset": preset, "kimg": kimg, "wall_seconds": round(seconds, 1),
               "train_seconds": summary["seconds"], "sec_per_kimg": summary["sec_per_kimg"],
               "steps": summary["steps"], "first": metrics[0], "last": metrics[-1], "command": " ".join(command[1:]),
               "env": environment(torch.device("cpu"))}
        Path(args.results).parent.mkdir(parents=True, exist_ok=True)
        with open(args.results, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(f"{preset}: {kimg} kimg in {seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
