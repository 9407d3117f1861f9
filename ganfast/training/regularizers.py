"""Regularizers for the training loop: gradient penalties on D (R1, WGAN-GP, DRAGAN), StyleGAN2's
path-length regularization and lazy regularization, and BigGAN's orthogonal regularization.

Each function returns the unweighted penalty; the caller multiplies by its weight:
    R1 (Mescheder et al. 2018; StyleGAN2)     loss_r1 = (gamma / 2) * penalty
    WGAN-GP (Gulrajani et al. 2017)           loss_gp = lambda * penalty           (lambda = 10)
    DRAGAN (Kodali et al. 2017)               loss_dragan = lambda * penalty       (lambda = 10)
    path length (Karras et al. 2020)          loss_pl = pl_weight * penalty        (pl_weight = 2)
    orthogonal (Brock et al. 2018)            the value already includes beta
Applied lazily (every `interval` steps, StyleGAN2), a penalty is also multiplied by the interval
(LazySchedule.weight) and the optimizer's lr and betas adjusted (lazy_optimizer_args).

Gradient penalties differentiate D's logits with respect to its input with create_graph=True, so
D must be differentiable twice (every ganfast op is). Mixed precision: the logits are summed in
float32 before the gradient is taken; with a torch.amp.GradScaler pass it as `scaler=`: the
summed logits are scaled before the gradient (so fp16 intermediate gradients do not underflow) and
the gradient is unscaled before it is squared. An overflow then gives an inf penalty, and the
scaler skips that step as it does for any overflowing loss.
"""
from __future__ import annotations

import inspect
import math
from typing import Callable, Optional

import torch
from torch import nn

from ganfast.training.losses import as_logits

__all__ = ["r1_penalty", "gradient_penalty", "dragan_penalty", "PathLengthRegularizer", "lazy_optimizer_args",
           "LazySchedule", "orthogonal_regularization"]


def _check_samples(who: str, name: str, x: torch.Tensor) -> None:
    if not isinstance(x, torch.Tensor) or not x.is_floating_point() or x.ndim < 2 or x.shape[0] == 0:
        got = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{who}: {name} must be a floating tensor [N, ...] (images [N, C, H, W] or points "
                         f"[N, dim]) with N >= 1, got {got}")


def _input_gradient(who: str, D: Callable, x: torch.Tensor, c: Optional[torch.Tensor],
                    scaler) -> tuple[torch.Tensor, torch.Tensor]:
    """(d sum(D(x, c)) / dx in x's shape, with the graph kept for the double backward; logits [N]).
    x must already be a leaf that requires grad."""
    logits = as_logits(who, "D's output", D(x) if c is None else D(x, c))
    if logits.shape[0] != x.shape[0]:
        raise ValueError(f"{who}: D returned {logits.shape[0]} logits for {x.shape[0]} samples")
    total = logits.sum()
    if scaler is not None:
        total = scaler.scale(total)
    grad, = torch.autograd.grad(total, x, create_graph=True)
    if scaler is not None:
        grad = grad * (1.0 / scaler.get_scale())
    return grad, logits


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x if x.dtype == torch.float64 else x.float()


def _gradient_norms(grad: torch.Tensor) -> torch.Tensor:
    """||grad_i||_2 per sample, [N], in float32 (float64 for a float64 gradient)."""
    return _at_least_fp32(grad).flatten(1).norm(dim=1)


def _per_sample_uniform(x: torch.Tensor) -> torch.Tensor:
    """U[0, 1] per sample, [N, 1, ..., 1] (broadcasts over x's other dims)."""
    return torch.rand([x.shape[0]] + [1] * (x.ndim - 1), dtype=x.dtype, device=x.device)


