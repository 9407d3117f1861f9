"""Timing and peak memory of one benchmark step.

A step is (setup, run): setup prepares state untimed (for a backward step, the forward that
records the graph), run(state) is what is timed. CUDA: torch.cuda.Event pairs around run, read
after one synchronize, with L2 flushed before each repeat so a small input is not timed out of a
warm cache. CPU: time.perf_counter around run (CPU caches are not flushed).
"""
from __future__ import annotations

import dataclasses
import time
from typing import Any, Callable, Optional

import numpy as np
import torch

Setup = Callable[[], Any]
Run = Callable[[Any], Any]

# Larger than the L2 of any current GPU (H100: 50 MB, H200: 60 MB, B200: 126 MB).
_L2_FLUSH_BYTES = 256 * 1024 * 1024

# CPU peak memory is not measured: the CPU allocator keeps no statistics, tracemalloc does not see
# torch's allocations, and an RSS delta mostly shows the allocator's caching. Rows say so.
PEAK_MEMORY_METHOD = {
    "cuda": "torch.cuda.max_memory_allocated during run, minus memory allocated before it (MiB)",
    "cpu": "not measured on CPU (no allocator statistics)",
}


@dataclasses.dataclass(frozen=True)
class Timing:
    median_ms: float
    p20_ms: float
    p80_ms: float
    repeats: int
    warmup: int

    @classmethod
    def from_samples(cls, samples_ms, warmup: int) -> "Timing":
        p20, median, p80 = np.percentile(np.asarray(samples_ms, dtype=np.float64), [20, 50, 80])
        return cls(float(median), float(p20), float(p80), len(samples_ms), warmup)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def first_call_seconds(setup: Setup, run: Run, device: torch.device) -> float:
    """Wall time of one setup + run, synchronized: a compiled function's compile time."""
    synchronize(device)
    start = time.perf_counter()
    run(setup())
    synchronize(device)
    return time.perf_counter() - start


def measure(setup: Setup, run: Run, device: torch.device, *, warmup: int, repeats: int) -> Timing:
    """Run the step `warmup` times untimed, then `repeats` times timed; median, p20, p80 in ms."""
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        run(setup())
    if device.type == "cuda":
        samples = _measure_cuda(setup, run, device, repeats)
    else:
        samples = []
        for _ in range(repeats):
            state = setup()
            start = time.perf_counter()
            run(state)
            samples.append((time.perf_counter() - start) * 1e3)
            del state
    return Timing.from_samples(samples, warmup)


def _measure_cuda(setup: Setup, run: Run, device: torch.device, repeats: int) -> list[float]:
    flush = torch.empty(_L2_FLUSH_BYTES, dtype=torch.uint8, device=device)
    events = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(repeats)]
    synchronize(device)
    for start, end in events:
        state = setup()
        flush.zero_()
        start.record()
        run(state)
        end.record()
        del state
    synchronize(device)
    return [start.elapsed_time(end) for start, end in events]


def peak_memory_mb(setup: Setup, run: Run, device: torch.device) -> Optional[float]:
    """Memory one run needs above what is allocated before it (MiB); None on CPU (see above)."""
    if device.type != "cuda":
        return None
    state = setup()
    synchronize(device)
    baseline = torch.cuda.memory_allocated(device)
    torch.cuda.reset_peak_memory_stats(device)
    run(state)
    synchronize(device)
    peak = torch.cuda.max_memory_allocated(device) - baseline
    del state
    return peak / 2**20
