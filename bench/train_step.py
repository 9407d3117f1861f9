"""A whole-model training iteration, ganfast's fused ops vs the same model on the reference ops (and
vs torch.compile of the reference model), with and without CUDA graphs: images/s and sec/kimg as
the StyleGAN2 codebases report them, and peak GPU memory.

Configurations, one per (amp, --ops, --cuda-graphs setting):
  ops        ganfast     the model on ganfast's automatic backend (CUDA: cuda -> triton -> reference;
                         "auto_backends" in the row says which are usable here)
             reference   the same weights on backend 'reference': the baseline. Since issue 28 each
                         reference op is the fastest plain-PyTorch formulation of its op, so
                         "ganfast / reference" is the edge over good plain PyTorch, not over a slow spec
             compile     the reference model with TrainingConfig(compile=True): G and D are
                         torch.compiled for the main phases ("compiled_phases": D main, G main); the
                         regularization phases differentiate twice and run eagerly. At least
                         COMPILE_MIN_WARMUP warm-up steps (its recompiles; "warmup_seconds" shows
                         the compile time)
  amp        none, bf16, fp16 (ganfast.training.amp). fp16 is torch's recipe: autocast float16 and a
             GradScaler per network. Independently of amp, the StyleGAN2 presets' num_fp16_res /
             conv_clamp (NVIDIA's recipe: the highest resolutions in float16, outputs clamped) act on
             CUDA only, so on CUDA amp 'none' is NVIDIA's mixed precision (without its nan_to_num);
             every row records what was used ("precision").
  cuda_graphs  TrainingConfig(cuda_graphs=True): each phase captured after GRAPH_WARMUP_CALLS eager
             calls (ganfast.training.graphs), so a graphs configuration warms up for at least
             GRAPH_WARMUP_CALLS + 1 steps and its measured steps are all replays ("captured_phases").
             Combinations the trainer refuses (graphs on the CPU, with amp fp16, with compile) are
             skipped: a printed line and a row with "status": "skipped" and the trainer's reason.
             A graphs configuration that fails while capturing or replaying gets a row with
             "status": "error" (its traceback on stderr) and the run goes on; so does one that runs
             out of GPU memory ("skipped"). Any other failure stops the run.

One iteration is the model family's training recipe (ganfast.training.recipes) as its codebase
counts it, with each phase timed on its own (Trainer.phase_seconds, profile_phases: CUDA is
synchronized around each phase) and every phase running every step (r1_interval = pl_interval = 1:
a phase costs the same whatever its interval, so the rare ones are measured without 16 steps per
sample). The iteration time is the amortized sum of the phases' median call times, weighted by how
often the recipe runs them:
    StyleGAN2   t_iter = t(D main) + t(G main) + t(D reg) / 16 + t(G reg) / 4 + t(EMA)
                (lazy R1 every 16 D steps, lazy path length every 4 G steps)
    BigGAN      t_iter = 2 * t(D main) + t(G main) + t(EMA)
                (n_critic = 2 D steps per G step; no lazy phases)
    images/s = batch / t_iter          sec/kimg = 1000 * t_iter / batch
The weights come from the recipe (n_critic, r1_interval, pl_interval, EMA) and the phases the
trainer runs; the phases that actually ran, and their calls per step, must be those, or the run
stops. Each row records the formula ("iteration_formula"), "phase_weights" and
"phase_calls_per_step"; "training_config" is the TrainingConfig as measured (intervals 1), while
"r1_interval" / "pl_interval" are the recipe's (None: no such phase).

Rows (JSONL, bench/results/train_step.jsonl by default) are appended as each configuration ends,
so a run killed by a time limit loses only the configuration it was in. Order: per amp and graphs
setting the reference first (the others' baseline), then ganfast; every compile configuration last
(its warm-up compiles the models: the slow, risky part). Ratios (> 1: faster), filled in each row
from the configurations measured before it:
    speedup_vs_reference   over the reference, same amp and graphs setting (1.0 for the reference
                           row itself); phase_speedup_vs_reference per phase
    speedup_vs_graphs_off  graphs rows: over the same ops and amp without graphs
    speedup_vs_compile     over the compile configuration of the same amp (compile runs without graphs)
and, as the run's last row ("status": "summary"), every configuration's ratios computed once all
were measured: the only place speedup_vs_compile appears for configurations measured before compile.
On CUDA each row also has peak_gpu_bytes / peak_gpu_reserved_bytes (torch.cuda.max_memory_allocated /
_reserved over the configuration: weights, optimizer state, EMA, activations, graph pools).

    python bench/train_step.py                                  # stylegan2-32, batch 8, CPU
    python bench/train_step.py --preset stylegan2-32-fmnist --batch 32
    python bench/train_step.py --preset biggan-128 --batch 64 --device cuda --amp bf16 \\
        --ops ganfast reference compile --cuda-graphs both --steps 6 --warmup 2
"""
from __future__ import annotations

