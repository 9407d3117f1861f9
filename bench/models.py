"""Whole-model steps per preset: ganfast's fused ops vs the same weights on the reference ops.

For each preset and step, side by side in one run: the model on ganfast's automatic backend, the
same weights after set_backend(..., "reference") (eager plain PyTorch), and torch.compile of the
reference model (first-order steps only: torch.compile cannot differentiate twice). Steps:
  G fwd        G(z) under no_grad                       (sampling)
  G fwd+bwd    G(z), backward of a random projection    (the generator step)
  D fwd+bwd    D(img), backward of the logits           (the discriminator step)
  D R1         D(img), grad w.r.t. img with create_graph, backward of |grad|^2   (lazy R1 step)
  G pl         synthesis(ws), grad w.r.t. ws with create_graph, backward          (path length;
               style-based generators only)
Median with p20 / p80 (ganfast.bench.timing); rows (JSONL) to bench/results/models.jsonl with the
machine, versions and git SHA.

    python bench/models.py                                   # the default presets, fp32, CPU
    python bench/models.py --presets stylegan2-32 --batch 4 --quick
"""
from __future__ import annotations

import argparse
import copy
import datetime
import json
import os
import sys
import uuid

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ganfast.models as gm  # noqa: E402
from ganfast.bench.environment import environment  # noqa: E402
from ganfast.bench.timing import measure  # noqa: E402

DEFAULT_PRESETS = {"stylegan2-32": 4, "stylegan-256:resolution=32": 4, "dcgan-64": 16, "sngan-32": 16,
                   "biggan-32": 8}
STEPS = ("G fwd", "G fwd+bwd", "D fwd+bwd", "D R1", "G pl")
FIRST_ORDER = ("G fwd", "G fwd+bwd", "D fwd+bwd")


def parse_preset(spec: str) -> tuple[str, dict]:
    """'name' or 'name:key=int,key=int' -> (name, overrides)."""
    name, _, rest = spec.partition(":")
    overrides = {}
    for item in filter(None, rest.split(",")):
        k, _, v = item.partition("=")
        overrides[k] = int(v)
    return name, overrides


