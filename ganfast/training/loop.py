"""The GAN training loop: one `Trainer` for every model family, loss and regularizer in
ganfast.training, on one CPU, one GPU or many processes.

One training step (what `Trainer.step` does, and what `step` counts):

    n_critic times:   D main phase   D's loss on a batch of reals and a batch of fakes, plus the
                                     penalties that run every step (WGAN-GP, DRAGAN, R1 when not lazy)
                      D reg phase    lazy R1, every r1_interval D steps (its own optimizer step)
    once:             G main phase   G's loss (+ InfoGAN / ACGAN terms, orthogonal regularization)
                      G reg phase    lazy path length, every pl_interval G steps
                      EMA update of G

Every phase is a separate optimizer step over `batch` images (all processes together), computed as
`batch_gpu`-sized micro-batches whose gradients accumulate. Gradients are then averaged over the
processes in one flat all-reduce (see ganfast.training.distributed), optionally cleaned with
nan_to_num, and checked: a phase whose loss or gradients are not finite is skipped and counted;
`max_bad_steps` such phases in a row stop the run with NonFiniteError after writing a checkpoint
of the last good state. cur_nimg counts the real images D has seen.

No host synchronization in a step. The host decides only what it knows without looking at tensor
values (which phases run: the lazy schedule is static), and nothing in a phase reads a value back:
  - the non-finite check is a device-side flag that makes the optimizer step a no-op on the device
    (ganfast.training.optim), like torch.amp.GradScaler's found-inf; the counters of bad phases and
    the halt after `max_bad_steps` in a row are device tensors too: from the step that reaches the
    limit on, no phase changes the weights or the optimizer state;
  - `step()` returns a StepStats, whose values stay on the device until read (reading one reads
    all, one synchronization); `read_stats()` returns the averages since its last call in one
    read, which is what `ganfast train` does once per tick. NonFiniteError is raised at such a read
    (or at train()'s snapshots and end), the first one after the halt;
  - inputs are copied into static buffers and latents drawn by a generator on the device.
So a phase can be captured once in a CUDA graph and replayed (cuda_graphs=True; ganfast.training.
graphs), and without graphs the host runs ahead of the GPU. amp='fp16' is the exception: the
GradScaler's bookkeeping here reads the scale on the host. tests/training/test_no_host_sync.py
proves it for the StyleGAN2 and BigGAN recipes with every synchronizing entry point made to raise.

Determinism: latents and fake labels come from the trainer's own generator (on the trainer's
device), drawn for the whole global batch and sliced per process; reals come from ganfast.data's
InfiniteSampler at a recorded position; both are checkpointed with the global RNG states, so a
resumed single-process run continues with exactly the losses of an uninterrupted one. With several
processes each rank's global RNG (model noise inputs, penalty sampling) is seeded from (seed, rank,
step).
"""
from __future__ import annotations

import collections
import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional, Union

import torch
from torch import nn
import torch.nn.functional as F

from ganfast.training import losses as L
from ganfast.training.amp import autocast, check_amp, make_grad_scaler
from ganfast.training.augment import AUGMENT_PRESETS, AdaptiveP, AugmentPipe, DiffAugment
from ganfast.training.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from ganfast.training.distributed import (DistributedContext, all_reduce_mean_, broadcast_module_, max_over_ranks,
                                          use_cross_replica_batch_norm)
from ganfast.training.ema import EMA, unwrap_model
from ganfast.training.graphs import PhaseRunner, StaticInputs
from ganfast.training.growing import GrowthSchedule, GrowthState, grow_reals
from ganfast.training.optim import make_optimizer, step_unless
from ganfast.training.regularizers import (LazySchedule, PathLengthRegularizer, dragan_penalty, gradient_penalty,
                                           lazy_optimizer_args, orthogonal_regularization, r1_penalty)
from ganfast.training.tricks import ExperienceReplay

__all__ = ["TrainingConfig", "Trainer", "StepStats", "NonFiniteError", "TRAINING_LOSSES"]

# The losses of the seeds' table. wgan-gp and dragan are a base loss plus a gradient penalty.
TRAINING_LOSSES = ("minimax", "nonsaturating", "wgan", "wgan-gp", "lsgan", "dragan", "hinge", "began")
AUGMENTATIONS = ("none", "ada", "diffaugment")     # TrainingConfig.aug (ganfast.training.augment)
_BASE_LOSS = {"wgan-gp": "wgan", "dragan": "nonsaturating"}
OPTIMIZERS = ("adam", "rmsprop")
CONTENT_LOSSES = ("mse", "classifier", "vgg")      # TrainingConfig.content_loss (SRGAN)


class NonFiniteError(RuntimeError):
    """Raised when `max_bad_steps` phases in a row had a non-finite loss or gradient."""


SCHEDULES = ("ganfast", "nvlabs")