def r1_penalty(D: Callable, real: torch.Tensor, c: Optional[torch.Tensor] = None,
               scaler=None) -> tuple[torch.Tensor, torch.Tensor]:
    """R1 (Mescheder et al. 2018): the squared norm of D's gradient at the real samples.

    D: called as D(real) when c is None, else D(real, c); returns logits [N] (or [N, 1]).
    real: [N, C, H, W] images or [N, dim] points; c: labels for a conditional D, else None.
    scaler: an optional torch.amp.GradScaler (see the module docstring).
    Returns (penalty, logits): penalty = mean_i ||d D(real_i) / d real_i||^2, a float32 scalar
    (float64 for float64 inputs, as for every penalty here), and
    D's logits on `real` [N] (with their graph), for the caller to reuse in the real-sample loss.
    StyleGAN2's convention: loss_r1 = (gamma / 2) * penalty.
    """
    _check_samples("r1_penalty", "real", real)
    real = real.detach().requires_grad_(True)
    grad, logits = _input_gradient("r1_penalty", D, real, c, scaler)
    # the squares summed directly rather than norm() squared: exact, and smooth where grad = 0
    penalty = _at_least_fp32(grad).square().flatten(1).sum(1).mean()
    return penalty, logits


def gradient_penalty(D: Callable, real: torch.Tensor, fake: torch.Tensor, c: Optional[torch.Tensor] = None,
                     target: float = 1.0, scaler=None) -> torch.Tensor:
    """WGAN-GP (Gulrajani et al. 2017): mean_i (||grad D(x_hat_i)||_2 - target)^2 at
    x_hat = eps * real + (1 - eps) * fake, eps ~ U[0, 1] per sample.

    real, fake: [N, ...] of one shape (fake is detached here); c: labels for a conditional D, else
    None (the same labels for both); scaler: see the module docstring. Returns a float32 scalar;
    the caller multiplies by lambda (10 in the paper).
    """
    _check_samples("gradient_penalty", "real", real)
    if not isinstance(fake, torch.Tensor) or fake.shape != real.shape:
        got = list(fake.shape) if isinstance(fake, torch.Tensor) else type(fake).__name__
        raise ValueError(f"gradient_penalty: fake must have real's shape {list(real.shape)}, got {got}")
    real, fake = real.detach(), fake.detach().to(real.dtype)
    eps = _per_sample_uniform(real)
    x_hat = (eps * real + (1 - eps) * fake).requires_grad_(True)
    grad, _ = _input_gradient("gradient_penalty", D, x_hat, c, scaler)
    return (_gradient_norms(grad) - target).square().mean()


def dragan_penalty(D: Callable, real: torch.Tensor, c: Optional[torch.Tensor] = None, k: float = 1.0,
                   noise_scale: float = 0.5, scaler=None) -> torch.Tensor:
    """DRAGAN (Kodali et al. 2017): mean_i (||grad D(x_hat_i)||_2 - k)^2 around the real samples.

    The variant of the authors' reference code (not the paper's N(0, c) noise): a one-sided
    perturbation x_p = real + noise_scale * std(real) * U[0, 1], U drawn per element and std(real)
    one number, the standard deviation of the whole batch (every element, population std); then
    x_hat = real + alpha * (x_p - real), alpha ~ U[0, 1] per sample.

    real: [N, ...]; c: labels for a conditional D, else None; scaler: see the module docstring.
    Returns a float32 scalar; the caller multiplies by lambda (10 in the paper).
    """
    _check_samples("dragan_penalty", "real", real)
    if not noise_scale >= 0:
        raise ValueError(f"dragan_penalty: noise_scale must be >= 0, got {noise_scale!r}")
    real = real.detach()
    perturbed = real + noise_scale * real.std(correction=0) * torch.rand_like(real)
    alpha = _per_sample_uniform(real)
    x_hat = (real + alpha * (perturbed - real)).requires_grad_(True)
    grad, _ = _input_gradient("dragan_penalty", D, x_hat, c, scaler)
    return (_gradient_norms(grad) - k).square().mean()


