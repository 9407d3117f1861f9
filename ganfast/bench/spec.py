"""What an op hands the benchmark harness: its cases, its functions and its bytes-moved model."""
from __future__ import annotations

import dataclasses
from typing import Callable, Mapping, Optional, Sequence

import torch

# forward:          the op alone, no autograd graph (inference).
# backward:         the backward alone; the forward that records the graph runs untimed before it.
# forward+backward: one training step through the op.
# double-backward:  R1-style: the input gradient with create_graph, then the gradient of its
#                   squared norm with respect to the inputs and the incoming gradient.
MODES = ("forward", "backward", "forward+backward", "double-backward")
DEFAULT_MODES = ("forward", "backward", "forward+backward")
MODE_SHORT = {"forward": "fwd", "backward": "bwd", "forward+backward": "fwd+bwd", "double-backward": "2x-bwd"}

EAGER = "eager-reference"
COMPILE = "compile-reference"


@dataclasses.dataclass(frozen=True)
class BenchCase:
    """One shape to benchmark: a layer of a real model."""
    shape_set: str                 # e.g. "stylegan2-256"
    label: str                     # e.g. "res64", unique within its set
    shape: tuple[int, ...]         # the main input's shape, batch first, e.g. (4, 256, 64, 64)
    params: Mapping[str, object] = dataclasses.field(default_factory=dict)  # op arguments, recorded in rows


@dataclasses.dataclass(frozen=True)
class BenchSpec:
    """An op's benchmark definition; ganfast.bench.harness does the rest.

    The functions returned by `reference` and `ganfast` take the tensors of `make_inputs`
    positionally and return one tensor. Every floating input receives a gradient in the backward
    modes; the harness supplies the incoming gradient (random, like the output).
    """
    op: str
    shape_sets: Mapping[str, Callable[[int], Sequence[BenchCase]]]   # name -> batch -> cases
    quick_labels: Mapping[str, Sequence[str]]                       # name -> labels run under --quick
    make_inputs: Callable[[BenchCase, torch.dtype, torch.device, torch.Generator], tuple[torch.Tensor, ...]]
    reference: Callable[[BenchCase], Callable[..., torch.Tensor]]    # plain eager PyTorch
    ganfast: Callable[[BenchCase, str], Callable[..., torch.Tensor]]  # (case, backend) -> fn
    backends: Callable[[torch.device], Sequence[str]]               # ganfast backends worth timing there
    bytes_moved: Callable[[BenchCase, str, torch.dtype], Optional[int]]  # (case, mode, dtype) -> bytes
    default_shape_set: str
    default_batch: int = 4         # `ganfast bench` uses it when --batch is not given
    bytes_model: str = ""          # one line describing bytes_moved, recorded with each row
    flops: Optional[Callable[[BenchCase, str], Optional[int]]] = None  # (case, mode) -> FLOPs, where it matters

    def cases(self, shape_set: str, batch: int, quick: bool = False) -> list[BenchCase]:
        if shape_set not in self.shape_sets:
            raise ValueError(f"{self.op}: unknown shape set {shape_set!r}; known: {', '.join(self.shape_sets)}")
        cases = list(self.shape_sets[shape_set](batch))
        if quick:
            keep = set(self.quick_labels[shape_set])
            cases = [c for c in cases if c.label in keep]
        return cases


def fused_backends(device: torch.device) -> tuple[str, ...]:
    """The ganfast backends worth timing on `device` for an op with every fused backend.

    'reference' is not listed: through the public API it is the eager reference row again.
    """
    return {"cpu": ("cpu",), "cuda": ("cuda", "triton")}.get(device.type, ())


_NOISE: dict = {}


def fixed_noise_plane(x: torch.Tensor) -> torch.Tensor:
    """A fixed noise plane [N, 1, H, W] for x [N, C, H, W] (seeded; made once per shape, dtype and
    device), handed to every row of a case so no row pays for drawing it (as in training, where
    the noise is drawn outside the layer)."""
    key = (tuple(x.shape), x.dtype, x.device)
    if key not in _NOISE:
        gen = torch.Generator(device=x.device).manual_seed(1)
        _NOISE.clear()
        _NOISE[key] = torch.randn(x.shape[0], 1, *x.shape[2:], generator=gen, device=x.device, dtype=x.dtype)
    return _NOISE[key]
