"""The `ganfast` command: `ganfast info`, `ganfast bench OP`, `ganfast train`, `ganfast generate`,
`ganfast metrics`.

Each subcommand is an `_add_<name>(subparsers)` that registers its arguments and a handler
`args -> exit code`; later subcommands (train, generate, metrics) are added the same way.
Heavy imports (the benchmark harness, torch.compile) happen inside the handlers.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Optional, Sequence

import ganfast

DTYPES = ("float32", "float16", "bfloat16")


def _bounded_number(kind, minimum, strict: bool):
    """An argparse type: `kind` (int or float) >= minimum (> minimum when strict)."""
    expected = f"{'an integer' if kind is int else 'a number'} {'>' if strict else '>='} {minimum}"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            value = None
        if value is None or not (value > minimum if strict else value >= minimum):   # NaN fails too
            raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
        return value
    parse.__name__ = expected  # argparse names the type in its messages
    return parse


def _int_at_least(minimum: int):
    return _bounded_number(int, minimum, strict=False)


def _float_above(minimum: float):
    return _bounded_number(float, minimum, strict=True)


# ---- ganfast info ----

def _add_info(sub) -> None:
    p = sub.add_parser("info", help="versions, devices, and which backends and kernels are usable here (and why not)",
                       description="Report ganfast/torch/triton versions, CUDA, the backend matrix and the extension build.")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.set_defaults(handler=_info)


def _info(args) -> int:
    from ganfast import info
    print(json.dumps(info.as_dict(), indent=2) if args.json else info.report())
    return 0


# ---- ganfast bench ----

def _add_bench(sub) -> None:
    from ganfast.bench import SPECS
    from ganfast.bench.harness import DEFAULT_REPEATS, QUICK
    from ganfast.bench.spec import DEFAULT_MODES, MODES

    def per_device(i: int) -> str:  # i: 0 warmup, 1 repeats
        return ", ".join(f"{v[i]} on {d}" for d, v in DEFAULT_REPEATS.items())

    p = sub.add_parser(
        "bench", help="time an op: eager reference, torch.compile(reference) and each ganfast backend",
        description="Benchmark an op on real layer shapes; print a table per shape and append JSON Lines rows "
                    "to OUT/OP.jsonl.")
    p.add_argument("op", choices=sorted(SPECS), help="the op to benchmark")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="default: cpu")
    p.add_argument("--dtype", choices=DTYPES, default="float32", help="default: float32")
    p.add_argument("--shapes", metavar="SET", default=None,
                   help="the op's shape set, e.g. stylegan2-256, stylegan2-1024, biggan-128 for bias_act "
                        "(default: the op's default set; an unknown name lists the known ones)")
    p.add_argument("--batch", type=_int_at_least(1), default=None,
                   help="batch size N (default: the op's, 4 for bias_act, 8 for adain_noise)")
    p.add_argument("--modes", nargs="+", choices=MODES, default=list(DEFAULT_MODES), metavar="MODE",
                   help=f"any of {', '.join(MODES)} (default: {' '.join(DEFAULT_MODES)})")
    p.add_argument("--repeats", type=_int_at_least(1), default=None,
                   help=f"timed repeats per measurement (default: {per_device(1)}; {QUICK[1]} with --quick)")
    p.add_argument("--warmup", type=_int_at_least(0), default=None,
                   help=f"untimed calls before the repeats (default: {per_device(0)}; {QUICK[0]} with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer repeats and only a few shapes")
    p.add_argument("--no-compile", dest="compile", action="store_false", help="leave out torch.compile(reference)")
    p.add_argument("--out", default=os.path.join("bench", "results"),
                   help="directory the rows are appended to, as OP.jsonl (default: bench/results)")
    p.set_defaults(handler=_bench, parser=p)


def _bench(args) -> int:
    import torch

    from ganfast import bench
    from ganfast.bench.environment import cpu_model, load_average
    from ganfast.bench.results import LEGEND

    spec = bench.get_spec(args.op)
    shape_set = args.shapes or spec.default_shape_set
    if shape_set not in spec.shape_sets:
        args.parser.error(f"unknown shape set {shape_set!r} for {args.op}; known: {', '.join(spec.shape_sets)}")
    if args.device == "cuda" and not torch.cuda.is_available():
        args.parser.error("--device cuda: torch sees no CUDA device here (see `ganfast info`)")
    device = torch.device(args.device)
    warmup, repeats = bench.default_repeats(device, args.quick)
    warmup = warmup if args.warmup is None else args.warmup
    repeats = repeats if args.repeats is None else args.repeats
    args.batch = args.batch or spec.default_batch
    cases = spec.cases(shape_set, args.batch, quick=args.quick)
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"{cpu_model()}, {torch.get_num_threads()} threads"
    print(f"ganfast bench {args.op}: {shape_set} ({len(cases)} shapes, batch {args.batch}), {args.dtype} on "
          f"{args.device} ({where}); modes: {', '.join(args.modes)}; warmup {warmup}, repeats {repeats}; "
          f"torch {torch.__version__}, ganfast {ganfast.__version__}\n", flush=True)

    load = load_average()
    if device.type == "cpu" and load is not None and load > 0.5 * (os.cpu_count() or 1):
        print(f"warning: 1-minute load average is {load} on {os.cpu_count()} cores; other work will skew "
              "these timings (each row records the load average)\n", file=sys.stderr, flush=True)

    def show(case, rows):
        print(bench.format_case_table(rows) + "\n", flush=True)

    bench.run_bench(spec, device=device, dtype=getattr(torch, args.dtype), modes=args.modes, warmup=warmup,
                    repeats=repeats, compile=args.compile, cases=cases, out_dir=args.out, on_case=show)
    print(LEGEND)
    print(f"rows appended to {os.path.join(args.out, args.op + '.jsonl')}")
    return 0


# ---- ganfast train / generate / metrics ----

def _key_values(text: str) -> dict:
    """'a=1,b=0.5,c=relu' -> {'a': 1, 'b': 0.5, 'c': 'relu'} (JSON values where they parse)."""
    out = {}
    for item in filter(None, text.split(",")):
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise argparse.ArgumentTypeError(f"expected key=value pairs separated by commas, got {item!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


def _add_train(sub) -> None:
    from ganfast.training.amp import AMP_MODES
    from ganfast.training.augment import AUGMENT_PRESETS
    from ganfast.training.loop import AUGMENTATIONS, TRAINING_LOSSES
    from ganfast.training.run import DEFAULT_PRESET, RunOptions
    d = RunOptions()
    p = sub.add_parser(
        "train", help="train a GAN (default: a class-conditional DCGAN, cdcgan-32, on the built-in Fashion-MNIST, "
                      "about 8 min on a 2-core CPU)",
        description="Train a model preset on a dataset with its family's recipe (losses, regularizers, EMA); "
                    "writes a progress log, sample grids, checkpoints, metrics and curves to --out. Several "
                    "processes: launch with torchrun (see the README).")
    p.add_argument("--preset", default=DEFAULT_PRESET, help=f"model preset (default {DEFAULT_PRESET}; "
                   "`ganfast info` lists them)")
    p.add_argument("--data", default=None, help="'fashion-mnist' (default: the built-in set), a folder of images "
                   "(sub-folders = classes), a .zip of images or a .npz array file. Image-to-image presets: "
                   "pix2pix 'edges2fmnist' (default) or a folder of aligned A|B images or with A/ and B/; "
                   "cyclegan / unit 'fmnist:<class>-<class>' (default fmnist:sneaker-ankleboot) or a folder with "
                   "trainA/ trainB/ testA/ testB/; srgan any image set (default the built-in Fashion-MNIST)")
    p.add_argument("--out", default=d.out, help=f"run directory (default {d.out})")
    p.add_argument("--kimg", type=_float_above(0), default=d.kimg, help=f"thousands of real images to train on "
                   f"(default {d.kimg})")
    p.add_argument("--batch", type=_int_at_least(1), default=d.batch,
                   help="images per step, all processes (default: the preset's recipe batch for stylegan2-ada-*, "
                        "32 otherwise)")
    p.add_argument("--batch-gpu", type=_int_at_least(1), default=None,
                   help="images per forward pass in one process (gradient accumulation; default batch / processes)")
    p.add_argument("--snap", type=_float_above(0), default=d.snap_kimg,
                   help=f"checkpoint + metrics interval in kimg (default {d.snap_kimg}; a run always ends with one)")
    p.add_argument("--tick", type=_float_above(0), default=d.tick_kimg,
                   help=f"log line + sample grid interval in kimg (default {d.tick_kimg})")
    p.add_argument("--resume", default=None, help="'auto' (newest checkpoint in --out) or a checkpoint directory")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default=None, help="default: cuda when available")
    p.add_argument("--amp", choices=AMP_MODES, default="none", help="mixed precision (default none)")
    p.add_argument("--compile", action="store_true", help="torch.compile G and D for the main (not the "
                   "regularization) phases")
    p.add_argument("--cuda-graphs", action="store_true", help="capture each training phase in a CUDA graph after "
                   "a few warm-up steps and replay it (CUDA only; one process; amp none or bf16)")
    p.add_argument("--xflip", action="store_true", help="add mirrored images to the dataset")
    p.add_argument("--workers", type=_int_at_least(0), default=0, help="data loader processes (image folders / zips)")
    p.add_argument("--loss", choices=TRAINING_LOSSES, default=None, help="override the family's loss")
    p.add_argument("--lr", type=_float_above(0), default=None, help="override the learning rate (both networks)")
    p.add_argument("--r1-gamma", type=float, default=None, help="R1 weight (0: off)")
    p.add_argument("--pl-weight", type=float, default=None, help="path-length weight (0: off; StyleGAN2 only)")
    p.add_argument("--ema-kimg", type=float, default=None, help="G EMA half-life in kimg (0: off)")
    p.add_argument("--n-critic", type=_int_at_least(1), default=None, help="D steps per G step")
    p.add_argument("--label-smoothing", type=float, default=None, help="one-sided label smoothing (e.g. 0.1)")
    p.add_argument("--gp-weight", type=float, default=None, help="WGAN-GP / DRAGAN lambda")
    p.add_argument("--aug", choices=AUGMENTATIONS, default=None,
                   help="augment every image D sees (reals, fakes, the R1 pass): 'ada' (adaptive discriminator "
                        "augmentation, Karras et al. 2020), 'diffaugment' (Zhao et al. 2020: color,translation,"
                        "cutout) or 'none' (default)")
    p.add_argument("--target", type=float, default=None,
                   help="--aug ada: the target of E[sign(D(real))] that steers p (default 0.6)")
    p.add_argument("--aug-p", type=float, default=None,
                   help="--aug ada: the augmentation probability p; alone it fixes p (no adaptation), with "
                        "--target it is where the adaptive p starts (default 0)")
    p.add_argument("--aug-pipe", choices=tuple(AUGMENT_PRESETS), default=None,
                   help="--aug ada: the pipeline, NVIDIA's groups b(lit) g(eometric) c(olor) f(ilter) n(oise) "
                        "c(utout) (default bgc)")
    p.add_argument("--set", type=_key_values, default={}, metavar="K=V,...",
                   help="any other TrainingConfig field, e.g. --set r1_interval=8,replay_fraction=0.5,replay_size=512")
    p.add_argument("--model", type=_key_values, default={}, metavar="K=V,...",
                   help="preset builder overrides, e.g. --model channel_max=128")
    p.add_argument("--stage-kimg", type=_float_above(0), default=None,
                   help="growing presets (progan-*): thousands of images of fade-in and of stable training per "
                        "stage (default: the paper's 600 at 256 px and above, 10 below)")
    p.add_argument("--metrics", default=None, help="comma-separated metrics at each snapshot (default swd,fid,kid, "
                   "and class_acc for a conditional model; 'none' for none; see `ganfast metrics -h`)")
    p.add_argument("--metrics-images", type=_int_at_least(2), default=d.metrics_images,
                   help=f"real and generated images per evaluation (default {d.metrics_images})")
    p.add_argument("--inception-weights", default=None, help="TorchScript Inception file for inception_fid / is")
    p.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")
    p.add_argument("--tensorboard", dest="tensorboard", action="store_true", default=None,
                   help="require TensorBoard events in OUT/tensorboard (default: written when tensorboard is "
                        "installed)")
    p.add_argument("--no-tensorboard", dest="tensorboard", action="store_false", help="no TensorBoard events")
    p.set_defaults(handler=_train, parser=p)


def _metric_names(text: Optional[str], parser) -> Optional[tuple]:
    from ganfast.metrics import METRICS
    if text is None:
        return None
    if text in ("", "none"):
        return ()
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    valid = METRICS + ("img2img",)        # img2img: the image-to-image presets' held-out metrics, all at once
    unknown = [n for n in names if n not in valid]
    if unknown:
        parser.error(f"--metrics: unknown {unknown}; valid: {', '.join(valid)}")
    return names


def _resume_command(argv: Sequence[str]) -> str:
    """The command line that continues this run: the same arguments with --resume auto (under
    torchrun, to be given to the same torchrun launch)."""
    import shlex
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--resume":
            skip = True
        elif not arg.startswith("--resume="):
            kept.append(arg)
    arguments = shlex.join([*kept, "--resume", "auto"])
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        return f"torchrun <the same torchrun options> -m ganfast.cli {arguments}"
    return f"ganfast {arguments}"


def _train(args) -> int:
    from ganfast.training.run import RunOptions, TrainingStopped, run_training
    overrides = dict(args.set)
    for flag, field in (("loss", "loss"), ("lr", "lr"), ("r1_gamma", "r1_gamma"), ("pl_weight", "pl_weight"),
                        ("ema_kimg", "ema_kimg"), ("n_critic", "n_critic"), ("label_smoothing", "label_smoothing"),
                        ("gp_weight", "gp_weight"), ("aug", "aug"), ("target", "aug_target"), ("aug_p", "aug_p"),
                        ("aug_pipe", "aug_pipe")):
        value = getattr(args, flag)
        if value is not None:
            overrides[field] = value
    given = [f"--{flag.replace('_', '-')}" for flag in ("target", "aug_p", "aug_pipe") if getattr(args, flag) is not None]
    if given and overrides.get("aug") != "ada":
        args.parser.error(f"{', '.join(given)} need --aug ada")
    if args.aug_p is not None and args.target is None:      # --aug-p alone: p fixed at that value
        overrides["aug_target"] = None
    if "lr" in overrides:               # one learning rate for both networks, whatever the recipe split
        overrides.setdefault("g_lr", None)
        overrides.setdefault("d_lr", None)
    options = RunOptions(preset=args.preset, data=args.data, out=args.out, kimg=args.kimg, batch=args.batch,
                         batch_gpu=args.batch_gpu, snap_kimg=args.snap, tick_kimg=args.tick, resume=args.resume,
                         seed=args.seed, device=args.device, amp=args.amp, compile=args.compile,
                         cuda_graphs=args.cuda_graphs, xflip=args.xflip,
                         workers=args.workers, metrics=_metric_names(args.metrics, args.parser),
                         metrics_images=args.metrics_images, inception_weights=args.inception_weights,
                         model_overrides=args.model, training_overrides=overrides, progress=args.progress,
                         tensorboard=args.tensorboard, stage_kimg=args.stage_kimg)
    try:
        run_training(options)
    except (ValueError, FileNotFoundError) as e:
        print(f"ganfast train: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:      # a signal or a fault: it says what happened and how to continue
        several = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if e.rank == 0 or not e.signum:         # a signal stops every rank alike: rank 0 tells it
            prefix = f"[rank {e.rank}] " if several else ""
            print(prefix + e.message(_resume_command(args.argv)), file=sys.stderr, flush=True)
        if several:
            # Everything is written (checkpoints fsynced, logs closed) and said. Leave now: after a
            # lost peer or a stop, the interpreter's teardown of gloo's communication threads can
            # abort the process ("terminate called without an active exception", SIGABRT) and
            # replace this exit status with -6 (seen in tests/training/test_faults.py).
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(e.exit_code)
        return e.exit_code
    except OSError as e:              # before training started, e.g. --out cannot be written
        print(f"ganfast train: error: {e}", file=sys.stderr)
        return 1
    return 0


def _add_generate(sub) -> None:
    p = sub.add_parser("generate", help="images from a trained checkpoint: a grid, interpolation strips, class rows",
                       description="Sample the EMA generator of a checkpoint (or a run directory's newest).")
    p.add_argument("--ckpt", required=True, help="checkpoint directory, a run directory, or an NVIDIA "
                   "stylegan2-ada-pytorch network pickle (.pkl, read without running code from it)")
    p.add_argument("--n", type=_int_at_least(1), default=64, help="images in the grid (default 64)")
    p.add_argument("--truncation", type=_float_above(0), default=1.0,
                   help="truncation psi for style-based G, else the truncated-normal threshold (default 1: none)")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--out", default=None, help="PNG to write (default grid.png); with --input, the folder to "
                   "write the translations to (default translated/)")
    p.add_argument("--input", default=None, metavar="DIR",
                   help="image-to-image models (pix2pix, cyclegan, unit, srgan presets): translate every image "
                   "in DIR (resized to the model's input size) into --out, one PNG each, plus side_by_side.png")
    p.add_argument("--direction", choices=("AB", "BA"), default="AB",
                   help="with --input, for CycleGAN / UNIT: A->B (default) or B->A")
    p.add_argument("--interpolate", type=_int_at_least(2), default=None, metavar="STEPS",
                   help="instead of a grid: --n rows, each a strip of STEPS images between two latents")
    p.add_argument("--classes", action="store_true",
                   help="for a conditional G: one row per class, --n images per row")
    p.add_argument("--scale", type=_int_at_least(1), default=2, help="pixel upscale of the PNG (default 2)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.set_defaults(handler=_generate, parser=p)


def _generate(args) -> int:
    import torch

    from ganfast.training.run import full_resolution, generate_images, load_generator
    from ganfast.training.visualize import image_grid, label_rows, save_grid_png
    try:
        G, meta = load_generator(args.ckpt, device=args.device)
    except (ValueError, FileNotFoundError) as e:
        print(f"ganfast generate: error: {e}", file=sys.stderr)
        return 2
    from ganfast.training.img2img import img2img_task, translate_folder
    if args.input is not None or img2img_task(G) is not None:
        if args.input is None:
            args.parser.error("--input DIR: this is an image-to-image model; it translates a folder of images")
        if args.interpolate or args.classes:
            args.parser.error("--interpolate / --classes: not for image-to-image models")
        try:
            done = translate_folder(G, args.input, args.out or "translated", direction=args.direction,
                                    device=args.device)
        except (ValueError, FileNotFoundError) as e:
            print(f"ganfast generate: error: {e}", file=sys.stderr)
            return 2
        print(f"wrote {done['written']} images to {args.out or 'translated'} (side by side: {done['grid']})")
        return 0
    args.out = args.out or "grid.png"
    if args.classes and not getattr(G, "c_dim", 0):
        args.parser.error("--classes: this generator is unconditional")
    if args.interpolate:
        gen = torch.Generator().manual_seed(args.seed)
        ends = torch.randn(2, args.n, G.z_dim, generator=gen)
        t = torch.linspace(0, 1, args.interpolate).view(1, -1, 1)
        z = (ends[0][:, None] * (1 - t) + ends[1][:, None] * t).reshape(-1, G.z_dim)    # [n * steps, z_dim]
        c = (torch.arange(args.n) % G.c_dim).repeat_interleave(args.interpolate) if getattr(G, "c_dim", 0) else None
        images = generate_images(G, z.shape[0], device=args.device, c=c, truncation=args.truncation, z=z)
        ncols = args.interpolate
    elif args.classes:
        c = torch.arange(G.c_dim).repeat_interleave(args.n)
        images = generate_images(G, c.numel(), seed=args.seed, device=args.device, c=c, truncation=args.truncation)
        ncols = args.n
    else:
        images = generate_images(G, args.n, seed=args.seed, device=args.device, truncation=args.truncation)
        ncols = None
    grid = image_grid(full_resolution(images, G.img_resolution), ncols=ncols)   # a growing G mid-run: final size
    if args.classes:      # each row named by its class (the run's class names; indices for older runs)
        names = ((meta.get("config") or {}).get("run") or {}).get("class_names") or []
        grid = label_rows(grid, [str(names[k]) if k < len(names) else str(k) for k in range(G.c_dim)])
    path = save_grid_png(grid, args.out, scale=args.scale)
    print(f"wrote {path} ({images.shape[0]} images)")
    return 0


def _add_metrics(sub) -> None:
    p = sub.add_parser("metrics", help="quality metrics of a run's generator against its data",
                       description="Compute metrics for a run directory's newest checkpoint (or --ckpt) and append "
                                   "them to the run's metrics.jsonl.")
    p.add_argument("--run", required=True, help="run directory (or a checkpoint directory)")
    p.add_argument("--metrics", default=None, help="comma-separated: swd, fid, kid, pr, class_acc (classifier "
                   "features; class_acc: conditional models), inception_fid, inception_kid, is (need "
                   "--inception-weights); default swd,fid,kid,pr (and class_acc for a conditional model)")
    p.add_argument("--n", type=_int_at_least(2), default=2000, help="real and generated images (default 2000)")
    p.add_argument("--inception-weights", default=None, help="TorchScript Inception file")
    p.add_argument("--seed", type=_int_at_least(0), default=0)
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.set_defaults(handler=_metrics, parser=p)


def _metrics(args) -> int:
    from pathlib import Path

    from ganfast.data import open_dataset
    from ganfast.training.run import evaluate_generator, load_generator
    names = _metric_names(args.metrics, args.parser)
    if names is not None and not names:
        args.parser.error("--metrics: name at least one metric")
    try:
        G, meta = load_generator(args.run, device=args.device)
        run = meta["config"]["run"]
        from ganfast.training.img2img import img2img_task
        if img2img_task(G) is not None:        # held-out translations: every img2img metric at once
            if names not in (None, ("img2img",)):
                args.parser.error("--metrics: an image-to-image model's metrics come together as 'img2img'")
            import ganfast.models as models
            from ganfast.metrics.img2img import evaluate_img2img
            from ganfast.training.img2img import open_run_data
            family = models.get_preset(run["preset"]).family
            held_out = open_run_data(family, G, run.get("data"), split="test")
            values = evaluate_img2img(G, held_out, n=args.n, device=args.device, seed=args.seed)
            names = ()
        elif names is None:
            from ganfast.training.run import default_metrics
            chosen = default_metrics(G, run.get("data"))
            names = chosen[:3] + ("pr",) + chosen[3:]          # swd, fid, kid, pr (, class_acc)
        if names:
            dataset = open_dataset(run.get("data"), resolution=G.img_resolution, channels=G.img_channels,
                                   xflip=run.get("xflip", False))
            values = evaluate_generator(G, dataset, names, args.n, seed=args.seed, device=args.device,
                                        inception_weights=args.inception_weights)
    except (ValueError, FileNotFoundError) as e:
        print(f"ganfast metrics: error: {e}", file=sys.stderr)
        return 2
    row = {"kimg": (meta.get("cur_nimg") or 0) / 1000, "step": meta.get("step"), "tag": "ganfast metrics",
           "n": args.n, **values}
    run_dir = Path(args.run)
    if (run_dir / "run.json").exists():
        with open(run_dir / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
    print(json.dumps(row, indent=2))
    return 0


# ---- entry point ----

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfast", description="Fused GAN kernels for PyTorch.")
    parser.add_argument("--version", action="version", version=f"ganfast {ganfast.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_info(sub)
    _add_bench(sub)
    _add_train(sub)
    _add_generate(sub)
    _add_metrics(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `ganfast ARGS` (argv defaults to sys.argv[1:]); returns the exit code.

    Bad arguments exit through argparse (SystemExit with code 2 and a usage message).
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    args.argv = argv            # as typed, for messages that give a command to run next
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`ganfast info | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
