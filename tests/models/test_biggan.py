"""ganfast.models.biggan: the biggan-128, biggan-32 and sagan-32 presets.

Exact parameter counts per preset; shapes and forward/backward; the fused (cpu) backend against
the float64 reference under the accuracy rule, G's forward/backward and an R1-style double
backward through D; labels (int and one-hot agree, missing labels raise); hierarchical z; where
the attention block sits; orthogonal init; eval mode on running statistics; argument errors.

The shared checks (fast vs reference, label handling) are also used by test_sngan.py.
"""
from __future__ import annotations

import copy

import pytest
import torch
from torch.nn.utils import parametrize

import ganfast
import ganfast.models.biggan  # noqa: F401  (registers the presets)
from ganfast import backends
from ganfast.models import count_parameters, create, get_preset, set_backend
from ganfast.models.biggan import BigGANDiscriminator, BigGANGenerator
from ganfast.nn import ConditionalBatchNorm2d, SelfAttention2d
from ganfast.nn.spectral_norm import sigma_of
from ganfast.testing.models import assert_fast_matches_reference

F32, F64 = torch.float32, torch.float64
SMALL32 = dict(img_resolution=32, ch=8, attn_res=16)   # a 32x32 net of 32 channels, for constructor tests

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")

# (G, D) trainable parameters per preset, counted by count_parameters.
EXPECTED_COUNTS = {
    "biggan-128": (70_433_988, 87_982_370),   # paper / commonly quoted: G 70.4M, D 88.0M (158.3M together)
    "biggan-32": (4_455_172, 4_289_282),
    "sagan-32": (4_750_084, 1_075_586),
}


# ---- shared checks (test_sngan.py imports these) ----

def _labels(c_dim: int, n: int, seed: int = 1):
    return torch.randint(c_dim, (n,), generator=torch.Generator().manual_seed(seed)) if c_dim else None


def _as(c, dtype):
    """Labels in a model's dtype: float (one-hot / soft) labels follow it, indices stay int64."""
    return c.to(dtype) if c is not None and c.is_floating_point() else c


def _wake_attention(model, gamma: float = 0.7) -> None:
    """Attention starts as the identity (gamma = 0), which also zeroes its weights' gradients;
    a nonzero gamma puts the attention path into the comparison."""
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, SelfAttention2d):
                m.gamma.fill_(gamma)


def check_generator_fast_matches_reference(G, n: int = 3, onehot: bool = False) -> None:
    """G's images and parameter gradients (training mode: batch statistics, one power-iteration
    step) on the cpu backend against the reference (ganfast.testing.models' rule)."""
    _wake_attention(G)
    z = torch.randn(n, G.z_dim, dtype=F64)
    c = _labels(G.c_dim, n)
    if onehot and c is not None:
        c = torch.nn.functional.one_hot(c, G.c_dim).to(F64)
    cotangent = torch.randn(n, G.img_channels, G.img_resolution, G.img_resolution, dtype=F64)

    def run(model, dtype):
        img = model(z.to(dtype), _as(c, dtype))
        (img * cotangent.to(dtype)).sum().backward()
        return {"img": img}

    assert_fast_matches_reference(G, run, values=("img",))


def check_discriminator_r1_fast_matches_reference(D, n: int = 3) -> None:
    """D's logits, the R1 gradient d sum(D(x)) / dx and the parameter gradients of its squared
    norm (a double backward) on the cpu backend against the reference."""
    _wake_attention(D)
    x = torch.randn(n, D.img_channels, D.img_resolution, D.img_resolution, dtype=F64)
    c = _labels(D.c_dim, n)

    def run(model, dtype):
        xx = x.to(dtype).requires_grad_()
        logits = model(xx, c)
        r1_grad, = torch.autograd.grad(logits.sum(), xx, create_graph=True)
        r1_grad.square().sum().backward()
        return {"logits": logits, "r1 grad": r1_grad}

    assert_fast_matches_reference(D, run, values=("logits",))


def check_label_handling(G, D, n: int = 3) -> None:
    """Integer labels and their one-hot give the same images / logits (eval mode: no statistics
    or power-iteration updates between the calls); missing labels raise."""
    G.eval(), D.eval()
    z = torch.randn(n, G.z_dim)
    c = _labels(G.c_dim, n)
    onehot = torch.nn.functional.one_hot(c, G.c_dim).float()
    with torch.no_grad():
        img = G(z, c)
        torch.testing.assert_close(G(z, onehot), img, rtol=0, atol=0)
        torch.testing.assert_close(D(img, onehot), D(img, c), rtol=0, atol=0)
    with pytest.raises(ValueError, match="conditional"):
        G(z)
    with pytest.raises(ValueError, match="conditional"):
        D(img)
    with pytest.raises(ValueError, match=r"labels c must lie in"):
        G(z, torch.full((n,), G.c_dim))


