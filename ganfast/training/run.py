"""A training run as `ganfast train` drives it: model preset + dataset + family recipe ->
Trainer, with a progress bar, a JSON Lines log of every tick, sample grids from fixed latents,
checkpoints and quality metrics every snapshot, and curves at the end.

Run directory (`out`):
    run.json            what was asked (preset, data, options) and the resolved TrainingConfig
    log.jsonl           one line per tick: kimg, step, sec/kimg, losses averaged over the tick
    metrics.jsonl       one line per evaluation (at the start and every snapshot, and at the end)
    samples/            grid-<images seen>img.png from fixed latents every tick, latest.png
    checkpoints/        ganfast.training.checkpoint directories, the last K kept
    curves.png          losses and metrics against kimg (matplotlib)
    tensorboard/        TensorBoard events (tick losses, metrics, sample grids; x axis: images seen)
                        when the tensorboard package is installed
    summary.json        first and last metrics, time, images/s
`load_generator(path)` rebuilds the EMA generator of a run or checkpoint (for generate / metrics).

Faults (each tested in tests/training/test_faults.py). run_training raises TrainingStopped, whose
message says what happened, the last checkpoint and how to resume, when:
  - SIGTERM or SIGINT arrives: the current step finishes, a checkpoint is written (the run's own,
    so --resume auto continues exactly), logs close, exit code 128 + the signal number. A second
    signal ends the process at once, by that signal (a save it cuts short leaves only a temporary
    directory). With several processes every rank all-reduces the flag after each step (one tiny
    CPU collective), so all of them stop after the same step and save together.
  - a write fails (disk full, file-size limit, I/O error): the error names the file; a failed
    checkpoint leaves the earlier ones intact; exit code 1.
  - another process of a distributed run dies or stops answering: this one stops at its next
    collective, at once when the peer's connection closes, else after GANFAST_DIST_TIMEOUT
    seconds (ganfast.training.distributed); exit code 1.
The handlers are installed only while run_training trains, only from the main thread, and the
previous ones restored afterwards.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch

from ganfast.training.allocator import tune_cpu_allocator
from ganfast.training.checkpoint import (checkpoint_problem, latest_checkpoint, list_checkpoints, load_checkpoint,
                                         naming_write_errors)
from ganfast.training.img2img import IMG2IMG_FAMILIES, DEFAULT_IMG2IMG_DATA, Img2ImgTrainer, open_run_data, translation_grid
from ganfast.training.loop import Trainer, TrainingConfig
from ganfast.training.recipes import recipe_for
from ganfast.training.visualize import image_grid, label_rows, read_jsonl, save_curves, save_grid_png

__all__ = ["RunOptions", "DEFAULT_PRESET", "run_training", "TrainingStopped", "load_generator",
           "evaluate_generator", "real_images", "generate_images", "default_metrics", "sample_grid",
           "full_resolution"]

DEFAULT_PRESET = "cdcgan-32"
PathLike = Union[str, Path]


@dataclass
class RunOptions:
    """What `ganfast train` takes (its flags map one to one)."""
    preset: str = DEFAULT_PRESET
    data: Optional[str] = None                 # None / "fashion-mnist": the built-in dataset
    out: str = "runs/default"
    kimg: float = 200.0                        # the default preset's budget: about 8 minutes on a 2-core CPU
    batch: Optional[int] = None                # None: the preset's recipe batch (stylegan2-ada-*), else DEFAULT_BATCH
    batch_gpu: Optional[int] = None
    snap_kimg: float = 25.0                    # checkpoint + metrics interval
    tick_kimg: float = 5.0                     # log line + sample grid interval
    resume: Optional[str] = None               # None, "auto" or a checkpoint directory
    seed: int = 0
    device: Optional[str] = None               # None: cuda when available
    amp: str = "none"
    compile: bool = False
    cuda_graphs: bool = False                  # capture each phase in a CUDA graph (CUDA only)
    xflip: bool = False
    workers: int = 0
    metrics: Optional[Sequence[str]] = None    # None: default_metrics(G): swd, fid, kid (+ class_acc if conditional)
    metrics_images: int = 1000
    inception_weights: Optional[str] = None
    grid: int = 64                             # samples in each grid
    model_overrides: dict = field(default_factory=dict)      # preset builder kwargs
    training_overrides: dict = field(default_factory=dict)   # TrainingConfig fields
    progress: bool = True
    tensorboard: Optional[bool] = None         # None: when installed; False: off; True: required
    stage_kimg: Optional[float] = None         # growing presets: fade-in and stable kimg per stage (None: the recipe's)


class _TensorBoard:
    """TensorBoard events under out/tensorboard (torch.utils.tensorboard), global step = images
    seen. `wanted` None: when the tensorboard package is installed; True: required."""

    def __init__(self, out: Path, wanted: Optional[bool], purge_step: Optional[int]):
        self.writer, self.note = None, None
        if wanted is False:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            if wanted:
                raise ValueError("tensorboard: the tensorboard package is not installed "
                                 "(pip install tensorboard, or turn TensorBoard logging off)") from e
            self.note = "TensorBoard events skipped (tensorboard not installed)"
            return
        # purge_step: on resume, the events after the checkpoint (of a killed run) are dropped
        self.writer = SummaryWriter(str(out / "tensorboard"), purge_step=purge_step)

    def scalars(self, prefix: str, row: dict, step: int) -> None:
        if self.writer is None:
            return
        for k, v in row.items():
            if k not in ("kimg", "step", "tag") and isinstance(v, (int, float)) and not isinstance(v, bool):
                self.writer.add_scalar(f"{prefix}/{k}", v, global_step=step)
        self.writer.flush()

    def image(self, tag: str, grid, step: int) -> None:
        """grid: an `image_grid` array, uint8 [H, W, C]."""
        if self.writer is None:
            return
        self.writer.add_image(tag, grid, global_step=step, dataformats="HWC")
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


class TrainingStopped(Exception):
    """run_training stopped before its budget: a signal, a failed write, or a lost process.

    what: what happened; checkpoint: the newest checkpoint on disk (None: none yet); out: the run
    directory; exit_code: what `ganfast train` exits with (128 + signal number after a signal, 1
    after a fault); signum: the signal, or 0; rank: the process that raised it."""

    def __init__(self, what: str, out: Path, checkpoint: Optional[Path], exit_code: int, signum: int = 0,
                 rank: int = 0):
        self.what, self.out, self.checkpoint = what, Path(out), checkpoint
        self.exit_code, self.signum, self.rank = exit_code, signum, rank
        super().__init__(self.message())

    def message(self, resume_command: Optional[str] = None) -> str:
        """The whole story; resume_command: the exact command line, where the caller knows it."""
        where = f"the last checkpoint is {self.checkpoint}" if self.checkpoint is not None else \
            "no checkpoint was written yet (a resume starts from scratch)"
        how = resume_command or f"ganfast train <the same arguments> --out {self.out} --resume auto"
        return f"{self.what}; {where}. To continue: {how}"


class _StopSignals:
    """While training: the first SIGTERM / SIGINT only sets `signum` (the loop reads it after each
    step); a second one ends the process at once, by that signal (default action). Installed from
    the main thread only (Python allows no other), the previous handlers restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.signum = 0
        self._previous: dict = {}

    def install(self) -> "_StopSignals":
        if threading.current_thread() is threading.main_thread():
            for signum in self.SIGNALS:
                self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous.clear()

    def _handle(self, signum: int, frame) -> None:
        # os.write, not print: the handler may run while the main thread is inside a print
        name = signal.Signals(signum).name
        if self.signum:
            os.write(2, f"\nganfast train: {name} again: exiting now, without a checkpoint\n".encode())
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            os._exit(128 + signum)      # not reached: the default action of SIGINT and SIGTERM ends the process
        self.signum = signum
        os.write(2, f"\nganfast train: {name} received: finishing the current step, then writing a checkpoint "
                    f"(send it again to exit at once)\n".encode())


