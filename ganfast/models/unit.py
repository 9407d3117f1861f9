"""UNIT (Liu, Breuel & Kautz 2017): unsupervised translation through a shared latent space.

    G.encode(x, domain) -> h [N, dim * 2^n_downsample, R / 2^n_downsample, ...]: the latent mean
    G.decode(h, domain) -> image of that domain in (-1, 1)
    G(x, direction="AB") = decode(encode(x, "A"), "B")        (the mean, no noise; G.img2img == "unit")
    D.D_A, D.D_B; D(x, domain) -> patch logits [N, 1, h, w]

Per domain (the PyTorch design of the UNIT authors' code, with instance norm):
    encoder: reflect-pad conv7x7 (C -> dim), IN, ReLU; n_downsample x [reflect-pad conv4x4 s2
             (doubling), IN, ReLU]; n_res - n_shared private ResnetBlocks; then G.shared_encoder
    decoder: G.shared_decoder; n_res - n_shared private ResnetBlocks; n_downsample x [nearest 2x
             upsample, reflect-pad conv5x5 (halving), IN, ReLU]; reflect-pad conv7x7 (-> C), tanh
G.shared_encoder (the encoders' last n_shared residual blocks) and G.shared_decoder (the decoders'
first n_shared) are single modules used by both domains: UNIT's weight-sharing constraint. The
upsampling is nearest + conv5x5 as in the reference code (not a transposed conv); the reference
normalizes its upsampling layers with layer norm, here with instance norm like the rest of G.
The latent's variational part is the reference code's simplification: the encoder gives the
mean h, training uses z = h + N(0, 1) noise and the KL term mean(h^2) (see the training code).
G's init is the reference's kaiming-normal (fan_in); D's N(0, 0.02).

D: one single-scale PatchGAN per domain (ganfast.models.img2img_layers.PatchDiscriminator, no
norm by default as the reference's D); the reference uses multi-scale LSGAN discriminators.

Fused ops: conv + IN + ReLU is the conv then NormAct2d (plain torch: instance norm and ReLU;
no ganfast op was faster, see NormAct2d); the output conv's bias + tanh is ganfast.nn.BiasAct;
D's conv bias + LReLU is ganfast.nn.BiasAct (ganfast.ops.bias_act, gain 1); sn=True spectrally
normalizes D's convs (ganfast.nn.SNConv2d).
"""
from __future__ import annotations

import torch
from torch import nn

from ganfast.models.common import check_images
from ganfast.models.dcgan import check_positive_int
from ganfast.models.img2img_layers import (PatchDiscriminator, ResnetBlock, TwoDomainDiscriminator,
                                           TwoDomainGenerator, bias_activation, check_bool, check_domain,
                                           check_nonneg_int, check_norm, conv_norm_act, init_kaiming)
from ganfast.models.registry import register_preset

__all__ = ["UNITGenerator", "build_unit"]


