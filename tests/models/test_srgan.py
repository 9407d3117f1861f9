"""ganfast.models.srgan: the SRResNet / SRGAN-D layer plans and parameter counts (against counts
written out here from the paper's layer list), shapes and ranges at several scales, argument
errors, the fused (cpu) backend against the float64 reference, and ContentLoss's three kinds
against direct computations (values, gradients, a frozen extractor, bad arguments).
"""
from __future__ import annotations

import copy
import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganfast
import ganfast.models.srgan  # noqa: F401  (registers the presets)
from ganfast.metrics.classifier import load_fmnist_classifier, prepare_classifier_input
from ganfast.models import count_parameters, create, get_preset
from ganfast.models.srgan import (ContentLoss, SRGANDiscriminator, SRResNetGenerator, UpsampleBlock, build_srgan,
                                  classifier_geometry)
from ganfast.nn import BatchNormAct2d, BiasAct, SNConv2d, SNLinear
from ganfast.testing.models import assert_fast_matches_reference as check_models

F64, F32 = torch.float64, torch.float32

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")


def randn(*shape, seed=0, dtype=F32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def images(*shape, seed=0, dtype=F32):
    """Random images in [-1, 1]."""
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).mul(2).sub(1).to(dtype)


# ---------------------------------------------------------------- parameter counts from the layer list

def srresnet_parameters(channels: int, ngf: int, n_blocks: int, scale: int) -> int:
    """SRResNet's trainable parameters, layer by layer (convs before a BN are bias-free)."""
    head = 9 * 9 * channels * ngf + ngf + ngf                   # conv 9x9 + bias, PReLU slopes
    block = 2 * (3 * 3 * ngf * ngf) + 2 * (2 * ngf) + ngf       # 2 convs, 2 BNs (gamma, beta), PReLU
    trunk_end = 3 * 3 * ngf * ngf + 2 * ngf                     # conv + BN before the long skip
    upsample = 3 * 3 * ngf * 4 * ngf + 4 * ngf + ngf            # conv to 4 ngf + bias, PReLU after the shuffle
    tail = 9 * 9 * ngf * channels + channels                    # conv 9x9 + bias (before tanh)
    return head + n_blocks * block + trunk_end + int(math.log2(scale)) * upsample + tail


def srgan_d_parameters(channels: int, resolution: int, ndf: int, d_dense: int) -> int:
    widths = [ndf, ndf, 2 * ndf, 2 * ndf, 4 * ndf, 4 * ndf, 8 * ndf, 8 * ndf]
    strides = [2, 1, 2, 1, 2, 1, 2]
    n = 3 * 3 * channels * ndf + ndf                            # first conv + bias, no BN
    side = resolution
    for c_in, c_out, stride in zip(widths[:-1], widths[1:], strides):
        n += 3 * 3 * c_in * c_out + 2 * c_out                   # bias-free conv, BN
        side = math.ceil(side / stride)                         # 3x3, padding 1
    n += widths[-1] * side * side * d_dense + d_dense           # dense on the flattened map
    return n + d_dense + 1                                      # dense to the logit


@pytest.mark.parametrize("name", ["srgan-96", "srgan-32"])
def test_preset_parameter_counts(name):
    kw = get_preset(name).kwargs
    gan = create(name, seed=0)
    g = srresnet_parameters(kw["channels"], kw["ngf"], kw["n_blocks"], kw["scale"])
    d = srgan_d_parameters(kw["channels"], kw["resolution"], kw["ndf"], kw["d_dense"])
    assert gan.parameter_counts() == {"G": g, "D": d}
    assert f"G {g:,}" in get_preset(name).description and f"D {d:,}" in get_preset(name).description
    if name == "srgan-96":
        assert (g, d) == (1_548_547, 23_563_649)               # worked by hand from the paper's figure
        assert (kw["resolution"], kw["scale"], kw["channels"], kw["n_blocks"]) == (96, 4, 3, 16)


