"""BigGAN (Brock et al. 2018) and its ancestors' residual nets, built from ganfast.nn / ganfast.ops.

One generator class and one discriminator class cover the residual GAN family; the presets pick
the options:

    biggan-128  BigGAN at 128x128 (paper appendix B, Table 4): ch=96, G widths 16,16,8,4,2,1 x ch,
                D widths 1,2,4,8,16,16 x ch, attention at 64x64 in G and D, z_dim=120 in 6 chunks
                of 20 (hierarchical z), shared class embedding of 128, 1000 classes, SN in G and D,
                orthogonal init.
    biggan-32   a CIFAR-10 BigGAN: ch=64, G and D widths 4,4,4(,4) x ch (256 channels), D ends at
                8x8 with two blocks that keep the size (the SNGAN layout), z_dim=128 in 4 chunks of
                32, shared embedding of 128, 10 classes, attention at 16x16 in G and D (16 rather
                than 32: a quarter of the attention cost, and the resolution SAGAN-32 uses too).
    sagan-32    SAGAN (Zhang et al. 2019) at CIFAR scale: the SNGAN ResNet (G 256 channels, D 128)
                with SN in G too, conditional BN driven by a shared class embedding (no z chunks),
                attention at 16x16 in G and D, 10 classes, xavier init. The SAGAN paper reports
                ImageNet 128 only, so there is no published parameter count for this size.
    (sngan-32 lives in ganfast.models.sngan and uses the same classes.)

Generator (BigGANGenerator), for R = img_resolution and B = log2(R) - 2 up-blocks:
    z [N, z_dim] -> chunks z_0 .. z_B (hierarchical) or z whole (z_0 = z, no per-block chunk)
    h = linear(z_0) -> [N, w_0, 4, 4]
    block i (ResBlock up):  cond_i = cat(label_cond, z_{i+1})   ([N, cond_dim]; BigGAN)
        h = conv2(norm2(conv1(up(norm1(h, cond_i))), cond_i)) + up(conv_sc(h))
        norm: ganfast ConditionalBatchNorm2d (act='relu' fused) when cond_dim > 0, else
        BatchNormAct2d (fused BatchNorm2d + ReLU; SNGAN's unconditional G)
    optional SelfAttention2d after the block whose output is attn_res x attn_res
    out = tanh(conv3x3(relu(bn(h))))  -> [N, img_channels, R, R]
    label_cond: shared embedding(y) [N, shared_dim] (BigGAN, SAGAN), or the one-hot label itself
    [N, c_dim] when shared_dim == 0 (SNGAN's conditional BN), nothing when c_dim == 0.

Discriminator (BigGANDiscriminator): ResBlock down x len(channel_mults) (the first without the
leading ReLU, SNGAN's "optimized" block), optional SelfAttention2d, ReLU, global sum pooling,
logits = linear(h) + sum(embed(y) * h) (projection discriminator, Miyato & Koyama 2018). SN on
every layer.

Implementation notes (why the code looks as it does):
  - 1x1 shortcut convolutions commute with nearest upsampling and with average pooling (both are
    per-pixel linear maps), so the shortcut convolves at the lower resolution: the same function
    as BigGAN's up-then-conv / conv-then-pool, at a quarter of the shortcut's cost.
  - Labels go through one path: labels_to_onehot, then one_hot @ table, so integer labels and
    one-hot / soft labels give the same result and gradients.
  - Re-initializing a spectrally normalized weight leaves its power-iteration vectors converged
    for the old weight; refresh_spectral_norms re-runs the iteration so eval mode (which uses the
    stored vectors) divides by the new weight's sigma from the first call.
"""
from __future__ import annotations

import math
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ganfast.models.common import check_images, check_latent, labels_to_onehot
from ganfast.models.registry import register_preset
from ganfast.nn import (BatchNormAct2d, ConditionalBatchNorm2d, SelfAttention2d, SNConv2d, SNEmbedding, SNLinear,
                        accumulate_standing_stats)
