"""The benchmark harness: every case, mode and backend of an op side by side, as data rows.

For each case and mode it times, in one process and on the same inputs: the eager reference,
torch.compile(reference) (its compile time measured apart from its steady state), and each
ganfast backend. A backend that cannot run is recorded as a skipped row carrying the exception's
type and message; it never becomes NaN timings and never stops the other backends.
"""
from __future__ import annotations

import contextlib
import datetime
import os
import warnings
from typing import Callable, Iterable, Optional, Sequence

import torch

from ganfast.bench import results, timing
from ganfast.bench.environment import environment, load_average
from ganfast.bench.spec import COMPILE, DEFAULT_MODES, EAGER, MODES, BenchCase, BenchSpec
from ganfast.info import dtype_name

# (warmup, repeats) by device; --quick uses QUICK.
DEFAULT_REPEATS = {"cpu": (3, 20), "cuda": (10, 100)}
QUICK = (1, 3)


def default_repeats(device: torch.device, quick: bool = False) -> tuple[int, int]:
    return QUICK if quick else DEFAULT_REPEATS.get(device.type, DEFAULT_REPEATS["cpu"])


def _sig(v: Optional[float], digits: int = 6) -> Optional[float]:
    return None if v is None else float(f"{v:.{digits}g}")


def _utc_now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


# ---- one step per mode ----

def _leaves(inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
    """Fresh autograd leaves: floating inputs require grad, the rest pass through."""
    return [t.detach().requires_grad_(t.is_floating_point()) for t in inputs]


def make_step(mode: str, fn: Callable[..., torch.Tensor], inputs: Sequence[torch.Tensor],
              grad_out: torch.Tensor) -> tuple[timing.Setup, timing.Run]:
    """(setup, run) of `mode` for fn on inputs; grad_out is the incoming gradient, like fn's output."""
    if mode == "forward":
        def setup():
            return None

        def run(_):
            with torch.no_grad():
                fn(*inputs)
    elif mode == "backward":
        def setup():
            leaves = _leaves(inputs)
            return fn(*leaves), [t for t in leaves if t.requires_grad]

        def run(state):
            out, wrt = state
            torch.autograd.grad(out, wrt, grad_out)
    elif mode == "forward+backward":
        def setup():
            return _leaves(inputs)

        def run(leaves):
            out = fn(*leaves)
            torch.autograd.grad(out, [t for t in leaves if t.requires_grad], grad_out)
    elif mode == "double-backward":
        # R1: the gradient of the first input (the image or activation) with create_graph, then
        # the gradient of its squared norm w.r.t. every input and the incoming gradient (which,
        # inside a discriminator, depends on the layers after this one).
        def setup():
            return _leaves(inputs), grad_out.detach().requires_grad_(True)

        def run(state):
            leaves, g = state
            out = fn(*leaves)
            (g_first,) = torch.autograd.grad(out, leaves[0], g, create_graph=True)
            wrt = [t for t in leaves if t.requires_grad] + [g]
            torch.autograd.grad(g_first.square().sum(), wrt, allow_unused=True)
    else:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return setup, run


# ---- one case ----

def _compiled(reference: Callable) -> Callable:
    # A fresh dynamo cache per (case, mode): compile time is measured from scratch, and a run
    # over many shapes never reaches the recompile limit (past it dynamo would silently run eager).
    torch.compiler.reset()
    return torch.compile(reference, dynamic=False)


@contextlib.contextmanager
def _cold_compile_caches():
    """Inductor's and AOTAutograd's on-disk caches off, so compile_time_s is a compile from scratch
    and does not depend on what earlier runs left in the cache directory."""
    with torch.compiler.config.patch(force_disable_caches=True), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="dynamo_pgo force disabled")
        yield


def _skipped(err: BaseException) -> dict:
    t = type(err)
    return {"status": "skipped", "reason": f"{t.__name__}: {err}".strip(),
            "error_type": f"{t.__module__}.{t.__qualname__}"}


def _time_backend(name: str, make_fn: Callable[[], Callable], mode: str, inputs, grad_out,
                  device: torch.device, warmup: int, repeats: int) -> dict:
    """Timing fields of one backend in one mode, or a skipped row's fields when it fails."""
    try:
        setup, run = make_step(mode, make_fn(), inputs, grad_out)
        with _cold_compile_caches() if name == COMPILE else contextlib.nullcontext():
            first_call_s = timing.first_call_seconds(setup, run, device)
        t = timing.measure(setup, run, device, warmup=warmup, repeats=repeats)
        peak = timing.peak_memory_mb(setup, run, device)
    except Exception as err:  # recorded in the row (type and message), shown in the table
        if device.type == "cuda":
            torch.cuda.empty_cache()  # after an out-of-memory error, let the next backend start clean
        return _skipped(err)
    return {
        "status": "ok", "reason": None, "error_type": None,
        "median_ms": _sig(t.median_ms), "p20_ms": _sig(t.p20_ms), "p80_ms": _sig(t.p80_ms),
        "repeats": t.repeats, "warmup": t.warmup,
        "first_call_s": _sig(first_call_s, 4),
        "compile_time_s": _sig(first_call_s, 4) if name == COMPILE else None,
        "peak_mem_mb": _sig(peak, 4),
    }


