"""Test helper for tests/training/test_distributed.py: small Trainer runs that torchrun launches as
several gloo processes on the CPU, and that the test also calls in-process as one process.

usage: python -m torch.distributed.run --standalone --nproc_per_node=2 _ddp_worker.py OUT_DIR RUN_DIR JOB...

Each rank runs the JOBs in order and writes, per job, OUT_DIR/<job>.rank<r>.pt (run_job's result:
G / D / G_ema state dicts, the stats of every step run, the paths this rank passed to
save_checkpoint, the checkpoint resumed from). Then every rank leaves together: barrier, destroy
the process group, flush, os._exit(0) (a gloo process that exits while its peer still talks to it
can abort the peer at teardown); a failing rank prints its traceback and exits 1.

Jobs (all: global batch BATCH, STEPS steps, fixed seeds, one thread):
    mlp        MLPGenerator / MLPDiscriminator on the ring of Gaussians, nonsaturating loss, lazy R1
               every 2 D steps, G EMA; batch_gpu MLP_BATCH_GPU, so each process accumulates
               gradients. Checkpoints every SNAP_STEPS steps in RUN_DIR/mlp (all kept).
    resume     mlp again from differently initialized networks, in RUN_DIR/resume, which rank 0 first
               seeds with a copy of mlp's checkpoint of step RESUME_STEP: Trainer.resume("auto")
               takes it and training continues to STEPS (run it after mlp).
    bn         a tiny conv G with ganfast.nn.BatchNormAct2d layers (cross-replica statistics, as the
               Trainer sets them up) against a conv D, on small synthetic images; no accumulation,
               so each forward pass normalizes over the whole global batch. No checkpoints.
    bn-local   bn with every batch-norm layer's process_group reset to None after the Trainer set it:
               per-process statistics, the negative control.
    pix2pix    ganfast.training.img2img's paired step (D on the (x, y) pair, then G's BCE + L1 on the
               same G(x)) with a BatchNormAct2d G on blob -> inverted-blob pairs. No checkpoints.
"""
from __future__ import annotations

import os
import shutil
import sys
import traceback
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from ganfast.models.mlp import MLPDiscriminator, MLPGenerator
from ganfast.nn import BatchNormAct2d
from ganfast.training import loop
from ganfast.training.checkpoint import CHECKPOINTS_DIRNAME
from ganfast.training.distributed import DistributedContext, init_distributed, shutdown_distributed
from ganfast.training.toy import RingOfGaussians

STEPS = 10
SNAP_STEPS = 2
RESUME_STEP = 6
BATCH = 32
MLP_BATCH_GPU = 8
JOBS = ("mlp", "resume", "bn", "bn-local", "pix2pix")
INIT_SEED = 1          # the networks' initialization; rank 0's is broadcast to every process


class ConvG(nn.Module):
    """z [N, Z_DIM] -> images [N, 1, 8, 8]: linear -> BN+relu -> upsample, conv -> BN+lrelu -> conv.
    The layers before each batch norm have no bias: its gradient is zero in exact arithmetic, so
    rounding noise would be all Adam sees of it (normalized to +-lr steps that differ between runs)."""

    z_dim, c_dim, channels = 8, 0, 8

    def __init__(self):
        super().__init__()
        ch = self.channels
        self.fc = nn.Linear(self.z_dim, ch * 4 * 4, bias=False)
        self.bn0 = BatchNormAct2d(ch, act="relu")
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1, bias=False)
        self.bn1 = BatchNormAct2d(ch, act="lrelu")
        self.out = nn.Conv2d(ch, 1, 3, padding=1)

    def forward(self, z: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        x = self.bn0(self.fc(z).view(-1, self.channels, 4, 4))                    # [N, ch, 4, 4]
        x = self.bn1(self.conv1(nn.functional.interpolate(x, scale_factor=2)))    # [N, ch, 8, 8]
        return torch.tanh(self.out(x))                                             # [N, 1, 8, 8]


class ConvD(nn.Module):
    """images [N, 1, 8, 8] -> logits [N] (no batch norm: the test is about G's)."""

    c_dim = 0

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(1, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                                  nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2))
        self.out = nn.Linear(8 * 2 * 2, 1)

    def forward(self, x: torch.Tensor, c: Optional[torch.Tensor] = None) -> torch.Tensor:
        return self.out(self.body(x).flatten(1))[:, 0]


class PairG(nn.Module):
    """x [N, 1, 8, 8] -> y [N, 1, 8, 8]: conv -> BN+relu (cross-replica statistics) -> conv -> tanh."""

    img2img, z_dim, c_dim, img_resolution, img_channels, in_channels, out_channels = "paired", 0, 0, 8, 1, 1, 1

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1, bias=False)
        self.bn = BatchNormAct2d(8, act="relu")
        self.out = nn.Conv2d(8, 1, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.out(self.bn(self.conv(x))))


