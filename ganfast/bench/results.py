"""Benchmark rows as data: the row schema, JSON Lines files, and the tables printed from rows."""
from __future__ import annotations

import json
import os
from typing import Iterable, Optional

from ganfast.bench.spec import MODE_SHORT

# Every row has every field, in this order (None where it does not apply).
ROW_FIELDS = (
    "op", "shape_set", "shape_label", "shape", "params", "dtype", "device", "backend", "mode",
    "status",          # "ok" or "skipped"
    "reason",          # skipped: "<ExceptionType>: message"
    "error_type",      # skipped: the exception's qualified class name
    "median_ms", "p20_ms", "p80_ms", "repeats", "warmup",
    "gbps",            # bytes_moved / median
    "bytes_moved", "bytes_model",
    "flops",           # the op's FLOP model for this mode, where the spec has one (matmul-heavy ops)
    "tflops",          # flops / median
    "ratio_vs_eager",    # eager-reference median / this median (speedup; > 1 is faster)
    "ratio_vs_compile",  # compile-reference median / this median
    "compile_time_s",  # compile-reference only: its first call, a compile from scratch (caches off), untimed
    "first_call_s",    # every backend: the first call (lazy loading, JIT), excluded from timing
    "peak_mem_mb", "peak_mem_method",
    "load_avg",        # 1-minute load average as the row was measured, this run's own threads included
    "machine", "ganfast", "torch", "triton", "python", "git_sha", "git_dirty",
    "timestamp", "run_id",
)


def complete_row(row: dict) -> dict:
    """The row with exactly ROW_FIELDS, in order; missing fields are None, unknown ones an error."""
    unknown = set(row) - set(ROW_FIELDS)
    if unknown:
        raise ValueError(f"benchmark row has fields outside ROW_FIELDS: {sorted(unknown)}")
    return {k: row.get(k) for k in ROW_FIELDS}


def append_rows(path: str, rows: Iterable[dict]) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "a") as f:
        for row in rows:
            f.write(json.dumps(row, sort_keys=False) + "\n")


def load_rows(path: str) -> list[dict]:
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def latest_rows(rows: Iterable[dict]) -> list[dict]:
    """The most recent row for each (op, device, dtype, shape set, shape, backend, mode)."""
    latest: dict[tuple, dict] = {}
    for row in rows:
        key = (row["op"], row["device"], row["dtype"], row["shape_set"], row["shape_label"],
               tuple(row["shape"]), row["backend"], row["mode"])
        if key not in latest or (row["timestamp"], row["run_id"]) >= (latest[key]["timestamp"], latest[key]["run_id"]):
            latest[key] = row
    return list(latest.values())


# ---- text tables ----

def _ms(v: float) -> str:
    if v >= 100:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.4f}" if v < 0.01 else f"{v:.3f}"


def _x(v: Optional[float]) -> str:
    return "" if v is None else f"{v:.2f}x"


LEGEND = ("ms: median [p20-p80] of the timed repeats; GB/s: the op's bytes-moved model / median; "
          "vs eager, vs compile: speedup over the eager / torch.compile'd reference (> 1 is faster); "
          "compile s: first call of the compiled reference, excluded from its timing")


def format_case_table(rows: list[dict], reason_width: int = 60) -> str:
    """One case's rows as text: a header line, then per mode one line per backend."""
    first = rows[0]
    params = " ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in first["params"].items())
    head = f"{first['shape_set']} {first['shape_label']}  {list(first['shape'])}  {first['dtype']} {first['device']}  {params}"
    cols = ("mode", "backend", "median ms", "p20-p80 ms", "GB/s", "vs eager", "vs compile", "compile s")
    table = []
    last_mode = None
    for row in rows:
        mode = MODE_SHORT.get(row["mode"], row["mode"]) if row["mode"] != last_mode else ""
        last_mode = row["mode"]
        if row["status"] != "ok":
            reason = row["reason"] or ""
            if len(reason) > reason_width:
                reason = reason[:reason_width - 3] + "..."
            table.append((mode, row["backend"], f"skipped: {reason}"))
            continue
        table.append((
            mode, row["backend"], _ms(row["median_ms"]), f"{_ms(row['p20_ms'])}-{_ms(row['p80_ms'])}",
            "" if row["gbps"] is None else f"{row['gbps']:.1f}",
            _x(row["ratio_vs_eager"]), _x(row["ratio_vs_compile"]),
            "" if row["compile_time_s"] is None else f"{row['compile_time_s']:.1f}",
        ))
    widths = [max([len(c)] + [len(r[i]) for r in table if i < 2 or len(r) == len(cols)]) for i, c in enumerate(cols)]
    left = (0, 1)  # text columns; the numbers are right-aligned

    def line(cells):
        if len(cells) < len(cols):  # a skipped row: mode, backend, then the reason across the rest
            return "  " + "  ".join([cells[0].ljust(widths[0]), cells[1].ljust(widths[1]), cells[2]]).rstrip()
        return "  " + "  ".join(c.ljust(w) if i in left else c.rjust(w)
                                for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([head, line(cols)] + [line(r) for r in table])