def _ratio(baseline: Optional[dict], row: dict) -> Optional[float]:
    """baseline median / row median (a speedup: > 1 means row is faster), None if either is missing."""
    if baseline is None or baseline["status"] != "ok" or row["status"] != "ok":
        return None
    return _sig(baseline["median_ms"] / row["median_ms"], 4)


def run_case(spec: BenchSpec, case: BenchCase, *, device: torch.device, dtype: torch.dtype,
             modes: Sequence[str] = DEFAULT_MODES, warmup: int, repeats: int, compile: bool = True,
             backends: Optional[Sequence[str]] = None, env: Optional[dict] = None, run_id: str = "",
             seed: int = 0) -> list[dict]:
    """Rows for one case: for each mode, eager reference, compiled reference, each backend."""
    for mode in modes:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    env = env if env is not None else environment(device)
    backends = list(spec.backends(device) if backends is None else backends)
    gen = torch.Generator(device=device).manual_seed(seed)
    inputs = spec.make_inputs(case, dtype, device, gen)
    reference = spec.reference(case)
    with torch.no_grad():
        out = reference(*inputs)
    grad_out = torch.randn(out.shape, generator=gen, dtype=out.dtype, device=device)
    del out

    candidates: list[tuple[str, Callable[[], Callable]]] = [(EAGER, lambda: reference)]
    if compile:
        candidates.append((COMPILE, lambda: _compiled(reference)))
    candidates += [(name, lambda name=name: spec.ganfast(case, name)) for name in backends]

    rows = []
    for mode in modes:
        nbytes = spec.bytes_moved(case, mode, dtype)
        nflops = spec.flops(case, mode) if spec.flops is not None else None
        mode_rows = []
        for name, make_fn in candidates:
            row = {
                "op": spec.op, "shape_set": case.shape_set, "shape_label": case.label, "shape": list(case.shape),
                "params": dict(case.params), "dtype": dtype_name(dtype), "device": device.type,
                "backend": name, "mode": mode,
            }
            row.update(_time_backend(name, make_fn, mode, inputs, grad_out, device, warmup, repeats))
            ok = row["status"] == "ok"
            row["bytes_moved"] = nbytes
            row["bytes_model"] = spec.bytes_model
            row["gbps"] = _sig(nbytes / (row["median_ms"] * 1e-3) / 1e9, 4) if ok and nbytes else None
            row["flops"] = nflops
            row["tflops"] = _sig(nflops / (row["median_ms"] * 1e-3) / 1e12, 4) if ok and nflops else None
            row["peak_mem_method"] = timing.PEAK_MEMORY_METHOD.get(device.type, timing.PEAK_MEMORY_METHOD["cpu"])
            row["load_avg"] = load_average()
            row["timestamp"] = _utc_now()
            mode_rows.append(row)
        by_backend = {r["backend"]: r for r in mode_rows}
        for row in mode_rows:
            row["ratio_vs_eager"] = _ratio(by_backend.get(EAGER), row)
            row["ratio_vs_compile"] = _ratio(by_backend.get(COMPILE), row)
        rows += mode_rows
    return [results.complete_row({**row, **env, "run_id": run_id}) for row in rows]


# ---- a whole run ----

def run_bench(spec: BenchSpec, *, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
              shape_set: Optional[str] = None, batch: int = 4, modes: Sequence[str] = DEFAULT_MODES,
              quick: bool = False, warmup: Optional[int] = None, repeats: Optional[int] = None,
              compile: bool = True, backends: Optional[Sequence[str]] = None,
              cases: Optional[Iterable[BenchCase]] = None, out_dir: Optional[str] = None,
              on_case: Optional[Callable[[BenchCase, list[dict]], None]] = None) -> list[dict]:
    """Benchmark `spec` over a shape set (or explicit `cases`); return every row.

    With out_dir, each case's rows are appended to out_dir/<op>.jsonl as soon as the case is done,
    so an interrupted run keeps what it measured. on_case(case, rows) is called after each case.
    """
    device = torch.device(device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but torch.cuda.is_available() is False")
    default_warmup, default_reps = default_repeats(device, quick)
    warmup = default_warmup if warmup is None else warmup
    repeats = default_reps if repeats is None else repeats
    if cases is None:
        cases = spec.cases(shape_set or spec.default_shape_set, batch, quick=quick)
    env = environment(device)
    run_id = f"{datetime.datetime.now(datetime.timezone.utc):%Y%m%dT%H%M%SZ}-{os.getpid()}"
    out_path = os.path.join(out_dir, f"{spec.op}.jsonl") if out_dir is not None else None
    all_rows = []
    for case in cases:
        rows = run_case(spec, case, device=device, dtype=dtype, modes=modes, warmup=warmup, repeats=repeats,
                        compile=compile, backends=backends, env=env, run_id=run_id)
        if out_path is not None:
            results.append_rows(out_path, rows)
        if on_case is not None:
            on_case(case, rows)
        all_rows += rows
    return all_rows
