"""pix2pix, CycleGAN and UNIT (ganfast.models.pix2pix / cyclegan / unit / img2img_layers): the
published parameter counts, PatchGAN receptive fields measured by gradients, preset shapes and
ranges, UNIT's shared layers, the fused layers against plain-torch layer sequences of the
reference architectures in float64, the fused cpu backend against the reference, and argument errors.
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganfast
from ganfast.models import count_parameters, create, get_preset, list_presets, set_backend
from ganfast.models.cyclegan import build_cyclegan
from ganfast.models.img2img_layers import PatchDiscriminator
from ganfast.models.pix2pix import build_pix2pix
from ganfast.models.unit import build_unit
from ganfast.testing.models import assert_fast_matches_reference

F64 = torch.float64
needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")
BACKENDS = ["reference", pytest.param(None, marks=needs_cpu_ext, id="default")]
IMG2IMG_PRESETS = [name for name in list_presets() if get_preset(name).family in ("pix2pix", "cyclegan", "unit")]


def randn(*shape, seed=0, dtype=torch.float32):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


# ---------------------------------------------------------------- published parameter counts

def test_published_parameter_counts():
    # pix2pix-256 G (unet_256, in = out = 3, ngf 64, batch norm: bias-free convs except the output):
    #   conv weights 16 * (3*64 + 64*128 + 128*256 + 256*512 + 4 * 512*512) = 20,974,592 (down)
    #   convT weights 16 * (128*3 + 256*64 + 512*128 + 1024*256 + 3 * 1024*512 + 512*512) = 33,423,360 (up)
    #   BN gamma + beta 2 * (128 + 256 + 512*4) [down] + 2 * (64 + 128 + 256 + 512*4) [up] = 9,920; output bias 3
    #   total 54,413,955 (the reference prints 54.414 M)
    # pix2pix-256 D (PatchGAN on 6 channels, batch norm): 16 * (6*64 + 64*128 + 128*256 + 256*512 + 512) + 64 + 1
    #   + 2 * (128 + 256 + 512) = 2,768,705 (2.769 M)
    gan = create("pix2pix-256")
    assert count_parameters(gan.G) == 54_413_955
    assert count_parameters(gan.D) == 2_768_705
    # cyclegan-256: resnet_9blocks 3 -> 3, ngf 64, instance norm (affine-free; every conv has a bias):
    #   49*3*64 + 64 + 9*64*128 + 128 + 9*128*256 + 256 + 9 blocks * 2 * (9*256*256 + 256)
    #   + 9*256*128 + 128 + 9*128*64 + 64 + 49*64*3 + 3 = 11,378,179 (11.378 M)
    # D: PatchGAN on 3 channels with biases (instance norm): 16 * (3*64 + 64*128 + 128*256 + 256*512 + 512)
    #   + 64 + 128 + 256 + 512 + 1 = 2,764,737 (2.765 M)
    gan = create("cyclegan-256")
    for net in (gan.G.G_AB, gan.G.G_BA):
        assert count_parameters(net) == 11_378_179
    for net in (gan.D.D_A, gan.D.D_B):
        assert count_parameters(net) == 2_764_737


# ---------------------------------------------------------------- receptive fields, by gradients

def input_extent(D: nn.Module, shape: tuple, at: tuple) -> tuple[int, int]:
    """Rows and columns of the input that logit `at` = (i, j) depends on (nonzero gradient)."""
    x = randn(*shape, dtype=F64).requires_grad_()
    logits = D(x)
    logits[(0, 0) + at].backward()
    hit = x.grad[0].abs().sum(0) != 0                                    # [H, W]
    rows, cols = hit.any(1).nonzero().flatten(), hit.any(0).nonzero().flatten()
    # the dependence is a solid block (no holes): its extent is its bounding box
    assert int(hit.sum()) == (rows[-1] - rows[0] + 1) * (cols[-1] - cols[0] + 1)
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


@pytest.mark.parametrize("n_layers,expected", [(3, 70), (1, 16), (2, 34)])
def test_patchgan_receptive_field_by_gradient(n_layers, expected):
    # norm 'none': a train-mode norm's statistics couple every pixel of the map
    D = PatchDiscriminator(2, ndf=4, n_layers=n_layers, norm="none").double()
    assert D.receptive_field == expected
    size = 2 * expected + 2 ** n_layers * 4
    out = D(torch.zeros(1, 2, size, size, dtype=F64)).shape[-1]
    # an interior logit (its window away from the zero padding) depends on exactly a 70x70 block
    assert input_extent(D, (1, 2, size, size), (out // 2, out // 2)) == (expected, expected)
    # and moving the logit by one moves the window by D's total stride
    x = randn(1, 2, size, size, dtype=F64).requires_grad_()
    D(x)[0, 0, out // 2, out // 2 + 1].backward()
    cols = (x.grad[0].abs().sum((0, 1)) != 0).nonzero().flatten()
    x2 = x.detach().requires_grad_()
    D(x2)[0, 0, out // 2, out // 2].backward()
    cols2 = (x2.grad[0].abs().sum((0, 1)) != 0).nonzero().flatten()
    assert int(cols[0] - cols2[0]) == 2 ** n_layers


def test_pixelgan_and_imagegan_fields():
    D = PatchDiscriminator(3, ndf=4, kind="pixel", norm="none").double()
    assert D.receptive_field == 1
    assert input_extent(D, (1, 3, 9, 9), (4, 5)) == (1, 1)
    assert D(torch.zeros(2, 3, 9, 9, dtype=F64)).shape == (2, 1, 9, 9)
    D = PatchDiscriminator(3, ndf=4, kind="image", norm="none", resolution=32).double()
    assert D(torch.zeros(2, 3, 32, 32, dtype=F64)).shape == (2, 1, 1, 1)
    assert D.receptive_field >= 32
    assert input_extent(D, (1, 3, 32, 32), (0, 0)) == (32, 32)       # the whole image


# ---------------------------------------------------------------- presets: shapes, ranges, contract

SMALL = {"pix2pix-256": dict(ngf=4, ndf=4), "cyclegan-256": dict(ngf=4, ndf=4, n_blocks=2),
         "unit-256": dict(dim=4, ndf=4)}     # the 256 px presets with narrow layers: the same plan, fast


@pytest.mark.parametrize("name", IMG2IMG_PRESETS)
def test_preset_shapes_ranges_and_contract(name):
    gan = create(name, seed=0, **SMALL.get(name, {}))
    G, D, kw = gan.G, gan.D, gan.config
    R = kw["resolution"]
    assert (G.img_resolution, G.z_dim, G.c_dim) == (R, 0, 0)
    family = get_preset(name).family
    if family == "pix2pix":
        assert G.img2img == "paired" and (G.in_channels, G.out_channels) == (kw["in_channels"], kw["out_channels"])
        assert G.img_channels == kw["out_channels"]
        x = randn(2, G.in_channels, R, R).clamp(-1, 1)
        y = G(x)
        assert y.shape == (2, G.out_channels, R, R)
        logits = D(x, y)
        assert D.receptive_field == {2: 34, 3: 70}[kw["d_layers"]]
        assert logits.shape[:2] == (2, 1) and logits.shape[2] == logits.shape[3] > 1
        pairs = [(y, None)]
    else:
        assert G.img2img == ("unpaired" if family == "cyclegan" else "unit")
        assert (G.channels_A, G.channels_B) == (kw["channels_A"], kw["channels_B"])
        a = randn(2, G.channels_A, R, R, seed=1).clamp(-1, 1)
        b = randn(2, G.channels_B, R, R, seed=2).clamp(-1, 1)
        fake_b, fake_a = G(a, direction="AB"), G(b, direction="BA")
        assert fake_b.shape == b.shape and fake_a.shape == a.shape
        for img, domain in ((a, "A"), (fake_a, "A"), (b, "B"), (fake_b, "B")):
            logits = D(img, domain=domain)
            assert logits.shape[:2] == (2, 1) and logits.ndim == 4
        pairs = [(fake_a, None), (fake_b, None)]
        if family == "unit":
            h = G.encode(a, "A")
            assert h.shape == (2, G.latent_channels, G.latent_resolution, G.latent_resolution)
            assert torch.equal(G.decode(h, "B"), fake_b)
    for img, _ in pairs:
        assert torch.isfinite(img).all() and img.abs().max() < 1    # tanh output
        assert img.std() > 1e-3                                      # not a constant image


# ---------------------------------------------------------------- UNIT's shared layers

def test_unit_shared_layers_are_one_module_fed_by_both_domains():
    G, _ = build_unit(resolution=16, channels_A=1, channels_B=2, dim=4, n_res=3, n_shared=2)
    assert len(G.shared_encoder) == 2 and len(G.shared_decoder) == 2
    # no parameter is stored twice (a copy would be), and neither private path holds the shared blocks
    ids = [id(p) for p in G.parameters()]
    assert len(ids) == len(set(ids))
    for private in (G.enc_A, G.enc_B, G.dec_A, G.dec_B):
        assert not any(m is G.shared_encoder or m is G.shared_decoder for m in private.modules())
    a, b = randn(2, 1, 16, 16, seed=1), randn(2, 2, 16, 16, seed=2)

    def grads(loss_of):
        G.zero_grad(set_to_none=False)
        loss_of().backward()
        return {n: p.grad.clone() if p.grad is not None else torch.zeros_like(p) for n, p in G.named_parameters()}

    g_a = grads(lambda: G.decode(G.encode(a, "A"), "A").square().sum())
    g_b = grads(lambda: G.decode(G.encode(b, "B"), "B").square().sum())
    g_ab = grads(lambda: (G.decode(G.encode(a, "A"), "A").square().sum()
                          + G.decode(G.encode(b, "B"), "B").square().sum()))
    for name in g_ab:
        if name.startswith(("shared_encoder.", "shared_decoder.")):
            # both domains reach the shared weights, and their contributions add up there
            assert g_a[name].abs().sum() > 0 and g_b[name].abs().sum() > 0, name
            torch.testing.assert_close(g_ab[name], g_a[name] + g_b[name])
        elif name.startswith(("enc_A.", "dec_A.")):
            assert g_b[name].abs().sum() == 0, name                   # B's pass never touches A's private layers
        elif name.startswith(("enc_B.", "dec_B.")):
            assert g_a[name].abs().sum() == 0, name


# ---------------------------------------------------------------- fused layers == the reference layer sequences

class PlainUnetBlock(nn.Module):
    """The reference's recursive skip block, in plain torch layers (the oracle for UnetGenerator)."""

    def __init__(self, outer, inner, sub=None, in_nc=None, outermost=False, innermost=False, norm="batch",
                 dropout=False):
        super().__init__()
        bias = norm == "instance"
        Norm = (lambda c: nn.BatchNorm2d(c)) if norm == "batch" else (lambda c: nn.InstanceNorm2d(c))
        in_nc = outer if in_nc is None else in_nc
        self.outermost, self.sub = outermost, sub
        conv = nn.Conv2d(in_nc, inner, 4, 2, 1, bias=bias)
        if outermost:
            self.down = nn.Sequential(conv)
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1), nn.Tanh())
        elif innermost:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), conv)
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(inner, outer, 4, 2, 1, bias=bias), Norm(outer))
        else:
            self.down = nn.Sequential(nn.LeakyReLU(0.2), conv, Norm(inner))
            self.up = nn.Sequential(nn.ReLU(), nn.ConvTranspose2d(2 * inner, outer, 4, 2, 1, bias=bias), Norm(outer),
                                    *([nn.Dropout(0.5)] if dropout else []))

    def blocks(self):
        return [self] + (self.sub.blocks() if self.sub is not None else [])

    def forward(self, x):
        y = self.down(x)
        y = self.up(self.sub(y) if self.sub is not None else y)
        return y if self.outermost else torch.cat([x, y], 1)


