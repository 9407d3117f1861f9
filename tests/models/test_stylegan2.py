"""StyleGAN2 and StyleGAN (v1): presets, shapes, fast vs reference (incl. R1 and path-length double
backward), truncation, style mixing, noise modes, labels, the fp16 recipe and bad arguments."""
from __future__ import annotations


import pytest
import torch

import ganfast.models as gm
from ganfast.models import stylegan2 as sg2
from ganfast.models.stylegan import StyleGANGenerator
from ganfast.models.stylegan2 import MappingNetwork, StyleGAN2Discriminator, StyleGAN2Generator
from ganfast.testing.models import assert_fast_matches_reference

# Exact counts of trainable parameters. stylegan2-1024 and stylegan-1024 equal the published
# figures (NVlabs' config-f G 30,370,060 / D 29,012,513; StyleGAN paper: G 26.2M, D 23.1M).
PRESET_COUNTS = {
    "stylegan2-32": (19947539, 21507073),
    "stylegan2-64": (23819544, 23407361),
    "stylegan2-256": (24767458, 24001089),
    "stylegan2-1024": (30370060, 29012513),
    "stylegan-256": (26078915, 23042625),
    "stylegan-1024": (26212019, 23077137),
}

def test_fmnist_preset_is_the_small_grayscale_config():
    # `ganfast train`'s default: 64 channels at every resolution, z / w 128, one channel, noise inputs
    gan = gm.create("stylegan2-32-fmnist", seed=0)
    assert gan.parameter_counts() == {"G": 383627, "D": 337153}
    assert (gan.img_resolution, gan.img_channels, gan.z_dim, gan.c_dim) == (32, 1, 128, 0)
    img = gan.G(torch.randn(2, 128))
    assert img.shape == (2, 1, 32, 32) and gan.D(img).shape == (2,)
    gan.G.eval()
    z = torch.randn(2, 128)
    assert torch.equal(gan.G(z, noise_mode="const"), gan.G(z, noise_mode="const"))
    for p in gan.G.parameters():                                    # noise strengths start at 0
        p.data.add_(0.1)
    assert not torch.equal(gan.G(z), gan.G(z))                      # random noise inputs by default


SMALL = dict(z_dim=16, w_dim=16, img_resolution=16, img_channels=3, channel_base=128, channel_max=16,
             mapping_layers=2)
SMALL_D = dict(img_resolution=16, img_channels=3, channel_base=128, channel_max=16)


@pytest.mark.parametrize("name", sorted(PRESET_COUNTS))
def test_preset_parameter_counts_and_interface(name):
    gan = gm.create(name, seed=0)
    assert gan.parameter_counts() == dict(zip("GD", PRESET_COUNTS[name]))
    res = gan.config["resolution"]
    assert (gan.img_resolution, gan.img_channels, gan.z_dim, gan.c_dim) == (res, 3, 512, 0)
    assert gan.G.num_ws == 2 * (res.bit_length() - 1) - 2          # 18 at 1024 (v1 and v2 alike)


def test_presets_are_listed_and_unknown_names_list_them():
    names = gm.list_presets()
    for n in ("stylegan2-32", "stylegan2-64", "stylegan2-256", "stylegan2-1024", "stylegan-256"):
        assert n in names
    with pytest.raises(ValueError, match="valid presets: .*stylegan2-256"):
        gm.create("stylegan2-999")


@pytest.mark.parametrize("name", ["stylegan2-32", "stylegan-256"])
def test_small_preset_forward_backward(name):
    gan = gm.create(name, seed=1, resolution=32, channel_base=512, channel_max=64, z_dim=64, w_dim=64)
    z = torch.randn(4, 64)
    img = gan.G(z)
    assert img.shape == (4, 3, 32, 32) and img.dtype == torch.float32 and torch.isfinite(img).all()
    logits = gan.D(img)
    assert logits.shape == (4,)
    logits.sum().backward()
    for n, p in gan.named_parameters():
        assert p.grad is not None, n


