"""Discriminator augmentation: ADA's augmentation pipeline and its adaptive strength controller
(Karras et al. 2020, "Training Generative Adversarial Networks with Limited Data"), and DiffAugment
(Zhao et al. 2020, "Differentiable Augmentation for Data-Efficient GAN Training").

Both are differentiable functions of the images, applied to every image D sees: reals and fakes
in D's phase, fakes in G's phase (G learns through them), and the reals of the R1 pass, where the
penalty is the gradient with respect to the un-augmented reals through the pipe (as NVIDIA's
StyleGAN2-ADA does). ganfast.training.loop wires them in (TrainingConfig.aug).

AugmentPipe(**strengths) (ADA; images [N, C, H, W] in [-1, 1], C = 1 or 3). Each transform has a
probability multiplier (0: off, 1: on) and applies to an image with probability multiplier * p,
drawn per image; p is a buffer (so it is checkpointed) that the controller moves. Groups and the
names and defaults of their strengths are those of the paper's pipeline (NVIDIA's AugmentPipe):

  b  pixel blitting   xflip; rotate90 (quarter turns); xint: integer translation, uniform in
                      +-xint_max (0.125) of the size, the uncovered pixels reflected
  g  geometric        scale: isotropic, log2-normal with std scale_std (0.2); rotate: arbitrary
                      rotation uniform in +-rotate_max (1 = full circle), applied before and after
                      the anisotropic scaling, each with probability 1 - sqrt(1 - rotate * p) (so
                      one or both with rotate * p); aniso: log2-normal std aniso_std (0.2);
                      xfrac: fractional translation, normal with std xfrac_std (0.125) of the size
  c  colour           brightness: + normal std 0.2; contrast: * log2-normal std 0.5; lumaflip:
                      reflect the colour about the plane orthogonal to the luma axis (1,1,1)/sqrt 3;
                      hue: rotate about the luma axis, uniform in +-hue_max (1 = full circle);
                      saturation: scale the colour orthogonal to the luma axis, log2-normal std 1
  f  image filtering  imgfilter: amplify each of 4 frequency bands (a sym2 wavelet filter bank)
                      by a log2-normal gain (std 1), the total power normalized to the expected
                      1/f image spectrum [10, 1, 1, 1] / 13; imgfilter_bands: per-band multipliers
  n  noise            noise: additive Gaussian noise, its std |normal| * noise_std (0.1)
  c  cutout           cutout: a square of cutout_size (0.5) of the image set to 0, centre uniform
AUGMENT_PRESETS holds NVIDIA's named pipelines ('blit', 'geom', 'color', 'filter', 'noise',
'cutout', 'bg', 'bgc' (the paper's default), 'bgcf', 'bgcfn', 'bgcfnc'); AugmentPipe.preset(name).

How it computes (the paper's appendix; NVIDIA's implementation for the constants):
  - the blits are exact pixel moves: one index map per image (flip, quarter turns, shift with
    reflection) and one gather, so they never blur. (NVIDIA folds them into the geometric matrix;
    with its non-symmetric sym6 filter that resamples flips and quarter turns through the filter
    round trip; here they stay bit exact, which is what "blitting" means in the paper.)
  - the geometric transforms compose one 3x3 homogeneous matrix per image (output pixel ->
    input pixel, centred pixel coordinates). Images whose matrix is the identity pass through
    untouched; the others are padded by reflection, upsampled 2x with the sym6 wavelet's low-pass
    filter (ganfast.ops.upfirdn2d), resampled bilinearly at the transformed positions
    (grid_sample) and filtered and downsampled 2x back with the same filter flipped, so the
    resampling is nearly alias-free. The padding is fixed at size - 1 per side (the most NVIDIA's
    per-batch margin is ever clamped to), so nothing depends on the drawn values (see "no host
    synchronization" below); the output is the same.
  - the colour transforms compose one 4x4 homogeneous matrix per image in RGB, applied as
    M[:3, :3] @ rgb + M[:3, 3]. For 1-channel images only brightness, contrast and lumaflip apply
    (hue and saturation need colour), and the matrix acts on the single channel through the mean
    of its three rows (NVIDIA's rule), which makes lumaflip a sign flip.
  - p = 0 is the identity, bit for bit: every group picks, per image, the untransformed input
    where none of its transforms was drawn.

The adaptive controller (AdaptiveP): D's overfitting heuristic r_t = E[sign(D(real))] over the D
steps since the last update; every `interval` D steps (4), p += sign(r_t - target) * images /
(kimg * 1000), images = the real images D saw in those steps, clamped at p >= 0 (target 0.6; kimg
500: p can go from 0 to 1 in 500k images). Averaged over all processes, so every rank has the
same p.

No host synchronization: every random draw is made on the device (torch.rand / randn / randint
with the images' device), every per-image choice is a torch.where, every shape is known from the
input shape, and the controller's update is device arithmetic on the p buffer (in place, so CUDA
graphs that read p see the new value); the host decides only *when* to update, from the step
count. So the pipe runs inside a captured phase, and the controller runs between phases without
waiting for the GPU. p and r_t reach the host only at the once-per-tick statistics read.

DiffAugment(policy='color,translation,cutout'): the simpler alternative, always applied (no p):
  color        brightness + U(-0.5, 0.5); saturation: (x - mean over channels) * U(0, 2) + mean;
               contrast: (x - mean over the image) * U(0.5, 1.5) + mean (each per image)
  translation  shift by integers uniform in +-round(size / 8) per axis, zeros shifted in
  cutout       zero a square of half the size (rounded) at a uniform position (clipped at the edges)
"""
from __future__ import annotations