def _log(ctx, message: str) -> None:
    if ctx.is_main:
        print(message, flush=True)


def real_images(dataset, n: int, seed: int = 0) -> torch.Tensor:
    """n images [n, C, R, R] in [-1, 1] drawn without replacement (with, if the set is smaller)."""
    gen = torch.Generator().manual_seed(seed)
    count = len(dataset)
    idx = torch.randperm(count, generator=gen)[:n] if n <= count else torch.randint(count, (n,), generator=gen)
    if hasattr(dataset, "get_batch"):
        return dataset.get_batch(idx.tolist())[0]
    return torch.stack([dataset[int(i)][0] for i in idx])


@torch.no_grad()
def generate_images(G, n: int, seed: int = 0, device=None, batch: int = 64, c: Optional[torch.Tensor] = None,
                    truncation: float = 1.0, z: Optional[torch.Tensor] = None) -> torch.Tensor:
    """n images [n, C, R, R] in [-1, 1] (clamped) from G in eval mode, latents z [n, z_dim] (default:
    drawn from `seed`). Labels cycle through the classes for a conditional G unless c is given.
    truncation < 1: truncation_psi for style-based generators, else BigGAN's truncated normal at
    that threshold. Style-based generators use their constant noise inputs, so the same latents
    always give the same images."""
    device = device or next(G.parameters()).device
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(n, G.z_dim, generator=gen) if z is None else z
    style_based = hasattr(G, "mapping")
    if truncation < 1 and not style_based:      # resample |z| > threshold (BigGAN's truncation trick)
        for _ in range(1000):
            outside = z.abs() > truncation
            if not outside.any():
                break
            z[outside] = torch.randn(int(outside.sum()), generator=gen)
    c_dim = getattr(G, "c_dim", 0)
    if c_dim and c is None:
        c = torch.arange(n) % c_dim
    was_training = G.training
    G.eval()
    out = []
    try:
        for i in range(0, n, batch):
            zi = z[i:i + batch].to(device)
            ci = c[i:i + batch].to(device) if c is not None else None
            kwargs = {"truncation_psi": truncation, "noise_mode": "const"} if style_based else {}
            out.append(G(zi, ci, **kwargs).float().clamp(-1, 1).cpu())
    finally:
        G.train(was_training)
    return torch.cat(out)


