"""Bar charts of the speedups recorded in bench/results/*.jsonl.

    python bench/plot.py [--results bench/results] [--out DIR]

One PNG per (op, device, dtype), <op>_<device>_<dtype>.png: a column per mode; the top row is each
backend's speedup over the eager reference, the bottom row over torch.compile(reference), per
shape. Only the latest row for each (shape, backend, mode) is drawn; skipped rows have no bar.
Needs matplotlib (`pip install 'ganfast[bench]'`).
"""
from __future__ import annotations

import argparse
import glob
import os
import sys
from collections import defaultdict

from ganfast.bench import COMPILE, EAGER, MODES, latest_rows, load_rows
from ganfast.bench.spec import MODE_SHORT

PANELS = (("ratio_vs_eager", EAGER, "speedup vs eager reference"),
          ("ratio_vs_compile", COMPILE, "speedup vs torch.compile(reference)"))


def _pyplot():
    try:
        import matplotlib
    except ImportError:
        raise SystemExit("bench/plot.py needs matplotlib: pip install 'ganfast[bench]' (or pip install matplotlib)") from None
    matplotlib.use("Agg")  # files only; no display needed
    import matplotlib.pyplot as plt
    return plt


def _case_key(row: dict) -> tuple:
    return row["shape_set"], row["shape_label"], tuple(row["shape"])


def _case_labels(keys: list[tuple]) -> list[str]:
    several_sets = len({k[0] for k in keys}) > 1
    several_batches = len({k[2][0] for k in keys}) > 1
    return [(f"{s}\n" if several_sets else "") + label + (f"\nN={shape[0]}" if several_batches else "")
            for s, label, shape in keys]


def plot_group(plt, rows: list[dict], path: str) -> None:
    """One figure for the rows of one (op, device, dtype)."""
    from matplotlib import ticker
    modes = [m for m in MODES if any(r["mode"] == m for r in rows)]
    cases = list(dict.fromkeys(_case_key(r) for r in rows))  # the order the rows were measured in
    backends = list(dict.fromkeys(r["backend"] for r in rows))
    value = {(_case_key(r), r["backend"], r["mode"], field): r[field]
             for r in rows if r["status"] == "ok" for field, _, _ in PANELS}

    color = {b: f"C{i}" for i, b in enumerate(backends)}  # one color per backend across panels
    fig, axes = plt.subplots(len(PANELS), len(modes), squeeze=False,
                             figsize=(max(4.0, 0.9 * len(cases) + 1.5) * len(modes), 3.6 * len(PANELS)))
    for i, (field, baseline, ylabel) in enumerate(PANELS):
        shown = [b for b in backends if b != baseline]
        width = 0.8 / max(1, len(shown))
        for j, mode in enumerate(modes):
            ax = axes[i][j]
            drawn = False
            for k, backend in enumerate(shown):
                bars = [(x + (k - (len(shown) - 1) / 2) * width, value.get((c, backend, mode, field)))
                        for x, c in enumerate(cases)]
                bars = [(x, h) for x, h in bars if h is not None]
                if bars:
                    # from 1 up for a speedup, from 1 down for a slowdown
                    ax.bar([x for x, _ in bars], [h - 1 for _, h in bars], width, bottom=1, color=color[backend])
                    drawn = True
            if drawn:
                ax.set_yscale("log")  # speedups: 2x faster and 2x slower sit symmetric about 1
                ax.yaxis.set_major_locator(ticker.LogLocator(base=10, subs=(1, 2, 5)))
                ax.yaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
                ax.yaxis.set_minor_formatter(ticker.NullFormatter())
            else:
                ax.text(0.5, 0.5, f"no {baseline} timings", ha="center", va="center", transform=ax.transAxes)
                ax.set_yticks([])
            ax.axhline(1.0, color="black", linewidth=0.8)
            ax.set_xticks(range(len(cases)), _case_labels(cases), fontsize=8)
            ax.set_title(f"{MODE_SHORT[mode]}: {ylabel}", fontsize=9)
    handles = [plt.Rectangle((0, 0), 1, 1, color=color[b]) for b in backends]
    fig.legend(handles, backends, loc="lower center", ncol=len(backends), fontsize=8)
    first = rows[0]
    where = first["machine"].get("gpu") or f"{first['machine'].get('cpu')}, {first['machine'].get('torch_threads')} threads"
    fig.suptitle(f"{first['op']}  {first['device']} ({where})  {first['dtype']}  "
                 f"torch {first['torch']}  ganfast {first['ganfast']} @ {str(first['git_sha'])[:8]}", fontsize=10)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot(results_dir: str, out_dir: str | None = None) -> list[str]:
    """Draw every (op, device, dtype) found in results_dir/*.jsonl; return the PNG paths."""
    plt = _pyplot()
    out_dir = out_dir or results_dir
    rows = [r for path in sorted(glob.glob(os.path.join(results_dir, "*.jsonl"))) for r in load_rows(path)]
    groups = defaultdict(list)
    for row in latest_rows(rows):
        groups[row["op"], row["device"], row["dtype"]].append(row)
    os.makedirs(out_dir, exist_ok=True)
    written = []
    for (op, device, dtype), group in sorted(groups.items()):
        path = os.path.join(out_dir, f"{op}_{device}_{dtype}.png")
        plot_group(plt, group, path)
        written.append(path)
    return written


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--results", default=os.path.join("bench", "results"), help="directory of <op>.jsonl files")
    parser.add_argument("--out", default=None, help="where the PNGs go (default: the results directory)")
    args = parser.parse_args(argv)
    written = plot(args.results, args.out)
    if not written:
        print(f"no rows in {args.results}/*.jsonl; run `ganfast bench OP` first", file=sys.stderr)
        return 1
    print("\n".join(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
