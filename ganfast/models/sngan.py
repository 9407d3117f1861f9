"""SNGAN (Miyato et al. 2018): the CIFAR-10 ResNet generator and discriminator.

The nets are the residual family's (ganfast.models.biggan: BigGANGenerator, BigGANDiscriminator,
the same GBlock / DBlock) with SNGAN's choices:

    G: z [N, 128] -> linear -> [N, 256, 4, 4] -> 3 ResBlock up (256 channels; BN, ReLU, nearest
       up x2, conv3x3, BN, ReLU, conv3x3; shortcut up + conv1x1) -> BN, ReLU, conv3x3 -> tanh
       [N, 3, 32, 32]. No spectral norm in G. Unconditional (c_dim=0, the default): torch
       BatchNorm2d. Conditional (c_dim > 0): ganfast ConditionalBatchNorm2d(sn=False) driven by
       the one-hot label (gain = 1 + W_g y, bias = W_b y: one learned scale and shift per class,
       SNGAN-projection's categorical conditional BN).
    D: spectral norm everywhere. Optimized first block 3 -> 128 (conv3x3, ReLU, conv3x3, avgpool;
       shortcut avgpool + conv1x1), a 128-channel ResBlock down to 8x8, two 128-channel ResBlocks
       at 8x8 (identity shortcut), ReLU, global sum pooling, SNLinear(128 -> 1); plus the
       projection term sum(SNEmbedding(y) * h) when c_dim > 0.
    Init: xavier uniform (gain 1) for every conv / linear / embedding weight, zero biases (the
    Chainer original scales the residual convs' Glorot init by sqrt(2); the init changes no
    count or shape).

Preset: sngan-32 (unconditional; create("sngan-32", c_dim=10) for the conditional variant).
"""
from __future__ import annotations

from ganfast.models.biggan import build_biggan
from ganfast.models.registry import register_preset

register_preset(
    "sngan-32", "sngan", build_biggan,
    description="SNGAN CIFAR-10 ResNet (32x32; G 256 channels without SN, D 128 channels with SN; "
                "unconditional by default, c_dim=N: conditional BN in G and a projection D; xavier init)",
    published="SNGAN paper (Miyato et al. 2018) CIFAR-10 ResNet, as tabulated by PyTorch-StudioGAN: "
              "G ~4.3M, D ~1.0M (unconditional)",
    resolution=32, c_dim=0, z_dim=128, g_ch=64, d_ch=32, shared_dim=0, hierarchical=False, attn_res=None,
    g_sn=False, init="xavier")
