"""Progressive Growing of GANs (ProGAN; Karras, Aila, Laine & Lehtinen 2018), the paper's Table 2 layout.

Stages at resolutions 4, 8, ..., R (R a power of two >= 8). A map at resolution r has
nf(r) = min(fmap_base // 2 ** (log2(r) - 1), fmap_max) channels (fmap_base 8192, fmap_max 512:
512 at 4..32, then 256, 128, 64, 32, 16 at 64..1024).

    G: z [N, z_dim] -pixel norm-> FC (z_dim -> nf(4) * 16, lrelu) -> [N, nf(4), 4, 4] -pixel norm->
       conv3x3 lrelu -pixel norm-> ; then per r = 8..R: nearest 2x up, (conv3x3 lrelu, pixel norm) x 2.
       toRGB_r: a 1x1 conv (linear, with bias) after every resolution's block.
    D: fromRGB_r: a 1x1 conv (lrelu) into every resolution; per r = R..8: conv3x3 lrelu
       (nf(r) -> nf(r)), conv3x3 lrelu (nf(r) -> nf(r / 2)), 2x2 average pool; at 4x4: minibatch
       stddev (group 4, 1 channel), conv3x3 lrelu (nf(4) + 1 -> nf(4)), FC (nf(4) * 16 -> nf(4),
       lrelu), FC (nf(4) -> 1, linear) -> logits [N].
Pixel norm is x / sqrt(mean over channels of x^2 + 1e-8) (normalize_2nd_moment).

Growing. G and D each hold a current stage (resolution r, fade-in weight alpha in [0, 1]), set by
set_stage(r, alpha) and kept as buffers (`stage_resolution` int64, `alpha` float) so that
state_dicts and checkpoints carry it. With x_{r/2} G's features after the r/2 block:
    G(z)   = (1 - alpha) * up2_nearest(toRGB_{r/2}(x_{r/2})) + alpha * toRGB_r(block_r(x_{r/2}))
    D(img) = ... blocks r/2 .. 8, epilogue, applied to
             (1 - alpha) * fromRGB_{r/2}(avgpool2(img)) + alpha * block_r(fromRGB_r(img))
computed as torch.lerp(old, new, alpha). alpha == 1 runs the new path alone and alpha == 0 the old
path alone (bitwise those paths; the unused one is not run); at r = 4 alpha is ignored. Layers
of resolutions above the current stage are never run, so their parameters get no gradient.

The stage is read on the host: forward reads plain Python mirrors of the buffers (updated by
set_stage and when a state dict is loaded), never the buffers, so it does not synchronize with the
device. A write to the buffers in place is not seen by the mirrors: ganfast.training.EMA.update
copies the stage buffer and (with average_buffers=True) averages alpha in place, so call
set_stage on G_ema as well as on G whenever the stage changes.

Equalized learning rate everywhere: EqualizedLinear / EqualizedConv2d store N(0, 1) weights
(zero biases) and scale them by 1 / sqrt(fan_in) at use; act="lrelu" runs bias and leaky ReLU
(slope 0.2) through the fused ganfast.ops.bias_act with gain sqrt(2). Because leaky ReLU is
positively homogeneous, sqrt(2) * lrelu(y) = lrelu(sqrt(2) * y): the paper's He-scaled weights
(sqrt(2) / sqrt(fan_in)) followed by a plain leaky ReLU, with the bias reparametrized by the same
sqrt(2). toRGB and D's output FC are linear (gain 1). Nearest upsampling and average pooling are
plain torch (F.interpolate, F.avg_pool2d); set_backend(model, "reference") reaches every
equalized layer.

Presets: progan-1024 (the paper's CelebA-HQ network), progan-256, and progan-32 (Fashion-MNIST on
a CPU).
"""
from __future__ import annotations

import math
import numbers
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models.common import check_images, check_latent, labels_to_onehot
from ganfast.models.registry import register_preset
from ganfast.nn.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, normalize_2nd_moment

__all__ = ["ProGANGenerator", "ProGANDiscriminator", "build_progan", "stage_channels", "channels_per_resolution"]

MIN_RESOLUTION = 8      # one growing stage above 4x4