MAX_CLASS_ROWS = 32       # a conditional G with more classes gets the plain grid (labels cycling)


def sample_grid(G, n: int, class_names: Sequence[str] = (), seed: int = 0, device=None):
    """The picture of a run's progress, uint8 [H, W, C]: n samples of G in a square grid; for a
    conditional G with up to MAX_CLASS_ROWS classes, one row per class instead (ceil(sqrt(n))
    samples each), each row named in a left margin by class_names (the class indices when there
    are no names). Fixed latents (seed), so grids of one run compare tick to tick."""
    c_dim = getattr(G, "c_dim", 0)
    cols = math.ceil(math.sqrt(n))
    full = getattr(G, "img_resolution", None)
    if not c_dim or c_dim > MAX_CLASS_ROWS:
        images = generate_images(G, n, seed=seed, device=device)
        return image_grid(full_resolution(images, full))
    c = torch.arange(c_dim).repeat_interleave(cols)
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(cols, G.z_dim, generator=gen).repeat(c_dim, 1)     # column j: one latent for every class
    images = generate_images(G, c.numel(), device=device, c=c, z=z)
    grid = image_grid(full_resolution(images, full), ncols=cols)
    names = [str(class_names[k]) if k < len(class_names) else str(k) for k in range(c_dim)]
    return label_rows(grid, names)


def default_metrics(G, data: Optional[str] = None) -> tuple[str, ...]:
    """What `ganfast train` evaluates unless told: SWD and the classifier FID / KID, and per-class
    accuracy (class_acc) for a conditional generator of Fashion-MNIST's 10 classes (data None or
    'fashion-mnist': the classifier's labels are that dataset's)."""
    fmnist_classes = getattr(G, "c_dim", 0) == 10 and data in (None, "fashion-mnist")
    return ("swd", "fid", "kid") + (("class_acc",) if fmnist_classes else ())


def evaluate_generator(G, dataset, names: Sequence[str], n: int, seed: int = 0, device=None,
                       inception_weights=None, reals: Optional[torch.Tensor] = None) -> dict[str, float]:
    """compute_metrics of n generated images against n real ones from `dataset`. A conditional G
    is asked for the classes in turn (0, 1, ..., c_dim - 1, 0, ...), so every class is equally
    represented, and class_acc scores those requests."""
    from ganfast.metrics import compute_metrics
    c_dim = getattr(G, "c_dim", 0)
    if "class_acc" in names and not c_dim:
        raise ValueError("metrics: class_acc measures a conditional generator; this one is unconditional (c_dim=0)")
    labels = torch.arange(n) % c_dim if c_dim else None
    real = reals if reals is not None else real_images(dataset, n, seed=seed + 1)
    fake = full_resolution(generate_images(G, n, seed=seed + 2, device=device, c=labels), real.shape[-1])
    if fake.shape[1] != real.shape[1]:
        raise ValueError(f"evaluate_generator: G makes {fake.shape[1]}-channel images, the data has {real.shape[1]}")
    return compute_metrics(list(names), real, fake, inception_weights=inception_weights, seed=seed,
                           fake_labels=labels)