def check_eval_uses_running_stats(G) -> None:
    """Eval mode normalizes with the running statistics: deterministic, and each sample's image
    is independent of the rest of the batch (in training mode it is not: batch statistics)."""
    z = torch.randn(4, G.z_dim)
    c = _labels(G.c_dim, 4)
    with torch.no_grad():
        G.train()
        train_img = G(z, c)
        train_first = G(z[:2], None if c is None else c[:2])
        G.eval()
        eval_img = G(z, c)
        torch.testing.assert_close(G(z, c), eval_img, rtol=0, atol=0)
        torch.testing.assert_close(G(z[:2], None if c is None else c[:2]), eval_img[:2])
    assert not torch.allclose(train_first, train_img[:2], atol=1e-4)
    assert not torch.allclose(eval_img, train_img, atol=1e-4)


def check_forward_backward(gan, n: int = 2) -> None:
    """Shapes, image range and that every parameter of G and D gets a finite gradient."""
    G, D = gan.G, gan.D
    z = torch.randn(n, G.z_dim)
    c = _labels(G.c_dim, n)
    img = G(z, c)
    assert img.shape == (n, G.img_channels, G.img_resolution, G.img_resolution)
    assert img.abs().max() <= 1
    logits = D(img, c)
    assert logits.shape == (n,)
    logits.sum().backward()
    for net in (G, D):
        for name, p in net.named_parameters():
            assert p.grad is not None and torch.isfinite(p.grad).all(), f"{type(net).__name__}.{name}"


def record_attention_inputs(gan) -> list:
    """A list that collects the input shape of every attention block of gan.G and gan.D as they run."""
    seen = []

    def hook(module, args, output):
        seen.append(tuple(args[0].shape))   # returns None: the output stays as it is

    for net in (gan.G, gan.D):
        net.attention.register_forward_hook(hook)
    return seen


# ---- fixtures ----

@pytest.fixture(scope="module")
def biggan32():
    return create("biggan-32", seed=0)


@pytest.fixture(scope="module")
def sagan32():
    return create("sagan-32", seed=0)


def _small(name: str, **overrides):
    """A preset at a fraction of its width (32 channels): the same structure, fast tests."""
    widths = {"biggan-32": dict(g_ch=8, d_ch=8), "sagan-32": dict(g_ch=8, d_ch=8)}[name]
    return create(name, seed=0, **widths, **overrides)


# ---- parameter counts, shapes, attention placement ----

def test_biggan128_counts_shapes_and_attention():
    # the orthogonal init of the 1536 x 13824 convolutions takes ~30 s on two CPU cores (QR);
    # the counts and shapes do not depend on the init, so N(0, 0.02) here
    gan = create("biggan-128", seed=0, init="N02")
    assert (count_parameters(gan.G), count_parameters(gan.D)) == EXPECTED_COUNTS["biggan-128"]
    assert gan.G.z_chunk == 20 and gan.G.cond_dim == 128 + 20 and gan.G.shared.weight.shape == (1000, 128)
    assert gan.G.linear.in_features == 20 and gan.G.linear.out_features == 16 * 96 * 4 * 4
    seen = record_attention_inputs(gan)
    with torch.no_grad():
        img = gan.G(torch.randn(2, 120), torch.tensor([3, 999]))
        logits = gan.D(img, torch.tensor([3, 999]))
    assert img.shape == (2, 3, 128, 128) and logits.shape == (2,) and torch.isfinite(logits).all()
    assert [shape[1:] for shape in seen] == [(2 * 96, 64, 64), (96, 64, 64)]   # G's, then D's


@pytest.mark.parametrize("name", ["biggan-32", "sagan-32"])
def test_parameter_counts(name, biggan32, sagan32):
    gan = {"biggan-32": biggan32, "sagan-32": sagan32}[name]
    assert (count_parameters(gan.G), count_parameters(gan.D)) == EXPECTED_COUNTS[name]
    assert gan.parameter_counts() == dict(zip("GD", EXPECTED_COUNTS[name]))
    assert get_preset(name).published


@pytest.mark.parametrize("name", ["biggan-32", "sagan-32"])
def test_forward_backward(name, biggan32, sagan32):
    gan = copy.deepcopy({"biggan-32": biggan32, "sagan-32": sagan32}[name])
    check_forward_backward(gan)