def plain_unet(in_nc, out_nc, num_downs, ngf, norm, dropout):
    block = PlainUnetBlock(ngf * 8, ngf * 8, innermost=True, norm=norm)
    for _ in range(num_downs - 5):
        block = PlainUnetBlock(ngf * 8, ngf * 8, block, norm=norm, dropout=dropout)
    for mult in (4, 2, 1):
        block = PlainUnetBlock(ngf * mult, ngf * mult * 2, block, norm=norm)
    return PlainUnetBlock(out_nc, ngf, block, in_nc=in_nc, outermost=True, norm=norm)


def copy_in_order(dst_params, src_params):
    """Copy parameters pairwise, checking that the two networks have the same shapes in that order."""
    dst_params, src_params = list(dst_params), list(src_params)
    assert [tuple(p.shape) for p in dst_params] == [tuple(p.shape) for p in src_params]
    with torch.no_grad():
        for d, s in zip(dst_params, src_params):
            d.copy_(s)


def compare_train_step(ours, plain, inputs, seed=3):
    """Forward (train mode) and backward of a fixed random projection of the output in float64;
    outputs and every parameter gradient must agree (parameters are paired in order)."""
    outs = []
    for net in (ours, plain):
        net.double().train()
        net.zero_grad(set_to_none=False)
        torch.manual_seed(seed)                      # the same dropout masks on both sides
        y = net(*[t.double() for t in inputs])
        (y * randn(*y.shape, seed=9, dtype=F64)).sum().backward()
        outs.append((y.detach(), [p.grad.clone() for p in net.parameters()]))
    (y0, g0), (y1, g1) = outs
    torch.testing.assert_close(y0, y1, rtol=1e-10, atol=1e-12)
    for a, b in zip(g0, g1):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", ["batch", "instance"])