@dataclass
class TrainingConfig:
    """Everything that decides how the networks are trained (saved with every checkpoint).

    batch: images per optimizer step, all processes together. batch_gpu: images per forward pass
    in one process (gradient accumulation when batch > batch_gpu * world_size; default
    batch / world_size).
    lr / betas: Adam's, for both networks unless g_lr / d_lr are given (StyleGAN2: 0.002, (0, 0.99)).
    r1_gamma: R1 weight (loss = gamma / 2 * penalty), lazily every r1_interval D steps (0: every step,
    inside the main phase). pl_weight: path-length weight, every pl_interval G steps (0: every
    step; always a phase of its own; needs a style-based G with .mapping / .synthesis). gp_weight: WGAN-GP / DRAGAN lambda (default 10 for
    loss 'wgan-gp' and 'dragan'). clip: WGAN weight clipping (default 0.01 for loss 'wgan').
    label_smoothing: one-sided, the real label of minimax / nonsaturating becomes 1 - s.
    ortho_beta: BigGAN's orthogonal regularization on G (1e-4 in the paper; 0: off).
    replay_fraction / replay_size: experience replay of old fakes in D's batch.
    aux_weight: ACGAN's classification term; info_weight: InfoGAN's mutual-information term.
    ema_kimg: G EMA half-life in kimg (0: no EMA); ema_rampup: its ramp-up (None: off).
    amp: 'none', 'bf16' or 'fp16' (see ganfast.training.amp). nan_to_num: replace NaN / inf in
    gradients by 0 / +-1e5 instead of skipping the step (NVIDIA's fp16 recipe).
    compile: torch.compile G and D for the main phases (the regularization phases differentiate
    twice, which torch.compile cannot, and run eagerly through the fused ops' double backward).
    cuda_graphs: capture each phase in a CUDA graph after a few eager warm-up calls and replay it
    (ganfast.training.graphs); needs a CUDA device, one process, amp 'none' or 'bf16', and none of
    compile, loss 'began', experience replay, growth.
    drift_weight: ProGAN's drift term, drift_weight * mean(D(real)^2) added to D's loss (the paper's
    epsilon_drift = 0.001 with WGAN-GP; 0: off).
    growth: progressive growing (ganfast.training.growing): GrowthSchedule.to_list() stages; G and
    D must have set_stage(resolution, alpha) (ganfast.models.progan); None: no growing.
    schedule: the order of a step's phases. 'ganfast': D phases, then G phases on the same
    latents for G main and G reg, then the EMA with the images counted so far, this step's
    included. 'nvlabs': stylegan2-ada-pytorch's loop: G main, G reg (its own latents), D main, D reg,
    then the EMA with beta from the images counted before this step.
    pl_style_mixing / pl_update_w_avg: the path-length pass mixes styles / updates G's w average as
    stylegan2-ada-pytorch's does (ganfast.training.regularizers.PathLengthRegularizer).
    ema_average_buffers: G_ema's floating-point buffers averaged with beta (True) or copied from G
    (False: NVIDIA's way; see ganfast.training.ema).
    aug: discriminator augmentation of every image D sees (reals, fakes, the R1 pass; ganfast.training.
    augment): 'none'; 'ada': ADA's AugmentPipe with pipeline aug_pipe ('bgc', ... AUGMENT_PRESETS),
    p starting at aug_p and steered towards E[sign(D(real))] = aug_target every aug_interval D steps
    (p from 0 to 1 in aug_kimg thousand images), or, with aug_target None, fixed at aug_p;
    'diffaugment': DiffAugment with diffaugment_policy. With 'ada' (fixed p too) the tick statistics
    carry aug_p (p at the read) and r_t (E[sign(D(real))] over the tick's D main phases).
    Image-to-image families (ganfast.training.img2img; the other trainers ignore these):
    l1_weight: pix2pix's lambda on |G(x) - y| (100). cycle_weight: CycleGAN's cycle-consistency
    lambda (10; UNIT's cycle reconstruction weight too). identity_weight: CycleGAN's identity loss
    as a fraction of cycle_weight (0.5; 0: off). recon_weight / kl_weight: UNIT's reconstruction (10)
    and KL (0.01) weights (its cycle KL too). adv_weight: SRGAN's adversarial weight (1e-3) next to
    the content loss content_loss ('mse', 'classifier': the shipped Fashion-MNIST classifier's
    features, 'vgg': the TorchScript network in content_weights). pool_size: CycleGAN's history of
    generated images shown to D (50; 0: off). lr_decay: [start_kimg, end_kimg]: both learning rates
    fall linearly from their value at start_kimg to 0 at end_kimg (pix2pix / CycleGAN's second half);
    None: constant.
    """
    loss: str = "nonsaturating"
    batch: int = 32
    batch_gpu: Optional[int] = None
    optimizer: str = "adam"
    lr: float = 0.002
    g_lr: Optional[float] = None
    d_lr: Optional[float] = None
    betas: tuple = (0.0, 0.99)
    n_critic: int = 1
    r1_gamma: float = 0.0
    r1_interval: int = 16
    pl_weight: float = 0.0
    pl_interval: int = 4
    pl_batch_shrink: int = 2
    pl_decay: float = 0.01
    gp_weight: Optional[float] = None
    clip: Optional[float] = None
    label_smoothing: float = 0.0
    ortho_beta: float = 0.0
    replay_fraction: float = 0.0
    replay_size: int = 0
    aux_weight: float = 1.0
    info_weight: float = 1.0
    began_gamma: float = 0.5
    began_lambda_k: float = 1e-3
    ema_kimg: float = 10.0
    ema_rampup: Optional[float] = 0.05
    drift_weight: float = 0.0
    growth: Optional[list] = None
    schedule: str = "ganfast"
    pl_style_mixing: bool = False
    pl_update_w_avg: bool = False
    ema_average_buffers: bool = True
    aug: str = "none"
    aug_pipe: str = "bgc"
    aug_p: float = 0.0
    aug_target: Optional[float] = 0.6
    aug_interval: int = 4
    aug_kimg: float = 500.0
    diffaugment_policy: str = "color,translation,cutout"
    l1_weight: float = 100.0
    cycle_weight: float = 10.0
    identity_weight: float = 0.5
    recon_weight: float = 10.0
    kl_weight: float = 0.01
    adv_weight: float = 1e-3
    content_loss: str = "mse"
    content_weights: Optional[str] = None
    pool_size: int = 50
    lr_decay: Optional[list] = None
    amp: str = "none"
    nan_to_num: bool = False
    max_bad_steps: int = 10
    compile: bool = False
    cuda_graphs: bool = False
    seed: int = 0

    def __post_init__(self):
        self.betas = tuple(self.betas)
        self.validate()

    def validate(self) -> None:
        def bad(name, expected):
            raise ValueError(f"TrainingConfig: {name} must be {expected}, got {getattr(self, name)!r}")

        def is_int(v):
            return isinstance(v, int) and not isinstance(v, bool)

        if self.loss not in TRAINING_LOSSES:
            bad("loss", f"one of {TRAINING_LOSSES}")
        if self.optimizer not in OPTIMIZERS:
            bad("optimizer", f"one of {OPTIMIZERS}")
        check_amp(self.amp)
        for name in ("batch", "n_critic", "pl_batch_shrink", "max_bad_steps"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 1:
                bad(name, "an int >= 1")
        if self.batch_gpu is not None and (not is_int(self.batch_gpu) or self.batch_gpu < 1):
            bad("batch_gpu", "None or an int >= 1")
        for name in ("r1_interval", "pl_interval", "replay_size", "seed"):
            if not is_int(getattr(self, name)) or getattr(self, name) < 0:
                bad(name, "an int >= 0")
        for name in ("lr", "g_lr", "d_lr"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                bad(name, "a number > 0" + (" or None" if name != "lr" else ""))
        if len(self.betas) != 2 or not all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas):
            bad("betas", "a pair of numbers in [0, 1)")
        for name in ("r1_gamma", "pl_weight", "ortho_beta", "aux_weight", "info_weight", "ema_kimg",
                     "began_lambda_k", "drift_weight"):
            v = getattr(self, name)
            if not (isinstance(v, (int, float)) and v >= 0):
                bad(name, "a number >= 0")
        for name in ("gp_weight", "clip", "ema_rampup"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                bad(name, "None or a number > 0")
        if not 0 <= self.label_smoothing < 1:
            bad("label_smoothing", "in [0, 1)")
        if not 0 <= self.replay_fraction <= 1:
            bad("replay_fraction", "in [0, 1]")
        if self.replay_fraction > 0 and self.replay_size < 1:
            bad("replay_size", "an int >= 1 when replay_fraction > 0")
        if not 0 < self.began_gamma <= 1:
            bad("began_gamma", "in (0, 1]")
        if self.label_smoothing and self.base_loss not in ("minimax", "nonsaturating"):
            bad("label_smoothing", f"0 for loss {self.loss!r} (it smooths the sigmoid losses' real label)")
        self._validate_img2img(bad, is_int)
        for name in ("cuda_graphs", "pl_style_mixing", "pl_update_w_avg", "ema_average_buffers"):
            if not isinstance(getattr(self, name), bool):
                bad(name, "True or False")
        if self.schedule not in SCHEDULES:
            bad("schedule", f"one of {SCHEDULES}")
        self._validate_aug(bad, is_int)
        if self.growth is not None:
            try:
                GrowthSchedule.from_list(self.growth)
            except ValueError as e:
                raise ValueError(f"TrainingConfig: growth: {e}") from None
            why = ("compile=True (every stage and alpha change would recompile)" if self.compile
                   else "experience replay (old fakes have an earlier stage's resolution)" if self.replay_fraction > 0
                   else "cuda_graphs=True (the shapes change from stage to stage)" if self.cuda_graphs else None)
            if why:
                raise ValueError(f"TrainingConfig: growth cannot be combined with {why}")
        if self.cuda_graphs:
            # what a captured phase cannot do: host-side bookkeeping on tensor values, or a second
            # graph machinery around the same modules
            why = ("compile=True (torch.compile has its own CUDA graphs: mode='reduce-overhead')" if self.compile
                   else "amp='fp16' (the GradScaler's bookkeeping reads the scale on the host; use 'bf16')"
                   if self.amp == "fp16"
                   else "loss 'began' (its k is updated on the host every step)" if self.loss == "began"
                   else "experience replay (its buffer bookkeeping is on the host)" if self.replay_fraction > 0
                   else None)
            if why:
                raise ValueError(f"TrainingConfig: cuda_graphs=True cannot be combined with {why}")

    def _validate_img2img(self, bad, is_int) -> None:
        for name in ("l1_weight", "cycle_weight", "identity_weight", "recon_weight", "kl_weight", "adv_weight"):
            v = getattr(self, name)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and v >= 0):
                bad(name, "a number >= 0")
        if self.content_loss not in CONTENT_LOSSES:
            bad("content_loss", f"one of {CONTENT_LOSSES}")
        if (self.content_loss == "vgg") != (self.content_weights is not None):
            bad("content_weights", "the path of a TorchScript feature network when content_loss is 'vgg', else None")
        if not is_int(self.pool_size) or self.pool_size < 0:
            bad("pool_size", "an int >= 0")
        if self.lr_decay is not None:
            d = self.lr_decay
            if (not isinstance(d, (list, tuple)) or len(d) != 2
                    or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in d)
                    or not 0 <= d[0] < d[1]):
                bad("lr_decay", "None or [start_kimg, end_kimg] with 0 <= start_kimg < end_kimg")
            self.lr_decay = [float(d[0]), float(d[1])]

    def _validate_aug(self, bad, is_int) -> None:
        if self.aug not in AUGMENTATIONS:
            bad("aug", f"one of {AUGMENTATIONS}")
        if self.aug_pipe not in AUGMENT_PRESETS:
            bad("aug_pipe", f"one of {tuple(AUGMENT_PRESETS)}")
        if not (isinstance(self.aug_p, (int, float)) and not isinstance(self.aug_p, bool) and 0 <= self.aug_p <= 1):
            bad("aug_p", "a number in [0, 1]")
        if self.aug_target is not None and not (isinstance(self.aug_target, (int, float))
                                                and not isinstance(self.aug_target, bool) and 0 <= self.aug_target <= 1):
            bad("aug_target", "None (fixed p) or a number in [0, 1]")
        if not is_int(self.aug_interval) or self.aug_interval < 1:
            bad("aug_interval", "an int >= 1")
        if not (isinstance(self.aug_kimg, (int, float)) and not isinstance(self.aug_kimg, bool) and self.aug_kimg > 0):
            bad("aug_kimg", "a number > 0")
        try:
            DiffAugment(self.diffaugment_policy)
        except ValueError as e:
            raise ValueError(f"TrainingConfig: diffaugment_policy: {e}") from None
        if self.aug != "none" and self.loss == "began":
            bad("aug", "'none' for loss 'began' (its D reconstructs its input; augmenting it changes the task)")

    @property
    def base_loss(self) -> str:
        return _BASE_LOSS.get(self.loss, self.loss)

    @property
    def penalty_weight(self) -> float:
        """WGAN-GP / DRAGAN's lambda (0 for the other losses unless gp_weight is given)."""
        if self.gp_weight is not None:
            return float(self.gp_weight)
        return 10.0 if self.loss in _BASE_LOSS else 0.0

    @property
    def clip_value(self) -> Optional[float]:
        if self.clip is not None:
            return float(self.clip)
        return 0.01 if self.loss == "wgan" else None

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        if self.growth is not None:
            d["growth"] = GrowthSchedule.from_list(self.growth).to_list()     # every stage key, JSON types
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "TrainingConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - names)
        if unknown:
            raise ValueError(f"TrainingConfig.from_dict: unknown keys {unknown}")
        return cls(**dict(d))


