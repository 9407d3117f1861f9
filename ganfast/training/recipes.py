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
    pix2pix                vanilla GAN loss (BCE) + 100 L1, Adam lr 2e-4 betas (0.5, 0.999), no EMA; the
                           learning rates fall linearly to 0 over the second half of the run (ganfast train
                           sets lr_decay from --kimg); batch 1 at 256 px as the paper, 16 below
    cyclegan               LSGAN, cycle 10, identity 0.5 x 10, history of 50 generated images per D, Adam lr
                           2e-4 betas (0.5, 0.999), linear decay over the second half; batch 1 at 256 px, 16 below
    unit                   LSGAN, reconstruction 10, KL 0.01, cycle 10, cycle KL 0.01, Adam lr 1e-4 betas
                           (0.5, 0.999) (the reference's weight decay 1e-4 is not applied); batch 1 at 256 px,
                           16 below
    srgan                  content loss + 1e-3 x BCE adversarial loss, Adam lr 1e-4 betas (0.9, 0.999); the
                           content loss: the Fashion-MNIST classifier's features for 1-channel data (the
                           stand-in for VGG, which cannot be downloaded here), pixel MSE otherwise or when
                           asked, a user VGG with content_loss='vgg'; batch 16
"""
from __future__ import annotations

from typing import Any, Optional

__all__ = ["FAMILY_RECIPES", "recipe_for", "auto_r1_gamma", "growth_for", "SMALL_STAGE_KIMG", "NVLABS_CFGS",
           "NVLABS_CFG_NAMES", "nvlabs_cfg_spec", "nvlabs_cfg_model", "nvlabs_cfg_training"]

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
    "pix2pix": {"loss": "nonsaturating", "lr": 2e-4, "betas": (0.5, 0.999), "ema_kimg": 0.0, "l1_weight": 100.0},
    "cyclegan": {"loss": "lsgan", "lr": 2e-4, "betas": (0.5, 0.999), "ema_kimg": 0.0, "cycle_weight": 10.0,
                 "identity_weight": 0.5, "pool_size": 50},
    "unit": {"loss": "lsgan", "lr": 1e-4, "betas": (0.5, 0.999), "ema_kimg": 0.0, "recon_weight": 10.0,
             "kl_weight": 0.01, "cycle_weight": 10.0},
    "srgan": {"loss": "nonsaturating", "lr": 1e-4, "betas": (0.9, 0.999), "ema_kimg": 0.0, "adv_weight": 1e-3},
}
IMG2IMG_RECIPE_FAMILIES = ("pix2pix", "cyclegan", "unit", "srgan")


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
    if family in IMG2IMG_RECIPE_FAMILIES:       # the papers' batch 1 at full size; 16 for the small presets
        recipe["batch"] = 1 if resolution >= 128 and family != "srgan" else 16
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


# ------------------------------------------------------------------------------------------------
# stylegan2-ada-pytorch's --cfg values, to the letter (its train.py cfg_specs: batch `mb`, minibatch-
# std group `mbstd`, width multiplier `fmaps` of channel_base 32768, learning rate, R1 gamma, EMA
# half-life in kimg and ramp-up, mapping depth; `ref_gpus` sets the per-GPU batch mb // ref_gpus).

NVLABS_CFGS: dict[str, dict[str, Any]] = {
    "stylegan2": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=10, ema=10, ramp=None, map=8),
    "paper256": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=0.5, lrate=0.0025, gamma=1, ema=20, ramp=None, map=8),
    "paper512": dict(ref_gpus=8, kimg=25000, mb=64, mbstd=8, fmaps=1, lrate=0.0025, gamma=0.5, ema=20, ramp=None, map=8),
    "paper1024": dict(ref_gpus=8, kimg=25000, mb=32, mbstd=4, fmaps=1, lrate=0.002, gamma=2, ema=10, ramp=None, map=8),
    "cifar": dict(ref_gpus=2, kimg=100000, mb=64, mbstd=32, fmaps=1, lrate=0.0025, gamma=0.01, ema=500, ramp=0.05,
                  map=2),
}
NVLABS_CFG_NAMES = tuple(NVLABS_CFGS) + ("auto",)


def nvlabs_cfg_spec(cfg: str, resolution: int, gpus: int = 1) -> dict[str, Any]:
    """The cfg_specs row of stylegan2-ada-pytorch's `--cfg cfg` for this resolution and GPU count
    ('auto' is filled in from them as its train.py does; the others ignore both)."""
    if cfg not in NVLABS_CFG_NAMES:
        raise ValueError(f"nvlabs_cfg_spec: cfg must be one of {NVLABS_CFG_NAMES}, got {cfg!r}")
    if isinstance(gpus, bool) or not isinstance(gpus, int) or gpus < 1:
        raise ValueError(f"nvlabs_cfg_spec: gpus must be an int >= 1, got {gpus!r}")
    if cfg != "auto":
        return dict(NVLABS_CFGS[cfg])
    mb = max(min(gpus * min(4096 // resolution, 32), 64), gpus)
    return dict(ref_gpus=gpus, kimg=25000, mb=mb, mbstd=min(mb // gpus, 4), fmaps=1 if resolution >= 512 else 0.5,
                lrate=0.002 if resolution >= 1024 else 0.0025, gamma=0.0002 * resolution ** 2 / mb, ema=mb * 10 / 32,
                ramp=0.05, map=2)


def nvlabs_cfg_model(cfg: str, resolution: int, gpus: int = 1) -> dict[str, Any]:
    """build_stylegan2 keyword arguments of `--cfg cfg`: 512-d z and w, channel_base fmaps * 32768
    up to 512 channels, fp16 in the 4 highest resolutions with activations clamped at 256; cifar
    also turns style mixing off and uses the 'orig' D (no residual connections)."""
    spec = nvlabs_cfg_spec(cfg, resolution, gpus)
    return dict(resolution=resolution, z_dim=512, w_dim=512, channel_base=int(spec["fmaps"] * 32768), channel_max=512,
                mapping_layers=spec["map"], num_fp16_res=4, conv_clamp=256, mbstd_group_size=spec["mbstd"],
                style_mixing_prob=0.0 if cfg == "cifar" else 0.9, architecture="orig" if cfg == "cifar" else "resnet",
                g_architecture="skip")


def nvlabs_cfg_training(cfg: str, resolution: int, gpus: int = 1) -> dict[str, Any]:
    """TrainingConfig fields of `--cfg cfg`, with every loop detail as stylegan2-ada-pytorch has it:
    non-saturating loss, Adam betas (0, 0.99), lazy R1 every 16 D steps, path length (weight 2,
    every 4 G steps, half batch, decay 0.01; off for cifar) through style mixing and the w_avg
    update, the phase order G main, G reg, D main, D reg with fresh latents per phase, the EMA's
    beta from the images before the step and its buffers copied, gradients' NaN / inf replaced
    (nan_to_num) rather than the step skipped."""
    spec = nvlabs_cfg_spec(cfg, resolution, gpus)
    return dict(loss="nonsaturating", lr=spec["lrate"], betas=(0.0, 0.99), batch=spec["mb"],
                batch_gpu=spec["mb"] // spec["ref_gpus"], r1_gamma=float(spec["gamma"]), r1_interval=16,
                pl_weight=0.0 if cfg == "cifar" else 2.0, pl_interval=4, pl_batch_shrink=2, pl_decay=0.01,
                ema_kimg=float(spec["ema"]), ema_rampup=spec["ramp"], schedule="nvlabs", pl_style_mixing=True,
                pl_update_w_avg=True, ema_average_buffers=False, nan_to_num=True)
