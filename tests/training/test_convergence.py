"""Convergence on the seeds' mode-collapse example, the 2-D ring of 8 Gaussians (issue 8): the
Trainer with the MLP pair covers >= 7 of 8 modes with mostly high-quality samples in a fixed step
budget, for the non-saturating, hinge and WGAN-GP losses; and ring_coverage, the measure, scores
exact ring samples as perfect and collapsed or spread-out generators as failures.

Ring: radius 2, 8 modes; a sample is high quality within 3 std of its nearest centre. Samples are
scored from the EMA generator (`Trainer.sample`). Each run is one fixed seed on one thread (a GAN's
trajectory is chaotic, so the summation order of a multi-threaded matmul could change the outcome);
every configuration was checked on more seeds than the test runs (see RING_RUNS).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import pytest
import torch

from ganfast.models.mlp import MLPDiscriminator, MLPGenerator
from ganfast.training.loop import Trainer, TrainingConfig
from ganfast.training.toy import RingOfGaussians, ring_centers, ring_coverage

MODES, RADIUS, QUALITY_SIGMAS = 8, 2.0, 3.0
NUM_SAMPLES = 4096          # scored samples: the high-quality fraction's binomial std is <= 0.008


@pytest.fixture
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def score(samples: torch.Tensor, std: float):
    return ring_coverage(samples, modes=MODES, radius=RADIUS, std=std, quality_sigmas=QUALITY_SIGMAS)


# ---------------------------------------------------------------- the measure


def test_exact_ring_samples_cover_every_mode_with_high_quality():
    # A 2-D Gaussian lies within 3 std of its mean with probability 1 - exp(-9/2) = 0.98889; with
    # 8192 samples the binomial std is 0.0012 (measured over seeds 0-4 at 4096: 0.9861 .. 0.9922).
    std = 0.05
    data = RingOfGaussians(size=8192, modes=MODES, radius=RADIUS, std=std, seed=0)
    cov = score(data.points, std)
    assert cov.modes_covered == MODES, cov
    assert abs(cov.high_quality - (1 - math.exp(-QUALITY_SIGMAS ** 2 / 2))) < 0.004, cov
    assert min(cov.per_mode) > 0.8 * 8192 / MODES, cov


def test_points_at_the_origin_have_no_quality_and_cover_nothing():
    cov = score(torch.zeros(100, 2), std=0.05)
    assert cov.high_quality == 0.0 and cov.modes_covered == 0 and sum(cov.per_mode) == 0, cov


def test_a_collapsed_generator_of_perfect_quality_covers_one_mode():
    std = 0.05
    noise = torch.randn(1000, 2, generator=torch.Generator().manual_seed(0))
    one_mode = ring_centers(MODES, RADIUS)[3].float() + std * noise
    cov = score(one_mode, std)
    assert cov.modes_covered == 1 and cov.high_quality > 0.97, cov
    assert cov.per_mode[3] == sum(cov.per_mode), cov


def test_samples_spread_along_the_circle_cover_every_mode_with_low_quality():
    # Uniform on the circle: only the arcs within 0.15 of a centre are high quality, a fraction
    # 8 * 4 asin(0.15 / 4) / (2 pi) = 0.191 (measured 0.199 with 4096 samples).
    std = 0.05
    angles = torch.rand(4096, generator=torch.Generator().manual_seed(0)) * (2 * math.pi)
    cov = score(RADIUS * torch.stack([angles.cos(), angles.sin()], dim=1), std)
    expected = MODES * 4 * math.asin(QUALITY_SIGMAS * std / (2 * RADIUS)) / (2 * math.pi)
    assert cov.modes_covered == MODES and abs(cov.high_quality - expected) < 0.03, (cov, expected)


# ---------------------------------------------------------------- training


@dataclass(frozen=True)
class RingRun:
    """One fixed training run on the ring: the MLP pair (128 wide, 3 hidden layers, z_dim 2),
    batch 256, G EMA half-life 2 kimg without ramp-up unless `config` says otherwise, and `seed`
    for the weights, the data and the trainer."""
    loss: str
    std: float                                      # the ring's std (quality radius: 3 std)
    steps: int
    config: dict = field(default_factory=dict)      # TrainingConfig fields over the defaults below
    min_quality: float = 0.5                        # the asserted high-quality fraction
    seed: int = 0


_RING_DEFAULTS = dict(batch=256, ema_kimg=2.0, ema_rampup=None)

# Measured from the EMA G on one thread with 2000-4096 samples (seed 0 exactly as the test runs it):
# the high-quality fraction per seed; every one of these runs covered 8/8 modes.
RING_RUNS = {run.loss: run for run in (
    # std 0.1: seeds 0-4: 0.735 0.727 0.751 0.772 0.603. At std 0.05 the same needs 600 steps
    # (0.821 0.787 0.680 0.831 0.799). Adam's beta1 = 0 matters: with betas (0.5, 0.999) seed 1
    # ended with 0 to 3 modes after 1000 steps at std 0.05.
    RingRun("nonsaturating", std=0.1, steps=400, config=dict(lr=2e-3, betas=(0.0, 0.99))),
    # std 0.1: seeds 0-4: 0.759 0.801 0.756 0.807 0.604 (std 0.05, 600 steps: 0.800 0.678 0.699).
    RingRun("hinge", std=0.1, steps=400, config=dict(lr=2e-3, betas=(0.0, 0.99))),
    # std 0.05: seeds 0-5: 0.678 0.693 0.704 0.617 0.667 0.434 (at 400 steps 0.606 0.585 0.642 0.538
    # 0.600 0.446). What it takes: gp_weight 0.5 rather than the paper's 10 (with 10 and lr 5e-4 the
    # samples were still a cloud after 1000 steps: 0.011; with 1: seeds 0-5 0.752 0.750 0.746 0.671
    # 0.366 0.741), two critic steps per G step (one: no convergence in 1000 steps), lr 2e-3 (3e-3
    # with gp 1: 0.224 on seed 2). The critic is smooth, so G keeps thin bridges between modes and
    # oscillates (the raw G scores 0.17 .. 0.69): one seed in six stays near 0.4 within this budget,
    # hence the lower bar; it still fails a cloud around the ring (the non-saturating G after 150
    # steps at std 0.05: 0.024 .. 0.028) and a uniform ring (0.19).
    RingRun("wgan-gp", std=0.05, steps=450, min_quality=0.35,
            config=dict(lr=2e-3, betas=(0.5, 0.9), n_critic=2, gp_weight=0.5, ema_kimg=4.0)),
)}


def train_on_ring(run: RingRun, steps: int | None = None) -> Trainer:
    """A Trainer for `run`, trained to `steps` (default run.steps) steps."""
    torch.manual_seed(run.seed)
    G = MLPGenerator(z_dim=2, dim=2, hidden=128, layers=3)
    D = MLPDiscriminator(dim=2, hidden=128, layers=3)
    data = RingOfGaussians(modes=MODES, radius=RADIUS, std=run.std, seed=run.seed)
    config = TrainingConfig(loss=run.loss, seed=run.seed, **{**_RING_DEFAULTS, **run.config})
    trainer = Trainer(G, D, data, config)
    trainer.train(steps=run.steps if steps is None else steps)
    return trainer


@pytest.mark.parametrize("loss", sorted(RING_RUNS))
def test_training_covers_at_least_7_of_8_modes_with_high_quality(loss, one_thread):
    run = RING_RUNS[loss]
    cov = score(train_on_ring(run).sample(NUM_SAMPLES), run.std)
    assert cov.modes_covered >= MODES - 1 and cov.high_quality >= run.min_quality, (loss, cov)


def test_a_run_cut_short_fails_the_convergence_bar(one_thread):
    # The non-saturating run after 25 steps is a blob inside the ring: seeds 0-2 cover 2 / 1 / 2
    # modes with 0.017 / 0.002 / 0.020 high quality. After 100 steps it is a cloud over the whole
    # ring: the mode count alone would pass (8 / 8 / 8), the quality does not (0.076 / 0.081 / 0.081).
    run = RING_RUNS["nonsaturating"]
    trainer = train_on_ring(run, steps=25)
    collapsed = score(trainer.sample(NUM_SAMPLES), run.std)
    assert collapsed.modes_covered <= 2 and collapsed.high_quality < 0.05, collapsed
    trainer.train(steps=100)
    spread = score(trainer.sample(NUM_SAMPLES), run.std)
    assert spread.modes_covered >= MODES - 1 and spread.high_quality < 0.2, spread
