"""ganfast.models.cdcgan: the class-conditional DCGAN with conditional batch norm in G and a
spectrally normalized projection D (the default preset of `ganfast train`). Exact parameter
counts, the layout, label handling (index vs one-hot, missing / malformed labels), that the
labels reach G only through the per-class batch-norm scales and D only through the projection
term (checked against a hand computation), argument errors, and the fused (cpu) backend against
the float64 reference: forward, backward and R1's double backward, under the accuracy rule.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ganfast.models import count_parameters, create, get_preset
from ganfast.models.cdcgan import CDCGANDiscriminator, CDCGANGenerator
from ganfast.nn import ConditionalBatchNorm2d, SNConv2d
from tests.models.test_dcgan import assert_fast_matches_reference, needs_cpu_ext, r1_penalty, randn

F64 = torch.float64
SMALL = dict(resolution=16, img_channels=3, ngf=4, ndf=4, z_dim=8, c_dim=5)
LABELS = torch.tensor([3, 0, 4])


def small(**kwargs):
    return create("cdcgan-32", seed=0, **{**SMALL, **kwargs})


def test_preset_parameter_counts():
    gan = create("cdcgan-32", seed=0)
    # G: convT 128->256 (4x4 from 1x1), 256->128, 128->64, 64->1, all bias-free: 524,288 + 524,288
    #    + 131,072 + 1,024; CBN gain and bias tables 2 x 10 x (256 + 128 + 64) = 8,960; output bias 1
    # D: convs 1->64, 64->128, 128->256 with biases: 1,088 + 131,200 + 524,544; SNLinear 4096 -> 1
    #    with bias 4,097; the projection table 10 x 4096 = 40,960
    assert (count_parameters(gan.G), count_parameters(gan.D)) == (1_189_633, 701_889)
    assert "G 1,189,633, D 701,889" in get_preset("cdcgan-32").description
    assert (gan.img_resolution, gan.img_channels, gan.c_dim, gan.z_dim) == (32, 1, 10, 128)
    assert isinstance(gan.G, CDCGANGenerator) and isinstance(gan.D, CDCGANDiscriminator)
    assert [m.num_features for m in gan.G.modules() if isinstance(m, ConditionalBatchNorm2d)] == [256, 128, 64]
    assert [m.out_channels for m in gan.D.modules() if isinstance(m, SNConv2d)] == [64, 128, 256]
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gan.D.modules())


@pytest.mark.parametrize("kwargs, arg", [
    (dict(c_dim=1), "c_dim"), (dict(c_dim=0), "c_dim"), (dict(c_dim=2.0), "c_dim"), (dict(z_dim=0), "z_dim"),
    (dict(resolution=24), "resolution"), (dict(ngf=0), "ngf"), (dict(ndf=-1), "ndf"), (dict(img_channels=0), "img_channels"),
    (dict(d_norm="ln"), "d_norm"),
])
def test_bad_constructor_args_raise(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        create("cdcgan-32", **kwargs)


def test_labels_as_indices_or_onehot_agree_and_bad_labels_raise():
    gan = small().double().eval()     # eval: no power-iteration step between the two D calls
    z = randn(3, 8, dtype=F64)
    img = randn(3, 3, 16, 16, dtype=F64)
    onehot = F.one_hot(LABELS, 5).double()
    torch.testing.assert_close(gan.G(z, LABELS), gan.G(z, onehot), rtol=0, atol=0)
    torch.testing.assert_close(gan.D(img, LABELS), gan.D(img, onehot), rtol=0, atol=0)
    for net, x in ((gan.G, z), (gan.D, img)):
        with pytest.raises(ValueError, match="conditional"):
            net(x, None)
        with pytest.raises(ValueError, match=r"\[3\]"):
            net(x, LABELS[:2])
        with pytest.raises(ValueError):
            net(x, torch.tensor([0, 5, 1]))           # class 5 of 5


def test_generator_labels_act_only_through_per_class_batch_norm():
    """At init the per-class scales are exactly 1 and shifts 0, so G ignores the label; setting one
    class's shift in the last CBN moves exactly that class's samples."""
    G = small().G.double().train()
    z = randn(4, 8, dtype=F64).repeat(2, 1)
    a, b = torch.tensor([0, 1, 2, 3] * 2), torch.tensor([4, 4, 4, 4] * 2)
    torch.testing.assert_close(G(z, a), G(z, b), rtol=0, atol=0)
    with torch.no_grad():
        G.norms[-1].bias.weight[:, 2] += 3.0               # class 2's shift
    out_a, out_b = G(z, a), G(z, b)
    moved = (out_a - out_b).abs().flatten(1).amax(dim=1) > 1e-6
    assert moved.tolist() == [False, False, True, False] * 2


def test_discriminator_is_linear_plus_projection():
    """D(x, y) = w . h + b + <E[y], h> with h the flattened last map and w, E the normalized weights."""
    D = small().D.double().eval()
    img = randn(3, 3, 16, 16, dtype=F64)
    h = img
    for conv, act in zip(D.convs, D.acts):
        h = act(conv(h))
    h = h.flatten(1)
    expected = h @ D.linear.weight[0] + D.linear.bias[0] + (D.embed.weight[LABELS] * h).sum(1)
    torch.testing.assert_close(D(img, LABELS), expected, rtol=1e-12, atol=1e-12)
    other = torch.tensor([1, 1, 1])
    assert not torch.allclose(D(img, other), D(img, LABELS))


def _run_generator(m, dtype):
    img = m(randn(3, m.z_dim, dtype=dtype), LABELS)
    (img * randn(*img.shape, seed=1, dtype=dtype)).sum().backward()
    return {"img": img}


def _run_discriminator(m, dtype):
    img = randn(3, 3, 16, 16, dtype=dtype).requires_grad_()
    logits = m(img, LABELS)
    (logits * randn(3, seed=1, dtype=dtype)).sum().backward()
    return {"logits": logits, "grad img": img.grad}


@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_generator_fast_matches_reference(training):
    assert_fast_matches_reference(small().G.train(training), _run_generator)


def test_batch_norm_discriminator_variant():
    """d_norm='bn': DCGAN's D (batch norm, no spectral norm) with the same projection head."""
    D = create("cdcgan-32", seed=0, d_norm="bn").D
    # the SN variant's 701,889 - 256 - 128 (the biases of convs 2 and 3) + 2 x (128 + 256) (BN gamma, beta)
    assert count_parameters(D) == 701_889 - 384 + 768
    assert not any(isinstance(m, SNConv2d) for m in D.modules())
    assert sum(isinstance(m, nn.BatchNorm2d) for m in D.modules()) == 2


@needs_cpu_ext
@pytest.mark.parametrize("d_norm", ["sn", "bn"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_discriminator_fast_matches_reference(training, d_norm):
    assert_fast_matches_reference(small(d_norm=d_norm).D.train(training), _run_discriminator)


@needs_cpu_ext
@pytest.mark.parametrize("d_norm", ["sn", "bn"])
def test_r1_double_backward_fast_matches_reference(d_norm):
    def run(m, dtype):
        return {"r1": r1_penalty(m, randn(3, 3, 16, 16, dtype=dtype), LABELS)}
    assert_fast_matches_reference(small(d_norm=d_norm).D, run)
