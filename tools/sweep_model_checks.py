"""Run the model-level fast-vs-reference checks under several ATEN_CPU_CAPABILITY values and seeds.

torch's CPU kernels pick their vector width from ATEN_CPU_CAPABILITY (default, avx2, avx512),
which changes their summation order: a check that passes on one x86 machine and fails on another
shows up here on one machine. Each (capability, seed) runs `pytest tests/models -k fast_matches`
with GANFAST_TEST_SEED=seed in a fresh process; one JSON row per run goes to --out.

    .venv/bin/python tools/sweep_model_checks.py --seeds 0 1 2 --out bench/results/model_check_sweep.jsonl
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def cpu_capabilities() -> list[str]:
    """default and avx2 on any x86-64 torch build; avx512 where the CPU has avx512f/bw/vl/dq."""
    caps = ["default", "avx2"]
    try:
        flags = set(Path("/proc/cpuinfo").read_text().split())
    except OSError:
        flags = set()
    if {"avx512f", "avx512bw", "avx512vl", "avx512dq"} <= flags:
        caps.append("avx512")
    return caps


def run_once(repo: Path, capability: str, seed: int, select: str) -> dict:
    env = dict(os.environ, ATEN_CPU_CAPABILITY=capability, GANFAST_TEST_SEED=str(seed))
    t0 = time.time()
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests/models", "-k", select,
                           "-rf"], cwd=repo, env=env, capture_output=True, text=True)
    out = proc.stdout + proc.stderr
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|error)", out)}
    failed = sorted(set(re.findall(r"^FAILED (\S+)", out, re.M)))
    sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True).stdout.strip()
    return {"capability": capability, "seed": seed, "passed": counts.get("passed", 0),
            "failed": counts.get("failed", 0) + counts.get("error", 0), "failed_tests": failed, "rc": proc.returncode,
            "seconds": round(time.time() - t0, 1), "git": sha, "dirty_tree": bool(subprocess.run(
                ["git", "status", "--porcelain"], cwd=repo, capture_output=True, text=True).stdout.strip()),
            "machine": platform.processor() or platform.machine(), "label": ""}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repo", type=Path, default=ROOT, help="checkout whose tests run (default: this one)")
    ap.add_argument("--caps", nargs="+", default=None, help="ATEN_CPU_CAPABILITY values (default: what this CPU has)")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("-k", dest="select", default="fast_matches", help="pytest -k expression")
    ap.add_argument("--label", default="", help="a note stored in every row (e.g. 'before the fix')")
    ap.add_argument("--out", type=Path, default=None, help="JSONL file to append rows to")
    args = ap.parse_args(argv)
    failures = 0
    for cap in args.caps or cpu_capabilities():
        for seed in args.seeds:
            row = run_once(args.repo, cap, seed, args.select)
            row["label"] = args.label
            failures += row["failed"]
            print(json.dumps(row), flush=True)
            if args.out:
                with open(args.out, "a") as f:
                    f.write(json.dumps(row) + "\n")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