import argparse
import copy
import datetime
import gc
import os
import statistics
import sys
import time
import traceback
import uuid
from fractions import Fraction
from typing import NamedTuple

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ganfast.models as gm  # noqa: E402
from ganfast import backends  # noqa: E402
from ganfast.bench.environment import environment, load_average  # noqa: E402
from ganfast.bench.results import append_rows  # noqa: E402
from ganfast.data import InMemoryImages  # noqa: E402
from ganfast.models.stylegan2 import FP16_DEVICE_TYPES  # noqa: E402
from ganfast.training.graphs import GRAPH_WARMUP_CALLS  # noqa: E402
from ganfast.training.loop import NonFiniteError, Trainer, TrainingConfig  # noqa: E402
from ganfast.training.recipes import recipe_for  # noqa: E402

PHASES = ("D main", "G main", "D reg", "G reg", "EMA")
OPS = ("reference", "ganfast", "compile")          # the order they run in (reference: the baseline)
COMPILED_PHASES = ("D main", "G main")             # TrainingConfig(compile=True): the phases on G_main / D_main
# torch.compile recompiles in the first steps: G under no_grad (D main) and with gradients (G main),
# D on reals and on fakes that require grad, and once more per graph when a guard on ganfast's
# scalar-argument cache (bias_act's _SCALARS, filled by the first calls) fails; by step 3 it is steady
COMPILE_MIN_WARMUP = 3
GRAPH_SETTINGS = {"off": (False,), "on": (True,), "both": (False, True)}
BASELINE = "reference ops, fastest plain-PyTorch formulations (issue 28)"


class BenchCheckError(Exception):
    """What was measured is not what the row would claim (phases, calls per step, captures)."""


class Config(NamedTuple):
    ops: str
    amp: str
    cuda_graphs: bool

    def __str__(self) -> str:
        return f"amp={self.amp:5s} {self.ops:9s} graphs {'on ' if self.cuda_graphs else 'off'}"


def plan(ops: list[str], amps: list[str], graphs: tuple[bool, ...]) -> list[Config]:
    """The configurations in the order they run (see the module docstring)."""
    eager = [o for o in OPS if o in ops and o != "compile"]
    configs = [Config(o, amp, g) for amp in amps for g in graphs for o in eager]
    if "compile" in ops:
        configs += [Config("compile", amp, g) for amp in amps for g in graphs]
    return configs


def noise_data(G, batch: int) -> InMemoryImages:
    """Random uint8 images (and class labels for a conditional G) of G's shape."""
    gen = torch.Generator().manual_seed(0)
    n, res, ch, c_dim = max(256, batch), G.img_resolution, G.img_channels, int(getattr(G, "c_dim", 0) or 0)
    labels = torch.randint(0, c_dim, (n,), generator=gen) if c_dim else None
    return InMemoryImages(torch.randint(0, 256, (n, ch, res, res), dtype=torch.uint8, generator=gen), labels,
                          name="noise")


def make_trainer(G, D, data, family: str, batch: int, config: Config, device: torch.device) -> tuple[Trainer, dict]:
    """A Trainer with the family's recipe, every phase every step. Returns (trainer, recipe).
    Raises ValueError where the trainer refuses the combination."""
    recipe = recipe_for(family, G.img_resolution, batch)
    fields = {**recipe, "batch": batch, "amp": config.amp, "compile": config.ops == "compile",
              "cuda_graphs": config.cuda_graphs, "r1_interval": 1, "pl_interval": 1}
    return Trainer(G, D, data, TrainingConfig(**fields), device=device), recipe


