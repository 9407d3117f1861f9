"""Progressive growing (ProGAN, Karras et al. 2018): the resolution schedule of a growing run.

A run trains a sequence of stages at resolutions 4, 8, ..., R. Every stage but the first begins
with a fade-in: over `fade_kimg` thousand real images the new layers blend in, alpha going
linearly from 0 to 1; then `stable_kimg` thousand images train the stage at alpha 1. The stage at
any point follows from the images seen alone, so a run resumed from a checkpoint continues at
the same stage and alpha (and the checkpoint also records them).

    schedule = GrowthSchedule.paper(1024)               # the paper: 600k fade + 600k stable per stage,
                                                        # batch 16 up to 128^2, then 14, 6, 3
    schedule = GrowthSchedule.scaled(32, stage_kimg=20)  # a small run: 20k fade + 20k stable
    schedule.state_at(nimg) -> GrowthState(index, resolution, alpha)

A model that grows declares it with `set_stage(resolution, alpha)` on G and D (ganfast.models.progan);
the Trainer (TrainingConfig(growth=schedule.to_list())) sets both networks (and G's EMA) before
every step, serves the reals at the stage's resolution (box-filter downsampling, the paper's),
fades the reals in the same way as G's output during a transition, and switches the batch size
and learning rate a stage asks for. Optimizer state is kept for the layers that continue.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["Stage", "GrowthState", "GrowthSchedule", "grow_reals", "PAPER_BATCH"]

# The paper's minibatch per resolution (appendix A.1: 16 up to 128^2, then 14, 6 and 3, for memory).
PAPER_BATCH = {4: 16, 8: 16, 16: 16, 32: 16, 64: 16, 128: 16, 256: 14, 512: 6, 1024: 3}


def _is_power_of_two(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 4 and v & (v - 1) == 0


@dataclass(frozen=True)
class Stage:
    """One stage of a growing run: `resolution`, `fade_kimg` of fade-in (0 for the first stage),
    then `stable_kimg`; `batch` / `lr`: this stage's global batch and learning rate (None: the
    run's)."""
    resolution: int
    fade_kimg: float
    stable_kimg: float
    batch: Optional[int] = None
    lr: Optional[float] = None

    @property
    def nimg(self) -> int:
        return int(round((self.fade_kimg + self.stable_kimg) * 1000))

    @property
    def fade_nimg(self) -> int:
        return int(round(self.fade_kimg * 1000))


@dataclass(frozen=True)
class GrowthState:
    index: int          # the stage's position in the schedule
    resolution: int
    alpha: float        # 1.0 once the fade-in is over (and always in the first stage)


