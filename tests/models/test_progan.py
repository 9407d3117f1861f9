"""ganfast.models.progan: exact parameter counts (the paper's 23.1M / 23.1M at 1024), the channel
rule, shapes at every stage, the fade-in formulas against hand computations from the submodules,
layers above the stage left out of the graph, set_stage and input validation, the stage surviving
state_dict loading and deepcopy (with the host-side mirror following), no host reads of tensors in
forward, and the fused (cpu) backend against the float64 reference at a fade-in stage, forward,
backward and R1's double backward.
"""
from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F

import ganfast.models.progan  # noqa: F401  (registers the presets)
from ganfast.models import count_parameters, create, get_preset
from ganfast.models.progan import (ProGANDiscriminator, ProGANGenerator, build_progan, channels_per_resolution,
                                   stage_channels)
from tests.models.test_dcgan import assert_fast_matches_reference, needs_cpu_ext, r1_penalty, randn

F64 = torch.float64
# fast tiny models: channels {4: 16, 8: 16, 16: 8}; every layer kind present, two growing stages
TINY = dict(resolution=16, img_channels=3, z_dim=8, fmap_base=64, fmap_max=16)


def tiny():
    return create("progan-32", seed=0, **TINY)


def up2(x):
    return F.interpolate(x, scale_factor=2, mode="nearest")


# ---------------------------------------------------------------- presets and layout

@pytest.mark.parametrize("name, g_params, d_params", [
    # progan-1024, nf = 512 at 4..32, 256, 128, 64, 32, 16 at 64..1024 (weights + biases):
    #  G: 4x4 FC 512*8192 + 8192 = 4,202,496 and conv 512*512*9 + 512 = 2,359,808;
    #     8, 16, 32: 3 x 2 x 2,359,808 = 14,158,848; 64: 1,179,904 + 590,080; 128: 295,040 + 147,584;
    #     256: 73,792 + 36,928; 512: 18,464 + 9,248; 1024: 4,624 + 2,320;
    #     toRGB (3 nf + 3): 4 x 1,539 + 771 + 387 + 195 + 99 + 51 = 7,659       -> 23,086,795
    #  D: fromRGB (3 nf + nf): 4 x 2,048 + 1,024 + 512 + 256 + 128 + 64 = 10,176;
    #     1024: 2,320 + 4,640; 512: 9,248 + 18,496; 256: 36,928 + 73,856; 128: 147,584 + 295,168;
    #     64: 590,080 + 1,180,160; 32, 16, 8: 3 x 2 x 2,359,808 = 14,158,848;
    #     4x4: conv 513*512*9 + 512 = 2,364,416, FC 8192*512 + 512 = 4,194,816, FC 512 + 1 -> 23,087,249
    ("progan-1024", 23_086_795, 23_087_249),
    # progan-256: the 1024 network less G's 512/1024 blocks (27,712 + 6,944) and toRGBs (99 + 51),
    # and D's 512/1024 blocks (27,744 + 6,960) and fromRGBs (128 + 64)
    ("progan-256", 23_051_989, 23_052_353),
    # progan-32 (1 channel, z 128, fmap_base 512, fmap_max 64), nf = 64 at 4..16, 32 at 32:
    #  G: FC 128*1024 + 1024 = 132,096, conv 64*64*9 + 64 = 36,928; 8, 16: 2 x 2 x 36,928 = 147,712;
    #     32: 64*32*9 + 32 = 18,464, 32*32*9 + 32 = 9,248; toRGB 3 x 65 + 33 = 228     -> 344,676
    #  D: fromRGB 3 x 128 + 64 = 448; 32: 9,248 + 32*64*9 + 64 = 18,496; 16, 8: 147,712;
    #     4x4: conv 65*64*9 + 64 = 37,504, FC 1024*64 + 64 = 65,600, FC 65             -> 279,073
    ("progan-32", 344_676, 279_073),
])
def test_preset_parameter_counts(name, g_params, d_params):
    gan = create(name)
    assert (count_parameters(gan.G), count_parameters(gan.D)) == (g_params, d_params)
    assert f"G {g_params:,}, D {d_params:,}" in get_preset(name).description
    if name == "progan-1024":     # the paper's Table 2: 23.1M each
        assert round(g_params / 1e6, 1) == round(d_params / 1e6, 1) == 23.1
        assert "23.1M" in get_preset(name).published
    assert gan.G.current_resolution == gan.D.current_resolution == gan.img_resolution   # full network by default