def phase_weights(trainer: Trainer, recipe: dict) -> dict[str, Fraction]:
    """How many times the recipe runs each phase per iteration: D main n_critic times, its lazy R1
    every r1_interval D steps, G main once, lazy path length every pl_interval G steps, EMA once."""
    cfg = trainer.config
    weights = {"D main": Fraction(cfg.n_critic), "G main": Fraction(1)}
    if trainer.r1_lazy:
        weights["D reg"] = Fraction(cfg.n_critic, recipe.get("r1_interval", TrainingConfig.r1_interval))
    if trainer.pl_lazy:
        weights["G reg"] = Fraction(1, recipe.get("pl_interval", TrainingConfig.pl_interval))
    if trainer.ema is not None:
        weights["EMA"] = Fraction(1)
    return {p: weights[p] for p in PHASES if p in weights}


def formula(weights: dict[str, Fraction]) -> str:
    """'t(D main) + t(G main) + t(D reg) / 16 + ...' for these weights."""
    def term(phase, w):
        t = f"t({phase})"
        if w == 1:
            return t
        if w.denominator == 1:
            return f"{w.numerator} * {t}"
        return f"{t} / {w.denominator}" if w.numerator == 1 else f"{w.numerator}/{w.denominator} * {t}"
    return " + ".join(term(p, w) for p, w in weights.items())


def precision(gan: gm.GAN, trainer: Trainer, device: torch.device) -> dict:
    """What decides the arithmetic: autocast, loss scaling, and the model's own float16 blocks."""
    cfg = trainer.config
    fp16_res = int(gan.config.get("num_fp16_res", 0) or 0) if device.type in FP16_DEVICE_TYPES else 0
    return {"autocast": {"none": None, "bf16": "bfloat16", "fp16": "float16"}[cfg.amp],
            "grad_scaler": trainer.scaler_D is not None, "nan_to_num": cfg.nan_to_num,
            "model_fp16_res": fp16_res, "conv_clamp": gan.config.get("conv_clamp")}


def min_warmup(config: Config, warmup: int) -> int:
    """The warm-up steps a configuration needs before its steps are steady: graphs, every phase
    captured (GRAPH_WARMUP_CALLS eager calls, then the capture); compile, COMPILE_MIN_WARMUP."""
    if config.cuda_graphs:
        return max(warmup, GRAPH_WARMUP_CALLS + 1)
    return max(warmup, COMPILE_MIN_WARMUP) if config.ops == "compile" else warmup


def measure(trainer: Trainer, recipe: dict, steps: int, warmup: int) -> dict:
    """Warm up, then time `steps` steps phase by phase; the iteration as the recipe counts it."""
    cuda = trainer.device.type == "cuda"
    trainer.profile_phases = True
    t0 = time.perf_counter()
    for _ in range(warmup):
        trainer.step()
    if cuda:
        torch.cuda.synchronize(trainer.device)
    warmup_seconds = time.perf_counter() - t0
    trainer.phase_seconds.clear()
    for _ in range(steps):
        trainer.step()
    weights = phase_weights(trainer, recipe)
    ran = [p for p in PHASES if p in trainer.phase_seconds]
    if ran != list(weights):
        raise BenchCheckError(f"train_step: the phases that ran ({ran}) are not the recipe's ({list(weights)})")
    calls = {p: len(trainer.phase_seconds[p]) / steps for p in ran}
    expected = {p: trainer.config.n_critic if p in ("D main", "D reg") else 1 for p in ran}
    if calls != expected:
        raise BenchCheckError(f"train_step: phase calls per step {calls}, expected {expected}")
    med = {p: statistics.median(trainer.phase_seconds[p]) for p in ran}
    t_iter = sum(float(w) * med[p] for p, w in weights.items())
    out = {"phase_seconds": med, "iteration_seconds": t_iter, "images_per_second": trainer.config.batch / t_iter,
           "sec_per_kimg": 1000 * t_iter / trainer.config.batch, "iteration_formula": formula(weights),
           "phase_weights": {p: float(w) for p, w in weights.items()}, "phase_calls_per_step": calls,
           "warmup_seconds": warmup_seconds}
    if trainer.config.cuda_graphs:
        # a phase measured before its capture would time eager calls
        captured = trainer.captured_phases
        if not set(ran) <= set(captured):
            raise BenchCheckError(f"train_step: phases {sorted(set(ran) - set(captured))} were not captured after "
                               f"{warmup} warm-up steps")
        out["captured_phases"] = [p for p in PHASES if p in captured]
    try:
        out["skipped_phases_per_step"] = trainer.read_stats().get("skipped")    # one host read, after timing
    except NonFiniteError as e:
        out["non_finite"] = str(e)
    return out


