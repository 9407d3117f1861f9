"""StyleGAN2 (Karras et al. 2020, configs E/F: skip generator, resnet discriminator), built from
ganfast.nn: EqualizedLinear / EqualizedConv2d (fused bias_act, upfirdn2d resampling),
ModulatedConv2d / ToRGB (fused modulated convolution with noise and epilogue) and MinibatchStd.

Generator = MappingNetwork (z, c -> w, with the running w average for truncation) +
SynthesisNetwork (a learned 4x4 constant, two modulated 3x3 convolutions per resolution, the
first upsampling; a ToRGB per resolution whose outputs are summed after upfirdn2d upsampling).
Discriminator: fromRGB at full resolution, resnet blocks (3x3 conv, 3x3 conv with downsampling,
a 1x1 downsampling skip, both scaled by sqrt(1/2)), then minibatch stddev, 3x3 conv, two FCs; with
labels, a projection onto a mapped label embedding (cmap).

Mixed precision (the NVIDIA recipe): the num_fp16_res highest resolutions run in float16 on
devices in FP16_DEVICE_TYPES (CUDA), with their convolution outputs clamped to +-conv_clamp;
elsewhere they run in float32.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from ganfast.models.common import check_images, check_latent, labels_to_onehot
from ganfast.models.registry import register_preset
from ganfast.nn.equalized import EqualizedConv2d, EqualizedLinear, MinibatchStd, normalize_2nd_moment
from ganfast.nn.modulated_conv2d import NOISE_MODES, ModulatedConv2d, ToRGB
from ganfast.ops.modulated_conv2d.reference import resample_padding
from ganfast.ops.upfirdn2d import setup_filter, upfirdn2d

FP16_DEVICE_TYPES = ("cuda",)


def _check_resolution(name: str, resolution: int) -> int:
    if not isinstance(resolution, int) or resolution < 4 or resolution & (resolution - 1):
        raise ValueError(f"{name}: resolution must be a power of two >= 4, got {resolution!r}")
    return int(math.log2(resolution))


def channels_per_resolution(resolution: int, channel_base: int, channel_max: int) -> dict[int, int]:
    """{res: min(channel_base // res, channel_max)} for res = 4 .. resolution (StyleGAN2's rule)."""
    return {2 ** i: min(channel_base // 2 ** i, channel_max) for i in range(2, int(math.log2(resolution)) + 1)}


def block_dtype(use_fp16: bool, x: torch.Tensor, force_fp32: bool) -> torch.dtype:
    """A block's compute dtype: float16 for an fp16 block on an FP16_DEVICE_TYPES device, else
    x's dtype promoted to at least float32 (float64 models stay float64)."""
    if use_fp16 and not force_fp32 and x.device.type in FP16_DEVICE_TYPES:
        return torch.float16
    return at_least_fp32(x).dtype


def at_least_fp32(t: torch.Tensor) -> torch.Tensor:
    return t if t.dtype in (torch.float32, torch.float64) else t.float()


class MappingNetwork(nn.Module):
    """z [N, z_dim], c [N, c_dim] -> ws [N, num_ws, w_dim] (num_ws None: [N, w_dim]).

    z and the embedded label are each normalized to unit second moment and concatenated, then
    num_layers equalized FC layers with lrelu at lr_multiplier (0.01: the mapping learns 100x
    slower). In training mode the running average w_avg (decay w_avg_beta) is updated; truncation
    moves the first truncation_cutoff ws (all when None) toward it: w_avg + psi * (w - w_avg).
    """

    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: Optional[int], num_layers: int = 8,
                 lr_multiplier: float = 0.01, w_avg_beta: Optional[float] = 0.995, layer_features: Optional[int] = None):
        super().__init__()
        for name, v in (("z_dim", z_dim), ("c_dim", c_dim)):
            if not isinstance(v, int) or v < 0:
                raise ValueError(f"MappingNetwork: {name} must be an int >= 0, got {v!r}")
        if z_dim == 0 and c_dim == 0:
            raise ValueError("MappingNetwork: z_dim and c_dim cannot both be 0")
        if not isinstance(num_layers, int) or num_layers < 1:
            raise ValueError(f"MappingNetwork: num_layers must be an int >= 1, got {num_layers!r}")
        self.z_dim, self.c_dim, self.w_dim, self.num_ws, self.num_layers = z_dim, c_dim, w_dim, num_ws, num_layers
        self.w_avg_beta = w_avg_beta
        layer_features = w_dim if layer_features is None else layer_features
        self.embed = EqualizedLinear(c_dim, w_dim) if c_dim > 0 else None
        features = [z_dim + (w_dim if c_dim > 0 else 0)] + [layer_features] * (num_layers - 1) + [w_dim]
        self.layers = nn.ModuleList([EqualizedLinear(i, o, act="lrelu", lr_multiplier=lr_multiplier)
                                     for i, o in zip(features[:-1], features[1:])])
        if w_avg_beta is not None:
            self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z: Optional[torch.Tensor], c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, update_w_avg: Optional[bool] = None) -> torch.Tensor:
        # float32 even under autocast: the network is tiny, and w (with its running average) steers every layer
        device_type = (z if z is not None else self.layers[0].weight).device.type
        with torch.autocast(device_type=device_type, enabled=False):
            return self._forward(z, c, truncation_psi, truncation_cutoff, update_w_avg)

    def _forward(self, z, c, truncation_psi, truncation_cutoff, update_w_avg) -> torch.Tensor:
        parts = []
        if self.z_dim > 0:
            check_latent("MappingNetwork", z, self.z_dim)
            parts.append(normalize_2nd_moment(at_least_fp32(z)))
        n = z.shape[0] if self.z_dim > 0 else (c.shape[0] if c is not None else 0)
        dtype = at_least_fp32(z).dtype if z is not None else self.layers[0].weight.dtype
        onehot = labels_to_onehot("MappingNetwork", c, self.c_dim, n, dtype)
        if onehot is not None:
            parts.append(normalize_2nd_moment(self.embed(onehot)))
        x = torch.cat(parts, dim=1) if len(parts) > 1 else parts[0]
        for layer in self.layers:
            x = layer(x)
        if update_w_avg is None:
            update_w_avg = self.training
        if update_w_avg and self.w_avg_beta is not None:
            with torch.no_grad():
                self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))
        if self.num_ws is None:
            if truncation_psi != 1:
                raise ValueError("MappingNetwork: truncation needs num_ws (a generator's mapping)")
            return x
        ws = x.unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError("MappingNetwork: truncation needs the w average (w_avg_beta is None)")
            cutoff = self.num_ws if truncation_cutoff is None else truncation_cutoff
            ws = ws.clone()
            ws[:, :cutoff] = self.w_avg.lerp(ws[:, :cutoff], truncation_psi)
        return ws

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, w_dim={self.w_dim}, num_ws={self.num_ws}, "
                f"num_layers={self.num_layers}")


