"""GAN losses on discriminator logits, BEGAN's equilibrium loss, and WGAN's weight clipping.

Every D in ganfast returns raw logits [N] (no sigmoid), so the probability-based losses are written
in their logit forms with softplus, which never takes the log of an underflowed sigmoid:
    -log sigmoid(x) = softplus(-x)        -log(1 - sigmoid(x)) = softplus(x)

    kind            D loss (minimized)                          G loss (minimized)
    minimax         softplus(-r) + softplus(f)                  -softplus(f)    [= log(1 - D(G(z)))]
    nonsaturating   softplus(-r) + softplus(f)                  softplus(-f)    [= -log D(G(z))]
    wgan            mean(f) - mean(r)                           -mean(f)
    lsgan           0.5 (r - 1)^2 + 0.5 f^2                     0.5 (f - 1)^2
    hinge           relu(1 - r) + relu(1 + f)                   -mean(f)
r: D's logits on real samples, f: on generated ones; every term is a mean over its batch.

minimax is Goodfellow et al. (2014)'s saturating game; nonsaturating is the G loss that paper
recommends in practice. wgan is Arjovsky et al. (2017): add weight clipping (`clip_weights_`) for
the original WGAN or ganfast.training.regularizers.gradient_penalty for WGAN-GP. lsgan is
Mao et al. (2017) with a=0, b=1, c=1. hinge is Lim & Ye (2017) / Miyato et al. (2018), the loss of
SNGAN's projection D, SAGAN and BigGAN.

One-sided label smoothing (Salimans et al. 2016): real_label < 1 (e.g. 0.9) makes D's real term
the binary cross-entropy against real_label, real_label * softplus(-r) + (1 - real_label) * softplus(r),
while the fakes' target stays 0 (smoothing both sides would reward D for leaving the fakes' density
alone). Only the sigmoid losses (minimax, nonsaturating) have labels.

Mixed precision: the logits are upcast to float32 before any arithmetic, so fp16 / bf16 logits from
autocast give float32 losses (softplus of a large fp16 logit would otherwise round coarsely).
"""
from __future__ import annotations

from typing import Union

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LOSSES", "d_loss", "g_loss", "as_logits", "clip_weights_", "BEGANLoss"]

LOSSES = ("minimax", "nonsaturating", "wgan", "lsgan", "hinge")
_SIGMOID_LOSSES = ("minimax", "nonsaturating")   # the losses with a real label to smooth


def as_logits(who: str, name: str, logits: torch.Tensor) -> torch.Tensor:
    """logits [N] or [N, 1] (floating) as float32 (or float64) [N]; anything else raises ValueError."""
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        got = f"dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise ValueError(f"{who}: {name} must be a floating tensor of logits [N], got {got}")
    if logits.ndim == 2 and logits.shape[1] == 1:
        logits = logits[:, 0]
    if logits.ndim != 1 or logits.shape[0] == 0:
        raise ValueError(f"{who}: {name} must be logits [N] or [N, 1] with N >= 1, got {list(logits.shape)}")
    return logits if logits.dtype == torch.float64 else logits.float()


def _check_kind(who: str, kind: str) -> None:
    if kind not in LOSSES:
        raise ValueError(f"{who}: kind must be one of {', '.join(LOSSES)}, got {kind!r}")


def d_loss(kind: str, real_logits: torch.Tensor, fake_logits: torch.Tensor,
           real_label: float = 1.0) -> torch.Tensor:
    """The discriminator's loss (a float32 scalar, minimized) for loss `kind` (one of LOSSES).

    real_logits: D's logits on real samples, [N_real] (or [N_real, 1]).
    fake_logits: D's logits on generated samples, [N_fake] (or [N_fake, 1]); detach G's output
        before D sees it, or the D step also writes gradients into G.
    real_label: the real samples' target for minimax / nonsaturating; < 1 is one-sided label
        smoothing (0.9 in Salimans et al. 2016). Must be 1 for the other kinds.
    """
    _check_kind("d_loss", kind)
    real = as_logits("d_loss", "real_logits", real_logits)
    fake = as_logits("d_loss", "fake_logits", fake_logits)
    if isinstance(real_label, bool) or not isinstance(real_label, (int, float)) or not 0 <= real_label <= 1:
        raise ValueError(f"d_loss: real_label must be a number in [0, 1], got {real_label!r}")
    if real_label != 1 and kind not in _SIGMOID_LOSSES:
        raise ValueError(f"d_loss: real_label (label smoothing) applies only to the sigmoid losses "
                         f"{', '.join(_SIGMOID_LOSSES)}; got real_label={real_label} with kind={kind!r}")
    if kind in _SIGMOID_LOSSES:
        real_term = F.softplus(-real)
        if real_label != 1:
            real_term = real_label * real_term + (1 - real_label) * F.softplus(real)
        return real_term.mean() + F.softplus(fake).mean()
    if kind == "wgan":
        return fake.mean() - real.mean()
    if kind == "lsgan":
        return 0.5 * (real - 1).square().mean() + 0.5 * fake.square().mean()
    return F.relu(1 - real).mean() + F.relu(1 + fake).mean()          # hinge


def g_loss(kind: str, fake_logits: torch.Tensor) -> torch.Tensor:
    """The generator's loss (a float32 scalar, minimized) for loss `kind` (one of LOSSES).

    fake_logits: D's logits on generated samples, [N] (or [N, 1]), not detached.
    """
    _check_kind("g_loss", kind)
    fake = as_logits("g_loss", "fake_logits", fake_logits)
    if kind == "minimax":
        return -F.softplus(fake).mean()
    if kind == "nonsaturating":
        return F.softplus(-fake).mean()
    if kind == "lsgan":
        return 0.5 * (fake - 1).square().mean()
    return -fake.mean()                                                 # wgan, hinge


