"""ganfast.training.losses and ganfast.models.began: every loss (D and G) against hand-computed
values on known logits, one-sided label smoothing, numerical stability at extreme logits, the
saturating vs non-saturating gradients, argument errors, weight clipping, BEGAN's loss, k_t
control (including clipping) and convergence measure, and the BEGAN autoencoder discriminators."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from ganfast.models import set_backend
from ganfast.models.began import BEGANDiscriminator, BEGANDiscriminatorMLP
from ganfast.training.losses import LOSSES, BEGANLoss, clip_weights_, d_loss, g_loss

LN3 = math.log(3.0)


def t(*values) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.float32)


def assert_close(got: torch.Tensor, expected: float, tol: float = 1e-6) -> None:
    assert got.ndim == 0, f"expected a scalar, got shape {list(got.shape)}"
    value = float(got.detach())
    assert abs(value - expected) <= tol * max(1.0, abs(expected)), f"got {value!r}, expected {expected!r}"


# ---------------------------------------------------------------- hand-computed values
# Logits 0 and ln 3 are probabilities 1/2 and 3/4; -ln 3 is 1/4. The expected values below are
# written with those probabilities (log of a probability), not with softplus.

REAL_SIG = t(0.0, LN3)       # D(x) = 1/2, 3/4
FAKE_SIG = t(0.0, -LN3)      # D(G(z)) = 1/2, 1/4


def test_minimax_and_nonsaturating_d_loss_is_binary_cross_entropy():
    expected = (-math.log(0.5) - math.log(0.75)) / 2 + (-math.log(1 - 0.5) - math.log(1 - 0.25)) / 2
    for kind in ("minimax", "nonsaturating"):
        assert_close(d_loss(kind, REAL_SIG, FAKE_SIG), expected)


def test_minimax_g_loss_is_log_one_minus_d():
    assert_close(g_loss("minimax", FAKE_SIG), (math.log(1 - 0.5) + math.log(1 - 0.25)) / 2)


def test_nonsaturating_g_loss_is_minus_log_d():
    assert_close(g_loss("nonsaturating", FAKE_SIG), (-math.log(0.5) - math.log(0.25)) / 2)


def test_one_sided_label_smoothing():
    # real term: cross-entropy against 0.9; the fake term keeps target 0
    real_term = sum(-(0.9 * math.log(p) + 0.1 * math.log(1 - p)) for p in (0.5, 0.75)) / 2
    fake_term = (-math.log(0.5) - math.log(0.75)) / 2
    for kind in ("minimax", "nonsaturating"):
        assert_close(d_loss(kind, REAL_SIG, FAKE_SIG, real_label=0.9), real_term + fake_term)
    # the smoothed loss is no longer minimized by ever larger real logits
    r = torch.tensor([5.0], requires_grad=True)
    d_loss("nonsaturating", r, t(0.0), real_label=0.9).backward()
    assert r.grad.item() > 0, "at sigmoid(5) > 0.9 the smoothed loss should push the real logit down"


def test_wgan():
    real, fake = t(1.0, 3.0), t(-2.0, 0.0)
    assert_close(d_loss("wgan", real, fake), -1.0 - 2.0)     # mean(f) - mean(r)
    assert_close(g_loss("wgan", fake), 1.0)                  # -mean(f)


def test_lsgan():
    real, fake = t(1.0, 3.0), t(-2.0, 0.0)
    assert_close(d_loss("lsgan", real, fake), 0.5 * (0 + 4) / 2 + 0.5 * (4 + 0) / 2)
    assert_close(g_loss("lsgan", fake), 0.5 * (9 + 1) / 2)


def test_hinge():
    real, fake = t(0.5, 2.0), t(-2.0, 0.5)
    assert_close(d_loss("hinge", real, fake), (0.5 + 0.0) / 2 + (0.0 + 1.5) / 2)
    assert_close(g_loss("hinge", fake), -(-2.0 + 0.5) / 2)


def test_real_and_fake_batches_may_differ_in_size():
    assert_close(d_loss("wgan", t(1.0, 2.0, 3.0), t(4.0)), 4.0 - 2.0)


@pytest.mark.parametrize("kind", LOSSES)
def test_column_logits_equal_flat_logits(kind):
    real, fake = t(0.3, -1.2, 2.0), t(-0.7, 0.1, 1.5)
    assert torch.equal(d_loss(kind, real[:, None], fake[:, None]), d_loss(kind, real, fake))
    assert torch.equal(g_loss(kind, fake[:, None]), g_loss(kind, fake))


@pytest.mark.parametrize("kind", LOSSES)
def test_low_precision_logits_give_float32_losses(kind):
    real, fake = t(0.5, -1.0), t(-0.25, 2.0)                 # exact in bfloat16
    assert d_loss(kind, real.bfloat16(), fake.bfloat16()).dtype == torch.float32
    assert torch.equal(d_loss(kind, real.bfloat16(), fake.bfloat16()), d_loss(kind, real, fake))
    assert torch.equal(g_loss(kind, fake.half()), g_loss(kind, fake))


def test_sigmoid_losses_are_stable_at_extreme_logits():
    big = 1000.0    # log(sigmoid(-1000)) in float32 is log(0) = -inf; softplus gives the exact 1000
    assert_close(d_loss("minimax", t(big), t(-big)), 0.0)
    assert_close(d_loss("minimax", t(-big), t(big)), 2 * big)
    assert_close(g_loss("nonsaturating", t(-big)), big)
    assert_close(g_loss("minimax", t(big)), -big)


def test_saturating_vs_nonsaturating_gradient():
    # A confident D (fake logit -10): the minimax G loss has almost no gradient, the
    # non-saturating one a gradient of about -1 (Goodfellow 2014's reason for it).
    for kind, expected in (("minimax", -1 / (1 + math.exp(10))), ("nonsaturating", -1 / (1 + math.exp(-10)))):
        f = torch.tensor([-10.0], requires_grad=True)
        g_loss(kind, f).backward()
        assert abs(f.grad.item() - expected) < 1e-6, (kind, f.grad.item(), expected)


# ---------------------------------------------------------------- argument errors

def test_unknown_kind_lists_the_losses():
    with pytest.raises(ValueError, match="minimax, nonsaturating, wgan, lsgan, hinge"):
        d_loss("vanilla", t(0.0), t(0.0))
    with pytest.raises(ValueError, match="kind must be one of"):
        g_loss("wasserstein", t(0.0))


@pytest.mark.parametrize("bad", [torch.zeros(2, 2), torch.zeros(2, 1, 1), torch.zeros(()), torch.zeros(0),
                                 torch.zeros(3, dtype=torch.int64)])
def test_logits_must_be_n_or_n_by_1(bad):
    with pytest.raises(ValueError, match="real_logits"):
        d_loss("hinge", bad, t(0.0))
    with pytest.raises(ValueError, match="fake_logits"):
        g_loss("hinge", bad)


@pytest.mark.parametrize("kind", ["wgan", "lsgan", "hinge"])
def test_label_smoothing_only_for_sigmoid_losses(kind):
    with pytest.raises(ValueError, match="real_label"):
        d_loss(kind, t(0.0), t(0.0), real_label=0.9)


@pytest.mark.parametrize("label", [1.5, -0.1, True, "0.9"])
def test_real_label_must_be_in_unit_interval(label):
    with pytest.raises(ValueError, match="real_label"):
        d_loss("nonsaturating", t(0.0), t(0.0), real_label=label)


# ---------------------------------------------------------------- weight clipping

def test_clip_weights_clamps_every_parameter():
    layer = nn.Linear(3, 1)
    with torch.no_grad():
        layer.weight.copy_(t(-1.0, 0.005, 1.0)[None])
        layer.bias.fill_(-0.5)
    assert clip_weights_(layer, c=0.01) is layer
    assert torch.equal(layer.weight, t(-0.01, 0.005, 0.01)[None])
    assert torch.equal(layer.bias, t(-0.01))
    with pytest.raises(ValueError, match="c must be"):
        clip_weights_(layer, c=0)


# ---------------------------------------------------------------- BEGAN loss

def test_began_recon_loss_is_mean_absolute_error():
    x = torch.zeros(1, 1, 2, 2)
    recon = t(1.0, -2.0, 3.0, 0.0).view(1, 1, 2, 2)
    assert_close(BEGANLoss.recon_loss(x, recon), 6.0 / 4)
    with pytest.raises(ValueError, match="one shape"):
        BEGANLoss.recon_loss(x, recon[:, :, :1])


def test_began_d_and_g_losses():
    began = BEGANLoss(k=0.25)
    real, real_recon = torch.zeros(2, 2), t(1.0, -1.0, 2.0, 2.0).view(2, 2)      # L(x) = 1.5
    fake = torch.ones(2, 2, requires_grad=True)
    fake_recon = t(3.0, 1.0, -1.0, 1.0).view(2, 2)                                # L(G(z)) = (2+0+2+0)/4 = 1
    loss, stats = began.d_loss(real, real_recon, fake, fake_recon)
    assert_close(loss, 1.5 - 0.25 * 1.0)
    assert_close(stats["l_real"], 1.5)
    assert_close(stats["l_fake"], 1.0)
    assert stats["k"] == 0.25 and not stats["l_real"].requires_grad
    assert_close(began.g_loss(fake, fake_recon), 1.0)


def test_began_k_update_and_convergence_measure():
    began = BEGANLoss(gamma=0.5, lambda_k=1e-3)
    assert began.k == 0.0
    m = began.update(1.0, 0.2)                     # gamma L(x) - L(G(z)) = 0.5 - 0.2 = 0.3
    assert began.k == pytest.approx(3e-4, abs=1e-15) and m == pytest.approx(1.0 + 0.3)
    m = began.update(torch.tensor(1.0, requires_grad=True), torch.tensor(0.9))   # balance -0.4
    assert began.k == 0.0, "k must be clipped at 0 (3e-4 - 4e-4 < 0)"
    assert m == pytest.approx(1.0 + 0.4) and isinstance(began.k, float)


def test_began_k_is_clipped_at_one():
    began = BEGANLoss(gamma=1.0, lambda_k=1.0, k=0.9)
    began.update(0.5, 0.2)                         # 0.9 + 0.3 > 1
    assert began.k == 1.0


def test_began_state_round_trip():
    began = BEGANLoss()
    began.update(1.0, 0.1)
    restored = BEGANLoss()
    restored.load_state_dict(began.state_dict())
    assert restored.k == began.k == pytest.approx(4e-4)
    with pytest.raises(ValueError, match="k must be in"):
        restored.load_state_dict({"k": 2.0})
    with pytest.raises(ValueError, match="state must be"):
        restored.load_state_dict({"k_t": 0.1})


@pytest.mark.parametrize("kwargs", [dict(gamma=0.0), dict(gamma=1.5), dict(lambda_k=-1e-3), dict(k=1.1)])
def test_began_rejects_bad_settings(kwargs):
    with pytest.raises(ValueError, match=next(iter(kwargs))):
        BEGANLoss(**kwargs)


# ---------------------------------------------------------------- BEGAN discriminators

def test_began_discriminator_reconstructs_32x32():
    D = BEGANDiscriminator(32, 3)
    img = torch.randn(2, 3, 32, 32)
    assert D.encode(img).shape == (2, 64)
    assert D(img).shape == (2, 3, 32, 32)
    # 32 -> 16 -> 8: two stride-2 convolutions down, two upsamplings back; widths 64, 128, 192
    strided = [m for m in D.encoder.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert [m.out_channels for m in strided] == [128, 192]
    assert sum(isinstance(m, nn.Upsample) for m in D.decoder.modules()) == 2
    assert D.embed.in_features == 192 * 8 * 8


def test_began_discriminator_smallest_resolution_and_errors():
    D = BEGANDiscriminator(8, 1, hidden=4, embed_dim=3)
    assert D(torch.randn(1, 1, 8, 8)).shape == (1, 1, 8, 8)
    with pytest.raises(ValueError, match="img_resolution"):
        BEGANDiscriminator(12, 3)
    with pytest.raises(ValueError, match=r"img must be \[N, 1, 8, 8\]"):
        D(torch.randn(1, 1, 16, 16))
    with pytest.raises(ValueError, match="unconditional"):
        D(torch.randn(1, 1, 8, 8), torch.zeros(1, 2))


def test_began_discriminator_elus_run_on_every_backend_alike():
    D = BEGANDiscriminator(16, 1, hidden=4, embed_dim=5)
    img = torch.randn(2, 1, 16, 16)
    fused = D(img)
    reference = set_backend(D, "reference")(img)
    assert torch.allclose(fused, reference, rtol=1e-5, atol=1e-6), (fused - reference).abs().max()


def test_began_mlp_shapes_and_errors():
    D = BEGANDiscriminatorMLP(2, hidden=16, embed_dim=4)
    assert D(torch.randn(5, 2)).shape == (5, 2)
    with pytest.raises(ValueError, match=r"x must be \[N, 2\]"):
        D(torch.randn(5, 3))


def test_began_mlp_learns_to_reconstruct_a_ring():
    # The autoencoder D is trained by BEGANLoss's real term: 60 Adam steps on points of the unit
    # circle must cut the reconstruction error well below its initial value (to ~5% for seeds 0-4).
    D = BEGANDiscriminatorMLP(2, hidden=32, embed_dim=4)
    angles = torch.rand(128) * 2 * math.pi
    ring = torch.stack([angles.cos(), angles.sin()], dim=1)
    opt = torch.optim.Adam(D.parameters(), lr=1e-2)
    first = BEGANLoss.recon_loss(ring, D(ring)).item()
    for _ in range(60):
        loss = BEGANLoss.recon_loss(ring, D(ring))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.25 * first, (first, loss.item())