class SynthesisBlock(nn.Module):
    """One resolution of the skip generator: (const | conv0 with up=2), conv1, ToRGB; the running
    image is upsampled through the resample filter and the block's ToRGB added."""

    def __init__(self, in_channels: int, out_channels: int, w_dim: int, resolution: int, img_channels: int,
                 use_fp16: bool, conv_clamp: Optional[float], resample_filter: Sequence[float], noise_mode: str,
                 fused_modconv: Optional[bool] = None, architecture: str = "skip", is_last: bool = True):
        super().__init__()
        self.in_channels, self.out_channels, self.resolution = in_channels, out_channels, resolution
        self.use_fp16, self.backend = use_fp16, None
        common = dict(w_dim=w_dim, resolution=resolution, conv_clamp=conv_clamp, resample_filter=resample_filter,
                      noise_mode=noise_mode, fused_modconv=fused_modconv)
        if in_channels == 0:
            self.const = nn.Parameter(torch.randn(out_channels, resolution, resolution))
            self.conv0 = None
        else:
            self.const = None
            self.conv0 = ModulatedConv2d(in_channels, out_channels, 3, up=2, **common)
        self.conv1 = ModulatedConv2d(out_channels, out_channels, 3, **common)
        # 'orig': only the last block has a ToRGB (the image comes from the last features alone)
        self.torgb = (ToRGB(out_channels, img_channels, w_dim, conv_clamp=conv_clamp, fused_modconv=fused_modconv)
                      if architecture == "skip" or is_last else None)
        self.register_buffer("resample_filter", setup_filter(list(resample_filter)))
        self.num_conv = 1 if in_channels == 0 else 2
        self.img_padding = list(resample_padding(self.resample_filter, 2, 1, 0))   # the skip image's 2x upsampling

    def forward(self, x: Optional[torch.Tensor], img: Optional[torch.Tensor], ws: torch.Tensor,
                noise_mode: Optional[str], force_fp32: bool) -> tuple[torch.Tensor, torch.Tensor]:
        # ws: [N, num_conv + 1, w_dim] (this block's convolutions, then its ToRGB)
        dtype = block_dtype(self.use_fp16, ws, force_fp32)
        if self.const is not None:
            x = self.const.to(dtype).unsqueeze(0).repeat(ws.shape[0], 1, 1, 1)
            x = self.conv1(x, ws[:, 0], noise_mode=noise_mode)
        else:
            x = self.conv0(x.to(dtype), ws[:, 0], noise_mode=noise_mode)
            x = self.conv1(x, ws[:, 1], noise_mode=noise_mode)
        if self.torgb is None:
            return x, None
        if img is not None:
            img = upfirdn2d(img, self.resample_filter, up=2, padding=self.img_padding, gain=4, backend=self.backend)
        y = at_least_fp32(self.torgb(x, ws[:, -1]))
        img = y if img is None else img + y
        return x, img