import math
from typing import Mapping, Optional, Sequence

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from ganfast.ops.upfirdn2d import upfirdn2d

__all__ = ["AugmentPipe", "AdaptiveP", "DiffAugment", "AUGMENT_PRESETS", "DIFFAUGMENT_POLICIES",
           "SYM6_LOWPASS", "SYM2_LOWPASS", "wavelet_filter_bank"]

# Low-pass decomposition filters of Daubechies' least-asymmetric wavelets (published constants:
# PyWavelets' `pywt.Wavelet('sym6').dec_lo` and 'sym2'; NVIDIA's augment.py uses the same numbers).
SYM6_LOWPASS = (0.015404109327027373, 0.0034907120842174702, -0.11799011114819057, -0.048311742585633,
                0.4910559419267466, 0.787641141030194, 0.3379294217276218, -0.07263752278646252,
                -0.021060292512300564, 0.04472490177066578, 0.0017677118642428036, -0.007800708325034148)
SYM2_LOWPASS = (-0.12940952255092145, 0.22414386804185735, 0.836516303737469, 0.48296291314469025)

_BLIT = dict(xflip=1, rotate90=1, xint=1)
_GEOM = dict(scale=1, rotate=1, aniso=1, xfrac=1)
_COLOR = dict(brightness=1, contrast=1, lumaflip=1, hue=1, saturation=1)
AUGMENT_PRESETS: dict[str, dict[str, float]] = {
    "blit": _BLIT, "geom": _GEOM, "color": _COLOR, "filter": dict(imgfilter=1), "noise": dict(noise=1),
    "cutout": dict(cutout=1), "bg": {**_BLIT, **_GEOM}, "bgc": {**_BLIT, **_GEOM, **_COLOR},
    "bgcf": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1},
    "bgcfn": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1},
    "bgcfnc": {**_BLIT, **_GEOM, **_COLOR, "imgfilter": 1, "noise": 1, "cutout": 1},
}

# expected power of natural images in the filter bank's 4 bands (1/f spectrum), lowest band first
_BAND_POWER = (10 / 13, 1 / 13, 1 / 13, 1 / 13)


def wavelet_filter_bank(lowpass: Sequence[float] = SYM2_LOWPASS, bands: int = 4) -> np.ndarray:
    """[bands, taps] float64: the octave bands of an orthogonal wavelet, as symmetric filters
    that sum to the identity (a unit impulse at the centre). Band 0 is the lowest.

    With H(z) the low-pass filter: lo2 = H(z) H(1/z) / 2 and hi2 = H(-z) H(-1/z) / 2 are
    zero-phase half-band filters with lo2 + hi2 = 1 (the wavelet's perfect reconstruction).
    Starting from the impulse, each octave stretches the bands found so far by 2 (zeros between
    taps), low-passes them with lo2, and adds hi2 as the new (highest) band."""
    lo = np.asarray(lowpass, dtype=np.float64)
    hi = lo * (-1.0) ** np.arange(lo.size)
    lo2 = np.convolve(lo, lo[::-1]) / 2
    hi2 = np.convolve(hi, hi[::-1]) / 2
    bank = np.zeros((bands, 1))
    bank[0, 0] = 1.0
    for band in range(1, bands):
        stretched = np.zeros((bands, 2 * bank.shape[1] - 1))
        stretched[:, ::2] = bank
        bank = np.stack([np.convolve(row, lo2) for row in stretched])
        start = (bank.shape[1] - hi2.size) // 2
        bank[band, start:start + hi2.size] += hi2
    return bank


