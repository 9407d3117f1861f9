"""ganfast.models.conditional: cGAN, ACGAN and InfoGAN over the DCGAN layout. Exact parameter
counts per preset, label handling (int vs one-hot, missing / malformed labels), the auxiliary
heads' shapes, InfoGAN's codes (sampling, reproducibility, validation) and info_loss against a
hand computation, argument errors, and the fused (cpu) backend against the float64 reference,
forward, backward and R1's double backward, under the accuracy rule.
"""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import ganfast.models.conditional  # noqa: F401  (registers the presets)
from ganfast.models import count_parameters, create, get_preset
from ganfast.models.conditional import (ACGANDiscriminator, CGANDiscriminator, ConditionalGenerator,
                                        InfoGANDiscriminator, InfoGANGenerator, info_loss)
from ganfast.models.dcgan import DCGANGenerator
from tests.models.test_dcgan import assert_fast_matches_reference, needs_cpu_ext, r1_penalty, randn

F64, F32 = torch.float64, torch.float32
SMALL = dict(resolution=16, img_channels=3, ngf=4, ndf=4)     # fast tiny models; every layer kind present
LABELS = torch.tensor([3, 0, 9])


def small(name, **kwargs):
    return create(name, seed=0, **{**SMALL, **kwargs})


# ---------------------------------------------------------------- presets

@pytest.mark.parametrize("name, g_params, d_params", [
    # DCGAN-32 (G 1,066,880, D 661,248) plus what each variant adds:
    ("cgan-32", 1_107_840, 671_488),       # G: 10 one-hot inputs x 256 x 4x4; D: 10 label channels x 64 x 4x4
    ("acgan-32", 1_107_840, 702_218),      # D: a 4x4 conv 256 -> 10 classes, with bias
    ("infogan-32", 960_384, 718_606),      # G: 62 + 10 + 2 inputs; D: a 4x4 conv 256 -> 10 + 2 x 2, with bias
])
def test_preset_parameter_counts(name, g_params, d_params):
    gan = create(name, seed=0)
    assert (count_parameters(gan.G), count_parameters(gan.D)) == (g_params, d_params)
    assert f"G {g_params:,}, D {d_params:,}" in get_preset(name).description
    assert (gan.img_resolution, gan.img_channels) == (32, 1)


@pytest.mark.parametrize("name, kwargs, arg", [
    ("cgan-32", dict(c_dim=1), "c_dim"), ("cgan-32", dict(c_dim=0), "c_dim"), ("acgan-32", dict(c_dim=2.0), "c_dim"),
    ("infogan-32", dict(n_cat=1), "n_cat"), ("infogan-32", dict(n_cont=-1), "n_cont"),
    ("infogan-32", dict(z_dim=0), "z_dim"), ("acgan-32", dict(resolution=24), "resolution"),
])
def test_bad_constructor_args_raise(name, kwargs, arg):
    with pytest.raises(ValueError, match=arg):
        create(name, **kwargs)


# ---------------------------------------------------------------- cGAN

def test_cgan_labels():
    gan = small("cgan-32")
    assert isinstance(gan.G, ConditionalGenerator) and isinstance(gan.D, CGANDiscriminator)
    assert gan.G.c_dim == gan.D.c_dim == 10
    gan.eval()                                   # each sample on its own: labels alone make the difference
    z = randn(3, 100)
    img = gan.G(z, LABELS)
    assert img.shape == (3, 3, 16, 16)
    onehot = F.one_hot(LABELS, 10).float()
    torch.testing.assert_close(gan.G(z, onehot), img, rtol=0, atol=0)
    assert (gan.G(z, (LABELS + 1) % 10) - img).abs().amax(dim=(1, 2, 3)).min() > 0   # every sample changes
    logits = gan.D(img, LABELS)
    assert logits.shape == (3,)
    torch.testing.assert_close(gan.D(img, onehot), logits, rtol=0, atol=0)
    assert (gan.D(img, (LABELS + 1) % 10) != logits).all()