def test_structure_of_presets(biggan32, sagan32):
    G, D = biggan32.G, biggan32.D
    assert [b.out_channels for b in G.blocks] == [256, 256, 256]
    assert G.z_chunk == 32 and G.cond_dim == 128 + 32 and G.sn
    assert all(isinstance(b.norm1.norm, ConditionalBatchNorm2d) and b.norm1.norm.sn for b in G.blocks)
    assert [b.out_channels for b in D.blocks] == [256] * 4 and D.block_resolutions == [16, 8, 8, 8]
    assert [b.shortcut is not None for b in D.blocks] == [True, True, False, False]
    assert not D.blocks[0].preactivation and all(b.preactivation for b in D.blocks[1:])
    # SAGAN: no z chunks, the label embedding alone drives spectrally normalized conditional BN
    G, D = sagan32.G, sagan32.D
    assert G.z_chunk == 0 and G.cond_dim == 128 and G.linear.in_features == 128 and G.sn
    assert all(b.norm2.norm.sn for b in G.blocks) and G.out_norm.cond_dim == 0
    assert [b.out_channels for b in D.blocks] == [128] * 4 and D.embed.weight.shape == (10, 128)


@pytest.mark.parametrize("name", ["biggan-32", "sagan-32"])
def test_attention_at_chosen_resolution(name):
    gan = _small(name)
    seen = record_attention_inputs(gan)
    with torch.no_grad():
        gan.D(gan.G(torch.randn(2, gan.G.z_dim), torch.tensor([0, 1])), torch.tensor([0, 1]))
    assert [shape[2:] for shape in seen] == [(16, 16), (16, 16)]
    assert gan.G.attn_res == gan.D.attn_res == 16
    # at another resolution, and none
    G = BigGANGenerator(z_dim=128, c_dim=10, **{**SMALL32, "attn_res": 32})
    assert G.attn_index == 2 and G.attention.channels == 32
    gan = _small(name, attn_res=None)
    assert gan.G.attention is None and gan.D.attention is None
    assert not any(isinstance(m, SelfAttention2d) for m in gan.modules())


def test_other_resolution_uses_its_default_widths():
    # 64x64: G 16,16,8,4,2 x ch from 4x4, D ends at 4x4 with one block that keeps the size
    gan = create("biggan-128", seed=0, resolution=64, g_ch=2, d_ch=2, z_dim=50, c_dim=5, attn_res=None)
    assert [b.out_channels for b in gan.G.blocks] == [32, 16, 8, 4] and gan.G.z_chunk == 10
    assert gan.D.block_resolutions == [32, 16, 8, 4, 4]
    img = gan.G(torch.randn(2, 50), torch.tensor([0, 4]))
    assert img.shape == (2, 3, 64, 64) and gan.D(img, torch.tensor([0, 4])).shape == (2,)


# ---- fast vs reference ----

@needs_cpu_ext
@pytest.mark.parametrize("name", ["biggan-32", "sagan-32"])
def test_generator_fast_matches_reference(name):
    check_generator_fast_matches_reference(_small(name).G)


@needs_cpu_ext
def test_generator_fast_matches_reference_soft_labels():
    check_generator_fast_matches_reference(_small("biggan-32").G, onehot=True)


@needs_cpu_ext
@pytest.mark.parametrize("name", ["biggan-32", "sagan-32"])
def test_discriminator_r1_fast_matches_reference(name):
    check_discriminator_r1_fast_matches_reference(_small(name).D)


@needs_cpu_ext
def test_set_backend_reaches_every_op(monkeypatch):
    """After set_backend(model, 'cpu') every op call names the backend explicitly (none falls to
    the automatic choice), so 'reference' turns the whole model into plain PyTorch."""
    gan = set_backend(_small("biggan-32"), "cpu")
    _wake_attention(gan)
    requested = []
    select = backends.select

    def recording_select(op, tensors, backend=None):
        requested.append((op, backend))
        return select(op, tensors, backend)

    monkeypatch.setattr(backends, "select", recording_select)
    x = gan.G(torch.randn(2, gan.G.z_dim), torch.tensor([0, 1])).detach().requires_grad_()
    g, = torch.autograd.grad(gan.D(x, torch.tensor([0, 1])).sum(), x, create_graph=True)
    g.square().sum().backward()
    ops = {op for op, _ in requested}
    assert {"bias_act", "conditional_batch_norm", "self_attention"} <= ops, ops
    assert all(b == "cpu" for _, b in requested), sorted(set(requested))


# ---- labels, latents, modes, init ----

def test_labels(biggan32):
    check_label_handling(*copy.deepcopy((biggan32.G, biggan32.D)))


def test_unconditional_rejects_labels():
    gan = _small("biggan-32", c_dim=0)
    assert gan.G.shared is None and gan.D.embed is None and gan.G.cond_dim == gan.G.z_chunk == 32
    img = gan.G(torch.randn(2, 128))
    assert gan.D(img).shape == (2,)
    with pytest.raises(ValueError, match="unconditional"):
        gan.G(torch.randn(2, 128), torch.tensor([0, 1]))