def make_steps(G, D, batch: int, device: torch.device, dtype: torch.dtype):
    """{step: (setup, run)} for this pair; setups draw fresh inputs, untimed."""
    gen = torch.Generator(device="cpu").manual_seed(0)
    c_dim = getattr(G, "c_dim", 0)

    def labels():
        return torch.randint(0, c_dim, (batch,), generator=gen).to(device) if c_dim else None

    def z():
        return torch.randn(batch, G.z_dim, generator=gen).to(device, dtype)

    def img():
        return torch.randn(batch, G.img_channels, G.img_resolution, G.img_resolution, generator=gen).to(device, dtype)

    def g_fwd(state):
        with torch.no_grad():
            return G(*state)

    def g_fwd_bwd(state):
        out = G(*state[:2])
        out.backward(state[2])

    def d_fwd_bwd(state):
        D(*state).sum().backward()

    def d_r1(state):
        x, c = state
        x.requires_grad_(True)
        g, = torch.autograd.grad(D(x, c).sum(), x, create_graph=True)
        g.square().sum().backward()

    steps = {
        "G fwd": (lambda: (z(), labels()), g_fwd),
        "G fwd+bwd": (lambda: (z(), labels(), torch.randn(batch, G.img_channels, G.img_resolution, G.img_resolution,
                                                          generator=gen).to(device, dtype)), g_fwd_bwd),
        "D fwd+bwd": (lambda: (img(), labels()), d_fwd_bwd),
        "D R1": (lambda: (img(), labels()), d_r1),
    }
    if hasattr(G, "mapping") and hasattr(G, "synthesis"):
        def g_pl(state):
            ws, noise = state
            g, = torch.autograd.grad((G.synthesis(ws) * noise).sum(), ws, create_graph=True)
            g.square().sum(dim=2).mean().sqrt().backward()

        def pl_setup():
            with torch.no_grad():
                ws = G.mapping(z(), labels(), update_w_avg=False)
            return ws.requires_grad_(True), torch.randn(batch, G.img_channels, G.img_resolution, G.img_resolution,
                                                         generator=gen).to(device, dtype)
        steps["G pl"] = (pl_setup, g_pl)
    return steps


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--presets", nargs="*", default=None,
                    help="preset[:key=int,...][@batch], e.g. stylegan2-32@4 (default: %(default)s)")
    ap.add_argument("--batch", type=int, default=None, help="override every preset's batch")
    ap.add_argument("--steps", nargs="*", default=list(STEPS), choices=STEPS)
    ap.add_argument("--no-compile", action="store_true", help="skip torch.compile(reference)")
    ap.add_argument("--quick", action="store_true", help="1 warm-up, 3 repeats")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", "models.jsonl"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.float32
    warmup, repeats = (1, 3) if args.quick else (2, 7)
    presets = {}
    for spec in (args.presets or [f"{k}@{v}" for k, v in DEFAULT_PRESETS.items()]):
        spec, _, b = spec.partition("@")
        presets[spec] = args.batch or (int(b) if b else 4)
    env = environment(device)
    run_id = uuid.uuid4().hex[:8]
    rows = []
    for spec, batch in presets.items():
        name, overrides = parse_preset(spec)
        fast = gm.create(name, seed=0, **overrides).to(device).train()
        if hasattr(fast.G, "style_mixing_prob"):
            fast.G.style_mixing_prob = 0.0         # the same work on every backend and repeat
        ref = gm.set_backend(copy.deepcopy(fast), "reference")
        variants = {"eager-reference": ref, "ganfast": fast}     # the baseline first
        if not args.no_compile:
            comp = copy.deepcopy(ref)
            comp.G.forward = torch.compile(comp.G.forward)
            comp.D.forward = torch.compile(comp.D.forward)
            variants["compile-reference"] = comp
        for step in args.steps:
            base = None
            for label, pair in variants.items():
                steps = make_steps(pair.G, pair.D, batch, device, dtype)
                if step not in steps or (label == "compile-reference" and step not in FIRST_ORDER):
                    continue
                setup, run = steps[step]
                try:
                    t = measure(setup, run, device, warmup=warmup, repeats=repeats)
                except Exception as err:  # a backend that cannot run this step: recorded, not hidden
                    print(f"{spec:32s} {step:10s} {label:18s} failed: {type(err).__name__}: "
                          f"{(str(err).splitlines() or [''])[0]}", flush=True)
                    rows.append({"preset": spec, "step": step, "backend": label, "batch": batch,
                                 "error": f"{type(err).__name__}: {(str(err).splitlines() or [''])[0]}"})
                    continue
                pair.zero_grad(set_to_none=True)
                if label == "eager-reference":
                    base = t.median_ms
                speedup = None if base is None or label == "eager-reference" else base / t.median_ms
                row = {"preset": spec, "step": step, "backend": label, "device": device.type,
                       "dtype": str(dtype).replace("torch.", ""), "batch": batch,
                       "median_ms": round(t.median_ms, 3), "p20_ms": round(t.p20_ms, 3),
                       "p80_ms": round(t.p80_ms, 3), "repeats": t.repeats,
                       "img_per_s": round(batch / t.median_ms * 1e3, 2),
                       "vs_eager_reference": None if speedup is None else round(speedup, 3),
                       "timestamp": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                       "run_id": run_id, **env}
                rows.append(row)
                print(f"{spec:32s} {step:10s} {label:18s} {t.median_ms:10.1f} ms  "
                      f"[{t.p20_ms:.1f}, {t.p80_ms:.1f}]" + (f"  x{speedup:.2f}" if speedup else ""), flush=True)
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "a") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    print(f"{len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
