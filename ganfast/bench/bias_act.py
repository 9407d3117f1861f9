"""bias_act benchmark spec: the bias + activation of real generator layers.

Shape sets (x: [N, C, res, res], one case per distinct shape, bias [C] along dim 1):
  stylegan2-256   StyleGAN2 at 256x256 (config-f-like channels, min(16384 // res, 512)): every
                  synthesis conv's bias + lrelu, gain sqrt(2), clamp 256 (StyleGAN2-ADA's conv_clamp).
  stylegan2-1024  StyleGAN2 at 1024x1024 (min(32768 // res, 512)), same activation.
  biggan-128      BigGAN at 128x128, generator blocks with ch=96: the conv bias + ReLU (gain 1, no clamp).
"""
from __future__ import annotations

import math

import torch

from ganfast.bench.spec import BenchCase, BenchSpec, fused_backends
from ganfast.ops.bias_act import bias_act
from ganfast.ops.bias_act.reference import ACTIVATIONS, bias_act_ref

_STYLEGAN2_ACT = {"act": "lrelu", "alpha": 0.2, "gain": math.sqrt(2), "clamp": 256.0}
_BIGGAN_ACT = {"act": "relu", "alpha": 0.0, "gain": 1.0, "clamp": None}


def _stylegan2(name: str, resolution: int, channel_base: int):
    def cases(batch: int) -> list[BenchCase]:
        out = []
        res = 4
        while res <= resolution:
            channels = min(channel_base // res, 512)
            out.append(BenchCase(name, f"res{res}", (batch, channels, res, res), _STYLEGAN2_ACT))
            res *= 2
        return out
    return cases


def _biggan128(batch: int) -> list[BenchCase]:
    ch = 96
    widths = {4: 16 * ch, 8: 16 * ch, 16: 8 * ch, 32: 4 * ch, 64: 2 * ch, 128: 1 * ch}
    return [BenchCase("biggan-128", f"res{res}", (batch, c, res, res), _BIGGAN_ACT) for res, c in widths.items()]


SHAPE_SETS = {
    "stylegan2-256": _stylegan2("stylegan2-256", 256, 16384),
    "stylegan2-1024": _stylegan2("stylegan2-1024", 1024, 32768),
    "biggan-128": _biggan128,
}
QUICK_LABELS = {
    "stylegan2-256": ("res4", "res32", "res128"),
    "stylegan2-1024": ("res4", "res64", "res256"),
    "biggan-128": ("res4", "res32", "res128"),
}


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device,
                gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)        # [N, C, H, W]
    b = torch.randn(case.shape[1], generator=gen, device=device, dtype=dtype)     # [C]
    return x, b


def reference(case: BenchCase):
    p = case.params
    clamp = -1.0 if p["clamp"] is None else p["clamp"]

    def bias_act_reference(x, b):
        return bias_act_ref(x, b, 1, p["act"], p["alpha"], p["gain"], clamp)
    return bias_act_reference


def ganfast_fn(case: BenchCase, backend: str):
    p = case.params

    def bias_act_ganfast(x, b):
        return bias_act(x, b, dim=1, act=p["act"], alpha=p["alpha"], gain=p["gain"], clamp=p["clamp"], backend=backend)
    return bias_act_ganfast


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype) -> int:
    n = math.prod(case.shape)
    c = case.shape[1]
    forward = 2 * n + c                      # read x, b; write y
    backward = 3 * n + 2 * c                 # read dy, x, b; write dx, db
    # the backward of the gradient: read its incoming gradient, x, b; write d(dy) ...
    grad_of_grad = 3 * n + c
    if not ACTIVATIONS[case.params["act"]].zero_second_derivative:
        grad_of_grad += 4 * n + 2 * c        # ... and the f'' term: read gg, dy, x, b; write dx, db
    elements = {
        "forward": forward,
        "backward": backward,
        "forward+backward": forward + backward,
        "double-backward": forward + backward + grad_of_grad,
    }[mode]
    return elements * torch.empty((), dtype=dtype).element_size()


SPEC = BenchSpec(
    op="bias_act",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=fused_backends,
    bytes_moved=bytes_moved,
    default_shape_set="stylegan2-256",
    bytes_model=("fwd: read x, b, write y; bwd: read dy, x, b, write dx, db; fwd+bwd: both; "
                 "2x-bwd: both + the gradient's backward (read its grad, x, b, write d(dy)"
                 " [+ the f'' term]); dtype element size; the R1 norm's own ops not counted"),
)