class SynthesisNetwork(nn.Module):
    """ws [N, num_ws, w_dim] -> images [N, img_channels, R, R] (float32)."""

    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channel_base: int = 32768,
                 channel_max: int = 512, num_fp16_res: int = 0, conv_clamp: Optional[float] = None,
                 resample_filter: Sequence[float] = (1, 3, 3, 1), noise_mode: str = "random",
                 fused_modconv: Optional[bool] = None, architecture: str = "skip"):
        super().__init__()
        log2 = _check_resolution("SynthesisNetwork", img_resolution)
        if architecture not in ("skip", "orig"):
            raise ValueError(f"SynthesisNetwork: architecture must be 'skip' or 'orig', got {architecture!r}")
        if noise_mode not in NOISE_MODES:
            raise ValueError(f"SynthesisNetwork: noise_mode must be one of {NOISE_MODES}, got {noise_mode!r}")
        if not isinstance(num_fp16_res, int) or num_fp16_res < 0:
            raise ValueError(f"SynthesisNetwork: num_fp16_res must be an int >= 0, got {num_fp16_res!r}")
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_fp16_res = num_fp16_res
        channels = channels_per_resolution(img_resolution, channel_base, channel_max)
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.blocks = nn.ModuleList()
        for res in channels:
            self.blocks.append(SynthesisBlock(channels[res // 2] if res > 4 else 0, channels[res], w_dim, res,
                                              img_channels, use_fp16=res >= fp16_resolution and num_fp16_res > 0,
                                              conv_clamp=conv_clamp, resample_filter=resample_filter,
                                              noise_mode=noise_mode, fused_modconv=fused_modconv,
                                              architecture=architecture, is_last=res == img_resolution))
        # block i reads ws[w_idx : w_idx + num_conv + 1]; its ToRGB's w is the next block's first
        self.num_ws = sum(b.num_conv for b in self.blocks) + 1

    def forward(self, ws: torch.Tensor, noise_mode: Optional[str] = None, force_fp32: bool = False) -> torch.Tensor:
        if ws.ndim != 3 or ws.shape[1:] != (self.num_ws, self.w_dim):
            raise ValueError(f"SynthesisNetwork: ws must be [N, {self.num_ws}, {self.w_dim}], got {list(ws.shape)}")
        x = img = None
        w_idx = 0
        ws = at_least_fp32(ws)
        for block in self.blocks:
            x, img = block(x, img, ws[:, w_idx:w_idx + block.num_conv + 1], noise_mode, force_fp32)
            w_idx += block.num_conv
        return img


class StyleBasedGenerator(nn.Module):
    """G(z, c) = synthesis(mapping(z, c)), shared by StyleGAN2 and StyleGAN (v1). Options at call
    time: truncation_psi / truncation_cutoff, noise_mode ('random', 'const', 'none'), style mixing
    (style_mixing_prob; in training mode a batch takes its ws from a second z after a random
    crossover layer), and whatever the synthesis network takes (force_fp32)."""

    def __init__(self, synthesis: nn.Module, z_dim: int, c_dim: int, w_dim: int, mapping_layers: int,
                 mapping_lr_multiplier: float, w_avg_beta: float, style_mixing_prob: float):
        super().__init__()
        name = type(self).__name__
        if not 0 <= style_mixing_prob <= 1:
            raise ValueError(f"{name}: style_mixing_prob must be in [0, 1], got {style_mixing_prob!r}")
        if not isinstance(z_dim, int) or z_dim < 1:
            raise ValueError(f"{name}: z_dim must be a positive int, got {z_dim!r}")
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = synthesis.img_resolution, synthesis.img_channels
        self.style_mixing_prob = style_mixing_prob
        self.synthesis = synthesis
        self.num_ws = synthesis.num_ws
        self.mapping = MappingNetwork(z_dim, c_dim, w_dim, self.num_ws, mapping_layers, mapping_lr_multiplier,
                                      w_avg_beta)

    def mix_styles(self, ws: torch.Tensor, c: Optional[torch.Tensor], prob: float) -> torch.Tensor:
        """Style mixing regularization: with probability prob, replace ws[:, cutoff:] by the ws of a
        fresh z (one random cutoff in [1, num_ws) for the batch, as the StyleGAN2 codebases).
        The coin and the cutoff are drawn on ws's device and applied with torch.where, so the host
        never reads them (no synchronization; a CUDA graph replays it with fresh draws); the
        second z's ws are computed either way, as NVlabs does."""
        if prob <= 0:
            return ws
        num_ws = ws.shape[1]
        cutoff = torch.randint(1, num_ws, (), device=ws.device)
        cutoff = torch.where(torch.rand((), device=ws.device) < prob, cutoff, num_ws)
        z2 = torch.randn(ws.shape[0], self.z_dim, device=ws.device)
        ws2 = self.mapping(z2, c, update_w_avg=False)
        keep = (torch.arange(num_ws, device=ws.device) < cutoff).view(1, num_ws, 1)       # [1, num_ws, 1]
        return torch.where(keep, ws, ws2)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None, truncation_psi: float = 1.0,
                truncation_cutoff: Optional[int] = None, noise_mode: Optional[str] = None,
                style_mixing_prob: Optional[float] = None, **synthesis_kwargs) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi, truncation_cutoff)
        prob = self.style_mixing_prob if style_mixing_prob is None else style_mixing_prob
        if self.training and prob > 0:
            ws = self.mix_styles(ws, c, prob)
        return self.synthesis(ws, noise_mode=noise_mode, **synthesis_kwargs)


