"""upfirdn2d benchmark spec: StyleGAN2's resampling at real layer shapes.

  up2:   upsample 2x with the [1, 3, 3, 1] filter (4x4, gain 4, padding [2, 1, 2, 1]), as the
         synthesis network's up layers and skip connections do;
  down2: downsample 2x with the same filter (padding [1, 1, 1, 1]), as the resnet discriminator does.
Channels min(16384 // res, 512) as StyleGAN2's configs at the input resolution `res`.
"""
from __future__ import annotations

import torch

from ganfast.bench.spec import BenchCase, BenchSpec, fused_backends
from ganfast.ops.upfirdn2d import setup_filter, upfirdn2d
from ganfast.ops.upfirdn2d.reference import output_size, upfirdn2d_ref

_MODES = {"up2": dict(up=2, down=1, padding=[2, 1, 2, 1], gain=4.0),
          "down2": dict(up=1, down=2, padding=[1, 1, 1, 1], gain=1.0)}


def _stylegan2(name: str, resolutions):
    def cases(batch: int) -> list[BenchCase]:
        return [BenchCase(name, f"{mode}-res{r}", (batch, min(16384 // r, 512), r, r), dict(_MODES[mode], mode=mode))
                for mode in _MODES for r in resolutions]
    return cases


SHAPE_SETS = {"stylegan2-256": _stylegan2("stylegan2-256", (8, 16, 32, 64, 128)),
              "stylegan2-1024": _stylegan2("stylegan2-1024", (8, 32, 128, 512))}
QUICK_LABELS = {"stylegan2-256": ("up2-res32", "down2-res64"), "stylegan2-1024": ("up2-res128", "down2-res512")}


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    return (torch.randn(case.shape, generator=gen, device=device, dtype=dtype),)   # [N, C, res, res]


_FILTERS: dict = {}


def _filter(device: torch.device) -> torch.Tensor:
    if device not in _FILTERS:
        _FILTERS[device] = setup_filter([1, 3, 3, 1], device=device)   # [4, 4]
    return _FILTERS[device]


def reference(case: BenchCase):
    p = case.params

    def upfirdn2d_reference(x):
        return upfirdn2d_ref(x, _filter(x.device), p["up"], p["down"], p["padding"], False, p["gain"])
    return upfirdn2d_reference


def ganfast_fn(case: BenchCase, backend: str):
    p = case.params

    def upfirdn2d_ganfast(x):
        return upfirdn2d(x, _filter(x.device), p["up"], p["down"], p["padding"], False, p["gain"], backend=backend)
    return upfirdn2d_ganfast


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype):
    n, c, h, w = case.shape
    p = case.params
    oh, ow = output_size(h, w, _filter(torch.device("cpu")), p["up"], p["down"], p["padding"])
    e = torch.empty((), dtype=dtype).element_size()
    one_way = (n * c * (h * w + oh * ow)) * e       # read one side, write the other
    return {"forward": one_way, "backward": one_way, "forward+backward": 2 * one_way,
            "double-backward": None}[mode]


SPEC = BenchSpec(
    op="upfirdn2d",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=fused_backends,
    bytes_moved=bytes_moved,
    default_shape_set="stylegan2-256",
    default_batch=4,
    bytes_model="fwd: read x, write out; bwd (an upfirdn2d the other way): read dout, write dx",
)
