"""Training defaults per model family: the settings each family's paper or reference code trains
with, so `ganfast train --preset NAME` needs no other flag. Any field can still be overridden.

    stylegan2 / stylegan   non-saturating, Adam lr 0.002 betas (0, 0.99), lazy R1 (gamma scaled
                           with resolution^2 / batch as StyleGAN2-ADA's auto config), lazy path
                           length (weight 2, every 4 G steps; StyleGAN2 only), G EMA half-life 10 kimg
    biggan                 hinge, Adam G 1e-4 / D 4e-4 betas (0, 0.999), orthogonal reg. 1e-4, 2 D
                           steps per G step, EMA (BigGAN)
    sagan                  hinge, Adam G 1e-4 / D 4e-4 betas (0, 0.9) (two time-scale update rule)
    sngan                  hinge, Adam lr 2e-4 betas (0, 0.9), 5 D steps per G step (n_dis = 5)
    cdcgan                 hinge, Adam lr 2e-4 betas (0.5, 0.999) (SNGAN's standard-CNN setting), G EMA
                           half-life 5 kimg with ramp-up 0.1 (tuned for short Fashion-MNIST runs)
    progan                 WGAN-GP (lambda 10) with the drift term 0.001 * D(real)^2, Adam lr 0.001 betas
                           (0, 0.99), G EMA half-life 10 kimg (the paper's 0.999 per step at batch 16), and
                           progressive growing: the paper's schedule (600k fade-in + 600k stable images
                           per stage, its batch per resolution) at 256 px and above, 10k + 10k per
                           stage below (ganfast.training.growing)
    dcgan, cgan, acgan,    non-saturating, Adam lr 2e-4 betas (0.5, 0.999) (the DCGAN paper), no EMA
    infogan
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["FAMILY_RECIPES", "recipe_for", "auto_r1_gamma", "growth_for", "SMALL_STAGE_KIMG"]

_DCGAN = {"loss": "nonsaturating", "lr": 2e-4, "betas": (0.5, 0.999), "ema_kimg": 0.0}

FAMILY_RECIPES: dict[str, dict[str, Any]] = {
    "stylegan2": {"loss": "nonsaturating", "lr": 0.002, "betas": (0.0, 0.99), "r1_interval": 16, "pl_weight": 2.0,
                  "pl_interval": 4, "ema_kimg": 10.0, "ema_rampup": 0.05},
    "stylegan": {"loss": "nonsaturating", "lr": 0.002, "betas": (0.0, 0.99), "r1_interval": 16, "ema_kimg": 10.0,
                 "ema_rampup": 0.05},
    "biggan": {"loss": "hinge", "g_lr": 1e-4, "d_lr": 4e-4, "betas": (0.0, 0.999), "ortho_beta": 1e-4,
               "n_critic": 2, "ema_kimg": 10.0, "ema_rampup": None},
    "sagan": {"loss": "hinge", "g_lr": 1e-4, "d_lr": 4e-4, "betas": (0.0, 0.9), "ema_kimg": 0.0},
    "sngan": {"loss": "hinge", "lr": 2e-4, "betas": (0.0, 0.9), "n_critic": 5, "ema_kimg": 0.0},
    "cdcgan": {"loss": "hinge", "lr": 2e-4, "betas": (0.5, 0.999), "ema_kimg": 5.0, "ema_rampup": 0.1},
    "progan": {"loss": "wgan-gp", "gp_weight": 10.0, "drift_weight": 0.001, "lr": 0.001, "betas": (0.0, 0.99),
               "ema_kimg": 10.0, "ema_rampup": None},
    "dcgan": dict(_DCGAN), "cgan": dict(_DCGAN), "acgan": dict(_DCGAN), "infogan": dict(_DCGAN),
}


def auto_r1_gamma(resolution: int, batch: int) -> float:
    """StyleGAN2-ADA's automatic R1 weight: 0.0002 * resolution^2 / batch."""
    return 0.0002 * resolution ** 2 / batch


def recipe_for(family: str, resolution: int, batch: int) -> dict[str, Any]:
    """The TrainingConfig fields for a model family at this resolution and batch size."""
    if family not in FAMILY_RECIPES:
        raise ValueError(f"recipe_for: no training recipe for family {family!r}; known: {sorted(FAMILY_RECIPES)}")
    recipe = dict(FAMILY_RECIPES[family])
    if family in ("stylegan2", "stylegan"):
        recipe["r1_gamma"] = auto_r1_gamma(resolution, batch)
    if family == "progan":
        recipe["growth"] = growth_for(resolution).to_list()
    return recipe


SMALL_STAGE_KIMG = 10.0    # fade-in and stable images per stage below 256 px (CPU-sized runs)


def growth_for(resolution: int, stage_kimg: Optional[float] = None):
    """The growing recipe at this final resolution: the paper's schedule (600k + 600k per stage and
    its batch per resolution) at 256 px and above, SMALL_STAGE_KIMG + SMALL_STAGE_KIMG per stage
    below; stage_kimg replaces the per-stage images (keeping the paper's batches where they apply)."""
    from ganfast.training.growing import GrowthSchedule
    if resolution >= 256:
        paper = GrowthSchedule.paper(resolution)
        if stage_kimg is None:
            return paper
        return GrowthSchedule.scaled(resolution, stage_kimg, batch={s.resolution: s.batch for s in paper.stages})
    return GrowthSchedule.scaled(resolution, SMALL_STAGE_KIMG if stage_kimg is None else stage_kimg)
