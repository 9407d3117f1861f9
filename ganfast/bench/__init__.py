"""Benchmark harness shared by every op: `ganfast bench OP` and bench/<op>.py run it.

An op supplies a BenchSpec in ganfast/bench/<op>.py (its real layer shapes, reference, ganfast
function per backend and bytes-moved model) and is listed in SPECS. The harness times eager
reference, torch.compile(reference) and each ganfast backend side by side and writes JSON Lines
rows (see ganfast.bench.results.ROW_FIELDS).
"""
from __future__ import annotations

import importlib

from ganfast.bench.harness import default_repeats, run_bench, run_case
from ganfast.bench.results import ROW_FIELDS, append_rows, format_case_table, latest_rows, load_rows
from ganfast.bench.spec import COMPILE, DEFAULT_MODES, EAGER, MODES, BenchCase, BenchSpec

# op -> module defining SPEC; imported only when that op is benchmarked.
SPECS = {
    "bias_act": "ganfast.bench.bias_act",
    "adain_noise": "ganfast.bench.adain_noise",
    "upfirdn2d": "ganfast.bench.upfirdn2d",
    "modulated_conv2d": "ganfast.bench.modulated_conv2d",
    "spectral_norm": "ganfast.bench.spectral_norm",
    "power_iteration": "ganfast.bench.power_iteration",
    "conditional_batch_norm": "ganfast.bench.conditional_batch_norm",
    "self_attention": "ganfast.bench.self_attention",
}


def known_ops() -> tuple[str, ...]:
    return tuple(SPECS)


def get_spec(op: str) -> BenchSpec:
    if op not in SPECS:
        raise ValueError(f"no benchmark for op {op!r}; known ops: {', '.join(SPECS)}")
    return importlib.import_module(SPECS[op]).SPEC


__all__ = [
    "BenchCase", "BenchSpec", "MODES", "DEFAULT_MODES", "EAGER", "COMPILE", "ROW_FIELDS", "SPECS",
    "known_ops", "get_spec", "run_bench", "run_case", "default_repeats",
    "append_rows", "load_rows", "latest_rows", "format_case_table",
]
