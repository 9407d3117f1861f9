"""modulated_conv2d benchmark spec: a whole StyleGAN2 synthesis layer (modulated 3x3 convolution,
demodulation, noise, bias, lrelu * sqrt(2), clamp 256) at real layer shapes.

Each shape appears twice, once per StyleGAN2 formulation of the reference: `grouped`
(fused_modconv=True: per-sample weights, one grouped convolution) and `scaled` (scale, shared
convolution, scale). The ganfast rows compute the same thing in both, so each case compares them
with that formulation's eager and torch.compile rows; the best-of-two comparison is made from the
data. Inputs receiving gradients: x, weight, styles, bias and the noise strength (0-d); the noise
[N, 1, H, W] is one fixed tensor (as in training, where it is drawn outside the layer).
"""
from __future__ import annotations

import math

import torch

from ganfast.bench.spec import BenchCase, BenchSpec, fixed_noise_plane, fused_backends
from ganfast.ops.modulated_conv2d import modulated_conv2d
from ganfast.ops.modulated_conv2d.reference import modulated_conv2d_ref

_LAYER = {"kernel": 3, "act": "lrelu", "alpha": 0.2, "gain": math.sqrt(2), "clamp": 256.0, "demodulate": True}


def _layers(name: str, shapes):
    def cases(batch: int) -> list[BenchCase]:
        return [BenchCase(name, f"c{c}-res{r}-{form}", (batch, c, r, r), dict(_LAYER, formulation=form))
                for c, r in shapes for form in ("grouped", "scaled")]
    return cases


# The issue's two layers (256 channels at 64x64, 512 at 32x32), and StyleGAN2-256's whole ladder.
SHAPE_SETS = {
    "stylegan2-layers": _layers("stylegan2-layers", [(256, 64), (512, 32)]),
    "stylegan2-256": _layers("stylegan2-256", [(512, 4), (512, 8), (512, 16), (512, 32), (256, 64), (128, 128),
                                               (64, 256)]),
}
QUICK_LABELS = {"stylegan2-layers": ("c512-res32-scaled",), "stylegan2-256": ("c512-res16-scaled", "c256-res64-scaled")}


def make_inputs(case: BenchCase, dtype: torch.dtype, device: torch.device, gen: torch.Generator):
    n, c, h, w = case.shape
    k = case.params["kernel"]
    x = torch.randn(case.shape, generator=gen, device=device, dtype=dtype)                    # [N, C, H, W]
    weight = torch.randn(c, c, k, k, generator=gen, device=device) / math.sqrt(c * k * k)     # [C, C, k, k] fp32
    styles = 1 + 0.2 * torch.randn(n, c, generator=gen, device=device)                        # [N, C] fp32
    bias = 0.1 * torch.randn(c, generator=gen, device=device)                                 # [C] fp32
    strength = torch.full((), 0.1, device=device)                                             # noise strength, 0-d
    return x, weight, styles, bias, strength


def reference(case: BenchCase):
    p = case.params

    def modulated_conv2d_reference(x, weight, styles, bias, strength):
        return modulated_conv2d_ref(x, weight, styles, fixed_noise_plane(x) * strength, padding=p["kernel"] // 2,
                                    demodulate=p["demodulate"], fused_modconv=p["formulation"] == "grouped",
                                    bias=bias, act=p["act"], alpha=p["alpha"], gain=p["gain"], clamp=p["clamp"])
    return modulated_conv2d_reference


def ganfast_fn(case: BenchCase, backend: str):
    p = case.params

    def modulated_conv2d_ganfast(x, weight, styles, bias, strength):
        return modulated_conv2d(x, weight, styles, fixed_noise_plane(x) * strength, padding=p["kernel"] // 2,
                                demodulate=p["demodulate"], bias=bias, act=p["act"], alpha=p["alpha"],
                                gain=p["gain"], clamp=p["clamp"], backend=backend)
    return modulated_conv2d_ganfast


def bytes_moved(case: BenchCase, mode: str, dtype: torch.dtype):
    """The op's minimum traffic: fwd reads x, the weights and the noise plane and writes out; bwd
    reads dout, x, the weights (and a) and writes dx and the weight gradient."""
    n, c, h, w = case.shape
    k = case.params["kernel"]
    e = torch.empty((), dtype=dtype).element_size()
    big, plane, wts = n * c * h * w, n * h * w, c * c * k * k
    forward = (2 * big + plane) * e + 4 * wts
    backward = (4 * big + plane) * e + 8 * wts
    return {"forward": forward, "backward": backward, "forward+backward": forward + backward,
            "double-backward": None}[mode]


SPEC = BenchSpec(
    op="modulated_conv2d",
    shape_sets=SHAPE_SETS,
    quick_labels=QUICK_LABELS,
    make_inputs=make_inputs,
    reference=reference,
    ganfast=ganfast_fn,
    backends=fused_backends,
    bytes_moved=bytes_moved,
    default_shape_set="stylegan2-layers",
    default_batch=4,
    bytes_model=("fwd: read x, weights, noise plane, write out; bwd: read dout, x, a, weights, noise plane, "
                 "write dx and dweight; the convolution is compute-bound, so read GB/s as a floor, "
                 "not a roofline (FLOPs: 2*N*H*W*C*C*k*k per conv, x3 for fwd+bwd)"),
)