def test_unet_equals_reference_layer_sequence(norm, backend):
    # num_downs 6: widths 4, 8, 16, 32, 32, 32: one dropout block (level 4), innermost map 1x1
    G, _ = build_pix2pix(resolution=64, in_channels=2, out_channels=3, ngf=4, ndf=4, norm=norm, dropout=True)
    set_backend(G, backend)
    plain = plain_unet(2, 3, 6, 4, norm, dropout=True)
    blocks = plain.blocks()                          # outermost first
    # ours: down[0..5] then up[0..5]; the plain blocks: each block's down, then each block's up
    plain_params = [p for b in blocks for p in b.down.parameters()] + [p for b in blocks for p in b.up.parameters()]
    copy_in_order(G.parameters(), plain_params)

    class Ordered(nn.Module):                        # the plain U-Net, its parameters listed in G's order
        def __init__(self):
            super().__init__()
            self.net = plain

        def parameters(self, recurse=True):
            return iter(plain_params)

        def forward(self, x):
            return self.net(x)

    compare_train_step(G, Ordered(), [randn(3, 2, 64, 64)])


def plain_resnet_generator(in_nc, out_nc, ngf, n_blocks, norm):
    bias = norm == "instance"
    Norm = nn.BatchNorm2d if norm == "batch" else nn.InstanceNorm2d

    class Block(nn.Module):
        def __init__(self, c):
            super().__init__()
            self.body = nn.Sequential(nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=bias), Norm(c), nn.ReLU(True),
                                      nn.ReflectionPad2d(1), nn.Conv2d(c, c, 3, bias=bias), Norm(c))

        def forward(self, x):
            return x + self.body(x)

    layers = [nn.ReflectionPad2d(3), nn.Conv2d(in_nc, ngf, 7, bias=bias), Norm(ngf), nn.ReLU(True)]
    for m in (1, 2):
        layers += [nn.Conv2d(ngf * m, ngf * m * 2, 3, 2, 1, bias=bias), Norm(ngf * m * 2), nn.ReLU(True)]
    layers += [Block(4 * ngf) for _ in range(n_blocks)]
    for m in (4, 2):
        layers += [nn.ConvTranspose2d(ngf * m, ngf * m // 2, 3, 2, 1, output_padding=1, bias=bias),
                   Norm(ngf * m // 2), nn.ReLU(True)]
    layers += [nn.ReflectionPad2d(3), nn.Conv2d(ngf, out_nc, 7), nn.Tanh()]
    return nn.Sequential(*layers)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", ["instance", "batch"])
def test_resnet_generator_equals_reference_layer_sequence(norm, backend):
    G, _ = build_cyclegan(resolution=16, channels_A=2, channels_B=3, ngf=4, ndf=4, n_blocks=2, norm=norm)
    set_backend(G, backend)
    plain = plain_resnet_generator(2, 3, 4, 2, norm)
    copy_in_order(plain.parameters(), G.G_AB.parameters())
    compare_train_step(G.G_AB, plain, [randn(3, 2, 16, 16)])


def plain_patchgan(in_nc, ndf, n_layers, norm):
    bias = norm != "batch"
    Norm = {"batch": nn.BatchNorm2d, "instance": nn.InstanceNorm2d, "none": lambda c: nn.Identity()}[norm]
    layers = [nn.Conv2d(in_nc, ndf, 4, 2, 1), nn.LeakyReLU(0.2, True)]
    prev = ndf
    for n in range(1, n_layers + 1):
        cur = ndf * min(2 ** n, 8)
        layers += [nn.Conv2d(prev, cur, 4, 2 if n < n_layers else 1, 1, bias=bias), Norm(cur), nn.LeakyReLU(0.2, True)]
        prev = cur
    return nn.Sequential(*layers, nn.Conv2d(prev, 1, 4, 1, 1))


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("norm", ["batch", "instance", "none"])
def test_patchgan_equals_reference_layer_sequence(norm, backend):
    D = set_backend(PatchDiscriminator(3, ndf=4, n_layers=3, norm=norm), backend)
    plain = plain_patchgan(3, 4, 3, norm)
    copy_in_order(plain.parameters(), D.parameters())
    compare_train_step(D, plain, [randn(2, 3, 40, 40)])


# ---------------------------------------------------------------- the fused cpu backend against the reference

def r1(D, x, **kw):
    x = x.detach().requires_grad_()
    g, = torch.autograd.grad(D(x, **kw).sum(), x, create_graph=True)
    return g.square().sum()


@needs_cpu_ext
def test_fast_matches_reference_all_families():
    G, D = build_pix2pix(resolution=32, in_channels=1, out_channels=2, ngf=4, ndf=4, num_downs=5, dropout=False)

    def run_pix2pix(m, dtype):
        y = m(randn(2, 1, 32, 32, dtype=dtype))
        (y * randn(*y.shape, seed=5, dtype=dtype)).sum().backward()
        return {"y": y}
    assert_fast_matches_reference(G, run_pix2pix, values=["y"])

    def run_d(m, dtype):
        x, y = randn(2, 1, 32, 32, dtype=dtype), randn(2, 2, 32, 32, seed=1, dtype=dtype)
        logits = m(x, y)
        penalty = r1(lambda t: m(x, t), y)                 # R1 on the translated image: a double backward
        (logits.sum() + penalty).backward()
        return {"logits": logits, "r1": penalty}
    assert_fast_matches_reference(D, run_d, values=["logits"])

    for G, D in (build_cyclegan(resolution=16, channels_A=1, channels_B=2, ngf=4, ndf=4, n_blocks=1, d_layers=2),
                 build_unit(resolution=16, channels_A=1, channels_B=2, dim=4, n_res=2, ndf=4, d_layers=2, sn=True)):
        def run_g(m, dtype):
            a = randn(2, 1, 16, 16, dtype=dtype)
            fake_b = m(a, direction="AB")
            rec_a = m(fake_b, direction="BA")
            (rec_a - a).abs().mean().backward()
            return {"fake_b": fake_b, "rec_a": rec_a}
        assert_fast_matches_reference(G, run_g, values=["fake_b", "rec_a"])

        def run_dd(m, dtype):
            b = randn(2, 2, 16, 16, seed=2, dtype=dtype)
            logits = m(b, domain="B")
            (logits.sum() + r1(m, b, domain="B")).backward()
            return {"logits": logits}
        assert_fast_matches_reference(D, run_dd, values=["logits"])


# ---------------------------------------------------------------- argument errors

@pytest.mark.parametrize("build,kwargs,match", [
    (build_pix2pix, dict(norm="group"), "norm"),
    (build_pix2pix, dict(resolution=48), "resolution"),
    (build_pix2pix, dict(resolution=32, num_downs=6), "resolution"),
    (build_pix2pix, dict(num_downs=1), "num_downs"),
    (build_pix2pix, dict(d_kind="global"), "d_kind"),
    (build_pix2pix, dict(ngf=0), "ngf"),
    (build_pix2pix, dict(dropout="yes"), "dropout"),
    (build_pix2pix, dict(d_layers=0), "d_layers"),
    (build_pix2pix, dict(sn=1), "sn"),
    (build_cyclegan, dict(n_blocks=-1), "n_blocks"),
    (build_cyclegan, dict(resolution=30), "resolution"),
    (build_cyclegan, dict(channels_B=0), "channels_B"),
    (build_cyclegan, dict(norm="none"), "norm"),
    (build_unit, dict(n_shared=5), "n_shared"),
    (build_unit, dict(n_shared=0), "n_shared"),
    (build_unit, dict(resolution=30), "resolution"),
    (build_unit, dict(dim=2.5), "dim"),
    (build_unit, dict(d_norm="layer"), "d_norm"),
])
def test_bad_builder_arguments_name_the_argument(build, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build(**kwargs)


def test_bad_call_arguments():
    G, D = build_cyclegan(resolution=16, channels_A=1, channels_B=2, ngf=4, ndf=4, n_blocks=1)
    a = torch.zeros(1, 1, 16, 16)
    with pytest.raises(ValueError, match="direction"):
        G(a, direction="AC")
    with pytest.raises(ValueError, match="img"):
        G(a, direction="BA")                        # B images have 2 channels
    with pytest.raises(ValueError, match="domain"):
        D(a, domain="C")
    with pytest.raises(ValueError, match=r"\[N, 2, H, W\]"):
        D(a, domain="B")
    G, D = build_pix2pix(resolution=32, in_channels=1, out_channels=1, ngf=4, ndf=4)
    with pytest.raises(ValueError, match="img"):
        G(torch.zeros(1, 1, 16, 16))
    with pytest.raises(ValueError, match="x and y"):
        D(torch.zeros(1, 1, 32, 32), torch.zeros(1, 2, 32, 32))
    with pytest.raises(ValueError, match="resolution"):
        PatchDiscriminator(3, kind="image")
    G, _ = build_unit(resolution=16, dim=4)
    with pytest.raises(ValueError, match="domain"):
        G.encode(torch.zeros(1, 1, 16, 16), "C")
    with pytest.raises(ValueError, match="img"):
        G.decode(torch.zeros(1, 8, 4, 4), "A")      # the latent has 16 channels