DEFAULT_BATCH = 32
# what the log lines show of an evaluation (every value goes to metrics.jsonl)
SHOWN_METRICS = ("fid", "kid", "swd_avg", "precision", "recall", "is", "inception_fid", "class_acc", "class_acc_min",
                 "l1", "psnr", "ssim", "input_l1", "input_psnr", "AB_target_acc", "AB_source_target_acc",
                 "BA_target_acc", "BA_source_target_acc", "cycle_l1_A", "cycle_l1_B", "bicubic_psnr",
                 "sharpness", "bicubic_sharpness", "hr_sharpness")


def _build(options: RunOptions, world_size: int = 1):
    import ganfast.models as models
    from ganfast.data import open_dataset
    preset = models.get_preset(options.preset)          # raises, listing the valid names
    if preset.family in IMG2IMG_FAMILIES:               # the data's channels follow the networks'
        gan = models.create(options.preset, seed=options.seed, **options.model_overrides)
        return preset, gan, open_run_data(preset.family, gan.G, options.data, xflip=options.xflip)
    resolution = options.model_overrides.get("resolution", preset.kwargs.get("resolution"))
    channels = options.model_overrides.get("img_channels", preset.kwargs.get("img_channels", 3))
    dataset = open_dataset(options.data or "fashion-mnist", resolution=resolution, channels=channels,
                           xflip=options.xflip)
    overrides = dict(options.model_overrides)
    if preset.kwargs.get("cfg") == "auto":        # stylegan2-ada-auto's networks depend on the GPU count
        overrides.setdefault("gpus", world_size)
    gan = models.create(options.preset, seed=options.seed, **overrides)
    if gan.c_dim and dataset.num_classes != gan.c_dim:
        raise ValueError(f"preset {options.preset!r} is conditional with {gan.c_dim} classes, but the data "
                         f"{options.data or 'fashion-mnist'!r} has {dataset.num_classes} labelled classes "
                         f"(pass a labelled dataset, or override c_dim)")
    return preset, gan, dataset


def _training_config(options: RunOptions, preset, gan, world_size: int = 1) -> TrainingConfig:
    family, resolution = preset.family, gan.img_resolution
    if preset.recipe is not None:                  # a preset that reproduces one reference configuration
        fields = preset.recipe(dict(gan.config), world_size)
        if options.batch is not None and options.batch != fields.get("batch"):
            fields.pop("batch_gpu", None)          # the reference's per-GPU batch belongs to its batch
    else:
        fields = recipe_for(family, resolution, options.batch or DEFAULT_BATCH)
    batch = options.batch or fields.get("batch", DEFAULT_BATCH)
    fields.update(batch=batch, amp=options.amp, compile=options.compile, cuda_graphs=options.cuda_graphs,
                  seed=options.seed)
    if options.batch_gpu is not None or "batch_gpu" not in fields:
        fields["batch_gpu"] = options.batch_gpu
    if family in ("pix2pix", "cyclegan"):      # the references' schedule: constant, then linearly to 0 over the second half
        fields["lr_decay"] = [options.kimg / 2, options.kimg]
    if family == "srgan":      # VGG's stand-in for gray images: the shipped Fashion-MNIST classifier's features
        fields["content_loss"] = "classifier" if gan.G.img_channels == 1 else "mse"
    if options.stage_kimg is not None:
        if "growth" not in fields:
            raise ValueError(f"--stage-kimg: preset family {family!r} does not grow (progan presets do)")
        from ganfast.training.recipes import growth_for
        fields["growth"] = growth_for(resolution, options.stage_kimg).to_list()
    fields.update(options.training_overrides)
    return TrainingConfig(**fields)


def full_resolution(images: torch.Tensor, resolution: Optional[int]) -> torch.Tensor:
    """A growing G's images at its current stage, upscaled (nearest) to the final resolution, so
    grids and metrics of every stage compare with each other and with the data (unchanged when
    they have it already, or resolution is None)."""
    if resolution is None or images.shape[-1] == resolution:
        return images
    return torch.nn.functional.interpolate(images, size=(resolution, resolution), mode="nearest")


def _check_resume_preset(path: Path, options: RunOptions) -> None:
    meta = json.loads((path / "meta.json").read_text())
    config = meta.get("config")
    run = config.get("run") if isinstance(config, dict) else None
    if not isinstance(run, dict):
        raise ValueError(f"--resume: {path} was not written by `ganfast train` (its meta.json holds no run config)")
    saved = run.get("preset")
    if saved is not None and saved != options.preset:
        raise ValueError(f"--resume: {path} is a checkpoint of preset {saved!r}, but this run trains "
                         f"{options.preset!r} (pass --preset {saved}, or another --out)")