def _check_number(who: str, name: str, value, minimum: float = 0.0) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= minimum or math.isinf(value):
        raise ValueError(f"{who}: {name} must be a finite number >= {minimum:g}, got {value!r}")
    return float(value)


def _batched(rows: Sequence[Sequence], n: int, like: torch.Tensor) -> torch.Tensor:
    """A batch of matrices [n, R, K] from rows whose entries are numbers or [n] tensors."""
    entries = [e if isinstance(e, torch.Tensor) else like.new_full((n,), float(e)) for row in rows for e in row]
    return torch.stack(entries, dim=-1).reshape(n, len(rows), len(rows[0]))


def _translate2d(tx, ty, n, like):
    return _batched([[1, 0, tx], [0, 1, ty], [0, 0, 1]], n, like)


def _scale2d(sx, sy, n, like):
    return _batched([[sx, 0, 0], [0, sy, 0], [0, 0, 1]], n, like)


def _rotate2d(theta, n, like):
    c, s = torch.cos(theta), torch.sin(theta)
    return _batched([[c, -s, 0], [s, c, 0], [0, 0, 1]], n, like)


def _reflect_index(i: torch.Tensor, size: int) -> torch.Tensor:
    """Integer positions folded into [0, size) by mirroring about the edge pixels (F.pad's 'reflect')."""
    if size == 1:
        return torch.zeros_like(i)
    period = 2 * (size - 1)
    i = torch.remainder(i, period)
    return torch.where(i >= size, period - i, i)