def test_parameter_counts_other_layouts():
    for kw in [dict(resolution=24, scale=2, channels=2, ngf=5, n_blocks=3, ndf=3, d_dense=7),
               dict(resolution=40, scale=8, channels=1, ngf=4, n_blocks=1, ndf=2, d_dense=3)]:
        G, D = build_srgan(**kw)
        assert count_parameters(G) == srresnet_parameters(kw["channels"], kw["ngf"], kw["n_blocks"], kw["scale"])
        assert count_parameters(D) == srgan_d_parameters(kw["channels"], kw["resolution"], kw["ndf"], kw["d_dense"])


def test_srgan96_layer_plan():
    G, D = build_srgan()
    convs = [m for m in G.modules() if isinstance(m, nn.Conv2d)]
    assert [m.kernel_size[0] for m in convs] == [9] + [3] * 33 + [3, 3] + [9]
    assert [(m.in_channels, m.out_channels) for m in convs[-3:]] == [(64, 256), (64, 256), (64, 3)]
    assert all(m.stride == (1, 1) for m in convs)
    assert sum(isinstance(m, nn.PixelShuffle) and m.upscale_factor == 2 for m in G.modules()) == 2
    prelus = [m for m in G.modules() if isinstance(m, nn.PReLU)]
    assert len(prelus) == 1 + 16 + 2 and all(m.num_parameters == 64 for m in prelus)
    assert sum(isinstance(m, BatchNormAct2d) and m.act == "linear" for m in G.modules()) == 33
    assert isinstance(G.tail[-1], BiasAct) and G.tail[-1].act == "tanh"
    d_convs = [m for m in D.modules() if isinstance(m, nn.Conv2d)]
    assert [(m.out_channels, m.stride[0]) for m in d_convs] == [(64, 1), (64, 2), (128, 1), (128, 2), (256, 1),
                                                                 (256, 2), (512, 1), (512, 2)]
    assert all(m.kernel_size == (3, 3) and m.bias is None for m in d_convs)
    d_norms = [m for m in D.modules() if isinstance(m, BatchNormAct2d)]
    assert len(d_norms) == 7 and all(m.act == "lrelu" and m.alpha == 0.2 for m in d_norms)
    first = D.features[1]
    assert isinstance(first, BiasAct) and (first.act, first.alpha, first.gain) == ("lrelu", 0.2, 1.0)
    dense = [m for m in D.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(512 * 6 * 6, 1024), (1024, 1)]


# ---------------------------------------------------------------- shapes, ranges, interface

def test_srgan96_shapes_at_batch_1():
    gan = create("srgan-96", seed=0)
    G, D = gan.G, gan.D
    assert (G.img2img, G.img_resolution, G.img_channels, G.in_channels, G.scale, G.lr_resolution) == \
        ("sr", 96, 3, 3, 4, 24)
    assert (G.z_dim, G.c_dim, gan.z_dim, gan.c_dim, D.c_dim) == (0, 0, 0, 0, 0)
    G.eval(), D.eval()                      # batch 1: the running statistics
    with torch.no_grad():
        hr = G(images(1, 3, 24, 24))
        assert hr.shape == (1, 3, 96, 96) and hr.abs().max() < 1
        assert D(hr).shape == (1,)