def _truncate_jsonl(path: Path, max_nimg: int) -> None:
    """Rewrite a run's JSONL log keeping the rows at or before max_nimg images (and no torn line), so
    a run resumed from an earlier checkpoint does not repeat kimg. Atomic: tmp file + os.replace."""
    if not path.exists():
        return
    rows = [r for r in read_jsonl(path) if round(float(r.get("kimg", 0.0)) * 1000) <= max_nimg]
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, path)


def run_training(options: RunOptions) -> dict[str, Any]:
    """Train as described by `options`; returns the summary (also written to out/summary.json)."""
    from ganfast.training.distributed import (collective_timeout_s, init_distributed, is_process_group_failure,
                                              max_over_ranks, shutdown_distributed)
    ctx = init_distributed(options.device)
    allocator = tune_cpu_allocator() if ctx.device.type == "cpu" else None
    out = Path(options.out)
    if options.resume is None and list_checkpoints(out):      # every rank: all of them must stop
        # a fresh run here would mix its logs with the earlier run's and its checkpoints with older,
        # higher-numbered ones (which `generate` / `--resume auto` would then pick)
        raise ValueError(f"--out {str(out)!r} holds checkpoints of an earlier run (newest "
                         f"{list_checkpoints(out)[-1].name}); pass --resume auto to continue it, or another "
                         f"--out for a new run (nothing was changed)")
    preset, gan, dataset = _build(options, ctx.world_size)
    img2img = preset.family in IMG2IMG_FAMILIES
    held_out, note = None, None
    if img2img:
        # metrics and grids of translations of held-out images; every img2img metric at once
        if options.metrics is None or list(options.metrics):
            unknown = [m for m in (options.metrics or ()) if m != "img2img"]
            if unknown:
                raise ValueError(f"--metrics: preset {options.preset!r} is an image-to-image model: its metrics "
                                 f"(L1 / PSNR / SSIM, translation accuracy and FID, or SR's PSNR / SSIM / "
                                 f"sharpness against bicubic) come together as 'img2img'; got {unknown}")
            options = dataclasses.replace(options, metrics=("img2img",))
        try:
            held_out = open_run_data(preset.family, gan.G, options.data, split="test")
        except (ValueError, FileNotFoundError) as e:
            note = f"no held-out split ({e}): metrics off, grids from the training images"
            options = dataclasses.replace(options, metrics=())
    elif options.metrics is None:
        options = dataclasses.replace(options, metrics=default_metrics(gan.G, options.data))
    config = _training_config(options, preset, gan, ctx.world_size)
    default_data = DEFAULT_IMG2IMG_DATA[preset.family] if img2img else "fashion-mnist"
    run_config = {"preset": options.preset, "model_overrides": dict(options.model_overrides),
                  "data": options.data or default_data, "xflip": options.xflip,
                  "class_names": list(getattr(dataset, "class_names", ()) or ())}
    if ctx.is_main:
        out.mkdir(parents=True, exist_ok=True)
    ctx.barrier()
    trainer = (Img2ImgTrainer if img2img else Trainer)(gan.G, gan.D, dataset, config, run_dir=out,
                                                       run_config=run_config, ctx=ctx, num_workers=options.workers)
    if note:
        _log(ctx, f"ganfast train: {note}")
    resumed = None
    if options.resume is not None:
        from ganfast.training.checkpoint import resolve_resume
        path = resolve_resume(out, options.resume)
        if path is not None:
            _check_resume_preset(path, options)
            resumed = trainer.resume(path)
    if ctx.is_main:
        (out / "run.json").write_text(json.dumps(
            {"options": {k: v for k, v in dataclasses.asdict(options).items()}, "training": config.to_dict(),
             "run": run_config, "dataset": {"name": getattr(dataset, "name", None), "size": len(dataset),
                                             "classes": dataset.num_classes}, "world_size": ctx.world_size,
             "device": str(ctx.device), "cpu_allocator": allocator, "parameters": gan.parameter_counts()},
            indent=2, default=str))
    _log(ctx, f"ganfast train: {options.preset} ({gan.parameter_counts()['G']:,} G / "
              f"{gan.parameter_counts()['D']:,} D parameters) on {getattr(dataset, 'name', 'data')} "
              f"({len(dataset):,} images, {dataset.channels}x{gan.img_resolution}x{gan.img_resolution}); "
              f"{options.kimg} kimg, batch {config.batch}, {config.loss} loss, amp {config.amp}, "
              f"{ctx.world_size} process(es) on {ctx.device}; run dir {out}"
              + (f"; growing {' -> '.join(str(s.resolution) for s in trainer.growth.stages)} "
                 f"({trainer.growth.total_kimg:g} kimg to the last stage's end)" if trainer.growth else "")
              + (f"; resumed from {resumed}" if resumed else ""))

    if resumed and ctx.is_main:     # drop what a killed run logged after the checkpoint it resumes from
        for name in ("log.jsonl", "metrics.jsonl"):
            _truncate_jsonl(out / name, trainer.progress.cur_nimg)
    board = _TensorBoard(out, options.tensorboard, trainer.progress.cur_nimg + 1 if resumed else None) \
        if ctx.is_main else None
    if board is not None and board.note:
        _log(ctx, board.note)
    total_nimg = int(round(options.kimg * 1000))
    tick_nimg = max(1, int(round(options.tick_kimg * 1000)))
    snap_nimg = max(1, int(round(options.snap_kimg * 1000)))
    reals = real_images(dataset, options.metrics_images, seed=options.seed + 1) \
        if options.metrics and not img2img else None

    def evaluate(tag: str) -> Optional[dict]:
        if not options.metrics or not ctx.is_main:
            return None
        t0 = time.time()
        G_eval = trainer.ema.module if trainer.ema is not None else trainer.G
        if img2img:
            from ganfast.metrics.img2img import evaluate_img2img
            values = evaluate_img2img(G_eval, held_out, n=options.metrics_images, device=ctx.device, seed=options.seed)
        else:
            values = evaluate_generator(G_eval, dataset, options.metrics, options.metrics_images, seed=options.seed,
                                        device=ctx.device, inception_weights=options.inception_weights, reals=reals)
        row = {"kimg": trainer.progress.cur_nimg / 1000, "step": trainer.progress.step, "tag": tag, **values,
               "seconds": round(time.time() - t0, 2)}
        if trainer.growth_state is not None:
            row.update(resolution=trainer.growth_state.resolution, alpha=trainer.growth_state.alpha)
        with naming_write_errors(out / "metrics.jsonl"), open(out / "metrics.jsonl", "a") as f:
            f.write(json.dumps(row) + "\n")
        board.scalars("Metrics", values, trainer.progress.cur_nimg)
        shown = ", ".join(f"{k} {v:.4g}" for k, v in values.items() if k in SHOWN_METRICS)
        _log(ctx, f"[metrics @ {row['kimg']:.4g} kimg] {shown} ({row['seconds']} s)")
        return row

    def write_grid() -> None:
        if not ctx.is_main:
            return
        G_eval = trainer.ema.module if trainer.ema is not None else trainer.G
        if img2img:        # translations of fixed held-out images (training images when there are none)
            grid = translation_grid(G_eval, held_out if held_out is not None else dataset, options.grid,
                                    device=ctx.device)
        else:
            grid = sample_grid(G_eval, options.grid, getattr(dataset, "class_names", ()), seed=options.seed + 3,
                               device=ctx.device)
        path = out / "samples" / f"grid-{trainer.progress.cur_nimg:09d}img.png"
        latest = out / "samples" / "latest.png"
        with naming_write_errors(path):
            save_grid_png(grid, path, scale=2)
        with naming_write_errors(latest.with_name("latest.png.tmp")):
            shutil.copyfile(path, latest.with_name("latest.png.tmp"))
        os.replace(latest.with_name("latest.png.tmp"), latest)      # a viewer never sees half a file
        board.image("samples", grid, trainer.progress.cur_nimg)
        return path

    def saved(what: str) -> None:
        """trainer.save(), a failed write turned into TrainingStopped (every rank learns of it)."""
        try:
            trainer.save()
        except OSError as e:
            _close(bar, board)
            shutdown_distributed(ctx)      # every rank got here (Trainer.save tells them all): leave together
            raise TrainingStopped(f"ganfast train: could not write the checkpoint of step {trainer.progress.step} "
                                  f"({what}): {e}; the earlier checkpoints are intact. Free space (or fix the "
                                  f"error) first", out, trainer.last_checkpoint, 1, rank=ctx.rank) from e

    signals = _StopSignals().install()       # restored in the finally below
    bar = None
    tick_start, tick_nimg_start = time.time(), trainer.progress.cur_nimg
    run_start, run_nimg_start = time.time(), trainer.progress.cur_nimg
    next_tick = (trainer.progress.cur_nimg // tick_nimg + 1) * tick_nimg
    next_snap = (trainer.progress.cur_nimg // snap_nimg + 1) * snap_nimg
    last_snap_nimg = trainer.progress.cur_nimg if resumed else None
    try:
        first_metrics = evaluate("start") if resumed is None else None
        if resumed is None:
            write_grid()
        if ctx.is_main and options.progress:
            from tqdm import tqdm
            bar = tqdm(total=total_nimg, initial=min(trainer.progress.cur_nimg, total_nimg), unit="img",
                       dynamic_ncols=True, file=sys.stderr)
        while trainer.progress.cur_nimg < total_nimg:
            before = trainer.progress.cur_nimg
            trainer.step()             # its statistics stay on the device: read once per tick below
            cur = trainer.progress.cur_nimg
            if bar is not None:
                bar.update(min(cur, total_nimg) - min(before, total_nimg))
            # a signal: stop after this step. Several processes agree first (one tiny CPU all-reduce
            # per step), so they all save and stop after the same step; one process reads a flag.
            stop = max_over_ranks(signals.signum, ctx)
            if stop:
                name = signal.Signals(stop).name
                trainer.check_finite()            # never checkpoint a halted run (NonFiniteError saves itself)
                saved(f"on {name}")
                _close(bar, board)
                shutdown_distributed(ctx)
                raise TrainingStopped(f"ganfast train: stopped by {name} at {cur / 1000:g} kimg (step "
                                      f"{trainer.progress.step})", out, trainer.last_checkpoint, 128 + stop,
                                      signum=stop, rank=ctx.rank)
            done = cur >= total_nimg
            if cur >= next_tick or done:
                means = trainer.read_stats()          # one host read per tick (raises NonFiniteError on a halt)
                elapsed = time.time() - tick_start
                row = {"kimg": cur / 1000, "step": trainer.progress.step,
                       "sec_per_kimg": elapsed / max(cur - tick_nimg_start, 1) * 1000,
                       "time": round(time.time() - run_start, 2), **means}
                if trainer.growth_state is not None:      # the stage the tick's last step trained
                    row.update(resolution=trainer.growth_state.resolution, alpha=trainer.growth_state.alpha,
                               batch=trainer.batch)
                if ctx.is_main:
                    with naming_write_errors(out / "log.jsonl"), open(out / "log.jsonl", "a") as f:
                        f.write(json.dumps(row) + "\n")
                    board.scalars("Progress", row, cur)
                    if bar is not None:
                        postfix = {"D": f"{row.get('loss_D', float('nan')):.3f}",
                                   "G": f"{row.get('loss_G', float('nan')):.3f}",
                                   "s/kimg": f"{row['sec_per_kimg']:.1f}"}
                        if "resolution" in row:
                            postfix["res"] = f"{row['resolution']} alpha {row['alpha']:.2f}"
                        if "aug_p" in row:
                            postfix["p"] = f"{row['aug_p']:.3f}"
                        bar.set_postfix(postfix)
                write_grid()
                tick_start, tick_nimg_start = time.time(), cur
                next_tick = (cur // tick_nimg + 1) * tick_nimg
            if cur >= next_snap or done:
                saved("snapshot")
                last_snap_nimg = cur
                evaluate("final" if done else "snapshot")
                next_snap = (cur // snap_nimg + 1) * snap_nimg
        if last_snap_nimg != trainer.progress.cur_nimg:     # e.g. resumed at the end already
            saved("end of training")
    except OSError as e:                             # a log, grid or metrics file (rank 0 writes them)
        raise TrainingStopped(f"ganfast train: I/O error at {trainer.progress.cur_nimg / 1000:g} kimg (step "
                              f"{trainer.progress.step}): {e}. Free space (or fix the error) first", out,
                              trainer.last_checkpoint, 1, rank=ctx.rank) from e
    except Exception as e:
        if not (ctx.distributed and is_process_group_failure(e)):
            raise
        raise TrainingStopped(f"ganfast train: rank {ctx.rank} of {ctx.world_size} lost the other processes at "
                              f"{trainer.progress.cur_nimg / 1000:g} kimg (step {trainer.progress.step}): another "
                              f"process died or did not answer within GANFAST_DIST_TIMEOUT={collective_timeout_s():g} "
                              f"s (see the other processes' output). The failed collective: {e}", out,
                              trainer.last_checkpoint, 1, rank=ctx.rank) from e
    finally:
        _close(bar, board)
        signals.restore()

    summary: dict[str, Any] = {}
    if ctx.is_main:
        rows = read_jsonl(out / "metrics.jsonl")
        seconds = time.time() - run_start
        nimg = trainer.progress.cur_nimg - run_nimg_start
        summary = {"preset": options.preset, "kimg": trainer.progress.cur_nimg / 1000, "steps": trainer.progress.step,
                   "seconds": round(seconds, 1), "images_per_second": round(nimg / seconds, 2) if seconds else None,
                   "sec_per_kimg": round(seconds / nimg * 1000, 2) if nimg else None,
                   "first_metrics": rows[0] if rows else None, "last_metrics": rows[-1] if rows else None,
                   "checkpoint": str(trainer.last_checkpoint), "skipped_phases": trainer.progress.bad_total}
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
        curves = save_curves(read_jsonl(out / "log.jsonl"), rows, out / "curves.png")
        _log(ctx, f"done: {summary['kimg']:.1f} kimg in {summary['seconds']} s ({summary['sec_per_kimg']} sec/kimg); "
                  f"samples {out / 'samples' / 'latest.png'}; "
                  + (f"curves {curves}; " if curves else "curves skipped (matplotlib not installed); ")
                  + f"checkpoint {trainer.last_checkpoint}")
        if first_metrics and rows:
            for k in SHOWN_METRICS:
                if k in first_metrics and k in rows[-1]:
                    _log(ctx, f"  {k}: {first_metrics[k]:.4g} at start -> {rows[-1][k]:.4g} now")
    shutdown_distributed(ctx)
    return summary


def _close(bar, board) -> None:
    """Close the progress bar and the TensorBoard writer (each may be None; closing twice is fine)."""
    if bar is not None:
        bar.close()
    if board is not None:
        board.close()


def _checkpoint_path(path: PathLike) -> Path:
    """A checkpoint directory, or the newest complete one of a run directory."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"--ckpt/--run: {str(path)!r} does not exist")
    if (path / "meta.json").exists():
        problem = checkpoint_problem(path)
        if problem:
            raise ValueError(f"{path} is not a complete checkpoint: {problem}")
        return path
    newest = latest_checkpoint(path)
    if newest is None:
        raise ValueError(f"{path} holds no complete checkpoint (expected a checkpoint directory, or a run "
                         f"directory with checkpoints/ckpt-*)")
    return newest


def load_generator(path: PathLike, device: Union[str, torch.device] = "cpu", use_ema: bool = True):
    """(G, meta) from a checkpoint directory or a run directory (its newest checkpoint): the
    preset is rebuilt from the checkpoint's run config and the EMA weights loaded (G's when the
    run kept no EMA or use_ema=False). A .pkl file is read as an NVIDIA stylegan2-ada-pytorch /
    stylegan3 network pickle (ganfast.models.nvlabs_pkl: no code from it runs); its G_ema, or G,
    becomes the generator and meta is {'source': path, 'network': 'G_ema' or 'G'}."""
    import ganfast.models as models
    if os.fspath(path).endswith(".pkl") and Path(path).is_file():
        from ganfast.models.nvlabs_pkl import read_nvlabs_generator
        G, entry = read_nvlabs_generator(path, use_ema)
        return G.to(device).eval().requires_grad_(False), {"source": os.fspath(path), "network": entry}
    ckpt = _checkpoint_path(path)
    meta = json.loads((ckpt / "meta.json").read_text())
    run = (meta.get("config") or {}).get("run") or {}
    if "preset" not in run:
        raise ValueError(f"{ckpt} was not written by `ganfast train` (its config names no preset); build the "
                         f"model yourself and use ganfast.training.checkpoint.load_checkpoint")
    G = models.create(run["preset"], **run.get("model_overrides", {})).G
    name = "G_ema" if use_ema and "G_ema" in meta["objects"] else "G"
    holder = _Holder(G) if name == "G_ema" else G
    load_checkpoint(ckpt, {name: holder}, map_location="cpu", restore_rng=False, partial=True)
    return G.to(device).eval().requires_grad_(False), meta


class _Holder:
    """Loads an EMA entry (a module state dict saved through EMA.state_dict) into a plain module."""

    def __init__(self, module):
        self.module = module

    def state_dict(self):
        return self.module.state_dict()

    def load_state_dict(self, state):
        self.module.load_state_dict(state)