class StyleGAN2Generator(StyleBasedGenerator):
    """StyleGAN2's generator: the mapping network and the skip synthesis network."""

    def __init__(self, z_dim: int = 512, c_dim: int = 0, w_dim: int = 512, img_resolution: int = 256,
                 img_channels: int = 3, channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                 mapping_lr_multiplier: float = 0.01, w_avg_beta: float = 0.995, num_fp16_res: int = 0,
                 conv_clamp: Optional[float] = None, style_mixing_prob: float = 0.0, noise_mode: str = "random",
                 resample_filter: Sequence[float] = (1, 3, 3, 1), fused_modconv: Optional[bool] = None,
                 architecture: str = "skip"):
        synthesis = SynthesisNetwork(w_dim, img_resolution, img_channels, channel_base, channel_max,
                                     num_fp16_res, conv_clamp, resample_filter, noise_mode, fused_modconv,
                                     architecture)
        super().__init__(synthesis, z_dim, c_dim, w_dim, mapping_layers, mapping_lr_multiplier, w_avg_beta,
                         style_mixing_prob)


class DiscriminatorBlock(nn.Module):
    """One resolution of the resnet (or 'orig': no skip) discriminator: conv0 3x3, conv1 3x3 down 2,
    skip 1x1 down 2 without bias; outputs summed with gain sqrt(1/2). The first block has fromRGB."""

    def __init__(self, in_channels: int, tmp_channels: int, out_channels: int, img_channels: int,
                 architecture: str, use_fp16: bool, conv_clamp: Optional[float], resample_filter: Sequence[float]):
        super().__init__()
        self.use_fp16, self.architecture = use_fp16, architecture
        self.fromrgb = (EqualizedConv2d(img_channels, tmp_channels, 1, act="lrelu", conv_clamp=conv_clamp)
                        if in_channels == 0 else None)
        self.conv0 = EqualizedConv2d(tmp_channels, tmp_channels, 3, act="lrelu", conv_clamp=conv_clamp)
        self.conv1 = EqualizedConv2d(tmp_channels, out_channels, 3, act="lrelu", down=2, conv_clamp=conv_clamp,
                                     resample_filter=resample_filter)
        self.skip = (EqualizedConv2d(tmp_channels, out_channels, 1, bias=False, down=2, resample_filter=resample_filter)
                     if architecture == "resnet" else None)

    def forward(self, x: Optional[torch.Tensor], img: torch.Tensor, force_fp32: bool) -> torch.Tensor:
        dtype = block_dtype(self.use_fp16, img, force_fp32)
        x = self.fromrgb(img.to(dtype)) if self.fromrgb is not None else x.to(dtype)
        if self.skip is not None:
            y = self.skip(x, gain=math.sqrt(0.5))
            return y.add_(self.conv1(self.conv0(x), gain=math.sqrt(0.5)))
        return self.conv1(self.conv0(x))