def ratios(row: dict, done: dict[Config, dict]) -> dict:
    """The speedup fields of `row` against the configurations in `done` (see the module docstring)."""
    config = Config(row["ops"], row["amp"], row["cuda_graphs"])
    out = {}
    ref = done.get(config._replace(ops="reference"))
    if ref is not None:
        out["speedup_vs_reference"] = row["images_per_second"] / ref["images_per_second"]
        out["phase_speedup_vs_reference"] = {p: ref["phase_seconds"][p] / t for p, t in row["phase_seconds"].items()}
    off = done.get(config._replace(cuda_graphs=False))
    if config.cuda_graphs and off is not None:
        out["speedup_vs_graphs_off"] = row["images_per_second"] / off["images_per_second"]
    compiled = done.get(Config("compile", config.amp, False))
    if compiled is not None and config.ops != "compile":
        out["speedup_vs_compile"] = row["images_per_second"] / compiled["images_per_second"]
    return out


def ratio_text(row: dict) -> str:
    return "".join(f", {k.replace('speedup_', '')} {row[k]:.2f}x"
                   for k in ("speedup_vs_reference", "speedup_vs_graphs_off", "speedup_vs_compile") if k in row)


def now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--preset", default="stylegan2-32", help="a ganfast.models preset (stylegan2-*, biggan-*, ...)")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--amp", nargs="+", default=["none", "bf16"], choices=["none", "bf16", "fp16"])
    ap.add_argument("--ops", nargs="+", default=["ganfast", "reference"], choices=list(OPS),
                    help="ganfast ops, reference ops, reference ops under torch.compile (default: ganfast reference)")
    ap.add_argument("--cuda-graphs", default="off", choices=list(GRAPH_SETTINGS),
                    help="TrainingConfig(cuda_graphs=...): off, on, or both side by side (CUDA only)")
    ap.add_argument("--steps", type=int, default=3, help="measured steps per configuration")
    ap.add_argument("--warmup", type=int, default=1,
                    help=f"warm-up steps (graphs configurations: at least GRAPH_WARMUP_CALLS + 1 = "
                         f"{GRAPH_WARMUP_CALLS + 1}, so every phase is captured before timing)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--label", default="", help="free text stored in every row (what the run measures)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU); default: torch's")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "results",
                                                  "train_step.jsonl"))
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        ap.error(f"--device {args.device}: torch.cuda.is_available() is False")
    if args.cuda_graphs == "on" and device.type != "cuda":
        ap.error(f"--cuda-graphs on needs --device cuda (CUDA graphs are CUDA only): nothing would run on "
                 f"{device}; use --cuda-graphs both to run the other configurations and see the skip")
    if args.steps < 1 or args.warmup < 0:
        ap.error("--steps must be >= 1 and --warmup >= 0")
    gm.get_preset(args.preset)          # an unknown preset: the registry's message, before anything runs
    args.device = device
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads = torch.get_num_threads()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    try:
        return run(args)
    finally:
        torch.set_num_threads(threads)          # the caller's (a test process) as it was