class PathLengthRegularizer(nn.Module):
    """StyleGAN2's path-length regularization (Karras et al. 2020) for a style-based G
    (G.mapping(z, c) -> ws [N, num_ws, w_dim], G.synthesis(ws) -> images [N, C, H, W]).

    For y ~ N(0, I) / sqrt(H W), the length of J_w^T y (J_w the Jacobian of the image with respect
    to w, averaged over the num_ws copies) is pushed toward its running mean pl_mean, so that a
    fixed-size step in w moves the image by a fixed amount. The batch is cut to N // batch_shrink
    (at least 1) to save time, as StyleGAN2 does. pl_mean is a buffer (saved in the state dict).
    mean_in_graph=True (the default) differentiates the penalty through this step's update of
    pl_mean, as NVIDIA's StyleGAN2Loss does (pl_mean = pl_mean_buffer.lerp(mean length, decay),
    not detached); False treats the updated pl_mean as a constant. The two gradients differ by the
    term through pl_mean, -(2 decay / M) mean_j (L_j - pl_mean) for every length L_i: about 1% of
    the gradient early in training, while the lengths are far from their running mean.
    style_mixing=False (the default) takes the ws straight from G.mapping; True mixes them as G's
    training forward does (G.mix_styles with G.style_mixing_prob) and measures the Jacobian at the
    mixed ws, as NVIDIA's StyleGAN2Loss does (its run_G mixes in every pass). update_w_avg=False
    leaves G.mapping's running w average alone in this pass; True lets a G in training mode update
    it, as stylegan2-ada-pytorch does (stylegan3's loss does not).
    """

    def __init__(self, decay: float = 0.01, batch_shrink: int = 2, mean_in_graph: bool = True,
                 style_mixing: bool = False, update_w_avg: bool = False):
        super().__init__()
        if not 0 < decay <= 1:
            raise ValueError(f"PathLengthRegularizer: decay must be in (0, 1], got {decay!r}")
        if isinstance(batch_shrink, bool) or not isinstance(batch_shrink, int) or batch_shrink < 1:
            raise ValueError(f"PathLengthRegularizer: batch_shrink must be an int >= 1, got {batch_shrink!r}")
        self.decay, self.batch_shrink, self.mean_in_graph = float(decay), batch_shrink, bool(mean_in_graph)
        self.style_mixing, self.update_w_avg = bool(style_mixing), bool(update_w_avg)
        self.register_buffer("pl_mean", torch.zeros([]))

    def penalty(self, G: nn.Module, z: torch.Tensor, c: Optional[torch.Tensor] = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(penalty, path_lengths): path_lengths [M] (M = max(1, N // batch_shrink), detached) and
        penalty = mean_i (path_lengths_i - pl_mean)^2 after pl_mean moves toward their mean by
        `decay`; a float32 scalar. z: [N, z_dim]; c: labels [N, ...] for a conditional G, else None.
        The caller multiplies by pl_weight (2 in StyleGAN2)."""
        if not isinstance(z, torch.Tensor) or z.ndim != 2 or z.shape[0] == 0:
            got = list(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
            raise ValueError(f"PathLengthRegularizer.penalty: z must be [N, z_dim] with N >= 1, got {got}")
        n = max(1, z.shape[0] // self.batch_shrink)
        mapping = getattr(G.mapping, "forward", G.mapping)
        kw = {"update_w_avg": self.update_w_avg} if "update_w_avg" in inspect.signature(mapping).parameters else {}
        c = c[:n] if c is not None else None
        ws = G.mapping(z[:n], c, **kw)
        if not isinstance(ws, torch.Tensor) or ws.ndim != 3 or ws.shape[0] != n:
            got = list(ws.shape) if isinstance(ws, torch.Tensor) else type(ws).__name__
            raise ValueError(f"PathLengthRegularizer.penalty: G.mapping must return ws [{n}, num_ws, w_dim], got {got}")
        if self.style_mixing and getattr(G, "style_mixing_prob", 0) > 0:
            ws = G.mix_styles(ws, c, G.style_mixing_prob)
        if not ws.requires_grad:      # a mapping without trainable parameters: the Jacobian is still wrt ws
            ws = ws.detach().requires_grad_(True)
        img = G.synthesis(ws)
        if img.ndim != 4 or img.shape[0] != n:
            raise ValueError(f"PathLengthRegularizer.penalty: G.synthesis must return images [{n}, C, H, W], "
                             f"got {list(img.shape)}")
        img = _at_least_fp32(img)
        noise = torch.randn_like(img) / math.sqrt(img.shape[2] * img.shape[3])
        grad, = torch.autograd.grad((img * noise).sum(), ws, create_graph=True)
        lengths = _at_least_fp32(grad).square().sum(2).mean(1).sqrt()                          # [n]
        pl_mean = self.pl_mean.to(lengths.dtype).lerp(lengths.mean(), self.decay)
        with torch.no_grad():
            self.pl_mean.copy_(pl_mean)
        penalty = (lengths - (pl_mean if self.mean_in_graph else pl_mean.detach())).square().mean()
        return penalty, lengths.detach()

    def extra_repr(self) -> str:
        return (f"decay={self.decay}, batch_shrink={self.batch_shrink}, mean_in_graph={self.mean_in_graph}, "
                f"style_mixing={self.style_mixing}, update_w_avg={self.update_w_avg}")


def _lazy_ratio(interval: Optional[int]) -> float:
    if interval is None or interval == 0:
        return 1.0
    if isinstance(interval, bool) or not isinstance(interval, int) or interval < 0:
        raise ValueError(f"lazy regularization: interval must be None or an int >= 0, got {interval!r}")
    return interval / (interval + 1)


def lazy_optimizer_args(lr: float, betas: tuple[float, float], interval: Optional[int]
                        ) -> tuple[float, tuple[float, float]]:
    """StyleGAN2's optimizer settings for a network whose regularizer runs every `interval` steps
    in a separate optimizer step: with ratio = interval / (interval + 1), lr' = lr * ratio and
    betas' = (beta1 ** ratio, beta2 ** ratio), so the interval + 1 steps behave like interval
    plain ones. interval None or 0: not lazy (lr and betas unchanged)."""
    ratio = _lazy_ratio(interval)
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"lazy_optimizer_args: betas must be a pair (beta1, beta2), got {betas!r}")
    return lr * ratio, (betas[0] ** ratio, betas[1] ** ratio)


class LazySchedule:
    """When a lazy regularizer runs: due(step) for step % interval == 0 (steps counted from 0), with
    its penalty multiplied by `weight` = interval (it stands for `interval` steps). interval None
    or 0: every step, weight 1."""

    def __init__(self, interval: Optional[int]):
        _lazy_ratio(interval)                                   # validates interval
        self.interval = interval or 0

    @property
    def weight(self) -> int:
        return self.interval or 1

    def due(self, step: int) -> bool:
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"LazySchedule.due: step must be an int >= 0, got {step!r}")
        return self.interval == 0 or step % self.interval == 0

    def __repr__(self) -> str:
        return f"LazySchedule(interval={self.interval})"


def orthogonal_regularization(module: nn.Module, beta: float = 1e-4) -> torch.Tensor:
    """BigGAN's orthogonal regularization (Brock et al. 2018, eq. 3), off-diagonal form:
    sum over weights W of beta * ||W W^T * (1 - I)||_F^2, W reshaped to [out, -1] (rows = filters).

    Which weights: every parameter of `module` with ndim >= 2, except those of nn.Embedding layers
    (class embeddings are not filters) and 1-D parameters (biases, gains). For spectral-norm layers
    it is the raw weight (parametrizations.weight.original, what module.parameters() yields), since
    that is what the optimizer updates. Returns a float32 scalar (0 if there is no such weight).

    Gradient convention: this is the paper's value, whose gradient is
    4 beta (W W^T * (1 - I)) W. BigGAN-PyTorch adds 2 beta (W W^T * (1 - I)) W to the gradient
    directly (it differentiates ||.||^2 / 2), so its strength 1e-4 equals beta = 5e-5 here.
    We keep the paper's form because the value is a loss one can log and add to G's loss.
    """
    if not beta >= 0:
        raise ValueError(f"orthogonal_regularization: beta must be >= 0, got {beta!r}")
    embedding_params = {id(p) for m in module.modules() if isinstance(m, nn.Embedding) for p in m.parameters()}
    total = None
    for p in module.parameters():
        if p.ndim < 2 or id(p) in embedding_params:
            continue
        w = _at_least_fp32(p.flatten(1))
        gram = w @ w.t()                                                   # [out, out]
        off_diagonal = gram - torch.diag_embed(gram.diagonal())
        term = off_diagonal.square().sum()
        total = term if total is None else total + term
    if total is None:
        first = next(module.parameters(), None)
        return torch.zeros([], device=first.device if first is not None else None)
    return beta * total