from ganfast.nn.spectral_norm import reconverge_spectral_norms
from ganfast.ops import bias_act

__all__ = ["BigGANGenerator", "BigGANDiscriminator", "GBlock", "DBlock", "NormReLU", "default_channel_mults",
           "init_weights", "build_biggan", "INIT_SCHEMES"]

INIT_SCHEMES = ("ortho", "N02", "xavier")

# Width multipliers of ch per resolution, from the BigGAN paper's appendix B and the widely used
# PyTorch ports. G: widths at 4x4, 8x8, ..., RxR. D: the output width of each block and whether
# that block halves the resolution (the last block keeps it; at 32 the last two do, as SNGAN).
_G_MULTS = {
    32: (4, 4, 4, 4),
    64: (16, 16, 8, 4, 2),
    128: (16, 16, 8, 4, 2, 1),
    256: (16, 16, 8, 8, 4, 2, 1),
    512: (16, 16, 8, 8, 4, 2, 1, 1),
}
_D_MULTS = {
    32: ((4, 4, 4, 4), (True, True, False, False)),
    64: ((1, 2, 4, 8, 16), (True, True, True, True, False)),
    128: ((1, 2, 4, 8, 16, 16), (True, True, True, True, True, False)),
    256: ((1, 2, 4, 8, 8, 16, 16), (True, True, True, True, True, True, False)),
    512: ((1, 2, 4, 8, 8, 16, 16, 16), (True, True, True, True, True, True, True, False)),
}
_BOTTOM = 4   # G's first feature map is 4x4 at every resolution


def default_channel_mults(resolution: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[bool, ...]]:
    """(G width multipliers [4x4 .. RxR], D block output multipliers, D block downsamples) for
    `resolution` (32, 64, 128, 256 or 512; other sizes need explicit multipliers)."""
    if resolution not in _G_MULTS:
        raise ValueError(f"no default channel multipliers for resolution {resolution!r} (have "
                         f"{sorted(_G_MULTS)}); pass g_channel_mults / d_channel_mults / d_downsample")
    d_mults, d_down = _D_MULTS[resolution]
    return _G_MULTS[resolution], d_mults, d_down


# ---- argument checks ----

