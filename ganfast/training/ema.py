"""Exponential moving average of the generator's weights (G_ema), the StyleGAN2-ADA recipe.

The decay is set by a half-life counted in images, not in steps, so it does not change with the
batch size: after `half_life_kimg * 1000` images the old weights weigh one half. Early in training
a ramp-up shortens the half-life to `rampup * cur_nimg`, so G_ema follows the fast-changing young
generator closely instead of averaging in its random initialisation:

    ema_nimg = half_life_kimg * 1000
    ema_nimg = min(ema_nimg, cur_nimg * rampup)          # only when rampup is not None
    beta     = 0.5 ** (batch_size / max(ema_nimg, 1e-8))
    p_ema    = p + beta * (p_ema - p)                    # = lerp(p, p_ema, beta)

Buffers: by default floating-point buffers (BatchNorm running statistics, spectral-norm vectors,
StyleGAN2's w_avg) are averaged with the same beta, as the ganfast issue asks ("buffers averaged
too"); integer buffers (BatchNorm's num_batches_tracked) are copied, since an average of counters
means nothing. NVlabs StyleGAN2-ADA copies every buffer instead; `average_buffers=False` does that.

Precision: in float32 the average stops moving once a step is under half an ulp, i.e. about
ulp(p) / (2 (1 - beta)) short of a frozen source (~1e-5 relative at beta = 0.998); cast
`ema.module` to float64 where that matters.
"""
from __future__ import annotations

import copy
from typing import Any, Mapping, Optional, Union

import torch
from torch import nn