class AugmentPipe(nn.Module):
    """ADA's augmentation pipeline (see the module docstring): AugmentPipe(xflip=1, ...) or
    AugmentPipe.preset('bgc', p=0.0). forward(images [N, C, H, W], C = 1 or 3) -> the augmented
    images, same shape and dtype (computed in float32, float64 for float64 input). `p` is a
    0-dim float32 buffer: the overall probability multiplier, set by AdaptiveP or by hand."""

    MULTIPLIERS = ("xflip", "rotate90", "xint", "scale", "rotate", "aniso", "xfrac", "brightness", "contrast",
                   "lumaflip", "hue", "saturation", "imgfilter", "noise", "cutout")
    STRENGTHS = ("xint_max", "scale_std", "rotate_max", "aniso_std", "xfrac_std", "brightness_std", "contrast_std",
                 "hue_max", "saturation_std", "imgfilter_std", "noise_std", "cutout_size")

    def __init__(self, xflip: float = 0, rotate90: float = 0, xint: float = 0, xint_max: float = 0.125,
                 scale: float = 0, rotate: float = 0, aniso: float = 0, xfrac: float = 0, scale_std: float = 0.2,
                 rotate_max: float = 1, aniso_std: float = 0.2, xfrac_std: float = 0.125,
                 brightness: float = 0, contrast: float = 0, lumaflip: float = 0, hue: float = 0,
                 saturation: float = 0, brightness_std: float = 0.2, contrast_std: float = 0.5, hue_max: float = 1,
                 saturation_std: float = 1, imgfilter: float = 0, imgfilter_bands: Sequence[float] = (1, 1, 1, 1),
                 imgfilter_std: float = 1, noise: float = 0, cutout: float = 0, noise_std: float = 0.1,
                 cutout_size: float = 0.5, p: float = 0.0):
        super().__init__()
        given = dict(locals())
        for name in self.MULTIPLIERS + self.STRENGTHS:
            setattr(self, name, _check_number("AugmentPipe", name, given[name]))
        bands = list(imgfilter_bands) if isinstance(imgfilter_bands, (list, tuple)) else None
        if bands is None or len(bands) != 4:
            raise ValueError(f"AugmentPipe: imgfilter_bands must be 4 numbers (one per band), got {imgfilter_bands!r}")
        self.imgfilter_bands = [_check_number("AugmentPipe", "imgfilter_bands", b) for b in bands]
        self.register_buffer("p", torch.tensor(_check_number("AugmentPipe", "p", p), dtype=torch.float32))
        # constants in float64, cast to the images' dtype when used (not in the state dict: they are
        # functions of the code, not of the run)
        sym6 = torch.tensor(SYM6_LOWPASS, dtype=torch.float64)
        self.register_buffer("geom_filter", sym6 / sym6.sum(), persistent=False)        # [12] separable, sum 1
        self.register_buffer("filter_bank", torch.tensor(wavelet_filter_bank(), dtype=torch.float64),
                             persistent=False)                                                     # [4, 43]
        self.register_buffer("band_power", torch.tensor(_BAND_POWER, dtype=torch.float64), persistent=False)
        luma = torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64) / math.sqrt(3)
        cross = torch.zeros(4, 4, dtype=torch.float64)   # [v]x: cross @ u = v x u (the rotation generator about v)
        cross[0, 1], cross[0, 2], cross[1, 2] = -luma[2], luma[1], -luma[0]
        cross = cross - cross.T
        self.register_buffer("luma_outer", torch.outer(luma, luma), persistent=False)   # v v^T, [4, 4]
        self.register_buffer("luma_cross", cross, persistent=False)
        self.register_buffer("rgb_part", torch.diag(torch.tensor([1.0, 1.0, 1.0, 0.0], dtype=torch.float64)),
                             persistent=False)
        offset = torch.zeros(4, 4, dtype=torch.float64)
        offset[:3, 3] = 1.0
        self.register_buffer("rgb_offset", offset, persistent=False)    # eye + b * this: add b to r, g, b

    @classmethod
    def preset(cls, name: str, p: float = 0.0, **overrides) -> "AugmentPipe":
        """One of NVIDIA's named pipelines (AUGMENT_PRESETS), strengths overridable."""
        if name not in AUGMENT_PRESETS:
            raise ValueError(f"AugmentPipe.preset: unknown pipeline {name!r}; known: {', '.join(AUGMENT_PRESETS)}")
        return cls(**{**AUGMENT_PRESETS[name], **overrides}, p=p)

    def extra_repr(self) -> str:
        on = [n for n in self.MULTIPLIERS if getattr(self, n) > 0]
        return f"enabled={on}"

    # ---- helpers: per-image random draws on the device ----

    def _chosen(self, n: int, multiplier: float, like: torch.Tensor, shape=()) -> torch.Tensor:
        """bool [n, *shape]: True with probability multiplier * p, per image."""
        return torch.rand((n,) + tuple(shape), device=like.device, dtype=like.dtype) < multiplier * self.p.to(like.dtype)

    @staticmethod
    def _uniform(n: int, like: torch.Tensor, shape=()) -> torch.Tensor:
        return torch.rand((n,) + tuple(shape), device=like.device, dtype=like.dtype)

    @staticmethod
    def _normal(n: int, like: torch.Tensor, shape=()) -> torch.Tensor:
        return torch.randn((n,) + tuple(shape), device=like.device, dtype=like.dtype)

    # ---- the pipeline ----

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or not images.is_floating_point():
            got = list(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"AugmentPipe: images must be a floating tensor [N, C, H, W], got {got}")
        n, c, h, w = images.shape
        colour = any(getattr(self, k) > 0 for k in ("brightness", "contrast", "lumaflip", "hue", "saturation"))
        if colour and c not in (1, 3):
            raise ValueError(f"AugmentPipe: the colour transforms need 1-channel (L) or 3-channel (RGB) images, "
                             f"got {c} channels")
        if self.rotate90 > 0 and h != w:
            raise ValueError(f"AugmentPipe: rotate90 needs square images, got {h}x{w}")
        dtype = torch.float64 if images.dtype == torch.float64 else torch.float32
        with torch.autocast(images.device.type, enabled=False):
            x = images.to(dtype)
            if self.xflip > 0 or self.rotate90 > 0 or self.xint > 0:
                x = self._blit(x)
            if self.scale > 0 or self.rotate > 0 or self.aniso > 0 or self.xfrac > 0:
                x = self._geometric(x)
            if colour:
                x = self._colour(x)
            if self.imgfilter > 0:
                x = self._filter(x)
            if self.noise > 0:
                x = self._noise(x)
            if self.cutout > 0:
                x = self._cutout(x)
        return x.to(images.dtype)

    def _blit(self, x: torch.Tensor) -> torch.Tensor:
        """x-flip, quarter turns and integer translation as one gather per image (exact). In
        centred pixel coordinates the output pixel v reads the input at F R (v - t): the shift t
        first, then the turn R, then the flip F (NVIDIA's order: flip @ rotate90 @ translate)."""
        n, c, h, w = x.shape
        zero = x.new_zeros(n)
        flip = torch.where(self._chosen(n, self.xflip, x), torch.floor(self._uniform(n, x) * 2), zero)
        turns = torch.where(self._chosen(n, self.rotate90, x), torch.floor(self._uniform(n, x) * 4), zero)
        shift = (self._uniform(n, x, (2,)) * 2 - 1) * self.xint_max
        shift = torch.where(self._chosen(n, self.xint, x, (1,)), shift, 0.0)
        tx, ty = torch.round(shift[:, 0] * w), torch.round(shift[:, 1] * h)
        cos = torch.round(torch.cos(turns * (math.pi / 2)))[:, None, None]     # exact 0 / +-1
        sin = torch.round(torch.sin(turns * (math.pi / 2)))[:, None, None]
        u = (torch.arange(w, device=x.device, dtype=x.dtype) - (w - 1) / 2)[None, None, :] - tx[:, None, None]
        v = (torch.arange(h, device=x.device, dtype=x.dtype) - (h - 1) / 2)[None, :, None] - ty[:, None, None]
        su = (cos * u - sin * v) * (1 - 2 * flip)[:, None, None]                 # [n, h, w]
        sv = sin * u + cos * v
        ix = _reflect_index(torch.round(su + (w - 1) / 2).long(), w)
        iy = _reflect_index(torch.round(sv + (h - 1) / 2).long(), h)
        index = (iy * w + ix).reshape(n, 1, h * w).expand(n, c, h * w)
        return x.reshape(n, c, h * w).gather(2, index).reshape(n, c, h, w)

    def _geometric_matrix(self, n: int, h: int, w: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(G [n, 3, 3]: output pixel -> input pixel in centred pixel coordinates, applied [n] bool:
        some transform was drawn). The product, in NVIDIA's order: scale, rotation, anisotropic
        scaling, rotation, fractional translation (each the inverse of the image's transform)."""
        g = torch.eye(3, device=like.device, dtype=like.dtype).expand(n, 3, 3)
        applied = torch.zeros(n, dtype=torch.bool, device=like.device)
        one, zero = like.new_ones(n), like.new_zeros(n)
        if self.scale > 0:
            chosen = self._chosen(n, self.scale, like)
            s = torch.where(chosen, torch.exp2(self._normal(n, like) * self.scale_std), one)
            g, applied = g @ _scale2d(1 / s, 1 / s, n, like), applied | chosen
        p_rot = 1 - torch.sqrt((1 - self.rotate * self.p.to(like.dtype)).clamp(0, 1))   # P(pre or post) = rotate * p

        def rotation():
            chosen = self._uniform(n, like) < p_rot
            theta = torch.where(chosen, (self._uniform(n, like) * 2 - 1) * math.pi * self.rotate_max, zero)
            return _rotate2d(theta, n, like), chosen

        if self.rotate > 0:
            r, chosen = rotation()
            g, applied = g @ r, applied | chosen
        if self.aniso > 0:
            chosen = self._chosen(n, self.aniso, like)
            s = torch.where(chosen, torch.exp2(self._normal(n, like) * self.aniso_std), one)
            g, applied = g @ _scale2d(1 / s, s, n, like), applied | chosen
        if self.rotate > 0:
            r, chosen = rotation()
            g, applied = g @ r, applied | chosen
        if self.xfrac > 0:
            chosen = self._chosen(n, self.xfrac, like, (1,))
            t = torch.where(chosen, self._normal(n, like, (2,)) * self.xfrac_std, 0.0)
            g, applied = g @ _translate2d(-t[:, 0] * w, -t[:, 1] * h, n, like), applied | chosen[:, 0]
        return g, applied

    def _geometric(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        g, applied = self._geometric_matrix(n, h, w, x)
        f = self.geom_filter.to(x.dtype)
        taps = f.shape[0]                      # 12
        margin = taps // 4                     # extra low-res pixels kept around the output (3)
        # reflect padding by size - 1 per side: the widest NVIDIA's margin ever gets, fixed, so
        # nothing depends on the drawn matrices (symmetric: the centre stays where it was)
        px, py = w - 1, h - 1
        padded = F.pad(x, [px, px, py, py], mode="reflect") if (px or py) else x
        up = upfirdn2d(padded, f, up=2, padding=[(taps + 1) // 2, (taps - 2) // 2] * 2, gain=4)
        # the same map at 2x resolution: centred high-res coordinates are twice the low-res ones,
        # about a centre moved half a high-res pixel for the sym6 filter's delay (NVIDIA's
        # conjugation by a half-pixel translation; of 0, +-0.25, +-0.5, 0.6, 0.75 and 1 it is the
        # shift under which a flip through this path comes closest to torch.flip)
        half = torch.full((n,), 0.5, device=x.device, dtype=x.dtype)
        g = _translate2d(-half, -half, n, x) @ _scale2d(2, 2, n, x) @ g @ _scale2d(0.5, 0.5, n, x) \
            @ _translate2d(half, half, n, x)
        out_h, out_w = 2 * (h + 2 * margin), 2 * (w + 2 * margin)
        in_h, in_w = up.shape[2], up.shape[3]
        # affine_grid's normalized coordinates (align_corners=False): centred pixels * 2 / size
        theta = _scale2d(2 / in_w, 2 / in_h, n, x) @ g @ _scale2d(out_w / 2, out_h / 2, n, x)
        grid = F.affine_grid(theta[:, :2, :], [n, c, out_h, out_w], align_corners=False)
        warped = F.grid_sample(up, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        crop = 2 * margin
        down = upfirdn2d(warped, f, down=2, flip_filter=True,
                         padding=[(taps - 1) // 2 - crop, (taps - 2) // 2 - crop] * 2)
        return torch.where(applied[:, None, None, None], down, x)

    def _colour_matrix(self, n: int, channels: int, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(M [n, 4, 4]: colour_out = M @ [r, g, b, 1], applied [n] bool). Brightness first, then
        contrast, luma flip, hue rotation, saturation (each multiplies from the left)."""
        eye = torch.eye(4, device=like.device, dtype=like.dtype)
        vv, cross = self.luma_outer.to(like.dtype), self.luma_cross.to(like.dtype)
        rgb = self.rgb_part.to(like.dtype)          # diag(1, 1, 1, 0); eye - rgb keeps the homogeneous 1
        m = eye.expand(n, 4, 4)
        applied = torch.zeros(n, dtype=torch.bool, device=like.device)
        one, zero = like.new_ones(n), like.new_zeros(n)
        col = (n, 1, 1)
        if self.brightness > 0:
            chosen = self._chosen(n, self.brightness, like)
            b = torch.where(chosen, self._normal(n, like) * self.brightness_std, zero)
            m, applied = (eye + self.rgb_offset.to(like.dtype) * b.view(col)) @ m, applied | chosen
        if self.contrast > 0:
            chosen = self._chosen(n, self.contrast, like)
            s = torch.where(chosen, torch.exp2(self._normal(n, like) * self.contrast_std), one)
            m, applied = (rgb * s.view(col) + (eye - rgb)) @ m, applied | chosen
        if self.lumaflip > 0:
            chosen = self._chosen(n, self.lumaflip, like)
            flip = torch.where(chosen, torch.floor(self._uniform(n, like) * 2), zero)
            m, applied = (eye - 2 * vv * flip.view(col)) @ m, applied | chosen     # Householder reflection
        if self.hue > 0 and channels > 1:
            chosen = self._chosen(n, self.hue, like)
            theta = torch.where(chosen, (self._uniform(n, like) * 2 - 1) * math.pi * self.hue_max, zero).view(col)
            # Rodrigues: rotation by theta about the unit luma axis v
            rot = torch.cos(theta) * rgb + torch.sin(theta) * cross + (1 - torch.cos(theta)) * vv + (eye - rgb)
            m, applied = rot @ m, applied | chosen
        if self.saturation > 0 and channels > 1:
            chosen = self._chosen(n, self.saturation, like)
            s = torch.where(chosen, torch.exp2(self._normal(n, like) * self.saturation_std), one).view(col)
            m, applied = (vv + (rgb - vv) * s + (eye - rgb)) @ m, applied | chosen
        return m, applied

    def _colour(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        m, applied = self._colour_matrix(n, c, x)
        flat = x.reshape(n, c, h * w)
        if c == 3:
            out = m[:, :3, :3] @ flat + m[:, :3, 3:]
        else:       # luminance only: the mean of the RGB rows acting on (l, l, l, 1)
            row = m[:, :3, :].mean(dim=1)                                          # [n, 4]
            out = flat * row[:, :3].sum(dim=1).view(n, 1, 1) + row[:, 3].view(n, 1, 1)
        return torch.where(applied[:, None, None, None], out.reshape(n, c, h, w), x)

    def _filter(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        bank = self.filter_bank.to(x.dtype)                       # [4, taps]
        bands, taps = bank.shape
        pad = taps // 2
        power = self.band_power.to(x.dtype)
        gain = x.new_ones(n, bands)
        one_hot = torch.eye(bands, device=x.device, dtype=x.dtype)
        applied = torch.zeros(n, dtype=torch.bool, device=x.device)
        for band, strength in enumerate(self.imgfilter_bands):
            chosen = self._chosen(n, self.imgfilter * strength, x)
            amp = torch.where(chosen, torch.exp2(self._normal(n, x) * self.imgfilter_std), x.new_ones(n))
            t = 1 + (amp - 1)[:, None] * one_hot[band]                # this band's gain, the others 1
            gain = gain * t / (power * t.square()).sum(dim=1, keepdim=True).sqrt()   # keep the expected power
            applied = applied | chosen
        kernel = (gain @ bank).repeat_interleave(c, dim=0)          # [n * c, taps]
        # reflect padding by index (F.pad's 'reflect' needs pad < size; images may be smaller than 22 px)
        rows = _reflect_index(torch.arange(-pad, h + pad, device=x.device), h)
        cols = _reflect_index(torch.arange(-pad, w + pad, device=x.device), w)
        planes = x.reshape(1, n * c, h, w).index_select(2, rows).index_select(3, cols)
        planes = F.conv2d(planes, kernel.view(n * c, 1, 1, taps), groups=n * c)
        planes = F.conv2d(planes, kernel.view(n * c, 1, taps, 1), groups=n * c)
        return torch.where(applied[:, None, None, None], planes.reshape(n, c, h, w), x)

    def _noise(self, x: torch.Tensor) -> torch.Tensor:
        n = x.shape[0]
        chosen = self._chosen(n, self.noise, x, (1, 1, 1))
        sigma = self._normal(n, x, (1, 1, 1)).abs() * self.noise_std
        return torch.where(chosen, x + torch.randn_like(x) * sigma, x)

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        size = self._chosen(n, self.cutout, x, (1, 1)).to(x.dtype) * self.cutout_size          # [n, 1, 1]
        centre = self._uniform(n, x, (2, 1, 1))
        xs = (torch.arange(w, device=x.device, dtype=x.dtype) + 0.5) / w
        ys = (torch.arange(h, device=x.device, dtype=x.dtype) + 0.5) / h
        keep_x = (xs.view(1, 1, w) - centre[:, 0]).abs() >= size / 2                            # [n, 1, w]
        keep_y = (ys.view(1, h, 1) - centre[:, 1]).abs() >= size / 2                            # [n, h, 1]
        return x * (keep_x | keep_y)[:, None].to(x.dtype)


class AdaptiveP:
    """ADA's controller of AugmentPipe.p (see the module docstring).

    observe(r_t, steps, images): the mean of sign(D(real logits)) over `steps` D steps that saw
    `images` real images (a 0-dim device tensor, already averaged over the processes); every
    `interval` D steps p moves by sign(r_t - target) * images / (kimg * 1000), clamped at 0, where
    r_t averages the observations since the last move. Device arithmetic only: nothing is read
    back. A non-finite observation (a skipped, non-finite phase) counts as no observation."""

    def __init__(self, pipe: AugmentPipe, target: float = 0.6, interval: int = 4, kimg: float = 500.0):
        if not isinstance(pipe, AugmentPipe):
            raise ValueError(f"AdaptiveP: pipe must be an AugmentPipe, got {type(pipe).__name__}")
        self.pipe = pipe
        self.target = _check_number("AdaptiveP", "target", target)
        if isinstance(interval, bool) or not isinstance(interval, int) or interval < 1:
            raise ValueError(f"AdaptiveP: interval must be an int >= 1, got {interval!r}")
        self.interval = interval
        self.kimg = _check_number("AdaptiveP", "kimg", kimg)
        if self.kimg == 0:
            raise ValueError("AdaptiveP: kimg must be > 0 (the images for p to go from 0 to 1)")
        self.signs = torch.zeros(2, dtype=torch.float32, device=pipe.p.device)   # [sum of r_t * steps, steps]
        self.steps = 0        # D steps since the last update (host count)
        self.images = 0       # real images in them

    def observe(self, r_t: torch.Tensor, steps: int = 1, images: int = 0) -> None:
        r_t = r_t.detach().reshape(()).to(self.signs)
        ok = torch.isfinite(r_t)
        self.signs += torch.stack([torch.where(ok, r_t * steps, 0.0), ok.to(self.signs.dtype) * steps])
        self.steps += steps
        self.images += images
        if self.steps >= self.interval:
            self.update()

    def update(self) -> None:
        """Move p by the observations so far (device arithmetic) and start a new interval."""
        total, count = self.signs[0], self.signs[1]
        r_t = total / count.clamp(min=1)
        direction = torch.where(count > 0, torch.sign(r_t - self.target), 0.0)
        p = self.pipe.p
        p.copy_((p + direction * (self.images / (self.kimg * 1000))).clamp(min=0))
        self.signs.zero_()
        self.steps = self.images = 0

    def state_dict(self) -> dict:
        return {"signs": self.signs.detach().cpu().clone(), "steps": self.steps, "images": self.images}

    def load_state_dict(self, state: Mapping) -> None:
        if set(state) != {"signs", "steps", "images"}:
            raise ValueError(f"AdaptiveP: state must have keys ['images', 'signs', 'steps'], got {sorted(state)}")
        signs = torch.as_tensor(state["signs"])
        if signs.shape != (2,):
            raise ValueError(f"AdaptiveP: state['signs'] must have shape [2], got {list(signs.shape)}")
        self.signs.copy_(signs)
        self.steps, self.images = int(state["steps"]), int(state["images"])


DIFFAUGMENT_POLICIES = ("color", "translation", "cutout")


class DiffAugment(nn.Module):
    """DiffAugment (Zhao et al. 2020; see the module docstring): forward(images [N, C, H, W]) ->
    the images through each policy in order, every image, random per image, on the device.
    policy: comma-separated names from DIFFAUGMENT_POLICIES ('' = the identity)."""

    def __init__(self, policy: str = "color,translation,cutout", translation_ratio: float = 0.125,
                 cutout_ratio: float = 0.5):
        super().__init__()
        if not isinstance(policy, str):
            raise ValueError(f"DiffAugment: policy must be a comma-separated string, got {policy!r}")
        names = [p.strip() for p in policy.split(",") if p.strip()]
        unknown = [p for p in names if p not in DIFFAUGMENT_POLICIES]
        if unknown:
            raise ValueError(f"DiffAugment: unknown policy {unknown}; valid: {', '.join(DIFFAUGMENT_POLICIES)}")
        self.policy = names
        self.translation_ratio = _check_number("DiffAugment", "translation_ratio", translation_ratio)
        self.cutout_ratio = _check_number("DiffAugment", "cutout_ratio", cutout_ratio)
        if self.cutout_ratio > 1:
            raise ValueError(f"DiffAugment: cutout_ratio must be in [0, 1], got {cutout_ratio!r}")

    def extra_repr(self) -> str:
        return f"policy={','.join(self.policy)!r}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
            got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"DiffAugment: images must be a floating tensor [N, C, H, W], got {got}")
        for name in self.policy:
            x = getattr(self, f"_{name}")(x)
        return x

    @staticmethod
    def _per_image(x: torch.Tensor) -> torch.Tensor:
        return torch.rand(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype)

    def _color(self, x: torch.Tensor) -> torch.Tensor:
        x = x + (self._per_image(x) - 0.5)                                           # brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (self._per_image(x) * 2) + mean                             # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (self._per_image(x) + 0.5) + mean                        # contrast

    def _translation(self, x: torch.Tensor) -> torch.Tensor:
        """out[:, :, i, j] = x[:, :, i + dy, j + dx], 0 where that is outside the image."""
        n, c, h, w = x.shape
        my, mx = int(h * self.translation_ratio + 0.5), int(w * self.translation_ratio + 0.5)
        dy = torch.randint(-my, my + 1, (n, 1), device=x.device)
        dx = torch.randint(-mx, mx + 1, (n, 1), device=x.device)
        rows = torch.arange(h, device=x.device)[None] + dy                          # [n, h]
        cols = torch.arange(w, device=x.device)[None] + dx                          # [n, w]
        inside = ((rows >= 0) & (rows < h))[:, :, None] & ((cols >= 0) & (cols < w))[:, None, :]
        index = rows.clamp(0, h - 1)[:, :, None] * w + cols.clamp(0, w - 1)[:, None, :]
        moved = x.reshape(n, c, h * w).gather(2, index.reshape(n, 1, h * w).expand(n, c, h * w))
        return moved.reshape(n, c, h, w) * inside[:, None].to(x.dtype)

    def _cutout(self, x: torch.Tensor) -> torch.Tensor:
        """Zero a size_h x size_w rectangle whose top-left corner is at offset - size // 2, the
        offset uniform in [0, size + 1 - size_h % 2) per axis (clipped to the image)."""
        n, c, h, w = x.shape
        sh, sw = int(h * self.cutout_ratio + 0.5), int(w * self.cutout_ratio + 0.5)
        oy = torch.randint(0, h + (1 - sh % 2), (n, 1), device=x.device) - sh // 2
        ox = torch.randint(0, w + (1 - sw % 2), (n, 1), device=x.device) - sw // 2
        rows = torch.arange(h, device=x.device)[None]
        cols = torch.arange(w, device=x.device)[None]
        in_y = (rows >= oy) & (rows < oy + sh)                                       # [n, h]
        in_x = (cols >= ox) & (cols < ox + sw)                                       # [n, w]
        cut = in_y[:, :, None] & in_x[:, None, :]
        return x * (~cut)[:, None].to(x.dtype)