class StyleGAN2Discriminator(nn.Module):
    """D(img [N, C, R, R], c) -> logits [N]. The epilogue at 4x4: minibatch stddev (group
    mbstd_group_size, mbstd_num_channels), 3x3 conv, FC to channels, FC to 1 (or to cmap_dim with
    labels: logits = sum(out * mapping(c)) / sqrt(cmap_dim), the projection discriminator)."""

    def __init__(self, c_dim: int = 0, img_resolution: int = 256, img_channels: int = 3,
                 architecture: str = "resnet", channel_base: int = 32768, channel_max: int = 512,
                 num_fp16_res: int = 0, conv_clamp: Optional[float] = None, cmap_dim: Optional[int] = None,
                 mbstd_group_size: int = 4, mbstd_num_channels: int = 1, mapping_layers: int = 8,
                 resample_filter: Sequence[float] = (1, 3, 3, 1)):
        super().__init__()
        log2 = _check_resolution("StyleGAN2Discriminator", img_resolution)
        if img_resolution < 8:
            raise ValueError(f"StyleGAN2Discriminator: img_resolution must be >= 8 (one block), got {img_resolution}")
        if architecture not in ("resnet", "orig"):
            raise ValueError(f"StyleGAN2Discriminator: architecture must be 'resnet' or 'orig', got {architecture!r}")
        if not isinstance(c_dim, int) or c_dim < 0:
            raise ValueError(f"StyleGAN2Discriminator: c_dim must be an int >= 0, got {c_dim!r}")
        self.c_dim, self.img_resolution, self.img_channels = c_dim, img_resolution, img_channels
        channels = channels_per_resolution(img_resolution, channel_base, channel_max)
        fp16_resolution = max(2 ** (log2 + 1 - num_fp16_res), 8)
        self.blocks = nn.ModuleList()
        for res in sorted(channels, reverse=True)[:-1]:
            self.blocks.append(DiscriminatorBlock(channels[res] if res < img_resolution else 0, channels[res],
                                                  channels[res // 2], img_channels, architecture,
                                                  use_fp16=res >= fp16_resolution and num_fp16_res > 0,
                                                  conv_clamp=conv_clamp, resample_filter=resample_filter))
        c4 = channels[4]
        if c_dim > 0:
            self.cmap_dim = c4 if cmap_dim is None else cmap_dim
            self.mapping = MappingNetwork(0, c_dim, self.cmap_dim, None, mapping_layers, w_avg_beta=None)
        else:
            self.cmap_dim, self.mapping = 0, None
        self.mbstd = MinibatchStd(mbstd_group_size, mbstd_num_channels) if mbstd_num_channels > 0 else None
        self.conv = EqualizedConv2d(c4 + mbstd_num_channels, c4, 3, act="lrelu", conv_clamp=conv_clamp)
        self.fc = EqualizedLinear(c4 * 16, c4, act="lrelu")
        self.out = EqualizedLinear(c4, self.cmap_dim if c_dim > 0 else 1)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None, force_fp32: bool = False) -> torch.Tensor:
        check_images("StyleGAN2Discriminator", img, self.img_channels, self.img_resolution)
        onehot = labels_to_onehot("StyleGAN2Discriminator", c, self.c_dim, img.shape[0], at_least_fp32(img).dtype)
        x = None
        for block in self.blocks:
            x = block(x, img, force_fp32)
        x = at_least_fp32(x)
        if self.mbstd is not None:
            x = self.mbstd(x)
        x = self.fc(self.conv(x).flatten(1))
        x = self.out(x)
        if self.mapping is not None:
            cmap = self.mapping(None, onehot)
            return (x * cmap).sum(dim=1) * (1 / math.sqrt(self.cmap_dim))
        return x.squeeze(1)