def _check_positive_int(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{who}: {name} must be a positive int, got {value!r}")
    return value


def stage_channels(resolution: int, fmap_base: int, fmap_max: int) -> int:
    """nf(r) = min(fmap_base / 2 ** stage, fmap_max) with stage = log2(r) - 1 (the paper's rule)."""
    return min(fmap_base // 2 ** (int(math.log2(resolution)) - 1), fmap_max)


def channels_per_resolution(img_resolution: int, fmap_base: int, fmap_max: int) -> dict[int, int]:
    """{r: nf(r)} for r = 4, 8, ..., img_resolution."""
    return {2 ** k: stage_channels(2 ** k, fmap_base, fmap_max) for k in range(2, int(math.log2(img_resolution)) + 1)}


def _check_layout(who: str, img_resolution, fmap_base, fmap_max) -> dict[int, int]:
    if (isinstance(img_resolution, bool) or not isinstance(img_resolution, int) or img_resolution < MIN_RESOLUTION
            or img_resolution & (img_resolution - 1)):
        raise ValueError(f"{who}: img_resolution must be a power of two >= {MIN_RESOLUTION} (e.g. 32, 1024), "
                         f"got {img_resolution!r}")
    _check_positive_int(who, "fmap_base", fmap_base)
    _check_positive_int(who, "fmap_max", fmap_max)
    channels = channels_per_resolution(img_resolution, fmap_base, fmap_max)
    if channels[img_resolution] < 1:
        raise ValueError(f"{who}: fmap_base={fmap_base} leaves no channels at {img_resolution}x{img_resolution}; "
                         f"it must be >= {img_resolution // 2}")
    return channels


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Nearest-neighbour 2x upsampling: [N, C, H, W] -> [N, C, 2H, 2W]."""
    return F.interpolate(x, scale_factor=2, mode="nearest")


class ProgressiveStage(nn.Module):
    """The growing state G and D share: stage_resolutions [4, ..., R], the buffers stage_resolution
    (int64) and alpha, their host-side mirrors, and set_stage. Starts at (R, 1): the full network."""

    def __init__(self, img_resolution: int):
        super().__init__()
        self.stage_resolutions = [2 ** k for k in range(2, int(math.log2(img_resolution)) + 1)]
        self.register_buffer("stage_resolution", torch.tensor(img_resolution, dtype=torch.int64))
        self.register_buffer("alpha", torch.tensor(1.0))
        self._resolution_host, self._alpha_host = img_resolution, 1.0   # what forward reads

    @property
    def current_resolution(self) -> int:
        return self._resolution_host

    @property
    def current_alpha(self) -> float:
        return self._alpha_host

    def _checked_stage(self, resolution, alpha) -> tuple[int, float]:
        who = f"{type(self).__name__}.set_stage"
        if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution not in self.stage_resolutions:
            raise ValueError(f"{who}: resolution must be an int, one of {self.stage_resolutions}, got {resolution!r}")
        if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 <= alpha <= 1:
            raise ValueError(f"{who}: alpha must be a Python float in [0, 1] (the fade-in weight of the "
                             f"{resolution}x{resolution} layers), got {alpha!r}")
        return resolution, float(alpha)

    def set_stage(self, resolution: int, alpha: float = 1.0) -> "ProgressiveStage":
        """Run at `resolution` (one of stage_resolutions) with the new layers faded in by `alpha`
        (0: the previous stage's output, upsampled / on the downsampled image; 1: the new layers
        alone; ignored at 4). Updates the buffers in place (no host read) and the mirrors; returns self."""
        resolution, alpha = self._checked_stage(resolution, alpha)
        with torch.no_grad():
            self.stage_resolution.fill_(resolution)
            self.alpha.fill_(alpha)
        self._resolution_host, self._alpha_host = resolution, alpha
        return self

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # Loading is the one place the stage is read from tensors (a host read, once per load).
        resolution, alpha = state_dict.get(prefix + "stage_resolution"), state_dict.get(prefix + "alpha")
        if resolution is not None and alpha is not None:
            try:
                stage = self._checked_stage(int(resolution), float(alpha))
            except ValueError as e:
                error_msgs.append(f"{prefix}stage_resolution / {prefix}alpha in the state dict: {e}")
                stage = None
        else:
            stage = None       # a key is missing: super() reports it under strict loading
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
        if stage is not None:
            self._resolution_host, self._alpha_host = stage

    def extra_repr(self) -> str:
        return f"stage_resolutions={self.stage_resolutions}, stage=({self._resolution_host}, {self._alpha_host})"


class GeneratorInput(nn.Module):
    """G at 4x4: z [N, z_dim] -pixel norm-> FC lrelu -> [N, C, 4, 4] -pixel norm-> conv3x3 lrelu -pixel norm->."""

    def __init__(self, z_dim: int, channels: int):
        super().__init__()
        self.channels = channels
        self.fc = EqualizedLinear(z_dim, channels * 16, act="lrelu")
        self.conv = EqualizedConv2d(channels, channels, 3, act="lrelu")

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.fc(normalize_2nd_moment(z)).view(z.shape[0], self.channels, 4, 4)
        return normalize_2nd_moment(self.conv(normalize_2nd_moment(x)))


class GeneratorBlock(nn.Module):
    """One resolution of G: [N, in, r/2, r/2] -nearest 2x up-> (conv3x3 lrelu, pixel norm) x 2 -> [N, out, r, r]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, out_channels, 3, act="lrelu")
        self.conv1 = EqualizedConv2d(out_channels, out_channels, 3, act="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = normalize_2nd_moment(self.conv0(upsample2x(x)))
        return normalize_2nd_moment(self.conv1(x))


class DiscriminatorBlock(nn.Module):
    """One resolution of D: [N, in, r, r] -conv3x3 lrelu (in -> in), conv3x3 lrelu (in -> out), avgpool 2->
    [N, out, r/2, r/2]."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv0 = EqualizedConv2d(in_channels, in_channels, 3, act="lrelu")
        self.conv1 = EqualizedConv2d(in_channels, out_channels, 3, act="lrelu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(self.conv1(self.conv0(x)), 2)


class DiscriminatorEpilogue(nn.Module):
    """D at 4x4: [N, C, 4, 4] -minibatch stddev-> conv3x3 lrelu (C + 1 -> C) -> FC lrelu (16 C -> C)
    -> FC (C -> 1) -> logits [N]."""

    def __init__(self, channels: int, mbstd_group_size: int = 4):
        super().__init__()
        self.mbstd = MinibatchStd(mbstd_group_size, 1)
        self.conv = EqualizedConv2d(channels + 1, channels, 3, act="lrelu")
        self.fc = EqualizedLinear(channels * 16, channels, act="lrelu")
        self.out = EqualizedLinear(channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.fc(self.conv(self.mbstd(x)).flatten(1))
        return self.out(x).squeeze(1)


class ProGANGenerator(ProgressiveStage):
    """G(z [N, z_dim], c=None) -> images [N, img_channels, r, r] at the current stage r. Unconditional.

    blocks["4"] is the 4x4 input block, blocks[str(r)] the block of resolution r; torgb[str(r)] its
    1x1 toRGB."""

    c_dim = 0

    def __init__(self, z_dim: int = 512, img_resolution: int = 1024, img_channels: int = 3, fmap_base: int = 8192,
                 fmap_max: int = 512):
        who = type(self).__name__
        channels = _check_layout(who, img_resolution, fmap_base, fmap_max)
        super().__init__(img_resolution)
        self.z_dim = _check_positive_int(who, "z_dim", z_dim)
        self.img_resolution = img_resolution
        self.img_channels = _check_positive_int(who, "img_channels", img_channels)
        self.fmap_base, self.fmap_max = fmap_base, fmap_max
        self.blocks = nn.ModuleDict({"4": GeneratorInput(z_dim, channels[4])})
        for r in self.stage_resolutions[1:]:
            self.blocks[str(r)] = GeneratorBlock(channels[r // 2], channels[r])
        self.torgb = nn.ModuleDict({str(r): EqualizedConv2d(channels[r], img_channels, 1)
                                    for r in self.stage_resolutions})

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        check_latent(who, z, self.z_dim)
        labels_to_onehot(who, c, self.c_dim, z.shape[0], z.dtype)
        r, alpha = self._resolution_host, self._alpha_host
        x = z
        for res in self.stage_resolutions[:self.stage_resolutions.index(r)]:
            x = self.blocks[str(res)](x)                       # ends as x_{r/2} [N, nf(r/2), r/2, r/2]
        if r == 4 or alpha == 1:
            return self.torgb[str(r)](self.blocks[str(r)](x))
        old = upsample2x(self.torgb[str(r // 2)](x))           # [N, img_channels, r, r]
        if alpha == 0:
            return old
        return torch.lerp(old, self.torgb[str(r)](self.blocks[str(r)](x)), alpha)

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, fmap_base={self.fmap_base}, fmap_max={self.fmap_max}, "
                + super().extra_repr())


class ProGANDiscriminator(ProgressiveStage):
    """D(img [N, img_channels, r, r], c=None) -> logits [N] at the current stage r. Unconditional.
    N must be divisible by min(4, N) (the minibatch stddev groups).

    fromrgb[str(r)] is the 1x1 input layer of resolution r, blocks[str(r)] (r >= 8) its block, and
    epilogue the 4x4 head."""

    c_dim = 0

    def __init__(self, img_resolution: int = 1024, img_channels: int = 3, fmap_base: int = 8192,
                 fmap_max: int = 512, mbstd_group_size: int = 4):
        who = type(self).__name__
        channels = _check_layout(who, img_resolution, fmap_base, fmap_max)
        super().__init__(img_resolution)
        self.img_resolution = img_resolution
        self.img_channels = _check_positive_int(who, "img_channels", img_channels)
        self.fmap_base, self.fmap_max = fmap_base, fmap_max
        self.fromrgb = nn.ModuleDict({str(r): EqualizedConv2d(img_channels, channels[r], 1, act="lrelu")
                                      for r in self.stage_resolutions})
        self.blocks = nn.ModuleDict({str(r): DiscriminatorBlock(channels[r], channels[r // 2])
                                     for r in self.stage_resolutions[:0:-1]})     # R, ..., 8
        self.epilogue = DiscriminatorEpilogue(channels[4], mbstd_group_size)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        who = type(self).__name__
        r, alpha = self._resolution_host, self._alpha_host
        check_images(f"{who} (current stage {r}x{r}; set_stage changes it)", img, self.img_channels, r)
        labels_to_onehot(who, c, self.c_dim, img.shape[0], img.dtype)
        if r == 4:
            return self.epilogue(self.fromrgb["4"](img))
        if alpha == 1:
            x = self.blocks[str(r)](self.fromrgb[str(r)](img))
        else:
            x = self.fromrgb[str(r // 2)](F.avg_pool2d(img, 2))      # [N, nf(r/2), r/2, r/2]
            if alpha != 0:
                x = torch.lerp(x, self.blocks[str(r)](self.fromrgb[str(r)](img)), alpha)
        for res in self.stage_resolutions[self.stage_resolutions.index(r) - 1:0:-1]:   # r/2, ..., 8
            x = self.blocks[str(res)](x)
        return self.epilogue(x)

    def extra_repr(self) -> str:
        return (f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, "
                f"fmap_base={self.fmap_base}, fmap_max={self.fmap_max}, " + super().extra_repr())


def build_progan(resolution: int = 1024, img_channels: int = 3, z_dim: int = 512, fmap_base: int = 8192,
                 fmap_max: int = 512) -> tuple[ProGANGenerator, ProGANDiscriminator]:
    """(G, D) of the ProGAN layout, both at the full resolution with alpha 1."""
    return (ProGANGenerator(z_dim, resolution, img_channels, fmap_base, fmap_max),
            ProGANDiscriminator(resolution, img_channels, fmap_base, fmap_max))


register_preset(
    "progan-1024", "progan", build_progan,
    description="ProGAN at 1024x1024 RGB (CelebA-HQ): z 512, fmap_base 8192, fmap_max 512 (512 channels at "
                "4..32, halving to 16 at 1024), pixel norm in G, minibatch stddev in D; "
                "G 23,086,795, D 23,087,249 parameters (a toRGB / fromRGB at every resolution)",
    published="ProGAN paper (Karras et al. 2018), Table 2: G 23.1M, D 23.1M; equal to 0.1M here",
    resolution=1024, img_channels=3, z_dim=512, fmap_base=8192, fmap_max=512)

register_preset(
    "progan-256", "progan", build_progan,
    description="ProGAN at 256x256 RGB (LSUN-sized): the 1024 network's widths, stages 4..256 "
                "(64 channels at 256); G 23,051,989, D 23,052,353 parameters",
    published="none: the paper tabulates the 1024x1024 network only; this is its first seven stages",
    resolution=256, img_channels=3, z_dim=512, fmap_base=8192, fmap_max=512)

register_preset(
    "progan-32", "progan", build_progan,
    description="a small ProGAN for 32x32 grayscale (Fashion-MNIST on a CPU): z 128, fmap_base 512, "
                "fmap_max 64 (64 channels at 4..16, 32 at 32); G 344,676, D 279,073 parameters",
    published="none (a CPU-sized config of ours: WGAN-GP differentiates D twice every step, so the "
              "widths are kept small enough to grow to 32x32 in about 10 CPU minutes)",
    resolution=32, img_channels=1, z_dim=128, fmap_base=512, fmap_max=64)