@pytest.mark.parametrize("resolution, scale, channels", [(32, 2, 1), (32, 4, 3), (24, 8, 2), (20, 2, 1)])
def test_shapes_and_range(resolution, scale, channels):
    G, D = build_srgan(resolution, scale, channels, ngf=6, n_blocks=2, ndf=3, d_dense=5)
    lr = images(3, channels, resolution // scale, resolution // scale)
    hr = G(lr)
    assert hr.shape == (3, channels, resolution, resolution)
    assert hr.abs().max() < 1                                   # tanh
    assert D(hr).shape == (3,)
    assert D.features(hr).shape[2:] == (D.feature_side,) * 2 == (math.ceil(resolution / 16),) * 2


def test_pixel_shuffle_doubles_per_block():
    G = SRResNetGenerator(64, 8, 1, ngf=4, n_blocks=1)
    assert len(G.upsample) == 3 and all(isinstance(b, UpsampleBlock) for b in G.upsample)
    x = randn(2, 4, 8, 8)
    for block in G.upsample:
        y = block(x)
        assert y.shape == (2, 4, 2 * x.shape[2], 2 * x.shape[3])
        # PixelShuffle(2): output pixel (2i + a, 2j + b) of channel c is conv channel 4c + 2a + b at (i, j)
        conv = block[0](x)
        v, slope = conv[:, 4 * 1 + 2 * 1 + 0, 3, 5], block[2].weight[1]
        torch.testing.assert_close(torch.where(v >= 0, v, slope * v), y[:, 1, 7, 10])
        x = y
    assert G(images(2, 1, 8, 8)).shape == (2, 1, 64, 64)


def test_training_step_lowers_the_pixel_loss():
    torch.manual_seed(0)
    G, D = build_srgan(16, 2, 1, ngf=8, n_blocks=2, ndf=4, d_dense=8)
    hr = images(4, 1, 16, 16)
    lr = F.avg_pool2d(hr, 2)
    loss_fn = ContentLoss("mse")
    opt = torch.optim.Adam(G.parameters(), lr=1e-3)
    losses = []
    for _ in range(5):
        sr = G(lr)
        loss = loss_fn(sr, hr) + 1e-3 * F.softplus(-D(sr)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in G.parameters())


def test_sn_discriminator():
    D = SRGANDiscriminator(16, 1, ndf=2, d_dense=4, sn=True)
    assert sum(isinstance(m, SNConv2d) for m in D.modules()) == 8
    assert sum(isinstance(m, SNLinear) for m in D.modules()) == 2
    assert count_parameters(D) == srgan_d_parameters(1, 16, 2, 4)
    logits = D(images(3, 1, 16, 16))
    assert logits.shape == (3,) and torch.isfinite(logits).all()


@pytest.mark.parametrize("kwargs, name", [
    (dict(resolution=30, scale=4), "resolution"), (dict(resolution=0), "resolution"),
    (dict(resolution=32.0), "resolution"), (dict(scale=3), "scale"), (dict(scale=1), "scale"),
    (dict(scale=True), "scale"), (dict(channels=0), "channels"), (dict(ngf=-1), "ngf"),
    (dict(n_blocks=0), "n_blocks"), (dict(ndf="64"), "ndf"), (dict(d_dense=2.5), "d_dense"),
    (dict(sn="yes"), "sn"),
])
def test_bad_arguments_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        create("srgan-32", **kwargs)


def test_malformed_inputs_raise():
    G, D = build_srgan(32, 2, 1, ngf=4, n_blocks=1, ndf=2, d_dense=3)
    with pytest.raises(ValueError, match=r"lr must be \[N, 1, 16, 16\]"):
        G(images(2, 1, 32, 32))
    with pytest.raises(ValueError, match=r"lr must be \[N, 1, 16, 16\]"):
        G(images(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"img must be \[N, 1, 32, 32\]"):
        D(images(2, 1, 16, 16))


# ---------------------------------------------------------------- fused backend vs reference

@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_generator_fast_matches_reference(training):
    G = create("srgan-32", seed=0, resolution=16, scale=4, channels=3, ngf=5, n_blocks=2).G.train(training)

    def run(m, dtype):
        hr = m(images(3, 3, 4, 4, dtype=dtype))
        (hr * randn(*hr.shape, seed=1, dtype=dtype)).sum().backward()
        return {"hr": hr}

    check_models(G, run, values=["hr"])


@needs_cpu_ext
@pytest.mark.parametrize("sn", [False, True], ids=["plain", "sn"])
def test_discriminator_fast_matches_reference(sn):
    D = create("srgan-32", seed=0, resolution=20, channels=2, ndf=3, d_dense=6, sn=sn).D

    def run(m, dtype):
        hr = images(3, 2, 20, 20, dtype=dtype).requires_grad_()
        logits = m(hr)
        (logits * randn(3, seed=1, dtype=dtype)).sum().backward()
        return {"logits": logits, "grad hr": hr.grad}

    check_models(D, run, values=["logits"])


# ---------------------------------------------------------------- ContentLoss

def test_mse_content_loss():
    sr = images(2, 3, 8, 8, seed=1).requires_grad_()
    hr = images(2, 3, 8, 8, seed=2)
    loss = ContentLoss("mse")(sr, hr)
    torch.testing.assert_close(loss, ((sr - hr) ** 2).mean())
    loss.backward()
    torch.testing.assert_close(sr.grad, 2 * (sr - hr).detach() / sr.numel())
    assert count_parameters(ContentLoss("mse")) == 0
    with pytest.raises(ValueError, match="weights"):
        ContentLoss("mse", weights="vgg.pt")


def classifier_phi(x: torch.Tensor) -> torch.Tensor:
    """The classifier's third block up to its ReLU, written out from its layers."""
    trunk = load_fmnist_classifier().trunk
    h = trunk[1](trunk[0](prepare_classifier_input(x)))                # blocks 1, 2: [N, 64, 8, 8]
    conv, bn, _, _ = trunk[2]
    return F.relu(bn(conv(h)))                                         # [N, 128, 8, 8]


@pytest.mark.parametrize("side, channels", [(32, 1), (28, 1), (16, 3)])
def test_classifier_content_loss(side, channels):
    shared = load_fmnist_classifier()
    before = copy.deepcopy(shared.state_dict())
    loss_fn = ContentLoss("classifier").train()               # train() must not reach the frozen network
    assert not loss_fn.extractor.training and all(not m.training for m in loss_fn.extractor.modules())
    assert all(not p.requires_grad for p in loss_fn.parameters()) and count_parameters(loss_fn) == 0
    own = copy.deepcopy(loss_fn.state_dict())
    sr = images(3, channels, side, side, seed=1).requires_grad_()
    hr = images(3, channels, side, side, seed=2)
    loss = loss_fn(sr, hr)
    with torch.no_grad():
        expected = F.mse_loss(classifier_phi(sr), classifier_phi(hr))
    torch.testing.assert_close(loss, expected)
    assert loss > 0
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    assert all(p.grad is None for p in loss_fn.parameters())
    for key, value in loss_fn.state_dict().items():          # weights and running statistics unchanged
        assert torch.equal(value, own[key]), key
    for key, value in shared.state_dict().items():           # the metrics' shared copy too
        assert torch.equal(value, before[key]), key
    assert not shared.training


def test_classifier_geometry_is_the_metric_preprocessing():
    for shape in [(2, 1, 32, 32), (2, 1, 28, 28), (2, 3, 32, 32), (2, 3, 96, 96), (2, 1, 16, 16)]:
        x = images(*shape, seed=3)
        torch.testing.assert_close(classifier_geometry(x), prepare_classifier_input(x))


def test_classifier_content_loss_rgb_is_its_luma():
    rgb_sr, rgb_hr = images(2, 3, 32, 32, seed=4), images(2, 3, 32, 32, seed=5)
    luma = rgb_sr.new_tensor([0.299, 0.587, 0.114]).view(1, 3, 1, 1)
    loss_fn = ContentLoss("classifier")
    torch.testing.assert_close(loss_fn(rgb_sr, rgb_hr),
                               loss_fn((rgb_sr * luma).sum(1, keepdim=True), (rgb_hr * luma).sum(1, keepdim=True)))
    with pytest.raises(ValueError, match="channels"):
        loss_fn(images(2, 2, 32, 32), images(2, 2, 32, 32))


def test_content_loss_leaves_g_alone():
    G, _ = build_srgan(32, 2, 1, ngf=4, n_blocks=1, ndf=2, d_dense=3)
    n = count_parameters(G)
    loss_fn = ContentLoss("classifier")
    loss_fn(G(images(2, 1, 16, 16)), images(2, 1, 32, 32)).backward()
    assert count_parameters(G) == n
    extractor_ids = {id(p) for p in loss_fn.parameters()}
    assert not extractor_ids & {id(p) for p in G.parameters()}
    assert all(p.grad is not None for p in G.parameters())


class TinyFeatures(nn.Module):
    """A stand-in feature network: one fixed 3x3 conv (3 -> 4 channels) and a ReLU, stride 2."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2, padding=1)
        with torch.no_grad():
            self.conv.weight.copy_(randn(4, 3, 3, 3, seed=7))
            self.conv.bias.copy_(randn(4, seed=8))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x))


class FlatFeatures(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean()


def save_script(module: nn.Module, path) -> str:
    with warnings.catch_warnings():   # torch marks TorchScript deprecated; it is still the format
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.jit.script(module).save(str(path))
    return str(path)


@pytest.mark.parametrize("channels", [3, 1])
def test_vgg_content_loss(tmp_path, channels):
    reference = TinyFeatures()
    path = save_script(reference, tmp_path / "features.pt")
    loss_fn = ContentLoss("vgg", weights=path).train()
    assert not loss_fn.extractor.training and count_parameters(loss_fn) == 0
    own = copy.deepcopy(loss_fn.state_dict())
    sr = images(2, channels, 12, 12, seed=1).requires_grad_()
    hr = images(2, channels, 12, 12, seed=2)
    loss = loss_fn(sr, hr)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

    def phi(x):
        return reference(((x.expand(-1, 3, -1, -1) + 1) / 2 - mean) / std) / 12.75

    with torch.no_grad():
        expected = ((phi(sr) - phi(hr)) ** 2).mean()
    torch.testing.assert_close(loss, expected)
    assert loss > 0
    loss.backward()
    assert sr.grad is not None and sr.grad.abs().sum() > 0
    for key, value in loss_fn.state_dict().items():
        assert torch.equal(value, own[key]), key


def test_content_loss_float64(tmp_path):
    loss_fn = ContentLoss("vgg", weights=save_script(TinyFeatures(), tmp_path / "f.pt")).double()
    sr, hr = images(2, 3, 8, 8, seed=1, dtype=F64).requires_grad_(), images(2, 3, 8, 8, seed=2, dtype=F64)
    assert loss_fn(sr, hr).dtype == F64
    assert torch.autograd.gradcheck(lambda s: loss_fn(s, hr), (sr,))


def test_content_loss_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="kind"):
        ContentLoss("discriminator")
    with pytest.raises(ValueError, match="weights"):
        ContentLoss("vgg")
    with pytest.raises(ValueError, match="weights"):
        ContentLoss("vgg", weights=TinyFeatures())
    with pytest.raises(FileNotFoundError, match="weights"):
        ContentLoss("vgg", weights=tmp_path / "missing.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torchscript archive")
    with pytest.raises(ValueError, match="weights"):
        ContentLoss("vgg", weights=garbage)
    with pytest.raises(FileNotFoundError, match="weights"):
        ContentLoss("classifier", weights=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="weights"):
        ContentLoss("classifier", weights=3)
    flat = ContentLoss("vgg", weights=save_script(FlatFeatures(), tmp_path / "flat.pt"))
    with pytest.raises(ValueError, match="feature map"):
        flat(images(2, 3, 8, 8), images(2, 3, 8, 8))
    loss_fn = ContentLoss("mse")
    with pytest.raises(ValueError, match="same shape"):
        loss_fn(images(2, 1, 8, 8), images(2, 1, 16, 16))
    with pytest.raises(ValueError, match="hr must be"):
        loss_fn(images(2, 1, 8, 8), images(1, 8, 8))