def build_stylegan2(resolution: int = 256, z_dim: int = 512, w_dim: int = 512, c_dim: int = 0, img_channels: int = 3,
                    channel_base: int = 32768, channel_max: int = 512, mapping_layers: int = 8,
                    num_fp16_res: int = 0, conv_clamp: Optional[float] = None, style_mixing_prob: float = 0.9,
                    mbstd_group_size: int = 4, architecture: str = "resnet", noise_mode: str = "random",
                    fused_modconv: Optional[bool] = None, g_architecture: str = "skip"
                    ) -> tuple[StyleGAN2Generator, StyleGAN2Discriminator]:
    """architecture: D's ('resnet' or 'orig'); g_architecture: G's ('skip' or 'orig')."""
    G = StyleGAN2Generator(z_dim, c_dim, w_dim, resolution, img_channels, channel_base, channel_max, mapping_layers,
                           num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, style_mixing_prob=style_mixing_prob,
                           noise_mode=noise_mode, fused_modconv=fused_modconv, architecture=g_architecture)
    D = StyleGAN2Discriminator(c_dim, resolution, img_channels, architecture, channel_base, channel_max,
                               num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, mbstd_group_size=mbstd_group_size)
    return G, D


_NV = "NVlabs stylegan2-ada-pytorch"
register_preset("stylegan2-1024", "stylegan2", build_stylegan2, resolution=1024, channel_base=32768,
                num_fp16_res=4, conv_clamp=256,
                description="StyleGAN2 config F at 1024x1024 (FFHQ): channel_base 32768, 8-layer mapping",
                published="StyleGAN2 paper / official config-f networks: G 30.0M, D 29.0M")
