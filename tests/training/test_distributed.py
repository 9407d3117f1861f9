"""Multi-process training (ganfast.training.distributed + the Trainer): two gloo processes on the
CPU, launched with torchrun, against one process given the same global batch.

One torchrun launch (tests/training/_ddp_worker.py) runs every 2-process job; it starts first and
the one-process references run in this process while it works (the launch pays for importing
torch three times, which dominates the file's runtime). Measured on this machine, as the worst
error relative to a tensor's largest magnitude: 2 processes vs 1, 4.7e-7 (MLP + R1 + EMA with
gradient accumulation) and 1.3e-6 (cross-replica batch norm) for the weights and buffers, 1.8e-7
and 2.4e-7 for the per-step stats; the batch-norm control with per-process statistics is off by
0.17 (G's tensors) and 1.2e-2 (the stats).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ganfast.training.checkpoint import CHECKPOINTS_DIRNAME, checkpoint_problem
from ganfast.training.distributed import DistributedContext
from tests.training import _ddp_worker as worker

REPO_ROOT = Path(__file__).resolve().parents[2]
WORLD = 2
RTOL = 1e-5                  # float32 summation order; measured worst 1.3e-6
LAUNCH_TIMEOUT_S = 300       # ~35 s on 2 busy cores; generous, so only a hang trips it

pytestmark = pytest.mark.slow


class Launch:
    """The torchrun launch of every 2-process job, started at once and waited for on demand."""

    def __init__(self, root: Path):
        self.out_dir, self.run_dir, log_dir = root / "out", root / "runs", root / "logs"
        for d in (self.out_dir, self.run_dir):
            d.mkdir()
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))
        # --tee 3: every line of both ranks on the console prefixed with its rank
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={WORLD}",
               "--tee", "3", "--log-dir", str(log_dir), str(Path(worker.__file__)), str(self.out_dir),
               str(self.run_dir), *worker.JOBS]
        self.proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     start_new_session=True)   # its own process group: a hang is killed whole
        self._output = None

    def wait(self) -> tuple[int, str]:
        """(torchrun's exit code, both ranks' output)."""
        if self._output is None:
            try:
                out, _ = self.proc.communicate(timeout=LAUNCH_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.kill()
                out, _ = self.proc.communicate()
                out += f"\n[test] killed after {LAUNCH_TIMEOUT_S} s".encode()
            self._output = out.decode(errors="replace")
        return self.proc.returncode, self._output

    def kill(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)

    def result(self, job: str, rank: int) -> dict:
        path = self.out_dir / f"{job}.rank{rank}.pt"
        code, output = self.wait()
        if not path.is_file():
            pytest.fail(f"torchrun exited {code} without writing {path.name}; its output:\n{output}")
        return torch.load(path)


@pytest.fixture(scope="module")
def launch(tmp_path_factory):
    launch = Launch(tmp_path_factory.mktemp("ddp"))
    try:
        yield launch
    finally:
        launch.kill()
        launch.wait()


@pytest.fixture(scope="module")
def single(launch):
    """The one-process runs (same jobs, same global batch), computed while the launch works."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    rng = torch.get_rng_state()
    try:
        return {job: worker.run_job(job, DistributedContext()) for job in ("mlp", "bn", "pix2pix")}
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(rng)


# ---- comparisons ----

def _stats_table(losses: list[dict]) -> dict[str, torch.Tensor]:
    """Per-step stats as {name: float64 values, name.steps: int64 the steps that have it} (lazy
    phases report only on the steps they run)."""
    table = {}
    for k in sorted({k for s in losses for k in s}):
        steps = [i for i, s in enumerate(losses) if k in s]
        table[k] = torch.tensor([losses[i][k] for i in steps], dtype=torch.float64)
        table[f"{k}.steps"] = torch.tensor(steps)
    return table


def _flat(result: dict, stats: bool = True) -> dict[str, torch.Tensor]:
    """Every tensor a run ends with (G / D / G_ema states) and, with stats, its per-step stats."""
    tensors = {f"{net}.{k}": v for net, state in result["state"].items() for k, v in state.items()}
    if stats:
        tensors.update({f"stats.{k}": v for k, v in _stats_table(result["losses"]).items()})
    return tensors


def _relative_errors(got: dict, expected: dict) -> dict[str, float]:
    """{name: max |got - expected| / max |expected|} over the floating tensors (integer ones, like
    num_batches_tracked, must be equal: inf otherwise)."""
    assert got.keys() == expected.keys(), f"different tensors: {sorted(got.keys() ^ expected.keys())}"
    errors = {}
    for name, e in expected.items():
        g = got[name]
        assert g.shape == e.shape, f"{name}: shape {list(g.shape)}, expected {list(e.shape)}"
        if e.is_floating_point():
            errors[name] = ((g - e).abs().max() / e.abs().max().clamp_min(1e-12)).item()
        else:
            errors[name] = 0.0 if torch.equal(g, e) else float("inf")
    return errors


def _assert_close(got: dict, expected: dict, rtol: float, what: str) -> None:
    """Every tensor within rtol of the expected one's largest value; reports the worst ones with
    their first mismatching element (index, got, expected)."""
    errors = _relative_errors(got, expected)
    bad = sorted((n for n, err in errors.items() if not err <= rtol), key=lambda n: -errors[n])
    if bad:
        lines = []
        for name in bad[:5]:
            g, e = got[name].double(), expected[name].double()
            i = int(((g - e).abs() > rtol * e.abs().max()).flatten().nonzero()[0])
            idx = tuple(int(j) for j in torch.unravel_index(torch.tensor(i), e.shape)) if e.ndim else ()
            lines.append(f"  {name}: relative error {errors[name]:.3g}; at {idx} got {g.flatten()[i].item():.9g}, "
                         f"expected {e.flatten()[i].item():.9g}")
        pytest.fail(f"{what}: {len(bad)} of {len(errors)} tensors differ by more than {rtol} relative:\n"
                    + "\n".join(lines))