class UNITGenerator(TwoDomainGenerator):
    """Two encoders and two decoders around a shared latent space (see the module docstring).

    enc_A / enc_B: the private encoder layers; dec_A / dec_B: the private decoder layers;
    shared_encoder / shared_decoder: n_shared ResnetBlocks each, used by both domains.
    latent_channels, latent_resolution: h's shape.
    """

    def __init__(self, resolution: int = 32, channels_A: int = 1, channels_B: int = 1, dim: int = 64,
                 n_downsample: int = 2, n_res: int = 4, n_shared: int = 1, norm: str = "instance"):
        super().__init__("unit", resolution, channels_A, channels_B)
        who = type(self).__name__
        self.dim = check_positive_int(who, "dim", dim)
        self.n_downsample = check_nonneg_int(who, "n_downsample", n_downsample)
        self.n_res = check_positive_int(who, "n_res", n_res)
        self.n_shared = check_positive_int(who, "n_shared", n_shared)
        if n_shared > n_res:
            raise ValueError(f"{who}: n_shared must be at most n_res = {n_res} (the shared blocks are among "
                             f"each side's n_res residual blocks), got {n_shared}")
        if resolution % 2 ** n_downsample:
            raise ValueError(f"{who}: resolution must be a multiple of 2^n_downsample = {2 ** n_downsample}, "
                             f"got {resolution}")
        self.norm = check_norm(who, norm, ("batch", "instance"))
        self.latent_channels = dim * 2 ** n_downsample
        self.latent_resolution = resolution // 2 ** n_downsample
        self.enc_A, self.enc_B = self._encoder(channels_A), self._encoder(channels_B)
        self.shared_encoder = self._blocks(n_shared)
        self.shared_decoder = self._blocks(n_shared)
        self.dec_A, self.dec_B = self._decoder(channels_A), self._decoder(channels_B)
        init_kaiming(self)

    def _blocks(self, n: int) -> nn.Sequential:
        return nn.Sequential(*(ResnetBlock(self.latent_channels, self.norm) for _ in range(n)))

    def _encoder(self, channels: int) -> nn.Sequential:
        layers = conv_norm_act(channels, self.dim, 7, 1, 3, self.norm, "relu", padding_mode="reflect")
        for i in range(self.n_downsample):
            layers += conv_norm_act(self.dim * 2 ** i, self.dim * 2 ** (i + 1), 4, 2, 1, self.norm, "relu",
                                    padding_mode="reflect")
        return nn.Sequential(*layers, *self._blocks(self.n_res - self.n_shared))

    def _decoder(self, channels: int) -> nn.Sequential:
        layers = list(self._blocks(self.n_res - self.n_shared))
        for i in range(self.n_downsample, 0, -1):
            layers += [nn.Upsample(scale_factor=2, mode="nearest"),
                       *conv_norm_act(self.dim * 2 ** i, self.dim * 2 ** (i - 1), 5, 1, 2, self.norm, "relu",
                                      padding_mode="reflect")]
        layers += [nn.Conv2d(self.dim, channels, 7, 1, 3, bias=False, padding_mode="reflect"),
                   bias_activation(channels, "tanh", bias=True)]
        return nn.Sequential(*layers)

    def encode(self, x: torch.Tensor, domain: str) -> torch.Tensor:
        """x [N, channels of domain, R, R] -> the latent mean h [N, latent_channels, R', R']
        (R' = latent_resolution)."""
        who = type(self).__name__
        domain = check_domain(who, domain)
        check_images(who, x, self.channels_A if domain == "A" else self.channels_B, self.img_resolution)
        return self.shared_encoder((self.enc_A if domain == "A" else self.enc_B)(x))

    def decode(self, h: torch.Tensor, domain: str) -> torch.Tensor:
        """h [N, latent_channels, R', R'] -> image [N, channels of domain, R, R] in (-1, 1)."""
        who = type(self).__name__
        domain = check_domain(who, domain)
        check_images(who, h, self.latent_channels, self.latent_resolution)
        return (self.dec_A if domain == "A" else self.dec_B)(self.shared_decoder(h))

    def translate(self, x: torch.Tensor, direction: str) -> torch.Tensor:
        return self.decode(self.encode(x, direction[0]), direction[1])

    def extra_repr(self) -> str:
        return (f"img_resolution={self.img_resolution}, channels_A={self.channels_A}, channels_B={self.channels_B}, "
                f"dim={self.dim}, n_downsample={self.n_downsample}, n_res={self.n_res}, n_shared={self.n_shared}, "
                f"latent=[{self.latent_channels}, {self.latent_resolution}, {self.latent_resolution}]")


def build_unit(resolution: int = 32, channels_A: int = 1, channels_B: int = 1, dim: int = 64, n_downsample: int = 2,
               n_res: int = 4, n_shared: int = 1, ndf: int = 64, d_layers: int = 3, norm: str = "instance",
               d_norm: str = "none", sn: bool = False) -> tuple[nn.Module, nn.Module]:
    """(G, D) of UNIT: G with encode / decode and the shared blocks, D.D_A and D.D_B (single-scale
    PatchGANs with d_layers strided layers and d_norm, 'none' as the reference's D)."""
    who = "build_unit"
    check_norm(who, d_norm, name="d_norm")
    check_positive_int(who, "d_layers", d_layers)
    check_bool(who, "sn", sn)
    G = UNITGenerator(resolution, channels_A, channels_B, dim, n_downsample, n_res, n_shared, norm)
    D = TwoDomainDiscriminator(PatchDiscriminator(channels_A, ndf, d_layers, "patch", d_norm, sn),
                               PatchDiscriminator(channels_B, ndf, d_layers, "patch", d_norm, sn))
    return G, D


register_preset(
    "unit-32", "unit", build_unit,
    description="UNIT at 32x32 grayscale (Fashion-MNIST class pairs): dim 16, 2 downsamplings (latent 64 x 8 x 8), "
                "3 residual blocks per side of which 1 shared (encoder and decoder), 2-layer PatchGANs (ndf 32, "
                "no norm); G 951,938, D 333,250 parameters; a batch-16 training step (reconstruction, translation "
                "and cycle passes of both domains, both D) ~0.30 s at 2 threads",
    published="none: a scaled-down version of the UNIT authors' PyTorch design (dim 64, 4 res blocks, multi-scale "
              "D), sized for a fast CPU run",
    resolution=32, channels_A=1, channels_B=1, dim=16, n_downsample=2, n_res=3, n_shared=1, ndf=32, d_layers=2,
    norm="instance", d_norm="none", sn=False)

register_preset(
    "unit-256", "unit", build_unit,
    description="UNIT at 256x256 RGB: dim 64, 2 downsamplings (latent 256 x 64 x 64), 4 residual blocks per side "
                "of which 1 shared, 4-layer PatchGANs (ndf 64, no norm; one scale instead of the reference's three)",
    published="none: the UNIT paper and code give no parameter totals; the layer plan is the authors' PyTorch "
              "configuration (dim 64, n_downsample 2, n_res 4), the D single-scale",
    resolution=256, channels_A=3, channels_B=3, dim=64, n_downsample=2, n_res=4, n_shared=1, ndf=64, d_layers=4,
    norm="instance", d_norm="none", sn=False)