@pytest.mark.parametrize("name", ["cgan-32", "acgan-32"])
def test_conditional_models_reject_missing_or_malformed_labels(name):
    gan = small(name)
    z, img = randn(3, 100), randn(3, 3, 16, 16)
    with pytest.raises(ValueError, match="conditional"):
        gan.G(z)
    for bad, msg in [(torch.tensor([0, 1, 10]), r"must lie in \[0, 10\)"), (torch.tensor([0, 1]), r"must be \[3\]"),
                     (torch.zeros(3, 9), r"must be \[3, 10\]")]:
        with pytest.raises(ValueError, match=msg):
            gan.G(z, bad)
        with pytest.raises(ValueError, match=msg):
            gan.D(img, bad)
    if name == "cgan-32":
        with pytest.raises(ValueError, match="conditional"):
            gan.D(img)


# ---------------------------------------------------------------- ACGAN

def test_acgan_heads():
    gan = small("acgan-32")
    assert isinstance(gan.D, ACGANDiscriminator) and gan.D.c_dim == 10
    gan.eval()
    img = gan.G(randn(3, 100), LABELS)
    logits, aux = gan.D.forward_aux(img)
    assert logits.shape == (3,) and set(aux) == {"class_logits"} and aux["class_logits"].shape == (3, 10)
    torch.testing.assert_close(gan.D(img), logits, rtol=0, atol=0)
    # c is accepted and ignored: the classifier must work from the image alone
    logits_c, aux_c = gan.D.forward_aux(img, LABELS)
    torch.testing.assert_close(logits_c, logits, rtol=0, atol=0)
    torch.testing.assert_close(aux_c["class_logits"], aux["class_logits"], rtol=0, atol=0)
    torch.testing.assert_close(gan.D(img, LABELS), logits, rtol=0, atol=0)


# ---------------------------------------------------------------- InfoGAN

def test_infogan_sample_codes():
    G = small("infogan-32").G
    assert isinstance(G, InfoGANGenerator) and (G.c_dim, G.n_cat, G.n_cont, G.z_dim) == (0, 10, 2, 62)
    torch.manual_seed(5)
    codes = G.sample_codes(1000, torch.device("cpu"))
    assert set(codes) == {"cat", "cont"}
    assert codes["cat"].dtype == torch.int64 and codes["cat"].shape == (1000,)
    assert codes["cont"].dtype == F32 and codes["cont"].shape == (1000, 2)
    assert codes["cat"].min() == 0 and codes["cat"].max() == 9 and len(codes["cat"].unique()) == 10
    assert codes["cont"].min() >= -1 and codes["cont"].max() <= 1 and codes["cont"].abs().max() > 0.99
    torch.manual_seed(5)
    again = G.sample_codes(1000, "cpu")
    assert all(torch.equal(codes[k], again[k]) for k in codes)
    generator = torch.Generator().manual_seed(5)
    assert all(torch.equal(codes[k], v) for k, v in G.sample_codes(1000, generator=generator).items())
    assert G.sample_codes(2, dtype=F64)["cont"].dtype == F64
    with pytest.raises(ValueError, match="n must be a positive int"):
        G.sample_codes(0)


