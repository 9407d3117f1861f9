"""adain_noise benchmark spec: the StyleGAN (v1) synthesis-layer epilogue at real layer shapes.

Shape sets (x: [N, C, res, res], channels min(16384 // res, 512) as StyleGAN's 1024 config):
  stylegan-256    res 4..256   (512 channels up to 32x32, then 256, 128, 64)
  stylegan-1024   res 4..1024  (... 32 at 512, 16 at 1024)
Inputs receiving gradients: x, style_scale, style_bias [N, C], noise_strength [C], bias [C]. The
noise [N, 1, res, res] is one fixed tensor handed to every row (no gradient, as in training):
the eager reference gets the same tensor, so no row pays for drawing it.
"""
from __future__ import annotations

import math

import torch

from ganfast.bench.spec import BenchCase, BenchSpec, fixed_noise_plane, fused_backends
from ganfast.ops.adain_noise import adain_noise
from ganfast.ops.adain_noise.reference import adain_noise_ref

_PARAMS = {"act": "lrelu", "alpha": 0.2, "gain": 1.0, "eps": 1e-8, "noise": "tensor"}


def _stylegan(name: str, resolution: int):
    def cases(batch: int) -> list[BenchCase]:
        out, res = [], 4
        while res <= resolution:
            out.append(BenchCase(name, f"res{res}", (batch, min(16384 // res, 512), res, res), _PARAMS))
            res *= 2
        return out
    return cases


SHAPE_SETS = {"stylegan-256": _stylegan("stylegan-256", 256), "stylegan-1024": _stylegan("stylegan-1024", 1024)}
QUICK_LABELS = {"stylegan-256": ("res8", "res32", "res128"), "stylegan-1024": ("res8", "res64", "res512")}


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    n, c, h, w = case.shape
    x = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)            # [N, C, H, W]
    s = 1 + 0.2 * torch.randn(n, c, generator=gen, device=device)                      # [N, C] fp32
    t = torch.randn(n, c, generator=gen, device=device)                                # [N, C]
    ns = 0.1 * torch.randn(c, generator=gen, device=device)                            # [C]
    b = 0.1 * torch.randn(c, generator=gen, device=device)                             # [C]
    return x, s, t, ns, b


def reference(case: BenchCase):
    p = case.params

    def adain_noise_reference(x, s, t, ns, b):
        return adain_noise_ref(x, s, t, fixed_noise_plane(x), ns, b, p["act"], p["alpha"], p["gain"], p["eps"])
    return adain_noise_reference


def ganfast_fn(case: BenchCase, backend: str):
    p = case.params

    def adain_noise_ganfast(x, s, t, ns, b):
        return adain_noise(x, s, t, noise=fixed_noise_plane(x), noise_strength=ns, bias=b, act=p["act"], alpha=p["alpha"],
                           gain=p["gain"], eps=p["eps"], backend=backend)
    return adain_noise_ganfast


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype):
    n, c, h, w = case.shape
    big, plane = n * c * h * w, n * h * w
    e = torch.empty((), dtype=dtype).element_size()
    small = 4 * (4 * n * c + 2 * c)          # fp32 styles, stats, strength, bias and their gradients
    forward = (2 * big + plane) * e          # read x and the noise plane, write out
    backward = (3 * big + plane) * e         # read dout, x and the noise plane, write dx
    return {"forward": forward + small, "backward": backward + small,
            "forward+backward": forward + backward + small, "double-backward": None}[mode]


SPEC = BenchSpec(
    op="adain_noise",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=fused_backends,
    bytes_moved=bytes_moved,
    default_shape_set="stylegan-256",
    default_batch=8,
    bytes_model=("fwd: read x + noise plane, write out; bwd: read dout, x, noise plane, write dx; "
                 "+ the [N, C] / [C] fp32 vectors; the minimum traffic of the op (one pass each way); "
                 "2x-bwd: not modelled (math path)"),
)
