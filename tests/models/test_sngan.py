"""ganfast.models.sngan: the sngan-32 preset, unconditional and (c_dim=10) conditional.

Exact parameter counts; the SNGAN layout (no spectral norm in G, SN on every layer of D, the
optimized first D block, identity shortcuts in the last two); forward/backward; the cpu backend
against the float64 reference (G, and an R1 double backward through D); labels; eval mode.
The checks shared with the other residual presets come from test_biggan.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

import ganfast.models.sngan  # noqa: F401  (registers the preset)
from ganfast.models import count_parameters, create, get_preset
from ganfast.nn import ConditionalBatchNorm2d, SelfAttention2d
from tests.models.test_biggan import (check_discriminator_r1_fast_matches_reference, check_eval_uses_running_stats,
                                      check_forward_backward, check_generator_fast_matches_reference,
                                      check_label_handling, needs_cpu_ext)

# (G, D) trainable parameters, by count_parameters. Published (SNGAN CIFAR ResNet, as tabulated by
# PyTorch-StudioGAN): G ~4.3M, D ~1.0M.
EXPECTED_COUNTS = {0: (4_276_739, 1_053_825), 10: (4_304_387, 1_055_105)}   # by c_dim


@pytest.fixture(scope="module")
def sngan():
    return create("sngan-32", seed=0)


@pytest.fixture(scope="module")
def sngan_conditional():
    return create("sngan-32", seed=0, c_dim=10)


def _small(**overrides):
    """sngan-32 at 32 channels in G and D: the same structure, fast tests."""
    return create("sngan-32", seed=0, g_ch=8, d_ch=8, **overrides)


def test_parameter_counts(sngan, sngan_conditional):
    for gan, c_dim in ((sngan, 0), (sngan_conditional, 10)):
        assert (count_parameters(gan.G), count_parameters(gan.D)) == EXPECTED_COUNTS[c_dim]
    assert "4.3M" in get_preset("sngan-32").published


def test_layout(sngan, sngan_conditional):
    G, D = sngan.G, sngan.D
    assert (G.z_dim, G.c_dim, G.img_resolution, G.img_channels) == (128, 0, 32, 3)
    assert G.linear.in_features == 128 and G.linear.out_features == 256 * 4 * 4
    assert [(b.in_channels, b.out_channels) for b in G.blocks] == [(256, 256)] * 3
    # G: no spectral norm, no attention, plain batch norm when unconditional
    assert not any(parametrize.is_parametrized(m) for m in G.modules())
    assert not any(isinstance(m, (SelfAttention2d, ConditionalBatchNorm2d)) for m in sngan.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in G.modules()) == 7
    # D: 3 -> 128 optimized block, a 128-channel block down to 8x8, two at 8x8 with identity shortcuts
    assert [(b.in_channels, b.out_channels) for b in D.blocks] == [(3, 128)] + [(128, 128)] * 3
    assert D.block_resolutions == [16, 8, 8, 8] and not D.blocks[0].preactivation
    assert [b.shortcut is not None for b in D.blocks] == [True, True, False, False]
    layers = [m for m in D.modules() if isinstance(m, (nn.Conv2d, nn.Linear, nn.Embedding))]
    assert layers and all(parametrize.is_parametrized(m, "weight") for m in layers)
    assert D.embed is None and D.linear.out_features == 1
    # conditional: BN without SN, driven by the one-hot label; projection D
    G, D = sngan_conditional.G, sngan_conditional.D
    norms = [m for m in G.modules() if isinstance(m, ConditionalBatchNorm2d)]
    assert len(norms) == 6 and all(not m.sn and m.cond_dim == 10 for m in norms) and G.shared is None
    assert D.embed.weight.shape == (10, 128)


@pytest.mark.parametrize("c_dim", [0, 10])
def test_forward_backward(c_dim, sngan, sngan_conditional):
    check_forward_backward(copy.deepcopy(sngan if c_dim == 0 else sngan_conditional), n=3)


@needs_cpu_ext
@pytest.mark.parametrize("c_dim", [0, 10])
def test_generator_fast_matches_reference(c_dim):
    check_generator_fast_matches_reference(_small(c_dim=c_dim).G)


@needs_cpu_ext
@pytest.mark.parametrize("c_dim", [0, 10])
def test_discriminator_r1_fast_matches_reference(c_dim):
    check_discriminator_r1_fast_matches_reference(_small(c_dim=c_dim).D)


def test_labels():
    gan = _small(c_dim=10)
    check_label_handling(gan.G, gan.D)


def test_unconditional_rejects_labels(sngan):
    with pytest.raises(ValueError, match="unconditional"):
        sngan.G(torch.randn(2, 128), torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        sngan.D(torch.zeros(2, 3, 32, 32), torch.tensor([0, 1]))


@pytest.mark.parametrize("c_dim", [0, 10])
def test_eval_mode_uses_running_stats(c_dim):
    check_eval_uses_running_stats(_small(c_dim=c_dim).G)


def test_bad_arguments():
    with pytest.raises(ValueError, match="z_dim"):
        create("sngan-32", z_dim=0)
    with pytest.raises(ValueError, match="attn_res"):
        _small(attn_res=64)
    G = _small().G
    with pytest.raises(ValueError, match=r"z must be a floating \[N, 128\]"):
        G(torch.randn(2, 100))
