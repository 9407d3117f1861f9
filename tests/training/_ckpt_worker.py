"""Test helper for tests/training/test_checkpoint.py: a tiny deterministic GAN on 2-D points,
trained on the CPU with one thread, checkpointing every CKPT_EVERY steps and resuming with
resolve_resume(run_dir, "auto"). The test runs it as a subprocess, SIGKILLs it and restarts it.

usage: python _ckpt_worker.py RUN_DIR LOG_PATH TOTAL_STEPS CKPT_EVERY   (one run)
       python _ckpt_worker.py serve                                     (a fork server)

Importing torch and building an Adam (which imports torch._dynamo) takes seconds, so the test
starts one `serve` process that pays for that once and forks a fresh child per run: for each JSON
line {"run_dir", "log", "steps", "every", "env": {...}} on stdin it forks, prints "pid <child>",
and once the child is gone prints "exit <code>" (-9 after a SIGKILL). EOF on stdin ends it.
The children are real processes; the test SIGKILLs them.

LOG_PATH gets, in one write() each (so a kill never tears a line):
    "start <step resumed from>\n" when the process starts,
    "step <i> <loss_D> <loss_G> <probe>\n" after step i, the floats as float.hex() (bitwise),
    probe being the sum of G_ema's output on fixed latents,
    "done\n" at the end.
Environment:
    GANFAST_TEST_HANG_AT_SAVE=<step>: the save of that step writes RUN_DIR/hanging-in-save (holding
        the temporary directory's path) and then sleeps inside save_checkpoint -- after everything
        is written, before the rename -- until killed.
    GANFAST_TEST_STEP_SLEEP=<seconds>: sleep after each step, so that a kill lands mid-run.

Every RNG the training uses is exercised: numpy picks the batch, python `random` flips it,
torch draws the latents and the dropout masks.
"""
from __future__ import annotations

import json
import os
import random
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import torch
from torch import nn

from ganfast.training.checkpoint import load_checkpoint, resolve_resume, save_checkpoint
from ganfast.training.ema import EMA

Z_DIM, HIDDEN, BATCH, N_POINTS = 4, 16, 32, 256


def real_points() -> torch.Tensor:
    """Fixed data [N_POINTS, 2]: four Gaussian blobs, from a private generator."""
    gen = torch.Generator().manual_seed(1234)
    centers = torch.tensor([[1.0, 1.0], [-1.0, 1.0], [1.0, -1.0], [-1.0, -1.0]])
    pick = torch.randint(0, 4, (N_POINTS,), generator=gen)
    return centers[pick] + 0.1 * torch.randn(N_POINTS, 2, generator=gen)


def build(seed: int) -> dict:
    """The objects a checkpoint holds: G (with BatchNorm, so G_ema has buffers), D (with dropout),
    their Adams, G's EMA and a GradScaler whose scale grows every 3 steps."""
    torch.manual_seed(seed)
    G = nn.Sequential(nn.Linear(Z_DIM, HIDDEN), nn.BatchNorm1d(HIDDEN), nn.LeakyReLU(0.2), nn.Linear(HIDDEN, 2))
    D = nn.Sequential(nn.Linear(2, HIDDEN), nn.LeakyReLU(0.2), nn.Dropout(0.25), nn.Linear(HIDDEN, 1))
    return {"G": G, "D": D,
            "opt_G": torch.optim.Adam(G.parameters(), lr=2e-3, betas=(0.0, 0.99)),
            "opt_D": torch.optim.Adam(D.parameters(), lr=2e-3, betas=(0.0, 0.99)),
            "G_ema": EMA(G, half_life_kimg=0.5, rampup=0.05, batch_size=BATCH),
            "scaler": torch.amp.GradScaler("cpu", init_scale=2.0 ** 8, growth_interval=3)}


