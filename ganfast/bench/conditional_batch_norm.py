"""conditional_batch_norm benchmark spec: BigGAN's ccbn + ReLU at BigGAN-128 generator shapes.

The reference is BigGAN's own formulation: F.batch_norm (training, no affine; ATen's fused
kernel) followed by * gain + bias per sample and ReLU; the ganfast rows run
ganfast.ops.conditional_batch_norm (two passes forward, two backward). Running statistics are
updated in every row. Inputs receiving gradients: x, gain [N, C], bias [N, C].
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ganfast.bench.spec import BenchCase, BenchSpec, fused_backends
from ganfast.ops.conditional_batch_norm import conditional_batch_norm


def _cases(name: str, layers):
    def cases(batch: int) -> list[BenchCase]:
        return [BenchCase(name, f"c{c}-res{r}", (batch, c, r, r), dict(act="relu")) for c, r in layers]
    return cases


# BigGAN-128 (ch = 96) generator blocks: 16ch at 4x4 .. 2ch at 64x64 (the goal shape), 1ch at 128x128.
SHAPE_SETS = {"biggan-128": _cases("biggan-128", [(1536, 8), (768, 16), (384, 32), (192, 64), (96, 128)])}
QUICK_LABELS = {"biggan-128": ("c192-res64",)}


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    n, c = case.shape[:2]
    x = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)                 # [N, C, H, W]
    gain = 1 + 0.1 * torch.randn(n, c, generator=gen, device=device, dtype=dtype)          # [N, C]
    bias = 0.1 * torch.randn(n, c, generator=gen, device=device, dtype=dtype)              # [N, C]
    return x, gain, bias


def _running(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Fresh running statistics [C]: fp32 (fp64 for fp64 x, which F.batch_norm on CPU needs)."""
    dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
    return torch.zeros(x.shape[1], device=x.device, dtype=dtype), torch.ones(x.shape[1], device=x.device, dtype=dtype)


def reference(case: BenchCase):
    stats: dict = {}

    def ccbn_biggan(x, gain, bias):
        if not stats:
            stats["m"], stats["v"] = _running(x)
        out = F.batch_norm(x, stats["m"], stats["v"], None, None, True, 0.1, 1e-5)
        return F.relu(out * gain[:, :, None, None] + bias[:, :, None, None])
    return ccbn_biggan


def ganfast_fn(case: BenchCase, backend: str):
    stats: dict = {}

    def ccbn_ganfast(x, gain, bias):
        if not stats:
            stats["m"], stats["v"] = _running(x)
        return conditional_batch_norm(x, gain, bias, stats["m"], stats["v"], True, 0.1, 1e-5, act="relu",
                                      backend=backend)
    return ccbn_ganfast


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype):
    """Minimum traffic of a two-pass implementation: fwd reads x twice, writes y; bwd reads dy and
    x twice each, writes dx."""
    n, c, h, w = case.shape
    big = n * c * h * w * torch.empty((), dtype=dtype).element_size()
    return {"forward": 3 * big, "backward": 5 * big, "forward+backward": 8 * big, "double-backward": None}[mode]


SPEC = BenchSpec(
    op="conditional_batch_norm",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=fused_backends,
    bytes_moved=bytes_moved,
    default_shape_set="biggan-128",
    default_batch=32,
    bytes_model="two-pass minimum: fwd 2 reads of x + write y; bwd 2 reads of dy and x + write dx",
)