@pytest.mark.parametrize("gen", ["stylegan2", "stylegan2-orig", "stylegan"])
def test_generator_fast_matches_reference_with_path_length_double_backward(gen):
    torch.manual_seed(2)
    cls = StyleGANGenerator if gen == "stylegan" else StyleGAN2Generator
    G = cls(noise_mode="const", **SMALL, **({"architecture": "orig"} if gen == "stylegan2-orig" else {}))
    # nonzero noise strengths and biases. v1's constant stays ones: its 4x4 planes are constant but
    # for the noise, an ill-conditioned instance norm (rstd ~ 1 / noise) that the fused backward
    # must handle as well as the reference (it re-centers yhat; it did not before this test).
    for name, p in G.named_parameters():
        if "noise_strength" in name or name.endswith("bias"):
            p.data.normal_(0, 0.3)
    z = torch.randn(3, 16)
    pl_noise = torch.randn(3, 3, 16, 16)

    def run(model, dtype):
        ws = model.mapping(z.to(dtype), update_w_avg=False).detach().requires_grad_(True)
        img = model.synthesis(ws)
        g, = torch.autograd.grad((img * pl_noise.to(dtype)).sum(), ws, create_graph=True)
        g.square().sum(dim=2).mean().sqrt().backward()          # a path-length style penalty
        return {"image": img, "dimg/dws": g}

    oracle = assert_fast_matches_reference(G, run, values=("image",))
    assert sum(bool(g.abs().max() > 0) for k, g in oracle.items() if k.startswith("grad ")) > 10


@pytest.mark.parametrize("arch", ["resnet", "orig"])
@pytest.mark.parametrize("c_dim", [0, 5])
def test_discriminator_fast_matches_reference_with_r1_double_backward(arch, c_dim):
    torch.manual_seed(3)
    D = StyleGAN2Discriminator(c_dim=c_dim, architecture=arch, mapping_layers=2, **SMALL_D)
    for name, p in D.named_parameters():
        if name.endswith("bias"):
            p.data.normal_(0, 0.3)
    x = torch.randn(4, 3, 16, 16)
    c = torch.randint(0, 5, (4,)) if c_dim else None

    def run(model, dtype):
        img = x.to(dtype).requires_grad_(True)
        logits = model(img, c)
        g, = torch.autograd.grad(logits.sum(), img, create_graph=True)
        (g.square().sum() * 5.0 + logits.sum()).backward()   # R1 penalty plus the logits
        return {"logits": logits, "dD/dimg": g}

    assert_fast_matches_reference(D, run, values=("logits",))


def test_truncation_moves_ws_toward_w_avg():
    G = StyleGAN2Generator(**SMALL).eval()
    G.mapping.w_avg.normal_()
    z = torch.randn(5, 16)
    ws = G.mapping(z)
    assert ws.shape == (5, G.num_ws, 16)
    w0 = G.mapping(z, truncation_psi=0)
    torch.testing.assert_close(w0, G.mapping.w_avg.expand_as(w0))            # psi=0: the w average
    half = G.mapping(z, truncation_psi=0.5, truncation_cutoff=2)
    torch.testing.assert_close(half[:, :2], G.mapping.w_avg + 0.5 * (ws[:, :2] - G.mapping.w_avg))
    torch.testing.assert_close(half[:, 2:], ws[:, 2:])                        # beyond the cutoff: unchanged
    img0 = G(torch.randn(2, 16), truncation_psi=0, noise_mode="none")
    torch.testing.assert_close(img0[0], img0[1])                              # every z gives the same image


def test_w_avg_tracks_in_training_only():
    G = StyleGAN2Generator(**SMALL)
    z = torch.randn(8, 16)
    G.eval()
    G.mapping(z)
    assert torch.count_nonzero(G.mapping.w_avg) == 0
    G.train()
    w = G.mapping(z)[:, 0]
    torch.testing.assert_close(G.mapping.w_avg, (1 - 0.995) * w.mean(0))