def train_step(objects: dict, data: torch.Tensor, cur_nimg: int) -> tuple[float, float, float]:
    """One D step and one G step (non-saturating loss), then the EMA update; returns
    (loss_D, loss_G, G_ema probe) as Python floats. cur_nimg counts this step's images."""
    G, D, scaler = objects["G"], objects["D"], objects["scaler"]
    G.train(), D.train()
    real = data[torch.from_numpy(np.random.randint(0, N_POINTS, size=BATCH))]
    if random.random() < 0.5:
        real = -real
    loss_D = (nn.functional.softplus(D(G(torch.randn(BATCH, Z_DIM)).detach()))
              + nn.functional.softplus(-D(real))).mean()
    objects["opt_D"].zero_grad(set_to_none=True)
    scaler.scale(loss_D).backward()
    scaler.step(objects["opt_D"])
    loss_G = nn.functional.softplus(-D(G(torch.randn(BATCH, Z_DIM)))).mean()
    objects["opt_G"].zero_grad(set_to_none=True)
    scaler.scale(loss_G).backward()
    scaler.step(objects["opt_G"])
    scaler.update()
    objects["G_ema"].update(cur_nimg)
    with torch.no_grad():
        probe = objects["G_ema"].module(torch.linspace(-1, 1, 8 * Z_DIM).reshape(8, Z_DIM)).sum()
    return loss_D.item(), loss_G.item(), probe.item()


def _append(log_fd: int, line: str) -> None:
    os.write(log_fd, line.encode())


def run(run_dir: Path, log_path: Path, total_steps: int, ckpt_every: int) -> None:
    hang_at_save = int(os.environ.get("GANFAST_TEST_HANG_AT_SAVE", "-1"))
    step_sleep = float(os.environ.get("GANFAST_TEST_STEP_SLEEP", "0"))
    torch.set_num_threads(1)
    np.random.seed(5), random.seed(6)
    objects = build(seed=7)
    data = real_points()
    config = {"total_steps": total_steps, "ckpt_every": ckpt_every, "batch": BATCH}

    start = 0
    resume = resolve_resume(run_dir, "auto")
    if resume is not None:
        start = load_checkpoint(resume, objects)["step"]
    log_fd = os.open(log_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    _append(log_fd, f"start {start}\n")
    for step in range(start, total_steps):
        losses = train_step(objects, data, cur_nimg=(step + 1) * BATCH)
        _append(log_fd, f"step {step} " + " ".join(float(v).hex() for v in losses) + "\n")
        if (step + 1) % ckpt_every == 0:
            def hang(tmp: Path, saving=step + 1) -> None:
                if saving == hang_at_save:
                    (run_dir / "hanging-in-save").write_text(str(tmp))
                    time.sleep(600)
            save_checkpoint(run_dir, step + 1, objects, config, keep=3, cur_nimg=(step + 1) * BATCH,
                            _before_commit=hang)
        if step_sleep:
            time.sleep(step_sleep)
    _append(log_fd, "done\n")
    os.close(log_fd)


def serve() -> None:
    torch.set_num_threads(1)   # before any parallel region, so the forked children inherit no thread pool
    build(seed=0)              # pay for the lazy imports once
    while line := sys.stdin.readline():
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            exit_code = 1
            try:
                os.environ.update(request["env"])
                run(Path(request["run_dir"]), Path(request["log"]), request["steps"], request["every"])
                exit_code = 0
            except BaseException:
                traceback.print_exc()
            finally:   # never return into the server's loop
                sys.stderr.flush()
                os._exit(exit_code)
        print(f"pid {pid}", flush=True)
        _, status = os.waitpid(pid, 0)
        print(f"exit {os.waitstatus_to_exitcode(status)}", flush=True)


if __name__ == "__main__":
    if sys.argv[1:] == ["serve"]:
        serve()
    else:
        run_dir_arg, log_arg, steps_arg, every_arg = sys.argv[1:]
        run(Path(run_dir_arg), Path(log_arg), int(steps_arg), int(every_arg))