class _Progress:
    """The trainer's counters, as a checkpointable object. The counts of non-finite phases live on
    the device, where a phase is found bad; reading them (bad_in_a_row, bad_total, state_dict) is
    a host synchronization, so the step itself never does."""

    _KEYS = ("step", "d_steps", "cur_nimg", "data_position", "bad_in_a_row", "bad_total")

    def __init__(self, device: torch.device):
        self.step = 0            # completed training steps (G steps)
        self.d_steps = 0         # completed D main phases
        self.cur_nimg = 0        # real images shown to D, all processes
        self.data_position = 0   # global position in the data stream (ganfast.data.InfiniteSampler)
        self.bad = torch.zeros(2, dtype=torch.int64, device=device)   # [bad phases in a row, in total]

    @property
    def bad_in_a_row(self) -> int:
        return int(self.bad[0])

    @property
    def bad_total(self) -> int:
        return int(self.bad[1])

    def state_dict(self) -> dict:
        in_a_row, total = self.bad.tolist()
        return {"step": self.step, "d_steps": self.d_steps, "cur_nimg": self.cur_nimg,
                "data_position": self.data_position, "bad_in_a_row": in_a_row, "bad_total": total}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        if set(state) != set(self._KEYS):
            raise ValueError(f"progress state must have keys {sorted(self._KEYS)}, got {sorted(state)}")
        for k in ("step", "d_steps", "cur_nimg", "data_position"):
            setattr(self, k, int(state[k]))
        self.bad[0], self.bad[1] = int(state["bad_in_a_row"]), int(state["bad_total"])


class StepStats(Mapping):
    """One training step's statistics {name: float}: losses (loss_D, loss_G, loss_Dreg, loss_Greg),
    penalties, scores, ema_beta and `skipped` (phases skipped this step for non-finite values),
    averaged over the processes.

    The values stay on the device until one is read; the first read reads them all at once (one
    host synchronization) and raises NonFiniteError if training had halted by the end of this
    step (see Trainer). Compares equal to a dict with the same items."""

    def __init__(self, trainer: "Trainer", names: tuple, values: torch.Tensor, host: Mapping[str, float]):
        # values: [len(names)] statistics, then [skipped, halted]
        self._trainer, self._names, self._values, self._host = trainer, names, values, dict(host)
        self._floats: Optional[dict] = None

    def _read(self) -> dict:
        if self._floats is None:
            got = self._values.tolist()
            n = len(self._names)
            out = dict(self._host)
            for k, v in zip(self._names, got[:n]):
                out[k] = out[k] + v if k in out else v
            self._floats = {**dict(sorted(out.items())), "skipped": got[n]}
            self._trainer._check_halt(got[n + 1])
        return self._floats

    def __getitem__(self, key: str) -> float:
        return self._read()[key]

    def __iter__(self):
        return iter(self._read())

    def __len__(self) -> int:
        return len(self._read())

    def __repr__(self) -> str:
        return f"StepStats({self._read()!r})"

    def __reduce__(self):         # pickled (torch.save, multiprocessing) as the plain dict it reads as
        return dict, (self._read(),)


class _TickStats:
    """Sums of the step statistics since the last read, on the device: one add per step, one host
    read per tick. Steps run different phases (the lazy ones), so each set of names has its own sum."""

    def __init__(self):
        self._sums: dict[tuple, list] = {}              # names -> [sum tensor, steps]
        self._host: dict[str, list] = {}                # host-side values (ema_beta) -> [sum, steps]

    def add(self, names: tuple, values: torch.Tensor, host: Mapping[str, float]) -> None:
        entry = self._sums.get(names)
        if entry is None:
            self._sums[names] = [values.clone(), 1]     # a copy: `values` also backs the step's StepStats
        else:
            entry[0].add_(values)
            entry[1] += 1
        for k, v in host.items():
            h = self._host.setdefault(k, [0.0, 0])
            h[0] += v
            h[1] += 1

    def read(self, extra: torch.Tensor) -> tuple[dict[str, float], list]:
        """({name: mean over the steps that had it}, extra's values), in one host read; resets."""
        flat = torch.cat([s for s, _ in self._sums.values()] + [extra.reshape(-1).to(torch.float32)]).tolist()
        totals: dict[str, list] = {}
        offset = 0
        for names, (_, steps) in self._sums.items():
            for i, (k, v) in enumerate(zip(names, flat[offset:offset + len(names)])):
                t = totals.setdefault(k, [0.0, 0])
                t[0] += v                                   # a name twice in one step: summed, as in StepStats
                t[1] += steps if names.index(k) == i else 0
            offset += len(names)
        for k, (v, steps) in self._host.items():
            totals[k] = [v, steps]
        self._sums, self._host = {}, {}
        means = {k: v / steps for k, (v, steps) in sorted(totals.items()) if steps}
        if "skipped" in means:
            means["skipped"] = means.pop("skipped")
        return means, flat[offset:]

    def clear(self) -> None:
        self._sums, self._host = {}, {}


def _model_kind(D: nn.Module, G: nn.Module) -> str:
    """'infogan' (G.sample_codes + a Q head), 'acgan' (a class head), or 'plain'."""
    if hasattr(D, "forward_aux") and hasattr(G, "sample_codes"):
        return "infogan"
    if hasattr(D, "forward_aux") and getattr(D, "c_dim", 0):
        return "acgan"
    return "plain"