class GrowthSchedule:
    """The stages of a growing run (see the module docstring). The last stage lasts forever: a
    run longer than the schedule keeps training the final resolution."""

    def __init__(self, stages: Sequence[Stage]):
        stages = [s if isinstance(s, Stage) else Stage(**s) for s in stages]
        if not stages:
            raise ValueError("GrowthSchedule: stages must not be empty")
        for i, s in enumerate(stages):
            where = f"GrowthSchedule: stage {i}"
            if not _is_power_of_two(s.resolution):
                raise ValueError(f"{where}: resolution must be a power of two >= 4, got {s.resolution!r}")
            if i and s.resolution != 2 * stages[i - 1].resolution:
                raise ValueError(f"{where}: resolutions must double from stage to stage, got "
                                 f"{stages[i - 1].resolution} then {s.resolution}")
            for name in ("fade_kimg", "stable_kimg"):
                v = getattr(s, name)
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < 0:
                    raise ValueError(f"{where}: {name} must be a number >= 0, got {v!r}")
            if i == 0 and s.fade_kimg:
                raise ValueError(f"{where}: the first stage has nothing to fade from; fade_kimg must be 0, "
                                 f"got {s.fade_kimg}")
            if i and s.fade_nimg == 0 and s.fade_kimg:
                raise ValueError(f"{where}: fade_kimg {s.fade_kimg} is under one image")
            if s.batch is not None and (isinstance(s.batch, bool) or not isinstance(s.batch, int) or s.batch < 1):
                raise ValueError(f"{where}: batch must be None or an int >= 1, got {s.batch!r}")
            if s.lr is not None and (isinstance(s.lr, bool) or not isinstance(s.lr, (int, float)) or not s.lr > 0):
                raise ValueError(f"{where}: lr must be None or a number > 0, got {s.lr!r}")
        self.stages = tuple(stages)
        self._starts = [0]
        for s in self.stages[:-1]:
            self._starts.append(self._starts[-1] + s.nimg)

    # ---- construction ----

    @classmethod
    def scaled(cls, resolution: int, stage_kimg: float, start_resolution: int = 4,
               batch: Optional[Mapping[int, int]] = None, lr: Optional[Mapping[int, float]] = None) -> "GrowthSchedule":
        """Stages start_resolution .. resolution, each `stage_kimg` of fade-in then `stage_kimg`
        stable (the first stage only stable). batch / lr: per-resolution overrides."""
        if not _is_power_of_two(resolution) or not _is_power_of_two(start_resolution) or start_resolution > resolution:
            raise ValueError(f"GrowthSchedule.scaled: resolution and start_resolution must be powers of two >= 4 "
                             f"with start_resolution <= resolution, got {start_resolution} and {resolution}")
        batch, lr = dict(batch or {}), dict(lr or {})
        stages, r = [], start_resolution
        while r <= resolution:
            stages.append(Stage(r, 0.0 if not stages else float(stage_kimg), float(stage_kimg), batch.get(r), lr.get(r)))
            r *= 2
        return cls(stages)

    @classmethod
    def paper(cls, resolution: int, stage_kimg: float = 600.0) -> "GrowthSchedule":
        """The paper's schedule: 600k images of fade-in and 600k stable per stage, from 4x4, with
        its minibatch per resolution (PAPER_BATCH)."""
        return cls.scaled(resolution, stage_kimg, batch={r: b for r, b in PAPER_BATCH.items() if r <= resolution})

    def to_list(self) -> list[dict[str, Any]]:
        """JSON-able stages (what TrainingConfig.growth holds)."""
        return [dataclasses.asdict(s) for s in self.stages]

    @classmethod
    def from_list(cls, stages: Sequence[Mapping[str, Any]]) -> "GrowthSchedule":
        if isinstance(stages, (str, bytes)) or not isinstance(stages, Sequence):
            raise ValueError(f"GrowthSchedule: expected a list of stage dicts, got {type(stages).__name__}")
        out = []
        for i, s in enumerate(stages):
            if not isinstance(s, Mapping):
                raise ValueError(f"GrowthSchedule: stage {i} must be a dict, got {type(s).__name__}")
            unknown = set(s) - {f.name for f in dataclasses.fields(Stage)}
            if unknown or not {"resolution", "fade_kimg", "stable_kimg"} <= set(s):
                raise ValueError(f"GrowthSchedule: stage {i} needs resolution, fade_kimg, stable_kimg (and may have "
                                 f"batch, lr); got keys {sorted(s)}")
            out.append(Stage(**s))
        return cls(out)

    # ---- queries ----

    @property
    def final_resolution(self) -> int:
        return self.stages[-1].resolution

    @property
    def total_kimg(self) -> float:
        """Images until the last stage's stable phase ends, in kimg."""
        return (self._starts[-1] + self.stages[-1].nimg) / 1000

    def start_nimg(self, index: int) -> int:
        return self._starts[index]

    def state_at(self, nimg: int) -> GrowthState:
        """The stage and alpha after `nimg` real images."""
        index = 0
        for i, start in enumerate(self._starts):
            if nimg >= start:
                index = i
        stage = self.stages[index]
        into = nimg - self._starts[index]
        alpha = 1.0 if stage.fade_nimg == 0 or into >= stage.fade_nimg else into / stage.fade_nimg
        return GrowthState(index, stage.resolution, float(alpha))

    def __repr__(self) -> str:
        return f"GrowthSchedule({list(self.stages)!r})"


def grow_reals(x: torch.Tensor, resolution: int, alpha: float) -> torch.Tensor:
    """Real images [N, C, R, R] as a growing run's D sees them at stage (resolution, alpha): box-
    filter downsampled to resolution (average pooling by R / resolution), and during a fade-in
    (alpha < 1) blended with their own half-resolution version upsampled back (nearest), as
    the paper fades G's output: (1 - alpha) * up(down(x)) + alpha * x."""
    if x.ndim != 4 or x.shape[-1] != x.shape[-2]:
        raise ValueError(f"grow_reals: x must be [N, C, R, R], got {list(x.shape)}")
    size = x.shape[-1]
    if resolution > size or size % resolution:
        raise ValueError(f"grow_reals: resolution {resolution} must divide the images' {size}")
    if resolution < size:
        x = F.avg_pool2d(x, size // resolution)
    if alpha < 1.0:
        if resolution < 8:
            raise ValueError(f"grow_reals: a fade-in (alpha {alpha} < 1) needs resolution >= 8, got {resolution}")
        low = F.interpolate(F.avg_pool2d(x, 2), scale_factor=2.0, mode="nearest")
        x = torch.lerp(low, x, alpha) if alpha > 0.0 else low
    return x