def _check_int(owner: str, name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{owner}: {name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_resolution(owner: str, resolution) -> int:
    _check_int(owner, "img_resolution", resolution, 8)
    if resolution & (resolution - 1):
        raise ValueError(f"{owner}: img_resolution must be a power of two >= 8, got {resolution!r}")
    return resolution


def _check_mults(owner: str, name: str, mults, length: Optional[int]) -> tuple[int, ...]:
    if (not isinstance(mults, (tuple, list)) or not mults
            or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in mults)):
        raise ValueError(f"{owner}: {name} must be a non-empty sequence of positive ints, got {mults!r}")
    if length is not None and len(mults) != length:
        raise ValueError(f"{owner}: {name} must have {length} entries here, got {len(mults)} ({tuple(mults)!r})")
    return tuple(mults)


def _check_init(owner: str, init) -> str:
    if init not in INIT_SCHEMES:
        raise ValueError(f"{owner}: init must be one of {INIT_SCHEMES}, got {init!r}")
    return init


def _attention_index(owner: str, attn_res, block_resolutions: Sequence[int]) -> Optional[int]:
    """The index of the first block whose output is attn_res x attn_res (None: no attention)."""
    if attn_res is None or attn_res == 0:
        return None
    if attn_res not in block_resolutions:
        raise ValueError(f"{owner}: attn_res must be 0/None or a block output resolution "
                         f"{sorted(set(block_resolutions))}, got {attn_res!r}")
    return list(block_resolutions).index(attn_res)


# ---- layers ----

def make_conv(in_channels: int, out_channels: int, kernel_size: int, sn: bool) -> nn.Module:
    """A same-padded convolution with bias, spectrally normalized (ganfast SNConv2d) when sn."""
    conv = SNConv2d if sn else nn.Conv2d
    return conv(in_channels, out_channels, kernel_size, padding=kernel_size // 2)


def make_linear(in_features: int, out_features: int, sn: bool) -> nn.Module:
    return SNLinear(in_features, out_features) if sn else nn.Linear(in_features, out_features)


def relu(x: torch.Tensor, backend: Optional[str]) -> torch.Tensor:
    """A plain ReLU on ganfast's bias_act (gain 1: bias_act's default ReLU gain is sqrt(2))."""
    return bias_act(x, None, act="relu", gain=1.0, backend=backend)


def embed_labels(table: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Rows of table [c_dim, E] picked (or mixed) by onehot [N, c_dim] -> [N, E]. One matmul for
    index labels (already one-hot) and soft labels alike."""
    return onehot @ table


class NormReLU(nn.Module):
    """relu(batch norm(x)), conditional or not. x [N, C, H, W], cond [N, cond_dim] or None.

    cond_dim > 0: ganfast ConditionalBatchNorm2d (gain = 1 + linear(cond), bias = linear(cond),
    the ReLU fused into its output pass; the linears spectrally normalized when sn).
    cond_dim == 0: ganfast BatchNormAct2d (torch's BatchNorm2d parameters and buffers, the ReLU
    fused into the normalization's output pass).
    """

    def __init__(self, channels: int, cond_dim: int, sn: bool, eps: float = 1e-5):
        super().__init__()
        self.cond_dim = cond_dim
        if cond_dim > 0:
            self.norm = ConditionalBatchNorm2d(channels, cond_dim, sn=sn, eps=eps, act="relu")
        else:
            self.norm = BatchNormAct2d(channels, act="relu", eps=eps)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        return self.norm(x, cond) if self.cond_dim > 0 else self.norm(x)

    def extra_repr(self) -> str:
        return f"cond_dim={self.cond_dim}"


class GBlock(nn.Module):
    """BigGAN's / SNGAN's ResBlock up: [N, in, H, W] (+ cond [N, cond_dim]) -> [N, out, 2H, 2W].

    h = conv2(norm2(conv1(up(norm1(x, cond))), cond)); out = h + up(conv_sc(x)). norms are
    NormReLU (conditional when cond_dim > 0); convolutions 3x3 (shortcut 1x1) with bias,
    spectrally normalized when sn. up: nearest x2.
    """

    def __init__(self, in_channels: int, out_channels: int, cond_dim: int, sn: bool, eps: float = 1e-5):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.norm1 = NormReLU(in_channels, cond_dim, sn, eps)
        self.conv1 = make_conv(in_channels, out_channels, 3, sn)
        self.norm2 = NormReLU(out_channels, cond_dim, sn, eps)
        self.conv2 = make_conv(out_channels, out_channels, 3, sn)
        self.shortcut = make_conv(in_channels, out_channels, 1, sn)

    def forward(self, x: torch.Tensor, cond: Optional[torch.Tensor]) -> torch.Tensor:
        h = F.interpolate(self.norm1(x, cond), scale_factor=2, mode="nearest")
        h = self.conv2(self.norm2(self.conv1(h), cond))
        # the 1x1 convolution before the upsampling: the same values, a quarter of the work
        return h + F.interpolate(self.shortcut(x), scale_factor=2, mode="nearest")

    def extra_repr(self) -> str:
        return f"{self.in_channels} -> {self.out_channels}, up x2"


class DBlock(nn.Module):
    """BigGAN's / SNGAN's ResBlock down: [N, in, H, W] -> [N, out, H/2, W/2] (or H, W).

    h = pool(conv2(relu(conv1(relu(x))))), without the first ReLU when not preactivation (the
    first block, whose input is the image: SNGAN's optimized block). shortcut: pool, then a 1x1
    convolution when in != out or the block downsamples, else the identity. pool: 2x2 average.
    Every convolution is spectrally normalized when sn (always, in the presets).
    """

    def __init__(self, in_channels: int, out_channels: int, preactivation: bool, downsample: bool, sn: bool = True):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.preactivation, self.downsample = preactivation, downsample
        self.backend = None
        self.conv1 = make_conv(in_channels, out_channels, 3, sn)
        self.conv2 = make_conv(out_channels, out_channels, 3, sn)
        learned_shortcut = in_channels != out_channels or downsample
        self.shortcut = make_conv(in_channels, out_channels, 1, sn) if learned_shortcut else None

    def _pool(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, 2) if self.downsample else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = relu(x, self.backend) if self.preactivation else x
        h = self._pool(self.conv2(relu(self.conv1(h), self.backend)))
        # pooling before the 1x1 convolution: the same values (both linear, per pixel), less work
        s = self._pool(x)
        return h + (self.shortcut(s) if self.shortcut is not None else s)

    def extra_repr(self) -> str:
        return (f"{self.in_channels} -> {self.out_channels}, preactivation={self.preactivation}, "
                f"downsample={self.downsample}")


# ---- initialization ----

def _raw_weight(m: nn.Module) -> torch.Tensor:
    """The stored weight: the parametrization's original for spectrally normalized layers."""
    if parametrize.is_parametrized(m, "weight"):
        return m.parametrizations.weight.original
    return m.weight


@torch.no_grad()
def init_weights(module: nn.Module, init: str) -> None:
    """Initialize every Conv2d / Linear / Embedding weight in `module` (the spectrally normalized
    layers' raw weights, the conditional-BN linears and the attention convolutions included):
    'ortho' torch.nn.init.orthogonal_ (BigGAN), 'N02' normal(0, 0.02), 'xavier' xavier_uniform_;
    biases to zero. Then re-converges the spectral norms' power iterations on the new weights."""
    _check_init("init_weights", init)
    fill: Callable[[torch.Tensor], object] = {
        "ortho": nn.init.orthogonal_,
        "N02": lambda w: nn.init.normal_(w, 0.0, 0.02),
        "xavier": nn.init.xavier_uniform_,
    }[init]
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding)):
            fill(_raw_weight(m))
            if getattr(m, "bias", None) is not None:
                m.bias.zero_()
    reconverge_spectral_norms(module)


# ---- generator ----

class BigGANGenerator(nn.Module):
    """BigGAN's generator (and, by its options, SAGAN's and SNGAN's). See the module docstring.

    z_dim: latent size (hierarchical: a multiple of the number of blocks + 1). c_dim: classes (0:
    unconditional). ch, channel_mults: widths ch * m at 4x4, 8x8, ..., RxR (default per
    resolution). shared_dim: size of the shared class embedding (0: the one-hot label drives the
    conditional BN directly). hierarchical: split z into per-block chunks (BigGAN's skip-z).
    attn_res: resolution of the one SelfAttention2d block (0/None: none). sn: spectral norm on
    every conv / linear (and the conditional-BN linears, the attention convs). init: 'ortho',
    'N02' or 'xavier'.

    forward(z [N, z_dim], c=None [N] int64 or [N, c_dim] float) -> images [N, img_channels, R, R] in (-1, 1).
    """

    def __init__(self, z_dim: int = 120, c_dim: int = 1000, img_resolution: int = 128, img_channels: int = 3,
                 ch: int = 96, channel_mults: Optional[Sequence[int]] = None, shared_dim: int = 128,
                 hierarchical: bool = True, attn_res: Optional[int] = 64, sn: bool = True, init: str = "ortho",
                 bn_eps: float = 1e-5):
        super().__init__()
        owner = type(self).__name__
        self.z_dim = _check_int(owner, "z_dim", z_dim, 1)
        self.c_dim = _check_int(owner, "c_dim", c_dim, 0)
        self.img_resolution = _check_resolution(owner, img_resolution)
        self.img_channels = _check_int(owner, "img_channels", img_channels, 1)
        _check_int(owner, "ch", ch, 1)
        _check_int(owner, "shared_dim", shared_dim, 0)
        _check_init(owner, init)
        num_blocks = int(math.log2(img_resolution)) - 2
        if channel_mults is None:
            channel_mults = default_channel_mults(img_resolution)[0]
        widths = [ch * m for m in _check_mults(owner, "channel_mults", channel_mults, num_blocks + 1)]
        self.hierarchical, self.sn, self.init = bool(hierarchical), bool(sn), init
        self.block_resolutions = [_BOTTOM * 2 ** (i + 1) for i in range(num_blocks)]
        self.attn_index = _attention_index(owner, attn_res, self.block_resolutions)
        self.attn_res = None if self.attn_index is None else attn_res

        if self.hierarchical:
            num_chunks = num_blocks + 1
            if z_dim % num_chunks:
                raise ValueError(f"{owner}: with hierarchical=True, z_dim must be a multiple of {num_chunks} "
                                 f"(one chunk for the input linear and one per each of the {num_blocks} blocks; "
                                 f"BigGAN-128: 120 = 6 x 20), got {z_dim}; or pass hierarchical=False")
            self.z_chunk = z_dim // num_chunks
        else:
            self.z_chunk = 0
        self.shared_dim = shared_dim if c_dim > 0 else 0
        self.shared = nn.Embedding(c_dim, shared_dim) if self.shared_dim > 0 else None
        label_dim = self.shared_dim if self.shared is not None else c_dim
        self.cond_dim = label_dim + self.z_chunk

        self.linear = make_linear(self.z_chunk or z_dim, widths[0] * _BOTTOM * _BOTTOM, sn)
        self.blocks = nn.ModuleList(GBlock(widths[i], widths[i + 1], self.cond_dim, sn, bn_eps)
                                    for i in range(num_blocks))
        self.attention = (None if self.attn_index is None
                          else SelfAttention2d(widths[self.attn_index + 1], sn=sn))
        self.out_norm = NormReLU(widths[-1], 0, sn, bn_eps)
        self.out_conv = make_conv(widths[-1], img_channels, 3, sn)
        self.backend = None
        init_weights(self, init)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        owner = type(self).__name__
        check_latent(owner, z, self.z_dim)
        n = z.shape[0]
        onehot = labels_to_onehot(owner, c, self.c_dim, n, z.dtype)   # [N, c_dim] or None
        label_cond = None                                              # [N, shared_dim or c_dim]
        if onehot is not None:
            label_cond = embed_labels(self.shared.weight, onehot) if self.shared is not None else onehot
        if self.hierarchical:
            z_in, *z_blocks = z.split(self.z_chunk, dim=1)             # [N, z_chunk] each
        else:
            z_in, z_blocks = z, [None] * len(self.blocks)
        h = self.linear(z_in).view(n, -1, _BOTTOM, _BOTTOM)           # [N, w_0, 4, 4]
        for i, (block, z_block) in enumerate(zip(self.blocks, z_blocks)):
            parts = [t for t in (label_cond, z_block) if t is not None]
            cond = torch.cat(parts, dim=1) if parts else None          # [N, cond_dim]
            h = block(h, cond)                                          # [N, w_{i+1}, 8 * 2^i, ..]
            if i == self.attn_index:
                h = self.attention(h)
        h = self.out_conv(self.out_norm(h, None))                      # [N, img_channels, R, R]
        return bias_act(h, None, act="tanh", backend=self.backend)

    def accumulate_standing_stats(self, num_batches: int = 16, batch_size: int = 64) -> None:
        """BigGAN's standing statistics: every batch norm's running statistics become the average
        over num_batches batches of G(z ~ N(0, I), uniformly random classes) (training-mode
        forwards, so spectral norms take their power-iteration steps too). Evaluate in eval mode."""
        device, dtype = self.linear.bias.device, self.linear.bias.dtype

        def run_batch():
            z = torch.randn(batch_size, self.z_dim, device=device, dtype=dtype)
            c = torch.randint(self.c_dim, (batch_size,), device=device) if self.c_dim else None
            self(z, c)

        accumulate_standing_stats(self, run_batch, num_batches)

    def extra_repr(self) -> str:
        return (f"z_dim={self.z_dim}, c_dim={self.c_dim}, img_resolution={self.img_resolution}, "
                f"img_channels={self.img_channels}, shared_dim={self.shared_dim}, hierarchical={self.hierarchical}, "
                f"z_chunk={self.z_chunk}, cond_dim={self.cond_dim}, attn_res={self.attn_res}, sn={self.sn}, "
                f"init={self.init!r}")


# ---- discriminator ----

class BigGANDiscriminator(nn.Module):
    """BigGAN's projection discriminator (and SAGAN's / SNGAN's). See the module docstring.

    ch, channel_mults: block output widths ch * m (default per resolution); downsample: which
    blocks halve the resolution. attn_res: resolution of the one SelfAttention2d block, placed
    after the first block whose output has it (0/None: none). Spectral norm everywhere.

    forward(img [N, img_channels, R, R], c=None) -> logits [N].
    """

    def __init__(self, c_dim: int = 1000, img_resolution: int = 128, img_channels: int = 3, ch: int = 96,
                 channel_mults: Optional[Sequence[int]] = None, downsample: Optional[Sequence[bool]] = None,
                 attn_res: Optional[int] = 64, init: str = "ortho"):
        super().__init__()
        owner = type(self).__name__
        self.c_dim = _check_int(owner, "c_dim", c_dim, 0)
        self.img_resolution = _check_resolution(owner, img_resolution)
        self.img_channels = _check_int(owner, "img_channels", img_channels, 1)
        _check_int(owner, "ch", ch, 1)
        self.init = _check_init(owner, init)
        if channel_mults is None or downsample is None:
            _, default_mults, default_down = default_channel_mults(img_resolution)
            channel_mults = default_mults if channel_mults is None else channel_mults
            downsample = default_down if downsample is None else downsample
        widths = [ch * m for m in _check_mults(owner, "channel_mults", channel_mults, None)]
        if (not isinstance(downsample, (tuple, list)) or len(downsample) != len(widths)
                or any(not isinstance(d, bool) for d in downsample)):
            raise ValueError(f"{owner}: downsample must be a sequence of {len(widths)} bools (one per block), "
                             f"got {downsample!r}")
        if (1 << sum(downsample)) > img_resolution:
            raise ValueError(f"{owner}: downsample halves the resolution {sum(downsample)} times, too often for "
                             f"img_resolution={img_resolution}")
        self.block_resolutions, res = [], img_resolution
        for d in downsample:
            res //= 2 if d else 1
            self.block_resolutions.append(res)

        self.attn_index = _attention_index(owner, attn_res, self.block_resolutions)
        self.attn_res = None if self.attn_index is None else attn_res

        in_widths = [img_channels] + widths[:-1]
        self.blocks = nn.ModuleList(DBlock(i, o, preactivation=k > 0, downsample=d)
                                    for k, (i, o, d) in enumerate(zip(in_widths, widths, downsample)))
        self.attention = None if self.attn_index is None else SelfAttention2d(widths[self.attn_index])
        self.linear = SNLinear(widths[-1], 1)
        self.embed = SNEmbedding(c_dim, widths[-1]) if c_dim > 0 else None
        self.backend = None
        init_weights(self, init)

    def forward(self, img: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        owner = type(self).__name__
        check_images(owner, img, self.img_channels, self.img_resolution)
        onehot = labels_to_onehot(owner, c, self.c_dim, img.shape[0], img.dtype)   # [N, c_dim] or None
        h = img
        for i, block in enumerate(self.blocks):
            h = block(h)
            if i == self.attn_index:
                h = self.attention(h)
        h = relu(h, self.backend).sum(dim=(2, 3))                     # [N, C] global sum pooling
        logits = self.linear(h).squeeze(1)                            # [N]
        if onehot is not None:
            # projection: <embed(y), h>; .weight is the spectrally normalized table [c_dim, C]
            logits = logits + (embed_labels(self.embed.weight, onehot) * h).sum(dim=1)
        return logits

    def extra_repr(self) -> str:
        return (f"c_dim={self.c_dim}, img_resolution={self.img_resolution}, img_channels={self.img_channels}, "
                f"attn_res={self.attn_res}, init={self.init!r}")


# ---- presets ----

def build_biggan(resolution: int = 128, c_dim: int = 1000, z_dim: int = 120, img_channels: int = 3,
                 g_ch: int = 96, d_ch: int = 96, g_channel_mults: Optional[Sequence[int]] = None,
                 d_channel_mults: Optional[Sequence[int]] = None, d_downsample: Optional[Sequence[bool]] = None,
                 shared_dim: int = 128, hierarchical: bool = True, attn_res: Optional[int] = 64, g_sn: bool = True,
                 init: str = "ortho") -> tuple[BigGANGenerator, BigGANDiscriminator]:
    """(G, D) of the residual family; the presets' builder (attn_res applies to both nets)."""
    G = BigGANGenerator(z_dim=z_dim, c_dim=c_dim, img_resolution=resolution, img_channels=img_channels, ch=g_ch,
                        channel_mults=g_channel_mults, shared_dim=shared_dim, hierarchical=hierarchical,
                        attn_res=attn_res, sn=g_sn, init=init)
    D = BigGANDiscriminator(c_dim=c_dim, img_resolution=resolution, img_channels=img_channels, ch=d_ch,
                            channel_mults=d_channel_mults, downsample=d_downsample, attn_res=attn_res, init=init)
    return G, D


register_preset(
    "biggan-128", "biggan", build_biggan,
    description="BigGAN 128x128 ImageNet (ch=96, z 120 in 6 chunks, shared embedding 128, attention at 64, "
                "1000 classes, SN in G and D, orthogonal init)",
    published="BigGAN paper (Brock et al. 2018), Table 1: G+D 158.3M for the final ch=96 model (shared "
              "embedding + skip-z); commonly quoted split G 70.4M, D 88.0M",
    resolution=128, c_dim=1000, z_dim=120, g_ch=96, d_ch=96, shared_dim=128, hierarchical=True, attn_res=64,
    init="ortho")

register_preset(
    "biggan-32", "biggan", build_biggan,
    description="BigGAN for CIFAR-10 (32x32, ch=64: G and D 256 channels, z 128 in 4 chunks, shared embedding "
                "128, attention at 16 in G and D, 10 classes, orthogonal init)",
    published="no canonical figure: the BigGAN paper gives ImageNet sizes only",
    resolution=32, c_dim=10, z_dim=128, g_ch=64, d_ch=64, shared_dim=128, hierarchical=True, attn_res=16,
    init="ortho")

register_preset(
    "sagan-32", "sagan", build_biggan,
    description="SAGAN at 32x32 (the SNGAN CIFAR ResNet, G 256 / D 128 channels, with SN in G too, conditional "
                "BN from a 128-d shared class embedding, attention at 16 in G and D, 10 classes, xavier init)",
    published="no canonical figure: the SAGAN paper (Zhang et al. 2019) reports ImageNet 128x128 only",
    resolution=32, c_dim=10, z_dim=128, g_ch=64, d_ch=32, shared_dim=128, hierarchical=False, attn_res=16,
    init="xavier")
