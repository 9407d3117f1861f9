"""ganfast.models.dcgan: the published parameter counts (PyTorch DCGAN tutorial), the DCGAN layer
plan and init, shapes at 16/32/64, argument errors, BatchNormAct2d against torch's BatchNorm2d +
activation, train/eval behaviour, and the fused (cpu) backend against the float64 reference,
forward, backward and R1's double backward, under the accuracy rule.

assert_fast_matches_reference is shared with test_conditional.py.
"""
from __future__ import annotations

from typing import Callable

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import ganfast
import ganfast.models.dcgan  # noqa: F401  (registers the presets)
from ganfast.models import count_parameters, create, get_preset
from ganfast.models.dcgan import DCGANDiscriminator, DCGANGenerator
from ganfast.nn import BatchNormAct2d
from ganfast.nn import BiasAct
from ganfast.testing.models import assert_fast_matches_reference as check_models

F64, F32 = torch.float64, torch.float32
TIGHT = dict(rtol=1e-10, atol=1e-12)

needs_cpu_ext = pytest.mark.skipif(ganfast._ext.unavailable_reason("cpu") is not None,
                                   reason=f"CPU extension unavailable: {ganfast._ext.unavailable_reason('cpu')}")


# ---------------------------------------------------------------- shared helpers

def randn(*shape, seed=0, dtype=F32):
    """Fixed random input: the same values whatever the dtype it is cast to."""
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=F64).to(dtype)


def r1_penalty(D: nn.Module, img: torch.Tensor, c=None) -> torch.Tensor:
    """R1-style: the squared gradient norm of D's logits with respect to its input, backpropagated
    to D's parameters (a double backward through every layer). Returns the penalty."""
    img = img.detach().requires_grad_()
    grad, = torch.autograd.grad(D(img, c).sum(), img, create_graph=True)
    penalty = grad.square().sum()
    penalty.backward()
    return penalty


# run's outputs that are derivatives (compared in float64 only, see ganfast.testing.models); the
# others (images, logits, auxiliary heads) are forward values
DERIVATIVES = ("grad img", "r1")


def assert_fast_matches_reference(module: nn.Module, run: Callable[[nn.Module, torch.dtype], dict]) -> None:
    """`module` on the fused cpu backend against the reference: run(copy, dtype) runs a forward
    and backward on fixed inputs in that dtype and returns named tensors (DERIVATIVES name the
    gradients among them); ganfast.testing.models' rule for values, gradients and buffers."""
    check_models(module, run, values=lambda name: name not in DERIVATIVES)


def conv_layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module.modules() if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d))]


# ---------------------------------------------------------------- presets and layout

@pytest.mark.parametrize("name, g_params, d_params", [
    ("dcgan-64", 3_576_704, 2_765_568),     # the PyTorch DCGAN tutorial's published counts
    ("dcgan-32", 1_066_880, 661_248),
])
def test_preset_parameter_counts(name, g_params, d_params):
    gan = create(name, seed=0)
    assert gan.parameter_counts() == {"G": g_params, "D": d_params}
    assert (count_parameters(gan.G), count_parameters(gan.D)) == (g_params, d_params)
    assert f"{g_params:,}" in get_preset(name).description
    if name == "dcgan-64":
        assert "3,576,704" in get_preset(name).published and "2,765,568" in get_preset(name).published


def test_dcgan64_is_the_tutorial_layer_plan():
    """The DCGAN rules at 64x64: only (transposed) 4x4 convolutions, bias-free, strides 2 except G's
    first and D's last; batch norm after every conv but G's output and D's input and output;
    no pooling, no linear layers."""
    gan = create("dcgan-64", seed=0)
    g_convs, d_convs = conv_layers(gan.G), conv_layers(gan.D)
    assert [(m.in_channels, m.out_channels) for m in g_convs] == [(100, 512), (512, 256), (256, 128), (128, 64),
                                                                  (64, 3)]
    assert [(m.in_channels, m.out_channels) for m in d_convs] == [(3, 64), (64, 128), (128, 256), (256, 512),
                                                                  (512, 1)]
    assert [m.stride[0] for m in g_convs] == [1, 2, 2, 2, 2] and [m.stride[0] for m in d_convs] == [2, 2, 2, 2, 1]
    assert all(m.kernel_size == (4, 4) and m.bias is None for m in g_convs + d_convs)
    g_norms = [m.num_features for m in gan.G.modules() if isinstance(m, BatchNormAct2d)]
    d_norms = [m.num_features for m in gan.D.modules() if isinstance(m, BatchNormAct2d)]
    assert g_norms == [512, 256, 128, 64] and d_norms == [128, 256, 512]
    assert all(m.act == "relu" for m in gan.G.modules() if isinstance(m, BatchNormAct2d))
    assert all(m.act == "lrelu" and m.alpha == 0.2 for m in gan.D.modules() if isinstance(m, BatchNormAct2d))
    assert gan.G.net[-1].act == "tanh" and isinstance(gan.G.net[-1], BiasAct)
    assert gan.D.trunk[1].act == "lrelu" and gan.D.trunk[1].gain == 1.0   # D's input layer: no BN
    allowed = (nn.Conv2d, nn.ConvTranspose2d, BatchNormAct2d, BiasAct, nn.Sequential, DCGANGenerator,
               DCGANDiscriminator)
    assert all(isinstance(m, allowed) for m in list(gan.G.modules()) + list(gan.D.modules()))