def run(args) -> int:
    device = args.device
    env = environment(device)
    device_name = env["machine"]["gpu"] if device.type == "cuda" else env["machine"]["cpu"]
    run_id = uuid.uuid4().hex[:8]
    family = gm.get_preset(args.preset).family
    base = gm.create(args.preset, seed=0)
    data = noise_data(base.G, args.batch)
    auto = {name: backends.get_backend(name).unavailable_reason() for name in backends.AUTO_ORDER[device.type]}
    configs = plan(args.ops, args.amp, GRAPH_SETTINGS[args.cuda_graphs])
    print(f"{args.preset} ({family}) G {base.parameter_counts()['G']:,} D {base.parameter_counts()['D']:,}, batch "
          f"{args.batch}, {args.steps} steps after {args.warmup} warm-up, on {device_name}; ganfast's automatic "
          f"backends here: " + ", ".join(f"{k} {'ok' if v is None else 'unavailable'}" for k, v in auto.items()),
          flush=True)
    common = {"bench": "train_step", "run_id": run_id, "preset": args.preset, "family": family, "label": args.label,
              "baseline": BASELINE, "batch": args.batch, "device": device.type, "device_name": device_name}
    done: dict[Config, dict] = {}
    skipped = []

    def skip(config: Config, stamp: str, reason: str, status: str = "skipped") -> None:
        print(f"  {config}: {status}: {reason}", flush=True)
        row = {**common, "time": stamp, "amp": config.amp, "ops": config.ops, "cuda_graphs": config.cuda_graphs,
               "status": status, "reason": reason, **env}
        skipped.append(row)
        append_rows(args.out, [row])

    for config in configs:
        G, D = copy.deepcopy(base.G), copy.deepcopy(base.D)
        if config.ops != "ganfast":
            gm.set_backend(G, "reference")
            gm.set_backend(D, "reference")
        if device.type == "cuda":
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats(device)
        stamp = now()
        try:
            trainer, recipe = make_trainer(G, D, data, family, args.batch, config, device)
        except ValueError as e:
            if not config.cuda_graphs:      # only graphs combinations are refused by design; others are errors
                raise
            skip(config, stamp, str(e))
            continue
        warmup = min_warmup(config, args.warmup)
        torch.manual_seed(0)
        try:
            result = measure(trainer, recipe, args.steps, warmup)
        except torch.OutOfMemoryError as e:          # the next configuration may fit: say so and go on
            del trainer
            skip(config, stamp, f"out of GPU memory: {str(e).splitlines()[0]}")
            continue
        except RuntimeError as e:
            if not config.cuda_graphs:
                raise
            # a phase that cannot be captured is a finding of this run, not the end of it: the
            # traceback goes to stderr, the row says "error", and the other configurations still run
            traceback.print_exc()
            del trainer
            skip(config, stamp, f"{type(e).__name__} in a CUDA graphs configuration: {str(e).splitlines()[0]}",
                 "error")
            continue
        row = {**common, "time": stamp, "amp": config.amp, "ops": config.ops, "cuda_graphs": config.cuda_graphs,
               "status": "ok", "backend": "auto" if config.ops == "ganfast" else "reference",
               "compiled_phases": list(COMPILED_PHASES) if config.ops == "compile" else [],
               "r1_interval": recipe.get("r1_interval", TrainingConfig.r1_interval) if trainer.r1_lazy else None,
               "pl_interval": recipe.get("pl_interval", TrainingConfig.pl_interval) if trainer.pl_lazy else None,
               "n_critic": trainer.config.n_critic, "steps": args.steps, "warmup": warmup, **result,
               "precision": precision(base, trainer, device), "auto_backends": auto,
               "training_config": trainer.config.to_dict(),       # as measured: r1_interval = pl_interval = 1
               "load_avg": load_average()}
        if device.type == "cuda":
            torch.cuda.synchronize(device)
            row["peak_gpu_bytes"] = torch.cuda.max_memory_allocated(device)
            row["peak_gpu_reserved_bytes"] = torch.cuda.max_memory_reserved(device)
            row["cuda_settings"] = {"cudnn_benchmark": torch.backends.cudnn.benchmark,
                                    "cudnn_tf32": torch.backends.cudnn.allow_tf32,
                                    "matmul_tf32": torch.backends.cuda.matmul.allow_tf32}
        row.update(env)
        done[config] = row
        row.update(ratios(row, done))
        append_rows(args.out, [row])
        mem = f", peak {row['peak_gpu_bytes'] / 2 ** 30:.2f} GiB" if "peak_gpu_bytes" in row else ""
        print(f"  {config}: {row['images_per_second']:8.2f} img/s, {row['sec_per_kimg']:8.2f} sec/kimg{mem}  "
              + " ".join(f"{k} {v * 1000:.1f} ms" for k, v in row["phase_seconds"].items()) + ratio_text(row),
              flush=True)
        del trainer
        if config.ops == "compile":
            torch.compiler.reset()
    if done:
        table = [{"ops": c.ops, "amp": c.amp, "cuda_graphs": c.cuda_graphs,
                  "images_per_second": r["images_per_second"], "sec_per_kimg": r["sec_per_kimg"],
                  "peak_gpu_bytes": r.get("peak_gpu_bytes"), **ratios(r, done)} for c, r in done.items()]
        for t in table:
            t.pop("phase_speedup_vs_reference", None)
        summary = {**common, "time": now(),
                   "status": "summary", "iteration_formula": next(iter(done.values()))["iteration_formula"],
                   "configs": table, "skipped": [{k: s[k] for k in ("ops", "amp", "cuda_graphs", "status", "reason")}
                                               for s in skipped], **env}
        append_rows(args.out, [summary])
        print("summary (images/s; speedups > 1 are faster):")
        for t in table:
            print(f"  {Config(t['ops'], t['amp'], t['cuda_graphs'])}: {t['images_per_second']:8.2f}" + ratio_text(t))
    print(f"rows appended to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