def _assert_ranks_identical(launch: Launch, job: str) -> None:
    """Every rank ends with bitwise the same weights, buffers and (all-reduced) stats."""
    results = [_flat(launch.result(job, r)) for r in range(WORLD)]
    for r in range(1, WORLD):
        _assert_close(results[r], results[0], 0.0, f"{job}: rank {r} vs rank 0")


# ---- the tests ----

def test_mlp_r1_ema_two_processes_match_one(launch, single):
    """MLP pair on the ring, nonsaturating + lazy R1 (the double-backward phase) + EMA, batch 32
    as 2 processes x 2 micro-batches of 8 vs 1 process x 4: same final G / D / G_ema and the same
    per-step losses, up to float32 summation order."""
    ddp = launch.result("mlp", 0)
    assert ddp["world_size"] == WORLD and single["mlp"]["world_size"] == 1
    r1_steps = [i for i, s in enumerate(ddp["losses"]) if s.get("loss_Dreg", 0) > 0]
    assert len(ddp["losses"]) == worker.STEPS and r1_steps == list(range(0, worker.STEPS, 2)), r1_steps
    _assert_close(_flat(ddp), _flat(single["mlp"]), RTOL, "mlp: 2 processes vs 1")
    _assert_ranks_identical(launch, "mlp")


def test_pix2pix_two_processes_match_one(launch, single):
    """The image-to-image step under torchrun: pix2pix's D-then-G phases on the same G(x), with
    cross-replica batch norm in G, 2 processes x 16 = 1 process x 32 (weights, EMA, losses)."""
    ddp = launch.result("pix2pix", 0)
    assert len(ddp["losses"]) == worker.STEPS and "l1" in ddp["losses"][0]
    _assert_close(_flat(ddp), _flat(single["pix2pix"]), RTOL, "pix2pix: 2 processes vs 1")
    _assert_ranks_identical(launch, "pix2pix")


def test_cross_replica_batch_norm_is_over_the_global_batch(launch, single):
    """G's BatchNormAct2d layers normalize over the global batch: 2 processes x 16 = 1 process x 32
    (weights, running statistics, EMA, losses). The control, the same run with the layers'
    process_group reset to None (per-process statistics over 16), misses by far more."""
    ddp, local = launch.result("bn", 0), launch.result("bn-local", 0)
    expected = _flat(single["bn"])
    _assert_close(_flat(ddp), expected, RTOL, "bn: 2 processes with cross-replica statistics vs 1")
    _assert_ranks_identical(launch, "bn")
    errors = _relative_errors(_flat(local), expected)
    g_worst = max(err for name, err in errors.items() if name.startswith("G."))
    stats_worst = max(err for name, err in errors.items() if name.startswith("stats."))
    assert g_worst > 1000 * RTOL and stats_worst > 100 * RTOL, (
        f"per-process batch statistics should visibly change training: G differs by {g_worst:.3g}, the per-step "
        f"stats by {stats_worst:.3g} relative (measured 0.17 and 1.2e-2)")


def test_only_rank0_writes_checkpoints_and_resume_continues(launch):
    """The mlp run saved every 2 steps: rank 0 wrote each checkpoint once, rank 1 none, and nothing
    else is left in the directory. The resume job (fresh networks initialized from another seed,
    a copy of the step-6 checkpoint, Trainer.resume('auto')) ends bitwise where the uninterrupted
    run ends, with the same losses for steps 7-10."""
    snaps = list(range(worker.SNAP_STEPS, worker.STEPS + 1, worker.SNAP_STEPS))
    after_resume = [s for s in snaps if s > worker.RESUME_STEP]
    # job: (the steps rank 0 saves, the checkpoints the directory ends with: resume's starts with the copy)
    expected = {"mlp": (snaps, snaps), "resume": (after_resume, [worker.RESUME_STEP] + after_resume)}
    for job, (saved, listed) in expected.items():
        ckpt_dir = launch.run_dir / job / CHECKPOINTS_DIRNAME
        assert launch.result(job, 0)["saves"] == [str(ckpt_dir / f"ckpt-{s:09d}") for s in saved], job
        for r in range(1, WORLD):
            assert launch.result(job, r)["saves"] == [], f"{job}: rank {r} wrote checkpoints"
        names = sorted(p.name for p in ckpt_dir.iterdir())      # no duplicates, no .tmp-* leftovers
        assert names == [f"ckpt-{s:09d}" for s in listed], job
        for name in names:
            assert checkpoint_problem(ckpt_dir / name) is None, f"{job}: {name}"

    full, resumed = launch.result("mlp", 0), launch.result("resume", 0)
    assert resumed["resumed"] == str(launch.run_dir / "resume" / CHECKPOINTS_DIRNAME / f"ckpt-{worker.RESUME_STEP:09d}")
    assert resumed["losses"] == full["losses"][worker.RESUME_STEP:]
    _assert_close(_flat(resumed, stats=False), _flat(full, stats=False), 0.0, "resumed vs uninterrupted")
    _assert_ranks_identical(launch, "resume")


def test_both_processes_exit_cleanly(launch):
    """torchrun exits 0 only when both workers did; each reached the end of every job."""
    code, output = launch.wait()
    assert code == 0, f"torchrun exited {code}; its output:\n{output}"
    for r in range(WORLD):
        assert f"rank {r}/{WORLD}: done {' '.join(worker.JOBS)}" in output, output