def test_style_mixing_swaps_the_tail_of_ws():
    G = StyleGAN2Generator(**SMALL)
    ws = G.mapping(torch.randn(4, 16), update_w_avg=False)
    torch.manual_seed(5)
    mixed = G.mix_styles(ws, None, prob=1.0)
    cut = next(i for i in range(G.num_ws) if not torch.equal(mixed[:, i], ws[:, i]))
    assert 1 <= cut < G.num_ws
    torch.testing.assert_close(mixed[:, :cut], ws[:, :cut])
    assert not torch.allclose(mixed[:, cut:], ws[:, cut:])
    torch.testing.assert_close(mixed[:, cut:], mixed[:, cut:cut + 1].expand_as(mixed[:, cut:]))  # one w2 per sample
    assert torch.equal(G.mix_styles(ws, None, prob=0.0), ws)
    # forward mixes in training mode only
    G.style_mixing_prob = 1.0
    z = torch.randn(2, 16)
    G.eval()
    a, b = G(z, noise_mode="const"), G(z, noise_mode="const")
    torch.testing.assert_close(a, b)
    G.train()
    assert not torch.allclose(G(z, noise_mode="const"), a)


def test_noise_modes():
    G = StyleGAN2Generator(**SMALL).eval()
    for name, p in G.named_parameters():
        if "noise_strength" in name:
            p.data.fill_(0.5)
    ws = G.mapping(torch.randn(2, 16))
    const1, const2 = G.synthesis(ws, noise_mode="const"), G.synthesis(ws, noise_mode="const")
    torch.testing.assert_close(const1, const2)
    r1, r2 = G.synthesis(ws, noise_mode="random"), G.synthesis(ws, noise_mode="random")
    assert not torch.allclose(r1, r2)
    none = G.synthesis(ws, noise_mode="none")
    assert not torch.allclose(none, const1)
    for name, p in G.named_parameters():
        if "noise_strength" in name:
            p.data.zero_()
    torch.testing.assert_close(G.synthesis(ws, noise_mode="const"), none)
    with pytest.raises(ValueError, match="noise_mode"):
        G.synthesis(ws, noise_mode="fixed")


def test_conditional_labels():
    G = StyleGAN2Generator(c_dim=4, noise_mode="const", **SMALL).eval()
    D = StyleGAN2Discriminator(c_dim=4, mapping_layers=2, **SMALL_D).eval()
    z = torch.randn(3, 16)
    idx = torch.tensor([0, 3, 1])
    onehot = torch.nn.functional.one_hot(idx, 4).float()
    torch.testing.assert_close(G(z, idx), G(z, onehot))
    assert not torch.allclose(G(z, idx), G(z, torch.tensor([1, 0, 2])))
    img = torch.randn(4, 3, 16, 16)
    torch.testing.assert_close(D(img, torch.tensor([0, 1, 2, 3])), D(img, torch.eye(4)))
    with pytest.raises(ValueError, match="conditional"):
        G(z)
    with pytest.raises(ValueError, match="conditional"):
        D(img)
    with pytest.raises(ValueError, match=r"\[0, 4\)"):
        G(z, torch.tensor([0, 4, 1]))


def test_fp16_blocks_and_conv_clamp(monkeypatch):
    """The NVIDIA recipe: the top num_fp16_res resolutions in float16 with clamped convolutions.
    Here the CPU is allowed to run them, so the recipe's code path runs in the tests."""
    torch.manual_seed(6)
    G = StyleGAN2Generator(num_fp16_res=2, conv_clamp=256, noise_mode="const", **SMALL).eval()
    D = StyleGAN2Discriminator(num_fp16_res=2, conv_clamp=256, **SMALL_D).eval()
    assert [b.use_fp16 for b in G.synthesis.blocks] == [False, True, True]    # the top two resolutions
    z = torch.randn(4, 16)
    ref_img = G(z)                                    # CPU is not an fp16 device: all fp32
    monkeypatch.setattr(sg2, "FP16_DEVICE_TYPES", ("cuda", "cpu"))
    img = G(z)
    assert img.dtype == torch.float32 and torch.isfinite(img).all()
    torch.testing.assert_close(img, ref_img, rtol=0.05, atol=0.05)
    torch.testing.assert_close(G(z, force_fp32=True), ref_img)
    logits = D(img)
    assert logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_orig_generator_draws_from_the_last_block_only():
    # g_architecture='orig': one ToRGB (the last block's); the earlier blocks' features reach the
    # image only through the later convolutions, so the image is unchanged by an earlier block's
    # would-be ToRGB weights (there are none) and still depends on every block.
    torch.manual_seed(4)
    skip, orig = StyleGAN2Generator(**SMALL), StyleGAN2Generator(architecture="orig", **SMALL)
    torgbs = [n for n, _ in orig.named_modules() if n.endswith("torgb")]
    assert torgbs == [f"synthesis.blocks.{len(orig.synthesis.blocks) - 1}.torgb"]
    assert len([n for n, _ in skip.named_modules() if n.endswith("torgb")]) == len(skip.synthesis.blocks)
    assert orig.num_ws == skip.num_ws
    img = orig(torch.randn(2, 16))
    assert img.shape == (2, 3, 16, 16)
    img.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().max() > 0 for n, p in orig.synthesis.named_parameters()
               if n.endswith("weight") and "affine" not in n)
    gan = gm.create("stylegan2-32-fmnist", g_architecture="orig")
    assert type(gan.G.synthesis.blocks[0].torgb) is type(None)
    with pytest.raises(ValueError, match="architecture"):
        StyleGAN2Generator(architecture="resnet", **SMALL)


