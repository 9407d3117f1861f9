"""Which model should `ganfast train` run by default? Train each candidate on the built-in
Fashion-MNIST with `ganfast train` and record its quality against wall time as bench rows.

Each candidate is a `ganfast train` command line (preset, model and training overrides). The
script runs them (`--parallel K` at a time, each with `--threads` torch threads), then reads each
run directory and appends one row per metric evaluation to OUT (default
bench/results/default_candidates.jsonl): the candidate, the images seen, the training wall time at
that point (the run's own clock since its first step: training, sample grids and the metric
evaluations before it), and FID / KID / SWD (the shipped
classifier's features) and class_acc for conditional models. `--collect DIR...` only reads run
directories made earlier with the same flags.

    python bench/default_candidates.py --candidates dcgan-32 cgan-32 cdcgan-32 --kimg 150 --parallel 2 --threads 1
    python bench/default_candidates.py --list

Reading the rows: quality at equal wall time is what the default's choice needs (FID at the
minute mark a new user waits); rows of candidates run in parallel at 1 thread each compare with
each other, not with a run alone at 2 threads (the label and `machine.torch_threads` say which).
"""
from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# name -> ganfast train arguments after --preset (the name's first word is the preset)
CANDIDATES = {
    "dcgan-32": "dcgan-32",
    "cgan-32": "cgan-32",
    "acgan-32": "acgan-32",
    "cdcgan-32": "cdcgan-32",
    "cdcgan-32-b64": "cdcgan-32 --batch 64",
    "cdcgan-32-noema": "cdcgan-32 --ema-kimg 0",
    "cdcgan-32-ns": "cdcgan-32 --loss nonsaturating",
    "cdcgan-32-ttur": "cdcgan-32 --set g_lr=1e-4,d_lr=4e-4",
    "cdcgan-32-dlr4": "cdcgan-32 --set g_lr=2e-4,d_lr=4e-4",
    "cdcgan-32-bnd-ns": "cdcgan-32 --model d_norm=bn --loss nonsaturating",
    "cgan-32-ema": "cgan-32 --ema-kimg 5 --set ema_rampup=0.1",
    "cdcgan-32-ema2": "cdcgan-32 --ema-kimg 2",
    "sngan-32-cond-small": "sngan-32 --model c_dim=10,g_ch=16,d_ch=16,img_channels=1 --n-critic 2",
    "biggan-32-small": "biggan-32 --model g_ch=16,d_ch=16,img_channels=1 --n-critic 1",
    "sagan-32-small": "sagan-32 --model g_ch=16,d_ch=16,img_channels=1",
    "stylegan2-32-fmnist": "stylegan2-32-fmnist",
}


def command(name: str, out: Path, kimg: float, snap: float, extra: str) -> list[str]:
    if name not in CANDIDATES:
        raise SystemExit(f"unknown candidate {name!r}; known: {', '.join(CANDIDATES)}")
    preset, *rest = shlex.split(CANDIDATES[name])
    return [sys.executable, "-m", "ganfast.cli", "train", "--preset", preset, *rest, *shlex.split(extra),
            "--kimg", str(kimg), "--snap", str(snap), "--tick", "5", "--no-progress", "--no-tensorboard",
            "--out", str(out)]


def read_rows(name: str, run: Path, label: str, threads: int) -> list[dict]:
    from ganfast.bench.environment import environment
    from ganfast.training.visualize import read_jsonl
    import torch
    env = environment(torch.device("cpu"))
    env["machine"]["torch_threads"] = threads          # what the runs used (OMP_NUM_THREADS), not this process
    log = read_jsonl(run / "log.jsonl")
    config = json.loads((run / "run.json").read_text())
    rows = []
    merged: dict[float, dict] = {}      # a later `ganfast metrics` row at the same kimg adds its keys
    for m in read_jsonl(run / "metrics.jsonl"):
        merged.setdefault(round(m["kimg"], 3), {}).update({k: v for k, v in m.items() if k != "tag"})
    for m in merged.values():
        # the run's clock at this evaluation: the 'time' of the last tick at or before it
        ticks = [r for r in log if r["kimg"] <= m["kimg"] + 1e-9]
        seconds = ticks[-1]["time"] if ticks else 0.0
        rows.append({
            "bench": "default_candidates", "candidate": name, "args": CANDIDATES.get(name),
            "preset": config["run"]["preset"], "model_overrides": config["run"]["model_overrides"],
            "training": {k: config["training"][k] for k in ("loss", "lr", "g_lr", "d_lr", "betas", "batch",
                                                             "n_critic", "ema_kimg") if k in config["training"]},
            "parameters": config.get("parameters"), "kimg": m["kimg"], "train_seconds": seconds,
            **{k: m[k] for k in ("fid", "kid", "swd_avg", "class_acc", "class_acc_min") if k in m},
            "label": label, "run_dir": str(run), **env,
        })
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    p.add_argument("--candidates", nargs="+", default=["dcgan-32", "cgan-32", "cdcgan-32"])
    p.add_argument("--kimg", type=float, default=150.0)
    p.add_argument("--snap", type=float, default=25.0, help="metrics interval in kimg")
    p.add_argument("--extra", default="", help="more ganfast train arguments for every candidate")
    p.add_argument("--parallel", type=int, default=1)
    p.add_argument("--threads", type=int, default=2, help="torch threads per run (OMP_NUM_THREADS)")
    p.add_argument("--runs", default="/tmp/ganfast_candidates", help="where the run directories go")
    p.add_argument("--collect", nargs="*", default=None, metavar="NAME=DIR",
                   help="only read earlier runs: candidate=run_dir pairs")
    p.add_argument("--label", default="", help="free text stored in every row")
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "default_candidates.jsonl"))
    p.add_argument("--list", action="store_true")
    args = p.parse_args(argv)
    if args.list:
        for name, spec in CANDIDATES.items():
            print(f"{name:24s} ganfast train --preset {spec}")
        return 0
    runs: list[tuple[str, Path]] = []
    if args.collect is not None:
        for item in args.collect:
            name, _, path = item.partition("=")
            runs.append((name, Path(path)))
    else:
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(ROOT)}
        pending = [(n, Path(args.runs) / n) for n in args.candidates]
        active: list[tuple[str, Path, subprocess.Popen]] = []
        while pending or active:
            while pending and len(active) < args.parallel:
                name, out = pending.pop(0)
                if out.exists():
                    raise SystemExit(f"{out} exists: remove it or pass another --runs")
                out.mkdir(parents=True)
                cmd = command(name, out, args.kimg, args.snap, args.extra)
                print("running:", " ".join(cmd), flush=True)
                log = open(out / "stdout.txt", "w")
                active.append((name, out, subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)))
            time.sleep(2)
            for item in list(active):
                if item[2].poll() is not None:
                    active.remove(item)
                    if item[2].returncode:
                        print(f"{item[0]} failed (exit {item[2].returncode}); see {item[1] / 'stdout.txt'}")
                    else:
                        runs.append(item[:2])
    label = args.label or f"{args.threads} thread(s) per run, {args.parallel} run(s) at a time"
    rows = [r for name, run in runs for r in read_rows(name, run, label, args.threads)]
    with open(args.out, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    for r in rows:
        extra = "".join(f"  {k} {r[k]:.4g}" for k in ("class_acc", "class_acc_min") if k in r)
        print(f"{r['candidate']:24s} {r['kimg']:7.1f} kimg {r['train_seconds']:7.1f} s  fid {r['fid']:.4g}  "
              f"kid {r['kid']:.4g}  swd {r['swd_avg']:.4g}{extra}")
    print(f"{len(rows)} rows appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