def test_hierarchical_z():
    G = _small("biggan-32").G.eval()
    assert G.linear.in_features == 32
    assert all(b.norm1.norm.cond_dim == 128 + 32 for b in G.blocks)
    z, c = torch.randn(2, 128), torch.tensor([4, 5])
    with torch.no_grad():
        img = G(z, c)
        z_last = z.clone()
        z_last[:, 96:] = torch.randn(2, 32)   # the last chunk drives only the last block's norms
        assert not torch.allclose(G(z_last, c), img)
    with pytest.raises(ValueError, match=r"z must be a floating \[N, 128\]"):
        G(torch.randn(2, 127), c)
    with pytest.raises(ValueError, match="z_dim must be a multiple of 4"):
        BigGANGenerator(z_dim=130, c_dim=10, **SMALL32)
    with pytest.raises(ValueError, match="z_dim must be a multiple of 6"):
        BigGANGenerator(z_dim=128, img_resolution=128, ch=8, attn_res=None)
    # without chunks any z_dim works: z goes whole into the linear
    assert BigGANGenerator(z_dim=130, c_dim=10, hierarchical=False, **SMALL32).linear.in_features == 130


def test_eval_mode_uses_running_stats():
    check_eval_uses_running_stats(_small("biggan-32").G)


def test_orthogonal_init(biggan32):
    G, D = biggan32.G, biggan32.D
    conv = G.blocks[1].conv1                                   # [256, 256, 3, 3]: rows <= columns
    w = conv.parametrizations.weight.original.flatten(1)      # [256, 2304]
    torch.testing.assert_close(w @ w.T, torch.eye(256), atol=1e-5, rtol=0)
    lin = D.linear.parametrizations.weight.original           # [1, 256]
    torch.testing.assert_close(lin @ lin.T, torch.ones(1, 1), atol=1e-6, rtol=0)
    cbn = G.blocks[0].norm1.norm.gain.parametrizations.weight.original   # [256, 160]: orthonormal columns
    torch.testing.assert_close(cbn.T @ cbn, torch.eye(160), atol=1e-5, rtol=0)
    # every singular value of an orthogonal weight is 1, and the power iteration was re-run on it
    torch.testing.assert_close(sigma_of(conv), torch.ones(1), atol=1e-5, rtol=0)
    assert all(b.conv1.bias.abs().max() == 0 for b in G.blocks)


@pytest.mark.parametrize("init", ["N02", "xavier"])
def test_other_inits(init):
    G = BigGANGenerator(z_dim=128, c_dim=10, init=init, **SMALL32)
    w = G.blocks[0].conv1.parametrizations.weight.original
    if init == "N02":
        assert abs(float(w.detach().std()) - 0.02) < 0.002
    else:
        bound = (6 / (w.shape[0] * 9 + w.shape[1] * 9)) ** 0.5
        assert float(w.detach().abs().max()) <= bound
    assert parametrize.is_parametrized(G.blocks[0].conv1)


def test_standing_stats():
    G = _small("biggan-32").G
    G.accumulate_standing_stats(num_batches=2, batch_size=4)
    norm = G.blocks[0].norm1.norm
    assert norm.num_batches_tracked == 2 and norm.momentum == 0.1 and G.training
    assert not torch.equal(norm.running_var, torch.ones_like(norm.running_var))
    check_eval_uses_running_stats(G)


def test_bad_arguments():
    for kwargs, match in [(dict(z_dim=0), "z_dim"), (dict(c_dim=-1), "c_dim"),
                          (dict(img_resolution=48), "img_resolution"),
                          (dict(ch=0), "ch"), (dict(init="kaiming"), "init"), (dict(attn_res=12), "attn_res"),
                          (dict(channel_mults=(4, 4)), "channel_mults"), (dict(shared_dim=-1), "shared_dim")]:
        with pytest.raises(ValueError, match=match):
            BigGANGenerator(**{"z_dim": 128, "c_dim": 10, **SMALL32, **kwargs})
    for kwargs, match in [(dict(downsample=(True,)), "downsample"), (dict(attn_res=32), "attn_res"),
                          (dict(channel_mults=(4, 0)), "channel_mults"), (dict(img_channels=0), "img_channels"),
                          (dict(channel_mults=(1, 1, 1, 1, 1, 1), downsample=(True,) * 6), "downsample")]:
        with pytest.raises(ValueError, match=match):
            BigGANDiscriminator(**{"c_dim": 10, **SMALL32, **kwargs})
    with pytest.raises(ValueError, match="resolution"):
        create("biggan-32", resolution=1024)
    D = BigGANDiscriminator(c_dim=10, **SMALL32)
    with pytest.raises(ValueError, match=r"img must be \[N, 3, 32, 32\]"):
        D(torch.randn(2, 3, 16, 16), torch.tensor([0, 1]))
