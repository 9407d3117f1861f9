"""The `ganfast` command: `ganfast info`, `ganfast bench OP`.

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


def _int_at_least(minimum: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value
    parse.__name__ = f"integer >= {minimum}"  # argparse names the type in its messages
    return parse


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


# ---- entry point ----

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ganfast", description="Fused GAN kernels for PyTorch.")
    parser.add_argument("--version", action="version", version=f"ganfast {ganfast.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    _add_info(sub)
    _add_bench(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run `ganfast ARGS` (argv defaults to sys.argv[1:]); returns the exit code.

    Bad arguments exit through argparse (SystemExit with code 2 and a usage message).
    """
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (`ganfast info | head`): stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