class PairD(nn.Module):
    """(x, y) [N, 1, 8, 8] each -> patch logits [N, 1, 3, 3]."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(2, 8, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(8, 1, 2))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.body(torch.cat([x, y], 1))


def blob_images(n: int = 512) -> torch.utils.data.TensorDataset:
    """n images [1, 8, 8] in [-1, 1]: a bright square at a random place (labels all 0)."""
    gen = torch.Generator().manual_seed(3)
    images = torch.full((n, 1, 8, 8), -1.0)
    corners = torch.randint(0, 5, (n, 2), generator=gen)
    for i, (r, c) in enumerate(corners.tolist()):
        images[i, 0, r:r + 4, c:c + 4] = 1.0
    return torch.utils.data.TensorDataset(images, torch.zeros(n, dtype=torch.int64))


def build_trainer(job: str, ctx: DistributedContext, run_dir: Optional[Path] = None,
                  init_seed: int = INIT_SEED) -> loop.Trainer:
    torch.manual_seed(init_seed)
    if job in ("mlp", "resume"):
        G, D = MLPGenerator(z_dim=2, hidden=64), MLPDiscriminator(hidden=64)
        data = RingOfGaussians(size=4096)
        config = loop.TrainingConfig(loss="nonsaturating", batch=BATCH, batch_gpu=MLP_BATCH_GPU, r1_gamma=0.1,
                                     r1_interval=2, ema_kimg=10.0, seed=5)
    elif job in ("bn", "bn-local"):
        G, D = ConvG(), ConvD()
        data = blob_images()
        config = loop.TrainingConfig(loss="nonsaturating", batch=BATCH, ema_kimg=10.0, seed=5)
    elif job == "pix2pix":
        from ganfast.training.img2img import Img2ImgTrainer
        blobs = blob_images().tensors[0]
        data = torch.utils.data.TensorDataset(torch.cat([blobs, -blobs], 1), torch.zeros(len(blobs), dtype=torch.int64))
        config = loop.TrainingConfig(loss="nonsaturating", batch=BATCH, lr=2e-3, betas=(0.5, 0.999), ema_kimg=10.0,
                                     seed=5)
        return Img2ImgTrainer(PairG(), PairD(), data, config, ctx=ctx, run_dir=run_dir, run_config={"job": job})
    else:
        raise ValueError(f"_ddp_worker: unknown job {job!r} (expected one of {JOBS})")
    run_config = {"job": "mlp" if job == "resume" else job}    # resume continues mlp's run
    trainer = loop.Trainer(G, D, data, config, ctx=ctx, run_dir=run_dir, run_config=run_config, keep_checkpoints=100)
    if job == "bn-local":
        for m in trainer.G.modules():
            if isinstance(m, BatchNormAct2d):
                m.process_group = None
    return trainer


def run_job(job: str, ctx: DistributedContext, run_dir: Optional[Path] = None, init_seed: int = INIT_SEED) -> dict:
    """Train job's trainer to STEPS (resuming from run_dir's newest checkpoint when there is one);
    returns what the module docstring says each rank writes."""
    saves = []
    real_save = loop.save_checkpoint

    def counting_save(run_dir_, step, *args, **kwargs):   # which ranks write checkpoints
        path = real_save(run_dir_, step, *args, **kwargs)
        saves.append(str(path))
        return path

    loop.save_checkpoint = counting_save
    try:
        trainer = build_trainer(job, ctx, run_dir, init_seed)
        resumed = trainer.resume("auto") if run_dir is not None else None
        losses = []
        trainer.train(steps=STEPS, snap_steps=SNAP_STEPS if run_dir is not None else None,
                      callback=lambda _, stats: losses.append(dict(stats)))     # read: a StepStats is lazy
    finally:
        loop.save_checkpoint = real_save
    state = {name: {k: v.detach().clone() for k, v in module.state_dict().items()}
             for name, module in (("G", trainer.G), ("D", trainer.D), ("G_ema", trainer.ema.module))}
    return {"state": state, "losses": losses, "saves": saves, "world_size": ctx.world_size,
            "resumed": None if resumed is None else str(resumed)}


def seed_resume_dir(run_dir: Path, ctx: DistributedContext) -> None:
    """Rank 0 copies mlp's checkpoint of step RESUME_STEP into the resume job's empty run dir."""
    if ctx.is_main:
        name = f"ckpt-{RESUME_STEP:09d}"
        shutil.copytree(run_dir / "mlp" / CHECKPOINTS_DIRNAME / name, run_dir / "resume" / CHECKPOINTS_DIRNAME / name)
    ctx.barrier()


def main(out_dir: Path, run_dir: Path, jobs: list[str]) -> None:
    torch.set_num_threads(1)
    ctx = init_distributed(device="cpu")
    exit_code = 1
    try:
        for job in jobs:
            if job == "resume":
                seed_resume_dir(run_dir, ctx)
            job_dir = run_dir / job if job in ("mlp", "resume") else None
            result = run_job(job, ctx, job_dir, init_seed=INIT_SEED + (job == "resume"))
            torch.save(result, out_dir / f"{job}.rank{ctx.rank}.pt")
        print(f"rank {ctx.rank}/{ctx.world_size}: done {' '.join(jobs)}", flush=True)
        shutdown_distributed(ctx)
        exit_code = 0
    except BaseException:
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(exit_code)


if __name__ == "__main__":
    if len(sys.argv) < 4 or not set(sys.argv[3:]) <= set(JOBS):
        raise SystemExit(f"usage: {sys.argv[0]} OUT_DIR RUN_DIR JOB...   (JOB in {JOBS})")
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3:])