@pytest.mark.parametrize("resolution, channels", [(16, 1), (32, 1), (32, 3), (64, 3)])
def test_shapes(resolution, channels):
    gan = create("dcgan-64", seed=0, resolution=resolution, img_channels=channels, z_dim=7, ngf=4, ndf=4)
    assert (gan.z_dim, gan.c_dim, gan.img_resolution, gan.img_channels) == (7, 0, resolution, channels)
    assert (gan.D.c_dim, gan.D.img_resolution, gan.D.img_channels) == (0, resolution, channels)
    img = gan.G(randn(2, 7))
    assert img.shape == (2, channels, resolution, resolution)
    assert img.abs().max() < 1                               # tanh
    assert gan.D.features(img).shape == (2, 4 * resolution // 8, 4, 4)
    assert gan.D(img).shape == (2,)


@pytest.mark.parametrize("resolution", [48, 8, 0, -64, 64.0, True, "64"])
def test_bad_resolution_raises(resolution):
    with pytest.raises(ValueError, match="resolution"):
        create("dcgan-32", resolution=resolution)
    with pytest.raises(ValueError, match="resolution"):
        DCGANDiscriminator(img_resolution=resolution)


@pytest.mark.parametrize("kwargs, name", [
    (dict(z_dim=0), "z_dim"), (dict(img_channels=0), "img_channels"), (dict(ngf=-1), "ngf"),
    (dict(ndf="64"), "ndf"), (dict(ngf=2.5), "ngf"),
])
def test_bad_constructor_args_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        create("dcgan-32", **kwargs)


def test_rejects_labels_and_malformed_inputs():
    gan = create("dcgan-32", seed=0, ngf=4, ndf=4)
    z, img = randn(2, 100), randn(2, 1, 32, 32)
    with pytest.raises(ValueError, match="unconditional"):
        gan.G(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="unconditional"):
        gan.D(img, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"z must be a floating \[N, 100\]"):
        gan.G(randn(2, 99))
    with pytest.raises(ValueError, match=r"img must be \[N, 1, 32, 32\]"):
        gan.D(randn(2, 3, 32, 32))


def test_c_dim_override_gives_the_cgan():
    from ganfast.models.conditional import CGANDiscriminator, ConditionalGenerator
    gan = create("dcgan-32", c_dim=10, ngf=4, ndf=4)
    assert isinstance(gan.G, ConditionalGenerator) and isinstance(gan.D, CGANDiscriminator)
    assert gan.c_dim == gan.D.c_dim == 10


# ---------------------------------------------------------------- init, training behaviour

def test_init_statistics():
    gan = create("dcgan-64", seed=0)
    for m in conv_layers(gan.G) + conv_layers(gan.D):
        if m.weight.numel() >= 100_000:                      # enough samples for a tight estimate
            assert abs(m.weight.std().item() - 0.02) < 5e-4, m
            assert abs(m.weight.mean().item()) < 5e-4, m
    gammas = torch.cat([m.weight for m in gan.modules() if isinstance(m, BatchNormAct2d)]).detach()
    betas = torch.cat([m.bias for m in gan.modules() if isinstance(m, BatchNormAct2d)])
    assert abs(gammas.mean().item() - 1) < 2e-3 and abs(gammas.std().item() - 0.02) < 2e-3
    assert torch.equal(betas, torch.zeros_like(betas))
    # seeded creation is reproducible and leaves the global RNG alone
    state = torch.random.get_rng_state()
    again = create("dcgan-64", seed=0)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(gan.state_dict().values(), again.state_dict().values()))


def test_forward_backward():
    gan = create("dcgan-32", seed=0, ngf=8, ndf=8)
    loss = F.softplus(-gan.D(gan.G(randn(3, 100)))).mean()    # non-saturating G loss
    loss.backward()
    for name, p in list(gan.G.named_parameters()) + list(gan.D.named_parameters()):
        assert p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0, name