def test_infogan_generator_codes():
    G = small("infogan-32").G.eval()
    z = randn(3, 62)
    torch.manual_seed(1)
    img = G(z)                                           # codes drawn from the global RNG
    torch.manual_seed(1)
    codes = G.sample_codes(3, "cpu")
    torch.testing.assert_close(G(z, codes=codes), img, rtol=0, atol=0)
    onehot = {"cat": F.one_hot(codes["cat"], 10).float(), "cont": codes["cont"]}
    torch.testing.assert_close(G(z, codes=onehot), img, rtol=0, atol=0)
    changed = dict(codes, cont=codes["cont"] + 0.5)
    assert (G(z, codes=changed) - img).abs().amax(dim=(1, 2, 3)).min() > 0
    with pytest.raises(ValueError, match="unconditional"):
        G(z, c=LABELS)
    for bad, msg in [({"cat": codes["cat"]}, "keys 'cat'"), (dict(codes, extra=1), "keys 'cat'"),
                     (dict(codes, cont=codes["cont"][:, :1]), r"codes\['cont'\] must be a floating \[3, 2\]"),
                     (dict(codes, cat=codes["cat"] + 10), r"must lie in \[0, 10\)"), ([1, 2], "dict")]:
        with pytest.raises(ValueError, match=msg):
            G(z, codes=bad)


def test_infogan_heads():
    gan = small("infogan-32")
    assert isinstance(gan.D, InfoGANDiscriminator) and gan.D.c_dim == 0
    gan.eval()
    img = gan.G(randn(3, 62))
    logits, aux = gan.D.forward_aux(img)
    assert logits.shape == (3,)
    assert {k: tuple(v.shape) for k, v in aux.items()} == {"cat_logits": (3, 10), "cont_mean": (3, 2),
                                                           "cont_logvar": (3, 2)}
    torch.testing.assert_close(gan.D(img), logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="unconditional"):
        gan.D.forward_aux(img, LABELS)
    # n_cont = 0: a categorical code alone
    gan = small("infogan-32", n_cont=0).eval()
    _, aux = gan.D.forward_aux(gan.G(randn(2, 62)))
    assert aux["cont_mean"].shape == aux["cont_logvar"].shape == (2, 0)


def test_info_loss_by_hand():
    aux = {"cat_logits": torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]], dtype=F64),
           "cont_mean": torch.tensor([[0.5, -1.0], [0.0, 0.0]], dtype=F64),
           "cont_logvar": torch.tensor([[0.0, math.log(4.0)], [math.log(0.25), 0.0]], dtype=F64)}
    codes = {"cat": torch.tensor([2, 0]), "cont": torch.tensor([[1.5, 1.0], [0.5, 0.0]], dtype=F64)}
    log2pi = math.log(2 * math.pi)
    # categorical: -log softmax at the true category, averaged over the two samples
    ce = (-(3 - math.log(math.e + math.e ** 2 + math.e ** 3)) + math.log(3)) / 2
    # Gaussian NLL 0.5 (log 2 pi + logvar + (x - mean)^2 / var), summed over codes, averaged over samples
    nll0 = 0.5 * (log2pi + 0 + 1.0 ** 2 / 1) + 0.5 * (log2pi + math.log(4) + 2.0 ** 2 / 4)
    nll1 = 0.5 * (log2pi + math.log(0.25) + 0.5 ** 2 / 0.25) + 0.5 * (log2pi + 0 + 0)
    gauss = (nll0 + nll1) / 2
    torch.testing.assert_close(info_loss(aux, codes), torch.tensor(ce + gauss, dtype=F64), **dict(rtol=1e-12, atol=0))
    torch.testing.assert_close(info_loss(aux, codes, cont_weight=0.25), torch.tensor(ce + 0.25 * gauss, dtype=F64),
                               rtol=1e-12, atol=0)
    # the same as torch's pieces: cross entropy and the full Gaussian NLL summed over codes
    torch_gauss = F.gaussian_nll_loss(aux["cont_mean"], codes["cont"], aux["cont_logvar"].exp(), full=True,
                                      reduction="sum") / 2
    torch.testing.assert_close(torch_gauss, torch.tensor(gauss, dtype=F64), rtol=1e-12, atol=0)
    # a one-hot categorical code gives the same loss
    onehot = dict(codes, cat=F.one_hot(codes["cat"], 3).to(F64))
    torch.testing.assert_close(info_loss(aux, onehot), info_loss(aux, codes), rtol=1e-12, atol=0)