register_preset("stylegan2-256", "stylegan2", build_stylegan2, resolution=256, channel_base=16384,
                num_fp16_res=4, conv_clamp=256,
                description=f"StyleGAN2 at 256x256 with {_NV}'s paper256 widths (channel_base 16384)",
                published="no figure published for this exact config; config-F widths at 256 are larger")
register_preset("stylegan2-64", "stylegan2", build_stylegan2, resolution=64, channel_base=16384,
                num_fp16_res=4, conv_clamp=256,
                description="StyleGAN2 at 64x64 (paper256 widths, 512 channels up to 32x32)",
                published="no published figure (a scaled config)")
register_preset("stylegan2-32", "stylegan2", build_stylegan2, resolution=32, channel_base=16384, mapping_layers=2,
                num_fp16_res=4, conv_clamp=256,
                description=f"StyleGAN2 at 32x32 (CIFAR-10) with ganfast's stylegan2 recipe: 2-layer mapping and "
                            f"512 channels like {_NV}'s cifar config, which differs in D architecture, style "
                            f"mixing, path length, R1 gamma, EMA, minibatch-std group and batch: "
                            f"stylegan2-ada-cifar is that config",
                published="no published figure for this exact config")
register_preset("stylegan2-32-fmnist", "stylegan2", build_stylegan2, resolution=32, img_channels=1, z_dim=128,
                w_dim=128, channel_base=2048, channel_max=64, mapping_layers=2, style_mixing_prob=0.0,
                description="a small StyleGAN2 for 32x32 grayscale (Fashion-MNIST on a CPU): 64 channels at every "
                            "resolution, z/w 128, 2-layer mapping, noise inputs on (in 12-kimg CPU runs they gave "
                            "SWD 84 / FID 232 where noise_mode='none' gave 119 / 351); `ganfast train`'s default",
                published="none (a CPU-sized config of ours)")


def build_stylegan2_ada(cfg: str, resolution: int, gpus: int = 1, **overrides) -> tuple[StyleGAN2Generator,
                                                                                       StyleGAN2Discriminator]:
    """The networks of stylegan2-ada-pytorch's `--cfg cfg` at this resolution (and GPU count, which
    'auto' reads), with build_stylegan2 keyword overrides (img_channels, c_dim, ...) on top."""
    from ganfast.training.recipes import nvlabs_cfg_model
    return build_stylegan2(**{**nvlabs_cfg_model(cfg, resolution, gpus), **overrides})


def _nvlabs_recipe(kwargs: dict, world_size: int) -> dict:
    from ganfast.training.recipes import nvlabs_cfg_training
    return nvlabs_cfg_training(kwargs["cfg"], kwargs["resolution"], world_size)


for _cfg, _res, _what in (("cifar", 32, "CIFAR-10 at 32x32 (paper: 2 GPUs)"),
                          ("paper256", 256, "the paper's 256x256 config (FFHQ, LSUN Cat, ...)"),
                          ("paper512", 512, "the paper's 512x512 config (AFHQ, BreCaHAD, MetFaces at 512)"),
                          ("paper1024", 1024, "the paper's 1024x1024 config (FFHQ, MetFaces)"),
                          ("stylegan2", 1024, "StyleGAN2 config F widths with mixed precision, any resolution"),
                          ("auto", 256, "resolution- and GPU-count-dependent batch, widths, lr, gamma and EMA")):
    register_preset(f"stylegan2-ada-{_cfg}", "stylegan2", build_stylegan2_ada, cfg=_cfg, resolution=_res,
                    recipe=_nvlabs_recipe,
                    description=f"{_NV} --cfg {_cfg}: {_what}; networks and training loop to the letter "
                                f"(ganfast.training.recipes.nvlabs_cfg_training); --model resolution=R to change "
                                f"the resolution",
                    published=f"{_NV} train.py cfg_specs['{_cfg}']")