def test_train_uses_batch_statistics_eval_the_running_ones():
    G = create("dcgan-32", seed=0, ngf=4, ndf=4).G
    z = randn(4, 100)
    before = {k: v.clone() for k, v in G.state_dict().items()}
    img = G(z)
    # train: each sample's image depends on the rest of the batch, and running statistics move
    assert not torch.allclose(G(z[:2])[0], img[0])
    assert not torch.equal(G.net[1].running_mean, before["net.1.running_mean"])
    assert G.net[1].num_batches_tracked.item() == 2
    G.eval()
    after_train = {k: v.clone() for k, v in G.state_dict().items()}
    img = G(z)
    torch.testing.assert_close(G(z[:1]), img[:1])            # eval: each sample on its own
    assert all(torch.equal(v, after_train[k]) for k, v in G.state_dict().items())


# ---------------------------------------------------------------- BatchNormAct2d

@needs_cpu_ext
@pytest.mark.parametrize("backend", ["reference", "cpu"])
@pytest.mark.parametrize("act, alpha, torch_act", [
    ("linear", None, lambda x: x),
    ("relu", None, F.relu),
    ("lrelu", None, lambda x: F.leaky_relu(x, 0.2)),
    ("lrelu", 0.05, lambda x: F.leaky_relu(x, 0.05)),
])
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum", "cumulative"])
def test_batch_norm_act_is_batchnorm2d_then_act(backend, act, alpha, torch_act, momentum):
    torch.manual_seed(0)
    m = BatchNormAct2d(5, act=act, alpha=alpha, momentum=momentum, backend=backend).double()
    with torch.no_grad():
        m.weight.normal_(1, 0.3)
        m.bias.normal_(0, 0.3)
    bn = nn.BatchNorm2d(5, momentum=momentum).double()
    bn.load_state_dict(m.state_dict())                       # same keys as torch's
    for step, n in enumerate([4, 1, 3]):
        x = randn(n, 5, 3, 2, seed=step, dtype=F64).mul(2).add(1).requires_grad_()
        y, expected = m(x), torch_act(bn(x))
        torch.testing.assert_close(y, expected, **TIGHT)
        gy = randn(*y.shape, seed=10 + step, dtype=F64)
        got = torch.autograd.grad(y, [x, m.weight, m.bias], gy)
        want = torch.autograd.grad(expected, [x, bn.weight, bn.bias], gy)
        for name, a, e in zip(["x", "weight", "bias"], got, want):
            torch.testing.assert_close(a, e, **TIGHT, msg=lambda msg: f"step {step} grad {name}: {msg}")
        for k, v in bn.state_dict().items():
            torch.testing.assert_close(m.state_dict()[k], v, **TIGHT, msg=lambda msg: f"step {step} {k}: {msg}")
    m.eval(), bn.eval()
    x = randn(2, 5, 3, 2, seed=9, dtype=F64)
    torch.testing.assert_close(m(x), torch_act(bn(x)), **TIGHT)


@pytest.mark.parametrize("kwargs, name", [
    (dict(num_features=0), "num_features"), (dict(num_features=4, act="tanh"), "act"),
    (dict(num_features=4, act="relu", alpha=0.1), "alpha"),
])
def test_batch_norm_act_bad_args_raise(kwargs, name):
    with pytest.raises(ValueError, match=name):
        BatchNormAct2d(**kwargs)


def test_batch_norm_act_rejects_wrong_channels():
    with pytest.raises(ValueError, match=r"x must be \[N, 4, H, W\]"):
        BatchNormAct2d(4)(torch.randn(2, 3, 4, 4))


# ---------------------------------------------------------------- fused backend vs reference

@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_generator_fast_matches_reference(training):
    G = create("dcgan-32", seed=0, resolution=16, img_channels=3, z_dim=6, ngf=4).G.train(training)

    def run(m, dtype):
        img = m(randn(3, 6, dtype=dtype))
        (img * randn(*img.shape, seed=1, dtype=dtype)).sum().backward()
        return {"img": img}

    assert_fast_matches_reference(G, run)


@needs_cpu_ext
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_discriminator_fast_matches_reference(training):
    D = create("dcgan-32", seed=0, resolution=16, img_channels=3, ndf=4).D.train(training)

    def run(m, dtype):
        img = randn(3, 3, 16, 16, dtype=dtype).requires_grad_()
        logits = m(img)
        (logits * randn(3, seed=1, dtype=dtype)).sum().backward()
        return {"logits": logits, "grad img": img.grad}

    assert_fast_matches_reference(D, run)


@needs_cpu_ext
def test_r1_double_backward_fast_matches_reference():
    D = create("dcgan-32", seed=0, resolution=16, img_channels=3, ndf=4).D
    assert_fast_matches_reference(D, lambda m, dtype: {"r1": r1_penalty(m, randn(3, 3, 16, 16, dtype=dtype))})