def test_info_loss_bad_inputs_raise():
    aux = {"cat_logits": torch.zeros(2, 3), "cont_mean": torch.zeros(2, 2), "cont_logvar": torch.zeros(2, 2)}
    codes = {"cat": torch.tensor([0, 1]), "cont": torch.zeros(2, 2)}
    with pytest.raises(ValueError, match="aux must be a dict"):
        info_loss({"cat_logits": aux["cat_logits"]}, codes)
    with pytest.raises(ValueError, match="codes must be a dict"):
        info_loss(aux, {"cat": codes["cat"]})
    with pytest.raises(ValueError, match=r"\[N, n_cont\]"):
        info_loss(aux, dict(codes, cont=torch.zeros(2, 3)))


def test_info_loss_trains_q_through_d():
    gan = small("infogan-32")
    codes = gan.G.sample_codes(4)
    _, aux = gan.D.forward_aux(gan.G(randn(4, 62), codes=codes))
    info_loss(aux, codes).backward()
    assert gan.D.q_head.weight.grad.abs().sum() > 0 and gan.G.net[0].weight.grad.abs().sum() > 0
    assert gan.D.logit.weight.grad is None               # the real/fake head takes no part


# ---------------------------------------------------------------- fused backend vs reference

def _run_generator(m, dtype):
    z = randn(3, m.z_dim, dtype=dtype)
    if isinstance(m, InfoGANGenerator):
        img = m(z, codes={"cat": LABELS, "cont": randn(3, 2, seed=2, dtype=dtype).clamp(-1, 1)})
    else:
        img = m(z, LABELS)
    (img * randn(*img.shape, seed=1, dtype=dtype)).sum().backward()
    return {"img": img}


def _run_discriminator(m, dtype):
    img = randn(3, 3, 16, 16, dtype=dtype).requires_grad_()
    c = LABELS if m.c_dim else None
    if hasattr(m, "forward_aux"):
        logits, aux = m.forward_aux(img, c)
    else:
        logits, aux = m(img, c), {}
    loss = (logits * randn(3, seed=1, dtype=dtype)).sum()
    for i, v in enumerate(aux.values()):
        loss = loss + (v * randn(*v.shape, seed=3 + i, dtype=dtype)).sum()
    loss.backward()
    return {"logits": logits, "grad img": img.grad, **aux}


@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["cgan-32", "infogan-32"])   # acgan's G is cgan's
def test_generator_fast_matches_reference(name, training):
    assert_fast_matches_reference(small(name).G.train(training), _run_generator)


@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("name", ["cgan-32", "acgan-32", "infogan-32"])
def test_discriminator_fast_matches_reference(name, training):
    assert_fast_matches_reference(small(name).D.train(training), _run_discriminator)


@needs_cpu_ext
@pytest.mark.parametrize("name", ["cgan-32", "acgan-32", "infogan-32"])
def test_r1_double_backward_fast_matches_reference(name):
    def run(m, dtype):
        return {"r1": r1_penalty(m, randn(3, 3, 16, 16, dtype=dtype), LABELS if m.c_dim else None)}

    D = small(name).D
    if name != "cgan-32":
        # R1 reaches only the real/fake head: the auxiliary head gets no gradient, so drop it
        head = "classifier" if name == "acgan-32" else "q_head"
        for p in getattr(D, head).parameters():
            p.requires_grad_(False)
    assert_fast_matches_reference(D, run)


def test_generators_share_the_dcgan_network():
    """Every variant's G is the DCGAN G with a wider first layer; same for D with extra input channels."""
    for name, in_dim in [("cgan-32", 110), ("acgan-32", 110), ("infogan-32", 74)]:
        gan = create(name, seed=0, ngf=4, ndf=4)
        assert isinstance(gan.G, DCGANGenerator) and gan.G.net[0].in_channels == in_dim
        assert gan.D.trunk[0].in_channels == (11 if name == "cgan-32" else 1)