__all__ = ["EMA", "ema_beta", "unwrap_model", "state_dict_mismatch"]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module inside DistributedDataParallel / DataParallel / torch.compile wrappers
    (their parameter names carry a 'module.' or '_orig_mod.' prefix the bare model lacks)."""
    while True:
        if isinstance(model, (nn.parallel.DistributedDataParallel, nn.DataParallel)):
            model = model.module
        elif isinstance(getattr(model, "_orig_mod", None), nn.Module):   # torch.compile's OptimizedModule
            model = model._orig_mod
        else:
            return model


def state_dict_mismatch(expected: Mapping[str, Any], state_dict: Mapping[str, Any],
                        key_prefix: str = "") -> Optional[str]:
    """Why `state_dict` cannot be loaded strictly into a module whose own state dict is `expected`
    (keys missing or unexpected, tensor shapes that differ), or None. Keys are reported as
    key_prefix + key."""
    missing = [key_prefix + k for k in expected if k not in state_dict]
    unexpected = [key_prefix + k for k in state_dict if k not in expected]
    if missing or unexpected:
        return f"keys absent from the state dict {missing[:5]}, keys the module lacks {unexpected[:5]}"
    for key, value in expected.items():
        got = state_dict[key]
        if isinstance(value, torch.Tensor) and isinstance(got, torch.Tensor) and got.shape != value.shape:
            return f"{key_prefix + key!r} has shape {list(got.shape)} in the state dict, {list(value.shape)} here"
    return None


def ema_beta(cur_nimg: int, batch_size: int, half_life_kimg: float, rampup: Optional[float]) -> float:
    """The decay for one update after `cur_nimg` images seen in total, `batch_size` of them new.
    0 means "copy the source", 1 means "keep the average"."""
    if not batch_size > 0:
        raise ValueError(f"ema_beta: batch_size must be > 0, got {batch_size}")
    if cur_nimg < 0:
        raise ValueError(f"ema_beta: cur_nimg must be >= 0, got {cur_nimg}")
    ema_nimg = half_life_kimg * 1000.0
    if rampup is not None:
        ema_nimg = min(ema_nimg, cur_nimg * rampup)
    return 0.5 ** (batch_size / max(ema_nimg, 1e-8))


class EMA:
    """A moving average of `model`'s parameters (and buffers, see the module docstring).

    `ema.module` is a deep copy of the (unwrapped) model in eval mode with requires_grad off; use it
    for sampling and metrics. Call `update(cur_nimg, batch_size)` after each generator step, with
    cur_nimg the images seen so far, counting this step's. The average lives on the device and in
    the dtype of `ema.module` (move or cast it freely); the source may be anywhere.

    Args:
        model: the generator being trained; DDP / DataParallel / torch.compile wrappers are unwrapped.
        half_life_kimg: half-life of the average in thousands of images (StyleGAN2-ADA: 10).
        rampup: ramp-up ratio (StyleGAN2-ADA: 0.05); None turns the ramp-up off.
        batch_size: the default batch size for `update` (images per generator step, all ranks).
        average_buffers: True averages floating buffers like parameters; False copies every
            buffer (the NVlabs behaviour). Integer buffers are always copied.
    """

    def __init__(self, model: nn.Module, half_life_kimg: float = 10.0, rampup: Optional[float] = 0.05,
                 batch_size: Optional[int] = None, average_buffers: bool = True):
        if not isinstance(model, nn.Module):
            raise ValueError(f"EMA: model must be an nn.Module, got {type(model).__name__}")
        if not half_life_kimg > 0:
            raise ValueError(f"EMA: half_life_kimg must be > 0, got {half_life_kimg}")
        if rampup is not None and not rampup > 0:
            raise ValueError(f"EMA: rampup must be > 0 or None, got {rampup}")
        if batch_size is not None and not batch_size > 0:
            raise ValueError(f"EMA: batch_size must be > 0 or None, got {batch_size}")
        self.source = unwrap_model(model)
        self.half_life_kimg = float(half_life_kimg)
        self.rampup = None if rampup is None else float(rampup)
        self.batch_size = batch_size
        self.average_buffers = bool(average_buffers)
        self.module = copy.deepcopy(self.source).eval().requires_grad_(False)

    def beta(self, cur_nimg: int, batch_size: Optional[int] = None) -> float:
        return ema_beta(cur_nimg, self._batch_size(batch_size), self.half_life_kimg, self.rampup)

    def _batch_size(self, batch_size: Optional[int]) -> int:
        batch_size = self.batch_size if batch_size is None else batch_size
        if batch_size is None:
            raise ValueError("EMA.update: batch_size is required (none was given to EMA(...) either)")
        return batch_size

    def update(self, cur_nimg: int, batch_size: Optional[int] = None) -> float:
        """Move the average towards the source model's current weights; returns the beta used."""
        beta = self.beta(cur_nimg, batch_size)
        self.apply(beta)
        return beta

    @torch.no_grad()
    def apply(self, beta: Union[float, torch.Tensor]) -> None:
        """One update with a given beta: a float, or a 0-dim tensor on the average's device (what
        a CUDA graph replays: the trainer fills it before each replay; the host never reads it)."""
        cast: dict = {}

        def weight(t):
            if not isinstance(beta, torch.Tensor):
                return beta
            if t.dtype not in cast:          # lerp takes a tensor weight in the input's dtype
                cast[t.dtype] = beta.to(t.dtype)
            return cast[t.dtype]

        for name, p_ema, p in _paired(self.module.named_parameters(), self.source.named_parameters(), "parameter"):
            p_ema.copy_(p.detach().to(p_ema).lerp(p_ema, weight(p_ema)))
        for name, b_ema, b in _paired(self.module.named_buffers(), self.source.named_buffers(), "buffer"):
            if self.average_buffers and b_ema.is_floating_point():
                b_ema.copy_(b.to(b_ema).lerp(b_ema, weight(b_ema)))
            else:
                b_ema.copy_(b)

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The averaged module's state dict (what a checkpoint stores; hyperparameters come from
        the config)."""
        return self.module.state_dict()

    def load_state_dict(self, state_dict: Mapping[str, torch.Tensor]) -> None:
        """Strict: the keys and shapes must be those of `self.module` (ValueError names the first
        offending keys)."""
        problem = state_dict_mismatch(self.module.state_dict(), state_dict)
        if problem:
            raise ValueError(f"EMA.load_state_dict: the state does not fit the averaged module: {problem}")
        self.module.load_state_dict(state_dict)

    def __repr__(self) -> str:
        return (f"EMA(half_life_kimg={self.half_life_kimg}, rampup={self.rampup}, batch_size={self.batch_size}, "
                f"average_buffers={self.average_buffers}, module={type(self.module).__name__})")


def _paired(ema_items, source_items, what: str):
    """Yield (name, ema_tensor, source_tensor), raising if the two modules' structures differ
    (e.g. a layer added to the source after the EMA copy was made)."""
    ema_items, source_items = list(ema_items), list(source_items)
    if [n for n, _ in ema_items] != [n for n, _ in source_items]:
        raise ValueError(f"EMA.update: the source model's {what}s no longer match the EMA copy's "
                         f"({len(source_items)} vs {len(ema_items)}); rebuild the EMA after changing the model")
    for (name, t_ema), (_, t) in zip(ema_items, source_items):
        if t_ema.shape != t.shape:
            raise ValueError(f"EMA.update: {what} {name!r} has shape {list(t.shape)} in the source, "
                             f"{list(t_ema.shape)} in the EMA copy")
        yield name, t_ema, t