@torch.no_grad()
def clip_weights_(module: nn.Module, c: float = 0.01) -> nn.Module:
    """WGAN's weight clipping (Arjovsky et al. 2017): clamp every parameter of `module` (weights and
    biases; the raw weight of parametrized layers) to [-c, c] in place, after each D step. Returns module."""
    if isinstance(c, bool) or not isinstance(c, (int, float)) or not c > 0:
        raise ValueError(f"clip_weights_: c must be a number > 0, got {c!r}")
    for p in module.parameters():
        p.clamp_(-c, c)
    return module


def _as_float(who: str, name: str, value: Union[float, torch.Tensor]) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(f"{who}: {name} must be a scalar, got shape {list(value.shape)}")
        return float(value.detach())
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{who}: {name} must be a number or a scalar tensor, got {type(value).__name__}")
    return float(value)


class BEGANLoss:
    """BEGAN's losses and its proportional control of k (Berthelot, Schumm & Metz 2017).

    D is an autoencoder (ganfast.models.began) and L(v) = mean |v - D(v)| its L1 reconstruction
    error, averaged over every element of the batch (a per-pixel mean, so gamma means the same at
    every resolution). Per step:
        D loss   L(x) - k_t L(G(z))
        G loss   L(G(z))
        k_{t+1}  = clip(k_t + lambda_k (gamma L(x) - L(G(z))), 0, 1)
        M        = L(x) + |gamma L(x) - L(G(z))|       (the convergence measure)
    gamma = E[L(G(z))] / E[L(x)] at equilibrium: lower values trade diversity for quality.
    k is this object's only state (state_dict / load_state_dict, for checkpoints); it starts at k.

    A step: loss, stats = began.d_loss(x, D(x), fake.detach(), D(fake.detach())); ...;
    began.g_loss(fake, D(fake)); ...; m = began.update(stats["l_real"], stats["l_fake"]).
    """

    def __init__(self, gamma: float = 0.5, lambda_k: float = 1e-3, k: float = 0.0):
        for name, value, low, high in (("gamma", gamma, 0.0, 1.0), ("lambda_k", lambda_k, 0.0, None),
                                       ("k", k, 0.0, 1.0)):
            if (isinstance(value, bool) or not isinstance(value, (int, float)) or value < low
                    or (high is not None and value > high)):
                span = f"[{low}, {high}]" if high is not None else f">= {low}"
                raise ValueError(f"BEGANLoss: {name} must be a number in {span}, got {value!r}")
        if gamma == 0:
            raise ValueError("BEGANLoss: gamma must be > 0 (gamma = 0 asks G for no diversity at all)")
        self.gamma, self.lambda_k, self.k = float(gamma), float(lambda_k), float(k)

    @staticmethod
    def recon_loss(x: torch.Tensor, d_out: torch.Tensor) -> torch.Tensor:
        """L(x) = mean |x - D(x)| over the whole batch: x and d_out of one shape ([N, C, H, W] or
        [N, dim]); a float32 scalar."""
        if not isinstance(x, torch.Tensor) or not isinstance(d_out, torch.Tensor) or x.shape != d_out.shape:
            got = [list(v.shape) if isinstance(v, torch.Tensor) else type(v).__name__ for v in (x, d_out)]
            raise ValueError(f"BEGANLoss.recon_loss: x and d_out (D's reconstruction of x) must be tensors of "
                             f"one shape, got {got[0]} and {got[1]}")
        return (x.float() - d_out.float()).abs().mean()

    def d_loss(self, real: torch.Tensor, real_recon: torch.Tensor, fake: torch.Tensor,
               fake_recon: torch.Tensor) -> tuple[torch.Tensor, dict]:
        """D's loss L(x) - k_t L(G(z)) and stats {"l_real", "l_fake" (detached scalars), "k" (float)}.
        real, fake: samples (fake detached from G); *_recon: D's reconstructions of them."""
        l_real = self.recon_loss(real, real_recon)
        l_fake = self.recon_loss(fake, fake_recon)
        stats = {"l_real": l_real.detach(), "l_fake": l_fake.detach(), "k": self.k}
        return l_real - self.k * l_fake, stats

    def g_loss(self, fake: torch.Tensor, fake_recon: torch.Tensor) -> torch.Tensor:
        """G's loss L(G(z)) (fake not detached)."""
        return self.recon_loss(fake, fake_recon)

    def update(self, l_real: Union[float, torch.Tensor], l_fake: Union[float, torch.Tensor]) -> float:
        """Advance k by one step of the proportional control from this step's L(x) and L(G(z))
        (floats or scalar tensors, read as detached floats); returns the convergence measure M."""
        l_real = _as_float("BEGANLoss.update", "l_real", l_real)
        l_fake = _as_float("BEGANLoss.update", "l_fake", l_fake)
        balance = self.gamma * l_real - l_fake
        self.k = min(max(self.k + self.lambda_k * balance, 0.0), 1.0)
        return l_real + abs(balance)

    def state_dict(self) -> dict:
        return {"k": self.k}

    def load_state_dict(self, state: dict) -> None:
        if not isinstance(state, dict) or set(state) != {"k"}:
            got = sorted(state) if isinstance(state, dict) else type(state).__name__
            raise ValueError(f"BEGANLoss.load_state_dict: state must be {{'k': float}}, got {got}")
        k = _as_float("BEGANLoss.load_state_dict", "k", state["k"])
        if not 0 <= k <= 1:
            raise ValueError(f"BEGANLoss.load_state_dict: k must be in [0, 1], got {k}")
        self.k = k

    def __repr__(self) -> str:
        return f"BEGANLoss(gamma={self.gamma}, lambda_k={self.lambda_k}, k={self.k})"