class Trainer:
    """Trains G and D with a TrainingConfig.

    G: G(z [N, z_dim], c=None) -> samples; G.z_dim and G.c_dim (0: unconditional) are read.
    D: D(x, c=None) -> logits [N] (for loss 'began', D is an autoencoder returning x's reconstruction).
    data: a map-style dataset whose items are (x, label) (ganfast.data's datasets; labels are used
    when G.c_dim > 0), read through ganfast.data.batch_iterator; or a callable
    `data(start, rank, world_size, batch_size) -> iterator of (x [b, ...], labels [b])` that
    follows the same stream contract (InfiniteSampler).
    run_dir: where checkpoints go (None: no checkpoints). run_config: extra JSON-able description
    stored with each checkpoint (e.g. the preset name and its overrides), checked on resume.
    ctx: a DistributedContext (ganfast.training.distributed.init_distributed); default one CPU
    process, or `device`'s single process.

    Use: `trainer.step()` runs one training step and returns its stats (a StepStats: floats once
    read); `trainer.read_stats()` averages them since its last call; `trainer.train(steps=...,
    kimg=..., snap_steps=..., callback=...)` loops with checkpoints; `trainer.resume("auto")`
    continues from the newest complete checkpoint in run_dir.
    """

    def __init__(self, G: nn.Module, D: nn.Module, data, config: Optional[TrainingConfig] = None, *,
                 run_dir: Optional[Union[str, Path]] = None, run_config: Optional[Mapping[str, Any]] = None,
                 device: Union[str, torch.device, None] = None, ctx: Optional[DistributedContext] = None,
                 keep_checkpoints: int = 3, num_workers: int = 0):
        self.config = cfg = config if config is not None else TrainingConfig()
        if not isinstance(cfg, TrainingConfig):
            raise ValueError(f"Trainer: config must be a TrainingConfig, got {type(cfg).__name__}")
        cfg.validate()
        if ctx is None:
            ctx = DistributedContext(device=torch.device(device) if device is not None else torch.device("cpu"))
        elif device is not None and torch.device(device) != ctx.device:
            raise ValueError(f"Trainer: device {device!r} differs from the distributed context's {ctx.device}")
        self.ctx, self.device = ctx, ctx.device
        if cfg.cuda_graphs and self.device.type != "cuda":
            raise ValueError(f"Trainer: cuda_graphs=True (ganfast train --cuda-graphs) needs a CUDA device; this "
                             f"trainer runs on {self.device}")
        if cfg.cuda_graphs and ctx.distributed:
            raise ValueError("Trainer: cuda_graphs=True is single-process for now (the gradient all-reduce is not "
                             "captured); run without --cuda-graphs under torchrun")
        for name, net in (("G", G), ("D", D)):
            if not isinstance(net, nn.Module):
                raise ValueError(f"Trainer: {name} must be an nn.Module, got {type(net).__name__}")
        if not hasattr(G, "z_dim"):
            raise ValueError("Trainer: G must have a z_dim attribute (the latent size)")
        self.G, self.D = G.to(self.device).train(), D.to(self.device).train()
        self.z_dim, self.c_dim = int(G.z_dim), int(getattr(G, "c_dim", 0) or 0)
        # reals and latents take G's parameter dtype (float32 normally; float64 for exact comparisons)
        self.dtype = next(G.parameters()).dtype
        self.kind = _model_kind(self.D, self.G)
        if cfg.pl_weight and not (hasattr(G, "mapping") and hasattr(G, "synthesis")):
            raise ValueError("Trainer: pl_weight > 0 needs a style-based G (with .mapping and .synthesis)")

        self.growth = GrowthSchedule.from_list(cfg.growth) if cfg.growth is not None else None
        self.growth_state: Optional[GrowthState] = None
        if self.growth is not None:
            for name, net in (("G", G), ("D", D)):
                if not callable(getattr(net, "set_stage", None)):
                    raise ValueError(f"Trainer: growth needs a growing {name} (with set_stage(resolution, alpha), "
                                     f"e.g. ganfast.models.progan); {type(net).__name__} has none")
            if self.growth.final_resolution != getattr(G, "img_resolution", None):
                raise ValueError(f"Trainer: the growth schedule ends at {self.growth.final_resolution}x"
                                 f"{self.growth.final_resolution}, but G makes {getattr(G, 'img_resolution', None)}")
            for stage in self.growth.stages:
                self._batch_layout(stage.batch or cfg.batch)       # every stage's batch checked up front
        self._set_batch(cfg.batch)

        if ctx.distributed:
            broadcast_module_(self.G, ctx)
            broadcast_module_(self.D, ctx)

        # Lazy regularization (StyleGAN2): the phase's optimizer settings absorb the extra steps.
        self.r1_lazy = cfg.r1_gamma > 0 and cfg.r1_interval > 0 and cfg.loss != "began"
        self.pl_lazy = cfg.pl_weight > 0 and cfg.pl_interval > 0
        self.r1_schedule = LazySchedule(cfg.r1_interval if self.r1_lazy else None)
        self.pl_schedule = LazySchedule(cfg.pl_interval if self.pl_lazy else None)
        self.opt_G = self._optimizer(self.G, cfg.g_lr or cfg.lr, cfg.pl_interval if self.pl_lazy else None)
        self.opt_D = self._optimizer(self.D, cfg.d_lr or cfg.lr, cfg.r1_interval if self.r1_lazy else None)
        self.scaler_G = make_grad_scaler(cfg.amp, self.device)
        self.scaler_D = make_grad_scaler(cfg.amp, self.device)
        self.pl = (PathLengthRegularizer(cfg.pl_decay, cfg.pl_batch_shrink, style_mixing=cfg.pl_style_mixing,
                                         update_w_avg=cfg.pl_update_w_avg).to(self.device) if cfg.pl_weight else None)
        self.began = L.BEGANLoss(cfg.began_gamma, cfg.began_lambda_k) if cfg.loss == "began" else None
        self.replay = ExperienceReplay(cfg.replay_size) if cfg.replay_fraction > 0 else None
        self.ema = (EMA(self.G, cfg.ema_kimg, cfg.ema_rampup, batch_size=self.batch,
                        average_buffers=cfg.ema_average_buffers) if cfg.ema_kimg > 0 else None)
        if ctx.distributed:
            # after the EMA's deep copy: a ProcessGroup cannot be deep-copied (and G_ema, in eval
            # mode, normalizes with running statistics, so it needs no group)
            use_cross_replica_batch_norm([self.G, self.D], ctx)
        # on the device: latents are drawn there, with no host-to-device copy (and on the CPU this
        # is the CPU generator, so CPU runs draw what they always drew)
        self.latents = torch.Generator(device=self.device).manual_seed(cfg.seed)
        self.progress = _Progress(self.device)
        self.G_main = torch.compile(self.G) if cfg.compile else self.G
        self.D_main = torch.compile(self.D) if cfg.compile else self.D
        self.augment, self.ada = self._augmentation()

        # Device-side bookkeeping of non-finite phases (see the module docstring).
        self._step_bad = torch.zeros((), dtype=torch.int64, device=self.device)     # bad phases this step
        self._halted = torch.zeros((), dtype=torch.bool, device=self.device)
        self._halt_info = torch.zeros(2, dtype=torch.int64, device=self.device)     # [step, bad in a row] at the halt
        self._step_now = torch.zeros((), dtype=torch.int64, device=self.device)
        self._bad_by_phase: dict[str, torch.Tensor] = {}
        self._stop_message: Optional[str] = None
        self._tick = _TickStats()
        self._inputs = StaticInputs()
        self._phases = {name: PhaseRunner(name, fn, self.device, cfg.cuda_graphs)
                        for name, fn in (("D main", self._d_main), ("D reg", self._d_reg), ("G main", self._g_main),
                                         ("G reg", self._g_reg), ("EMA", self._ema_phase))}

        self.data = data
        self._batches: Optional[Iterator] = None
        self._num_workers = num_workers
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.run_config = dict(run_config or {})
        self.keep_checkpoints = keep_checkpoints
        self.last_checkpoint: Optional[Path] = None
        self._saved_step: Optional[int] = None     # the step of the last save / resume, on every rank
        # wall seconds of each phase call ('D main', 'D reg', 'G main', 'G reg', 'EMA'), for
        # benchmarks and sec/kimg breakdowns; CUDA work is synchronized only when profile_phases is set
        self.phase_seconds: dict[str, collections.deque] = {}      # the last 1000 calls per phase
        self.profile_phases = False
        # The global RNG draws noise inputs, style-mixing cutoffs and regularizer noise: seeded
        # from config.seed (and the rank), so a run is fixed by its seed whatever ran before it in
        # this process (as NVIDIA's training loop does). A resume restores the saved state instead.
        self._seed_global_rng()
        self._apply_growth()

    # ---- set-up helpers ----

    def _batch_layout(self, batch: int) -> tuple[int, int, int]:
        """(local batch, batch_gpu, accumulation steps) of a global batch, checked."""
        world = self.ctx.world_size
        if batch % world:
            raise ValueError(f"Trainer: batch ({batch}) must be divisible by the number of processes ({world})")
        local = batch // world
        batch_gpu = min(self.config.batch_gpu or local, local)
        if local % batch_gpu:
            raise ValueError(f"Trainer: batch per process ({local}) must be divisible by batch_gpu ({batch_gpu})")
        return local, batch_gpu, local // batch_gpu

    def _set_batch(self, batch: int) -> None:
        """Make `batch` the global batch of the following steps (a growing run's stage may change it)."""
        self.local_batch, self.batch_gpu, self.num_accumulation = self._batch_layout(batch)
        self.batch = batch
        if getattr(self, "ema", None) is not None:
            self.ema.batch_size = batch

    def _apply_growth(self) -> None:
        """Growing runs: set the stage and alpha of the images seen so far on G, D and G's EMA; at a
        new stage also its batch and learning rate (and fresh input buffers: the shapes change).
        Host-side arithmetic on the image count only: nothing is read from the device."""
        if self.growth is None:
            return
        state = self.growth.state_at(self.progress.cur_nimg)
        if state == self.growth_state:
            return
        nets = [unwrap_model(self.G), unwrap_model(self.D)] + ([self.ema.module] if self.ema is not None else [])
        for net in nets:
            net.set_stage(state.resolution, state.alpha)
        if self.growth_state is None or state.index != self.growth_state.index:
            cfg, stage = self.config, self.growth.stages[state.index]
            batch = stage.batch or cfg.batch
            if batch != self.batch:
                self._set_batch(batch)
                self._batches = None               # the loader restarts at the same position with the new batch
            for opt, base, interval in ((self.opt_G, cfg.g_lr or cfg.lr, cfg.pl_interval if self.pl_lazy else None),
                                        (self.opt_D, cfg.d_lr or cfg.lr, cfg.r1_interval if self.r1_lazy else None)):
                lr, _ = lazy_optimizer_args(stage.lr or base, cfg.betas, interval)
                for group in opt.param_groups:
                    group["lr"] = lr
            self._inputs = StaticInputs()          # a stage's inputs have its own shapes
        self.growth_state = state

    def _optimizer(self, net: nn.Module, lr: float, lazy_interval: Optional[int]) -> torch.optim.Optimizer:
        cfg = self.config
        params = [p for p in net.parameters() if p.requires_grad]
        if not params:
            raise ValueError(f"Trainer: {type(net).__name__} has no trainable parameters")
        # lazy scaling: lr for both; betas for Adam only (RMSprop is WGAN's optimizer)
        lr, betas = lazy_optimizer_args(lr, cfg.betas, lazy_interval)
        return make_optimizer(cfg.optimizer, params, lr, betas, self.device, capturable=cfg.cuda_graphs)

    def _augmentation(self):
        """(the module every image D sees goes through, or None; the ADA controller, or None)."""
        cfg = self.config
        if cfg.aug == "diffaugment":
            return DiffAugment(cfg.diffaugment_policy).to(self.device), None
        if cfg.aug != "ada":
            return None, None
        pipe = AugmentPipe.preset(cfg.aug_pipe, p=cfg.aug_p).to(self.device)
        if cfg.aug_target is None:          # fixed p
            return pipe, None
        return pipe, AdaptiveP(pipe, cfg.aug_target, cfg.aug_interval, cfg.aug_kimg)

    def _aug(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x) if self.augment is not None else x

    def _D_aug(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        """D of the augmented images, for the gradient penalties: their gradient is taken with respect
        to the un-augmented input, through the augmentation (NVIDIA's R1 with ADA)."""
        return self.D(self._aug(x), c)

    def _seed_global_rng(self) -> None:
        seed = (self.config.seed * 1_000_003 + self.ctx.rank * 7_919 + self.progress.step) % (2 ** 63)
        torch.manual_seed(seed)

    def _next_real(self) -> None:
        """Copy this process's share [local_batch, ...] of the next global batch of reals (and
        labels) into the static inputs 'real' / 'c_real' (without blocking the host: on CUDA the
        loader's batches are pinned)."""
        if self._batches is None:
            start = self.progress.data_position
            if callable(self.data) and not isinstance(self.data, torch.utils.data.Dataset):
                self._batches = iter(self.data(start, self.ctx.rank, self.ctx.world_size, self.local_batch))
            else:
                from ganfast.data import batch_iterator
                self._batches = batch_iterator(self.data, self.local_batch, seed=self.config.seed,
                                               rank=self.ctx.rank, world_size=self.ctx.world_size, start=start,
                                               num_workers=self._num_workers,
                                               pin_memory=self.device.type == "cuda")
        x, labels = next(self._batches)
        self.progress.data_position += self.batch
        if self.growth_state is not None:         # a growing run: the stage's resolution, faded in like G's output
            x = grow_reals(x.to(self.device, self.dtype, non_blocking=True), self.growth_state.resolution,
                           self.growth_state.alpha)
        self._inputs.fill("real", x, self.dtype, self.device)
        self._inputs.fill("c_real", labels if self.c_dim else None, device=self.device)

    def _next_latents(self) -> None:
        """Draw this process's share of a global batch of latents (and fake labels / InfoGAN codes)
        into the static inputs 'z' / 'c_fake' / 'codes', from the trainer's generator on the
        device, so every process (of one device type) draws the same global batch."""
        B, b, r = self.batch, self.local_batch, self.ctx.rank
        part = slice(r * b, (r + 1) * b)
        z = torch.randn(B, self.z_dim, generator=self.latents, device=self.device)[part]
        c = torch.randint(self.c_dim, (B,), generator=self.latents, device=self.device)[part] if self.c_dim else None
        codes = None
        if self.kind == "infogan":
            g = unwrap_model(self.G)
            codes = {k: v[part] for k, v in g.sample_codes(B, device=self.device, generator=self.latents).items()}
        self._inputs.fill("z", z, self.dtype)
        self._inputs.fill("c_fake", c)
        self._inputs.fill("codes", codes)

    # ---- the phases ----
    #
    # Each phase is a method of no arguments that reads its inputs from self._inputs and returns
    # {stat name: 0-dim tensor}; self._phases runs it (eagerly, or as a CUDA graph). Nothing in a
    # phase reads a tensor value on the host.

    def _micro(self, tensors, i):
        m = self.batch_gpu
        if tensors is None:
            return None
        if isinstance(tensors, dict):
            return {k: v[i * m:(i + 1) * m] for k, v in tensors.items()}
        return tensors[i * m:(i + 1) * m]

    def _generate(self, G, z, c, codes):
        return G(z, c, codes=codes) if codes is not None else G(z, c)

    def _autocast(self):
        # a captured phase casts its weights afresh on every replay (autocast's cache would keep
        # casts made at capture time)
        return autocast(self.config.amp, self.device, cache_enabled=not self.config.cuda_graphs)

    def _run_phase(self, name: str, net: nn.Module, opt, scaler, micro_loss: Callable[[int], tuple]) -> dict:
        """Accumulate micro_loss(i) -> (loss, stats) over the micro-batches, then reduce, check and
        step. Returns the phase's stats (losses averaged over micro-batches, as tensors)."""
        cfg = self.config
        opt.zero_grad(set_to_none=True)
        total, stats = None, {}
        for i in range(self.num_accumulation):
            with self._autocast():
                loss, s = micro_loss(i)
            loss = loss.float() / self.num_accumulation
            (scaler.scale(loss) if scaler is not None else loss).backward()
            total = loss.detach() if total is None else total + loss.detach()
            for k, v in s.items():
                v = v.detach().float() / self.num_accumulation
                stats[k] = v if k not in stats else stats[k] + v
        stats[name] = total
        bad = self._reduce_and_check(opt, scaler, total)
        skip = bad | self._halted
        if scaler is None:
            self._count_bad(name, bad)
            step_unless(opt, skip)
            return stats
        # fp16: an overflow (inf / NaN gradients, or a NaN loss from an overflowing R1 inner
        # gradient) is routine while the scale settles; the scaler skips the step and halves the
        # scale. It counts as a bad phase only once the scale has fallen below 1, where overflow no
        # longer explains it. This bookkeeping reads the scale on the host (fp16 only).
        scale = scaler.get_scale()
        grad = next(g for grp in opt.param_groups for g in grp["params"] if g.grad is not None).grad
        grad.copy_(torch.where(skip, math.nan, grad))    # make sure the scaler sees a skip it did not find itself
        scaler.step(opt)
        scaler.update()
        if scaler.get_scale() < scale and scale < 1:
            self._count_bad(name, 1)
        return stats

    def _reduce_and_check(self, opt, scaler, loss: torch.Tensor) -> torch.Tensor:
        """All-reduce the gradients and the loss in one flat buffer; clean or check them. Returns
        `bad`, a 0-dim bool tensor: True when the loss, or (unless nan_to_num or a GradScaler
        handles them) a gradient, is not finite. Decided on the device; nothing is read back."""
        cfg = self.config
        params = [p for g in opt.param_groups for p in g["params"]]
        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.flatten().float() for g in grads] + [loss.reshape(1).float()])
        all_reduce_mean_(flat, self.ctx)
        if scaler is None and cfg.nan_to_num:
            flat[:-1].nan_to_num_(nan=0.0, posinf=1e5, neginf=-1e5)
        # overflowing gradients are the scaler's business (it skips the step); nan_to_num cleaned them
        checked = flat[-1:] if (scaler is not None or cfg.nan_to_num) else flat
        bad = ~torch.isfinite(checked).all()
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n
        return bad

    def _count_bad(self, name: str, bad: Union[torch.Tensor, int]) -> None:
        counter = self._bad_by_phase.get(name)
        if counter is None:       # created by a phase's first (eager) call, before any capture
            counter = self._bad_by_phase[name] = torch.zeros((), dtype=torch.int64, device=self.device)
        counter.add_(bad)
        self._step_bad.add_(bad)

    def _d_main(self) -> dict:
        cfg, D, G = self.config, self.D_main, self.G_main
        reals, c_real = self._inputs["real"], self._inputs["c_real"]
        z, c_fake, codes = self._inputs["z"], self._inputs["c_fake"], self._inputs["codes"]
        r1_every_step = cfg.r1_gamma > 0 and not self.r1_lazy and cfg.loss != "began"
        with torch.no_grad():
            with self._autocast():
                fake_all = self._generate(G, z, c_fake, codes).float()
        if self.replay is not None:
            mixed = self.replay.mix(fake_all, cfg.replay_fraction)
            self.replay.push(fake_all)
            fake_all = mixed

        def micro(i):
            real, fake = self._micro(reals, i), self._micro(fake_all, i)
            cr, cf = self._micro(c_real, i), self._micro(c_fake, i)
            stats, real_logits, aux_real, aux_fake = {}, None, None, None
            if cfg.loss == "began":
                loss, s = self.began.d_loss(real, D(real), fake, D(fake))
                return loss, {"l_real": s["l_real"], "l_fake": s["l_fake"]}
            d_in = self._D_aug if self.augment is not None else self.D
            if r1_every_step:    # R1's pass also gives the real logits (the plain D: differentiated twice)
                stats["r1"], real_logits = r1_penalty(d_in, real, cr, scaler=self.scaler_D)
            if self.kind == "plain":
                real_logits = D(self._aug(real), cr) if real_logits is None else real_logits
                fake_logits = D(self._aug(fake), cf)
            else:
                real_logits, aux_real = D.forward_aux(self._aug(real), cr)
                fake_logits, aux_fake = D.forward_aux(self._aug(fake), cf)
            loss = L.d_loss(cfg.base_loss, real_logits, fake_logits, real_label=1.0 - cfg.label_smoothing)
            if cfg.drift_weight:                # ProGAN: keeps D's output near 0 (WGAN-GP has no other anchor)
                stats["drift"] = real_logits.float().square().mean()
                loss = loss + cfg.drift_weight * stats["drift"]
            if r1_every_step:
                loss = loss + (cfg.r1_gamma / 2) * stats["r1"]
            if cfg.penalty_weight:
                if cfg.loss == "dragan":
                    pen = dragan_penalty(d_in, real, cr, scaler=self.scaler_D)
                else:
                    pen = gradient_penalty(d_in, real, fake, cr, scaler=self.scaler_D)
                stats["gp"] = pen
                loss = loss + cfg.penalty_weight * pen
            if self.kind == "acgan":
                aux = (F.cross_entropy(aux_real["class_logits"].float(), cr)
                       + F.cross_entropy(aux_fake["class_logits"].float(), cf))
                stats["aux"] = aux
                loss = loss + cfg.aux_weight * aux
            elif self.kind == "infogan":
                from ganfast.models.conditional import info_loss
                info = info_loss(aux_fake, self._micro(codes, i))
                stats["info"] = info
                loss = loss + cfg.info_weight * info
            stats["real_score"], stats["fake_score"] = real_logits.float().mean(), fake_logits.float().mean()
            if isinstance(self.augment, AugmentPipe):     # ADA's overfitting heuristic, E[sign(D(real))]
                stats["r_t"] = real_logits.detach().float().sign().mean()
            return loss, stats

        stats = self._run_phase("loss_D", self.D, self.opt_D, self.scaler_D, micro)
        if cfg.loss == "began":        # BEGAN's k is controlled on the host (not sync-free)
            stats["M"] = torch.tensor(self.began.update(stats["l_real"], stats["l_fake"]))
            stats["k"] = torch.tensor(self.began.k)
        clip = cfg.clip_value
        if clip is not None:
            L.clip_weights_(self.D, clip)
        return stats

    def _d_reg(self) -> dict:
        cfg = self.config
        real, c_real = self._inputs["real"], self._inputs["c_real"]

        def micro(i):
            d_in = self._D_aug if self.augment is not None else self.D
            penalty, logits = r1_penalty(d_in, self._micro(real, i), self._micro(c_real, i), scaler=self.scaler_D)
            # the logits' zero-weighted term keeps every D parameter in the graph (no None gradients)
            loss = penalty * (cfg.r1_gamma / 2) * self.r1_schedule.weight + logits.float().sum() * 0
            return loss, {"r1": penalty}

        return self._run_phase("loss_Dreg", self.D, self.opt_D, self.scaler_D, micro)

    def _g_main(self) -> dict:
        cfg, G, D = self.config, self.G_main, self.D_main
        z, c_fake, codes = self._inputs["z"], self._inputs["c_fake"], self._inputs["codes"]

        def micro(i):
            zi, ci, codes_i = self._micro(z, i), self._micro(c_fake, i), self._micro(codes, i)
            fake = self._generate(G, zi, ci, codes_i)
            stats = {}
            if cfg.loss == "began":
                return self.began.g_loss(fake, D(fake)), stats
            if self.kind == "plain":
                logits, aux = D(self._aug(fake), ci), None
            else:
                logits, aux = D.forward_aux(self._aug(fake), ci)
            loss = L.g_loss(cfg.base_loss, logits)
            if self.kind == "acgan":
                stats["aux_G"] = F.cross_entropy(aux["class_logits"].float(), ci)
                loss = loss + cfg.aux_weight * stats["aux_G"]
            elif self.kind == "infogan":
                from ganfast.models.conditional import info_loss
                stats["info_G"] = info_loss(aux, codes_i)
                loss = loss + cfg.info_weight * stats["info_G"]
            if cfg.ortho_beta:
                stats["ortho"] = orthogonal_regularization(unwrap_model(self.G), cfg.ortho_beta)
                loss = loss + stats["ortho"]      # once per phase: _run_phase divides each micro-batch's share
            return loss, stats

        return self._run_g_phase(micro)

    def _run_g_phase(self, micro_loss: Callable[[int], tuple]) -> dict:
        """G's main phase ('loss_G'): D's parameters frozen while G's loss is differentiated, so
        no gradient is written into D."""
        self.D.requires_grad_(False)
        try:
            return self._run_phase("loss_G", self.G, self.opt_G, self.scaler_G, micro_loss)
        finally:
            self.D.requires_grad_(True)

    def _g_reg(self) -> dict:
        cfg = self.config
        z, c_fake = self._inputs["z"], self._inputs["c_fake"]

        def micro(i):
            penalty, lengths = self.pl.penalty(self.G, self._micro(z, i), self._micro(c_fake, i))
            return penalty * cfg.pl_weight * self.pl_schedule.weight, {"pl": penalty, "pl_length": lengths.mean()}

        return self._run_phase("loss_Greg", self.G, self.opt_G, self.scaler_G, micro)

    def _ema_phase(self) -> dict:
        self.ema.apply(self._inputs["ema_beta"])
        return {}

    # ---- one step ----

    def step(self) -> StepStats:
        """One training step (n_critic D steps, one G step, the lazy regularizers when due, the
        EMA update). Returns its StepStats: losses, penalties, scores, ema_beta and `skipped`
        (phases skipped for non-finite values this step), averaged over the processes, on the
        device until read. The step itself makes no host synchronization (but for amp='fp16')."""
        cfg, p = self.config, self.progress
        self._apply_growth()
        self._step_bad.zero_()
        parts: dict[str, list] = {}            # phase -> [stat names, values] summed over its calls this step

        def run(phase: str, scale: float = 1.0):
            names, values = self._timed(phase, self._phases[phase])
            if values is None:
                return
            values = values * scale if scale != 1.0 else values
            if phase in parts:
                parts[phase][1] = parts[phase][1] + values
            else:
                parts[phase] = [names, values]

        nvlabs = cfg.schedule == "nvlabs"
        ema_nimg = p.cur_nimg                  # 'nvlabs': the EMA's ramp-up counts the images before this step

        def g_phases():
            self._next_latents()
            run("G main")
            if self.pl is not None and self.pl_schedule.due(p.step):
                if nvlabs:                     # NVIDIA draws each phase's latents afresh
                    self._next_latents()
                run("G reg")

        if nvlabs:
            g_phases()
        for _ in range(cfg.n_critic):
            self._next_real()
            self._next_latents()
            run("D main", 1.0 / cfg.n_critic)
            if self.r1_lazy and self.r1_schedule.due(p.d_steps):
                run("D reg")
            p.d_steps += 1
            p.cur_nimg += self.batch
        if not nvlabs:
            g_phases()
        host = {}
        if self.ema is not None:
            host["ema_beta"] = self.ema.beta(ema_nimg if nvlabs else p.cur_nimg, self.batch)
            self._inputs.fill_scalar("ema_beta", host["ema_beta"], torch.float64, self.device)
            run("EMA")
        p.step += 1

        names, stats = self._gather_stats(parts.values())
        if self.ada is not None and "r_t" in names:      # this step's D steps, averaged over the processes
            self.ada.observe(stats[names.index("r_t")], cfg.n_critic, cfg.n_critic * self.batch)
        return self._finish_step(names, stats, host)

    def _gather_stats(self, parts) -> tuple[tuple, torch.Tensor]:
        """(names, values) of a step's phases ([stat names, values] each), averaged over the processes."""
        names = tuple(n for stat_names, _ in parts for n in stat_names)
        stats = torch.cat([values for _, values in parts])
        all_reduce_mean_(stats, self.ctx)
        return names, stats

    def _finish_step(self, names: tuple, stats: torch.Tensor, host: Mapping[str, float]) -> StepStats:
        """The step's StepStats: its gathered stats, then `skipped` and the halt flag (the device
        counters of non-finite phases updated); the tick's sums take them too."""
        values = torch.cat([stats, self._end_of_step()])
        self._tick.add(names + ("skipped",), values[:len(names) + 1], host)
        return StepStats(self, names, values, host)

    def _end_of_step(self) -> torch.Tensor:
        """Update the device counters of non-finite phases (bad in a row, reset by a clean step;
        in total) and the halt flag; returns [skipped, halted] as float32."""
        bad, counts = self._step_bad, self.progress.bad
        counts[0] = torch.where(bad > 0, counts[0] + bad, 0)
        counts[1] += bad
        newly = (counts[0] >= self.config.max_bad_steps) & ~self._halted
        now = torch.stack([self._step_now.fill_(self.progress.step), counts[0]])
        self._halt_info.copy_(torch.where(newly, now, self._halt_info))
        self._halted |= newly
        return torch.stack([bad, self._halted]).float()

    @property
    def captured_phases(self) -> list[str]:
        """The phases replayed from a CUDA graph (cuda_graphs=True, after their warm-up calls)."""
        return [name for name, runner in self._phases.items() if runner.captured]

    def read_stats(self) -> dict[str, float]:
        """The step statistics averaged over the steps since the last call, each over the steps
        that had it (loss_Dreg: the lazy R1 steps), `skipped` the mean per step; ema_beta the mean.
        One host read: `ganfast train` calls it once per tick. Raises NonFiniteError when training
        has halted on non-finite values."""
        p = self.augment.p if isinstance(self.augment, AugmentPipe) else None
        means, read = self._tick.read(self._halted if p is None else torch.stack([self._halted.float(), p.float()]))
        self._check_halt(read[0])
        if p is not None:
            means["aug_p"] = read[1]            # p at this read (r_t, from the D main phases, is the tick's mean)
        return means

    def check_finite(self) -> None:
        """Raise NonFiniteError if training has halted on non-finite values (one host read)."""
        self._check_halt(self._halted.tolist())

    def _timed(self, name: str, fn, *args):
        sync = self.profile_phases and self.device.type == "cuda"
        if sync:
            torch.cuda.synchronize(self.device)
        t0 = time.perf_counter()
        out = fn(*args)
        if sync:
            torch.cuda.synchronize(self.device)
        self.phase_seconds.setdefault(name, collections.deque(maxlen=1000)).append(time.perf_counter() - t0)
        return out

    def _check_halt(self, halted: Union[float, bool]) -> None:
        """Called with the halt flag just read from the device."""
        if halted:
            self._stop_non_finite()

    def _stop_non_finite(self) -> None:
        if self._stop_message is None:       # once: later reads raise the same error without saving again
            p = self.progress
            names = sorted(self._bad_by_phase)
            counts = torch.stack([self._bad_by_phase[n] for n in names]).tolist() if names else []
            bad = ", ".join(f"{n} {c}" for n, c in zip(names, counts) if c) or "none recorded"
            halt_step, in_a_row = self._halt_info.tolist()
            finite = all(bool(torch.isfinite(t).all()) for net in (self.G, self.D) for t in net.parameters())
            saved = None
            if finite and self.run_dir is not None:
                saved = self.save()
            where = (f"the last good state was saved as {saved}" if saved is not None else
                     f"the last checkpoint is {self.last_checkpoint}" if self.last_checkpoint is not None else
                     "no checkpoint was written (no run_dir)")
            self._stop_message = (
                f"training stopped at step {halt_step}: {in_a_row} phases in a row had a non-finite loss or gradient "
                f"(phases skipped so far: {bad}; max_bad_steps={self.config.max_bad_steps}); skipped steps do not "
                f"change the weights and none changed them after step {halt_step} (this was noticed at step "
                f"{p.step}), so {where}. Lower the learning rate, use amp='bf16' rather than 'fp16', or set "
                f"nan_to_num=True")
        raise NonFiniteError(self._stop_message)

    # ---- checkpoints ----

    def checkpoint_objects(self) -> dict[str, Any]:
        objects: dict[str, Any] = {"G": unwrap_model(self.G), "D": unwrap_model(self.D), "opt_G": self.opt_G,
                                   "opt_D": self.opt_D, "latents": self.latents, "progress": self.progress}
        for name, obj in (("G_ema", self.ema), ("pl", self.pl), ("scaler_G", self.scaler_G),
                          ("scaler_D", self.scaler_D), ("began", self.began), ("replay", self.replay),
                          ("augment", self.augment if isinstance(self.augment, AugmentPipe) else None),
                          ("ada", self.ada)):
            if obj is not None:
                objects[name] = obj
        return objects

    def _full_config(self) -> dict:
        full = {"training": self.config.to_dict(), "run": self.run_config, "world_size": self.ctx.world_size}
        if self.growth is not None:      # where the run continues (informational: it follows from the image count)
            full["growth_state"] = dataclasses.asdict(self.growth.state_at(self.progress.cur_nimg))
        return full

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current state (rank 0 writes; every rank waits for it). When
        the write fails (disk full, ...), rank 0 raises its error (an OSError naming the file; the
        earlier checkpoints are intact) and every other rank an OSError saying so: no rank is left
        waiting for the others."""
        if self.run_dir is None:
            raise ValueError("Trainer.save: no run_dir was given")
        path, error = None, None
        if self.ctx.is_main:
            try:
                path = save_checkpoint(self.run_dir, self.progress.step, self.checkpoint_objects(),
                                       self._full_config(), keep=self.keep_checkpoints,
                                       cur_nimg=self.progress.cur_nimg)
            except Exception as e:     # re-raised below, once every rank knows
                error = e
        failed = max_over_ranks(int(error is not None), self.ctx)     # also the barrier after the write
        if error is not None:
            raise error
        if failed:
            raise OSError(f"rank 0 could not write the checkpoint of step {self.progress.step} (its output says why)")
        if path is not None:
            self.last_checkpoint = path
        self._saved_step = self.progress.step
        return path

    def resume(self, resume: Union[str, Path, None] = "auto") -> Optional[Path]:
        """Load the checkpoint `resume` names (a path, or 'auto': the newest complete one in run_dir;
        None: start fresh). Returns its path, or None when there was nothing to resume. The
        checkpoint's training config and run config must equal this trainer's (batch_gpu, compile,
        cuda_graphs, max_bad_steps and lr_decay may differ)."""
        if resume is None:
            return None
        if self.run_dir is None and resume == "auto":
            raise ValueError("Trainer.resume: resume='auto' needs a run_dir")
        path = resolve_resume(self.run_dir, resume)
        if path is None:
            return None
        meta = load_checkpoint(path, self.checkpoint_objects(), map_location=self.device,
                               restore_rng=not self.ctx.distributed)
        self._check_resumed_config(path, meta.get("config") or {})
        self._batches = None                       # restart the data stream at the saved position
        # a fresh start for the device-side bookkeeping, and graphs re-captured: loading replaced
        # the optimizer state tensors they read
        self._halted.zero_()
        self._stop_message = None
        self._bad_by_phase.clear()
        self._tick.clear()
        for runner in self._phases.values():
            runner.reset()
        if self.ctx.distributed:
            self._seed_global_rng()
        self.growth_state = None                   # the stage of the resumed image count, set afresh
        self._apply_growth()
        self.last_checkpoint = path
        self._saved_step = self.progress.step
        return path

    def _check_resumed_config(self, path: Path, saved: Mapping[str, Any]) -> None:
        # lr_decay follows the run's --kimg: a resume with a longer budget stretches the decay
        free = {"batch_gpu", "compile", "cuda_graphs", "max_bad_steps", "lr_decay"}
        here = {k: v for k, v in self.config.to_dict().items() if k not in free}
        there = {k: v for k, v in (saved.get("training") or {}).items() if k not in free}
        # a field added after the checkpoint was written: that run trained with the field's default
        defaults = TrainingConfig().to_dict()
        there = {**{k: defaults[k] for k in here if k not in there}, **there} if there else there
        diffs = [f"{k}: {there.get(k)!r} in the checkpoint, {here.get(k)!r} here"
                 for k in sorted(set(here) | set(there)) if here.get(k) != there.get(k)]
        saved_run = dict(saved.get("run", {}) or {})
        here_run = dict(self.run_config)
        if "class_names" not in saved_run:      # written before runs recorded their class names
            here_run.pop("class_names", None)
        if saved_run != here_run:
            diffs.append(f"run config {saved.get('run')!r} in the checkpoint, {self.run_config!r} here")
        if diffs:
            raise ValueError(f"Trainer.resume: {path} was written by a different run: " + "; ".join(diffs))

    # ---- the loop ----

    def train(self, steps: Optional[int] = None, kimg: Optional[float] = None, snap_steps: Optional[int] = None,
              callback: Optional[Callable[["Trainer", dict], None]] = None) -> dict[str, float]:
        """Train until `steps` training steps (or `kimg` thousand real images) in total, counting
        those already done; write a checkpoint every snap_steps steps and at the end (when run_dir
        is set). callback(trainer, stats) is called after every step (stats: its StepStats). The
        non-finite halt is checked (one host read) before each checkpoint and at the end. Returns
        the last step's stats."""
        if (steps is None) == (kimg is None):
            raise ValueError("Trainer.train: give exactly one of steps or kimg")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 0):
            raise ValueError(f"Trainer.train: steps must be an int >= 0, got {steps!r}")
        if kimg is not None and not kimg > 0:
            raise ValueError(f"Trainer.train: kimg must be > 0, got {kimg!r}")
        if snap_steps is not None and (isinstance(snap_steps, bool) or not isinstance(snap_steps, int)
                                       or snap_steps < 1):
            raise ValueError(f"Trainer.train: snap_steps must be an int >= 1 or None, got {snap_steps!r}")
        stats: Mapping[str, float] = {}
        nimg = None if kimg is None else kimg * 1000
        while (self.progress.step < steps) if steps is not None else (self.progress.cur_nimg < nimg):
            stats = self.step()
            if callback is not None:
                callback(self, stats)
            if self.run_dir is not None and snap_steps and self.progress.step % snap_steps == 0:
                self.check_finite()
                self.save()
        self.check_finite()
        if self.run_dir is not None and self._saved_step != self.progress.step:
            self.save()
        return stats

    def sample(self, n: int, seed: int = 0, c: Optional[torch.Tensor] = None, use_ema: bool = True,
               batch: int = 64) -> torch.Tensor:
        """n samples [n, ...] from the EMA generator (or G), with latents from `seed`, on the CPU."""
        G = self.ema.module if (use_ema and self.ema is not None) else unwrap_model(self.G)
        gen = torch.Generator().manual_seed(seed)
        z = torch.randn(n, self.z_dim, generator=gen)
        if self.c_dim and c is None:
            c = torch.arange(n) % self.c_dim
        was_training = G.training
        G.eval()
        out = []
        try:
            with torch.no_grad():
                for i in range(0, n, batch):
                    zi = z[i:i + batch].to(self.device)
                    ci = c[i:i + batch].to(self.device) if c is not None else None
                    out.append(G(zi, ci).float().cpu())
        finally:
            G.train(was_training)
        return torch.cat(out)
