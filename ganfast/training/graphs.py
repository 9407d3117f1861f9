"""Training phases as CUDA graphs (TrainingConfig(cuda_graphs=True), `ganfast train --cuda-graphs`).

At GAN layer sizes a training phase launches hundreds of small kernels and the host, not the GPU,
sets the pace. A CUDA graph records a phase's kernels once and replays them with one launch. What
that asks of a phase, and how the trainer meets it:

    no host synchronization      a skipped step is a device-side flag (ganfast.training.optim),
                                 statistics stay on the device until a tick reads them
    the same work every call     the lazy-regularization schedule is decided on the host, around
                                 the phases; nothing inside a phase branches on tensor values
    inputs at fixed addresses    StaticInputs: reals, labels, latents, EMA beta are copied into
                                 persistent buffers before the phase runs (fill, then run)
    randomness the graph redraws latents come from a generator on the device, drawn outside the
                                 graph into the static buffers; noise inputs and penalty sampling
                                 inside a phase use torch's default CUDA generator, which
                                 torch.cuda.graph registers so every replay draws afresh

The split "fill the static buffers, then run the phase function" is the same with and without
graphs, so the CPU runs (and tests) exactly the code that is captured on a GPU. PhaseRunner is the
only place that differs: without graphs it calls the phase function; with graphs it runs the first
`GRAPH_WARMUP_CALLS` calls eagerly on a side stream (cuDNN / cuBLAS / Triton autotuning, lazily
created optimizer state and autograd buffers all happen there, before capture, as torch's CUDA
graph docs require), captures the next call on that same stream and replays it from then on.

Rules a captured phase lives by (see torch's "CUDA Graphs" notes):
  - gradients are set to None before the phase, so the captured backward allocates them in the
    graph's private memory pool and each replay overwrites (not accumulates) them;
  - the optimizer's state exists before capture (the warm-up calls step it), and is built
    capturable, so its step counter lives on the device;
  - each graph has its own memory pool: phases replay in an order (D reg every r1_interval steps)
    that differs from their capture order, which rules out sharing one pool;
  - capture mode "thread_local": a data loader thread may pin host memory while a phase is captured;
  - anything that replaces a tensor a graph reads (loading an optimizer state dict) invalidates the
    graphs: `reset()` and they are captured again after a new warm-up.
"""
from __future__ import annotations

import warnings
from typing import Callable, Mapping, Optional, Union

import torch

__all__ = ["GRAPH_WARMUP_CALLS", "PhaseRunner", "StaticInputs"]

GRAPH_WARMUP_CALLS = 3      # eager calls of a phase before it is captured (torch's docs use 3)

Nested = Union[torch.Tensor, Mapping[str, torch.Tensor], None]


class StaticInputs:
    """Persistent buffers a phase reads its inputs from. `fill(name, value)` copies value (a tensor,
    a dict of tensors, or None) into the buffer of that name, allocated like value at the first
    fill; later values must keep its shape, dtype and device (what a captured graph reads)."""

    def __init__(self):
        self._buffers: dict[str, Nested] = {}

    def fill(self, name: str, value: Nested, dtype: Optional[torch.dtype] = None,
             device: Optional[torch.device] = None) -> Nested:
        """Copy `value` into buffer `name` (converted to dtype / device when given; the copy does
        not block the host) and return the buffer."""
        if value is None:
            if self._buffers.get(name) is not None:
                raise ValueError(f"StaticInputs.fill: {name!r} was a tensor and is now None")
            self._buffers[name] = None
            return None
        if isinstance(value, Mapping):
            held = self._buffers.setdefault(name, {})
            if held and set(held) != set(value):
                raise ValueError(f"StaticInputs.fill: {name!r} had keys {sorted(held)}, now {sorted(value)}")
            for key, v in value.items():
                held[key] = self._copy_into(f"{name}[{key!r}]", held.get(key), v, dtype, device)
            return held
        buffer = self._buffers[name] = self._copy_into(name, self._buffers.get(name), value, dtype, device)
        return buffer

    def fill_scalar(self, name: str, value: float, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A 0-dim buffer set to a Python number (a fill kernel: no host-to-device copy)."""
        buffer = self._buffers.get(name)
        if buffer is None:
            buffer = self._buffers[name] = torch.empty((), dtype=dtype, device=device)
        return buffer.fill_(value)

    @staticmethod
    def _copy_into(name: str, buffer: Optional[torch.Tensor], value: torch.Tensor, dtype: Optional[torch.dtype],
                   device: Optional[torch.device]) -> torch.Tensor:
        dtype = value.dtype if dtype is None else dtype
        if buffer is None:
            buffer = torch.empty(value.shape, dtype=dtype, device=value.device if device is None else device)
        elif buffer.shape != value.shape or buffer.dtype != dtype:
            raise ValueError(f"StaticInputs.fill: {name!r} must keep shape {list(buffer.shape)} and {buffer.dtype}; "
                             f"got {list(value.shape)} as {dtype}")
        return buffer.copy_(value, non_blocking=True)

    def __getitem__(self, name: str) -> Nested:
        return self._buffers[name]


class PhaseRunner:
    """Runs one phase: `fn()` reads its inputs from StaticInputs and returns {stat name: 0-dim
    tensor}. A call returns (names, values [len(names)] float32, or None without stats); with
    graphs the values are a copy of the graph's output, so the caller may keep them."""

    def __init__(self, name: str, fn: Callable[[], Mapping[str, torch.Tensor]], device: torch.device,
                 cuda_graphs: bool, warmup: int = GRAPH_WARMUP_CALLS):
        if cuda_graphs and device.type != "cuda":
            raise ValueError(f"PhaseRunner({name!r}): CUDA graphs need a CUDA device, got {device}")
        self.name, self.fn, self.device = name, fn, device
        self.cuda_graphs, self.warmup = cuda_graphs, warmup
        self.stream = torch.cuda.Stream(device) if cuda_graphs else None
        self.reset()

    def reset(self) -> None:
        """Forget the captured graph (it is captured again after `warmup` eager calls)."""
        self.eager_calls = 0
        self.graph: Optional["torch.cuda.CUDAGraph"] = None
        self._names: tuple = ()
        self._values: Optional[torch.Tensor] = None

    @property
    def captured(self) -> bool:
        return self.graph is not None

    def _run(self) -> tuple[tuple, Optional[torch.Tensor]]:
        stats = self.fn()
        names = tuple(stats)
        values = torch.stack([stats[k].detach().float().reshape(()) for k in names]) if names else None
        return names, values

    def __call__(self) -> tuple[tuple, Optional[torch.Tensor]]:
        if not self.cuda_graphs:
            return self._run()
        main = torch.cuda.current_stream(self.device)
        if self.graph is None and self.eager_calls < self.warmup:
            self.eager_calls += 1
            self.stream.wait_stream(main)
            with torch.cuda.stream(self.stream), warnings.catch_warnings():
                # capturable optimizers warn when they step outside a graph; these steps are the warm-up
                warnings.filterwarnings("ignore", message=".*capturable=True.*")
                out = self._run()
            main.wait_stream(self.stream)
            return out
        if self.graph is None:
            self.stream.wait_stream(main)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, stream=self.stream, capture_error_mode="thread_local"):
                self._names, self._values = self._run()
            main.wait_stream(self.stream)
            self.graph = graph
        self.graph.replay()          # capture records the work without running it: replay runs this call too
        return self._names, (self._values.clone() if self._values is not None else None)