def test_channel_rule():
    assert channels_per_resolution(1024, 8192, 512) == {4: 512, 8: 512, 16: 512, 32: 512, 64: 256, 128: 128,
                                                         256: 64, 512: 32, 1024: 16}
    assert channels_per_resolution(32, 1024, 128) == {4: 128, 8: 128, 16: 128, 32: 64}
    assert [stage_channels(r, 64, 16) for r in (4, 8, 16)] == [16, 16, 8]
    G, D = build_progan(resolution=64, img_channels=1, z_dim=4, fmap_base=256, fmap_max=32)
    nf = channels_per_resolution(64, 256, 32)
    assert nf == {4: 32, 8: 32, 16: 32, 32: 16, 64: 8}
    assert G.blocks["4"].fc.out_features == 16 * nf[4] and G.blocks["4"].conv.out_channels == nf[4]
    for r in G.stage_resolutions[1:]:
        assert (G.blocks[str(r)].conv0.in_channels, G.blocks[str(r)].conv0.out_channels) == (nf[r // 2], nf[r])
        assert (D.blocks[str(r)].conv0.in_channels, D.blocks[str(r)].conv1.out_channels) == (nf[r], nf[r // 2])
    for r in G.stage_resolutions:
        torgb, fromrgb = G.torgb[str(r)], D.fromrgb[str(r)]
        assert (torgb.in_channels, torgb.out_channels, torgb.kernel_size, torgb.act) == (nf[r], 1, 1, "linear")
        assert (fromrgb.in_channels, fromrgb.out_channels, fromrgb.kernel_size, fromrgb.act) == (1, nf[r], 1, "lrelu")
    assert D.epilogue.conv.in_channels == nf[4] + 1 and D.epilogue.fc.in_features == 16 * nf[4]


def test_shapes_at_every_stage():
    gan = tiny()
    assert gan.G.stage_resolutions == gan.D.stage_resolutions == [4, 8, 16]
    assert (gan.z_dim, gan.c_dim, gan.img_resolution, gan.img_channels) == (8, 0, 16, 3)
    assert (gan.D.c_dim, gan.D.img_resolution, gan.D.img_channels) == (0, 16, 3)
    z = randn(4, 8)
    for r in [4, 8, 16]:
        for alpha in [0.0, 0.5, 1.0]:
            gan.G.set_stage(r, alpha), gan.D.set_stage(r, alpha)
            assert (gan.G.current_resolution, gan.G.current_alpha) == (r, alpha)
            img = gan.G(z)
            assert img.shape == (4, 3, r, r) and torch.isfinite(img).all()
            logits = gan.D(img)
            assert logits.shape == (4,) and torch.isfinite(logits).all()


# ---------------------------------------------------------------- fade-in

@pytest.mark.parametrize("r", [8, 16])
def test_generator_fade_in(r):
    G = tiny().G
    z = randn(3, 8)
    x = z
    for res in G.stage_resolutions[:G.stage_resolutions.index(r)]:
        x = G.blocks[str(res)](x)                                       # x_{r/2}
    old = up2(G.torgb[str(r // 2)](x))
    new = G.torgb[str(r)](G.blocks[str(r)](x))
    assert (old - new).abs().max() > 1e-3                               # the two paths differ
    assert torch.equal(G.set_stage(r // 2, 1.0)(z), G.torgb[str(r // 2)](x))
    assert torch.equal(G.set_stage(r, 0.0)(z), up2(G.set_stage(r // 2, 1.0)(z)))
    assert torch.equal(G.set_stage(r, 0.0)(z), old)
    assert torch.equal(G.set_stage(r, 1.0)(z), new)
    for alpha in [0.3, 0.75]:
        got = G.set_stage(r, alpha)(z)
        assert torch.equal(got, torch.lerp(old, new, alpha))
        torch.testing.assert_close(got, (1 - alpha) * old + alpha * new, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("r", [8, 16])
def test_discriminator_fade_in(r):
    D = tiny().D
    img = randn(4, 3, r, r)
    pooled = F.avg_pool2d(img, 2)

    def tail(x, res):                 # blocks res .. 8, then the 4x4 epilogue
        for q in range(int(math.log2(res)), 2, -1):
            x = D.blocks[str(2 ** q)](x)
        return D.epilogue(x)

    old = D.fromrgb[str(r // 2)](pooled)                                # [N, nf(r/2), r/2, r/2]
    new = D.blocks[str(r)](D.fromrgb[str(r)](img))
    assert torch.equal(D.set_stage(r, 0.0)(img), D.set_stage(r // 2, 1.0)(pooled))
    assert torch.equal(D.set_stage(r, 0.0)(img), tail(old, r // 2))
    assert torch.equal(D.set_stage(r, 1.0)(img), tail(new, r // 2))
    assert not torch.equal(tail(old, r // 2), tail(new, r // 2))
    for alpha in [0.3, 0.75]:
        got = D.set_stage(r, alpha)(img)
        assert torch.equal(got, tail(torch.lerp(old, new, alpha), r // 2))
        torch.testing.assert_close(got, tail((1 - alpha) * old + alpha * new, r // 2), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
def test_only_the_current_stage_gets_gradients(alpha):
    gan = tiny()
    gan.G.set_stage(8, alpha), gan.D.set_stage(8, alpha)
    F.softplus(-gan.D(gan.G(randn(4, 8)))).mean().backward()
    # the layers that contribute at (8, alpha): alpha 0 leaves out the new 8x8 path, alpha 1 the old 4x4 one
    old, new = alpha < 1, alpha > 0
    g_used = {"blocks.4"} | ({"torgb.4"} if old else set()) | ({"blocks.8", "torgb.8"} if new else set())
    d_used = {"epilogue"} | ({"fromrgb.4"} if old else set()) | ({"blocks.8", "fromrgb.8"} if new else set())
    for model, used in [(gan.G, g_used), (gan.D, d_used)]:
        for name, p in model.named_parameters():
            layer = name.split(".")
            if layer[0] in used or ".".join(layer[:2]) in used:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None, name                 # e.g. blocks.16, torgb.16, fromrgb.16


# ---------------------------------------------------------------- validation

@pytest.mark.parametrize("resolution, alpha, arg", [
    (2, 1.0, "resolution"), (32, 1.0, "resolution"), (12, 1.0, "resolution"), (8.0, 1.0, "resolution"),
    (True, 1.0, "resolution"), ("8", 1.0, "resolution"),
    (8, -0.1, "alpha"), (8, 1.5, "alpha"), (8, float("nan"), "alpha"), (8, torch.tensor(0.5), "alpha"),
    (8, True, "alpha"), (8, "0.5", "alpha"),
])
def test_set_stage_rejects_bad_arguments(resolution, alpha, arg):
    gan = tiny()
    for model in (gan.G, gan.D):
        model.set_stage(8, 0.25)
        with pytest.raises(ValueError, match=rf"set_stage: {arg} must be"):
            model.set_stage(resolution, alpha)
        assert (model.current_resolution, model.current_alpha) == (8, 0.25)        # unchanged
        assert (model.stage_resolution.item(), model.alpha.item()) == (8, 0.25)
    with pytest.raises(ValueError, match=r"one of \[4, 8, 16\]"):
        gan.G.set_stage(32, 1.0)


@pytest.mark.parametrize("kwargs, arg", [
    (dict(resolution=4), "img_resolution"), (dict(resolution=24), "img_resolution"),
    (dict(resolution=32.0), "img_resolution"), (dict(fmap_base=0), "fmap_base"), (dict(fmap_max=-1), "fmap_max"),
    (dict(fmap_base=8), "fmap_base"), (dict(z_dim=0), "z_dim"), (dict(img_channels=0), "img_channels"),
])
def test_bad_constructor_args_raise(kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        create("progan-32", **kwargs)


def test_rejects_labels_and_malformed_inputs():
    gan = tiny()
    gan.G.set_stage(8, 0.5), gan.D.set_stage(8, 0.5)
    z, img = randn(2, 8), randn(2, 3, 8, 8)
    with pytest.raises(ValueError, match="unconditional"):
        gan.G(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        gan.D(img, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must be a floating \[N, 8\]"):
        gan.G(randn(2, 7))
    # an image of the full resolution while the stage is 8x8
    with pytest.raises(ValueError, match=r"current stage 8x8; set_stage changes it\): img must be \[N, 3, 8, 8\], "
                                         r"got \[2, 3, 16, 16\]"):
        gan.D(randn(2, 3, 16, 16))
    with pytest.raises(ValueError, match=r"img must be \[N, 3, 8, 8\]"):
        gan.D(randn(2, 1, 8, 8))


# ---------------------------------------------------------------- the stage as state

def test_stage_survives_state_dict_and_deepcopy():
    gan = tiny()
    G, D = gan.G.set_stage(8, 0.25), gan.D.set_stage(8, 0.25)
    assert G.state_dict()["stage_resolution"].dtype == torch.int64
    assert (G.state_dict()["stage_resolution"].item(), G.state_dict()["alpha"].item()) == (8, 0.25)
    z, img = randn(4, 8), randn(4, 3, 8, 8)
    for fresh_G, fresh_D in [(copy.deepcopy(G), copy.deepcopy(D)), build_progan(**TINY)]:
        fresh_G.load_state_dict(G.state_dict()), fresh_D.load_state_dict(D.state_dict())
        for model in (fresh_G, fresh_D):
            assert (model.current_resolution, model.current_alpha) == (8, 0.25)
            assert (model.stage_resolution.item(), model.alpha.item()) == (8, 0.25)
        assert torch.equal(fresh_G(z), G(z)) and torch.equal(fresh_D(img), D(img))
    # loading a state dict of another stage into a model moves the model's stage (nested: the GAN pair)
    other = tiny()
    assert (other.G.current_resolution, other.G.current_alpha) == (16, 1.0)
    other.load_state_dict(gan.state_dict())
    assert (other.G.current_resolution, other.G.current_alpha, other.D.current_alpha) == (8, 0.25, 0.25)
    assert torch.equal(other.G(z), G(z))
    # and back: a later set_stage on the copy leaves the original alone
    other.G.set_stage(16, 1.0)
    assert (G.current_resolution, G.alpha.item()) == (8, 0.25)


def test_loading_an_invalid_stage_raises():
    G = tiny().G
    state = G.state_dict()
    for key, value in [("stage_resolution", torch.tensor(32)), ("alpha", torch.tensor(2.0))]:
        bad = dict(state, **{key: value})
        with pytest.raises(RuntimeError, match="set_stage"):
            G.load_state_dict(bad)
        assert (G.current_resolution, G.current_alpha) == (16, 1.0)


def test_forward_reads_no_tensor_on_the_host(monkeypatch):
    """The stage comes from the host mirrors: no .item(), bool(), float(), int() or .tolist() of a tensor
    (each a device synchronization on a GPU)."""
    gan = tiny()
    gan.G.set_stage(16, 0.5), gan.D.set_stage(16, 0.5)
    z = randn(4, 8)

    def host_read(*args, **kwargs):
        raise AssertionError("forward read a tensor on the host")

    for method in ("item", "tolist", "__bool__", "__float__", "__int__", "__index__"):
        monkeypatch.setattr(torch.Tensor, method, host_read)
    F.softplus(gan.D(gan.G(z))).mean().backward()


# ---------------------------------------------------------------- fused backend vs reference

@needs_cpu_ext
def test_generator_fast_matches_reference():
    G = tiny().G.set_stage(16, 0.3)

    def run(m, dtype):
        img = m(randn(4, 8, dtype=dtype))
        (img * randn(*img.shape, seed=1, dtype=dtype)).sum().backward()
        return {"img": img}

    assert_fast_matches_reference(G, run)


@needs_cpu_ext
def test_discriminator_fast_matches_reference():
    D = tiny().D.set_stage(16, 0.3)

    def run(m, dtype):
        img = randn(4, 3, 16, 16, dtype=dtype).requires_grad_()
        logits = m(img)
        (logits * randn(4, seed=1, dtype=dtype)).sum().backward()
        return {"logits": logits, "grad img": img.grad}

    assert_fast_matches_reference(D, run)


@needs_cpu_ext
def test_r1_double_backward_fast_matches_reference():
    D = tiny().D.set_stage(16, 0.3)
    assert_fast_matches_reference(D, lambda m, dtype: {"r1": r1_penalty(m, randn(4, 3, 16, 16, dtype=dtype))})
    r1_penalty(D, randn(4, 3, 16, 16))
    for layer in (D.fromrgb["8"], D.fromrgb["16"]):                     # both fade-in paths reached
        assert layer.weight.grad is not None and layer.weight.grad.abs().sum() > 0