@pytest.mark.parametrize("taps", [[1, 1], [1, 2, 1], [1, 3, 3, 1], [1, 4, 6, 4, 1]])
def test_skip_generator_with_any_resample_filter_length(taps):
    # the skip path's 2x upsampling pads by the filter's length; each block's image is 2x the last
    torch.manual_seed(5)
    G = StyleGAN2Generator(resample_filter=taps, **SMALL)
    img = G(torch.randn(2, 16))
    assert img.shape == (2, 3, 16, 16) and torch.isfinite(img).all()
    from ganfast.ops.upfirdn2d import setup_filter, upfirdn2d
    x = torch.randn(1, 1, 5, 5, dtype=torch.float64)
    block = G.synthesis.blocks[1]
    up = upfirdn2d(x, setup_filter(taps).double(), up=2, padding=block.img_padding, gain=4)
    assert up.shape == (1, 1, 10, 10)
    if taps == [1, 1]:                      # a box filter upsamples by repeating each pixel 2x2
        torch.testing.assert_close(up, x.repeat_interleave(2, 2).repeat_interleave(2, 3))


def test_mapping_network_and_bad_arguments():
    m = MappingNetwork(8, 0, 8, num_ws=None, num_layers=2)
    assert m(torch.randn(3, 8)).shape == (3, 8)
    with pytest.raises(ValueError, match="z must be"):
        m(torch.randn(3, 7))
    with pytest.raises(ValueError, match="num_layers"):
        MappingNetwork(8, 0, 8, None, num_layers=0)
    with pytest.raises(ValueError, match="resolution"):
        StyleGAN2Generator(img_resolution=48)
    with pytest.raises(ValueError, match="style_mixing_prob"):
        StyleGAN2Generator(style_mixing_prob=2, **SMALL)
    with pytest.raises(ValueError, match="architecture"):
        StyleGAN2Discriminator(architecture="skip", **SMALL_D)
    D = StyleGAN2Discriminator(**SMALL_D)
    with pytest.raises(ValueError, match=r"img must be \[N, 3, 16, 16\]"):
        D(torch.randn(4, 3, 8, 8))
    with pytest.raises(ValueError, match="divisible by the group size"):
        D(torch.randn(6, 3, 16, 16))
    G = StyleGAN2Generator(**SMALL)
    with pytest.raises(ValueError, match=r"ws must be \[N, 6, 16\]"):
        G.synthesis(torch.randn(2, 5, 16))


def test_set_backend_reaches_every_layer_and_create_seed_is_reproducible():
    a = gm.create("stylegan2-32", seed=3, resolution=16, channel_base=128, channel_max=16, z_dim=16, w_dim=16)
    b = gm.create("stylegan2-32", seed=3, resolution=16, channel_base=128, channel_max=16, z_dim=16, w_dim=16,
                  backend="reference")
    for (n, p), (_, q) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(p, q), n
    with_backend = [m for m in b.modules() if hasattr(m, "backend")]
    assert len(with_backend) > 10 and all(m.backend == "reference" for m in with_backend)
    with pytest.raises(ValueError):
        gm.set_backend(a, "no-such-backend")
