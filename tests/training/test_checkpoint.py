"""ganfast.training.checkpoint: round trips, pruning, corruption, resume semantics, and a training
run SIGKILLed at random moments (once mid-save) whose resumed losses equal an uninterrupted run's."""
from __future__ import annotations

import hashlib
import json
import os
import random
import select
import signal
import struct
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from ganfast.training.checkpoint import (checkpoint_problem, latest_checkpoint, list_checkpoints,
                                         load_checkpoint, resolve_resume, save_checkpoint)
from tests.training import _ckpt_worker as worker

REPO_ROOT = Path(__file__).resolve().parents[2]
CONFIG = {"preset": "tiny", "lr": 2e-3, "betas": [0.0, 0.99]}


def _rng_snapshot():
    return torch.get_rng_state(), np.random.get_state(), random.getstate()


def _rng_restore(snapshot):
    torch.set_rng_state(snapshot[0]), np.random.set_state(snapshot[1]), random.setstate(snapshot[2])


def _trained(seed: int, steps: int) -> dict:
    objects = worker.build(seed)
    np.random.seed(seed), random.seed(seed)
    data = worker.real_points()
    for step in range(steps):
        worker.train_step(objects, data, cur_nimg=(step + 1) * worker.BATCH)
    return objects


def _assert_same_state(got, expected, path="state"):
    """Recursive equality, bitwise for tensors, type-exact for containers and scalars."""
    if isinstance(expected, torch.Tensor):
        assert isinstance(got, torch.Tensor) and got.dtype == expected.dtype and got.shape == expected.shape, path
        mismatch = (got != expected) & ~(got.isnan() & expected.isnan()) if got.is_floating_point() else got != expected
        assert not mismatch.any(), f"{path}: first mismatches at {mismatch.nonzero()[:5].tolist()}"
    elif isinstance(expected, dict):
        assert isinstance(got, dict) and list(got) == list(expected), f"{path}: keys {list(got)} != {list(expected)}"
        for key in expected:
            _assert_same_state(got[key], expected[key], f"{path}/{key}")
    elif isinstance(expected, (list, tuple)):
        assert type(got) is type(expected) and len(got) == len(expected), f"{path}: {got!r} != {expected!r}"
        for i, (g, e) in enumerate(zip(got, expected)):
            _assert_same_state(g, e, f"{path}/{i}")
    else:
        assert type(got) is type(expected) and (got == expected or (got != got and expected != expected)), \
            f"{path}: {got!r} != {expected!r}"


def _state(obj):
    return obj.get_state() if isinstance(obj, torch.Generator) else obj.state_dict()


# ------------------------------------------------------------------------------------------------
# Round trips.

def test_round_trip_restores_states_and_rng_and_training_continues_identically(tmp_path):
    original = _trained(seed=1, steps=3)
    # GradScaler(init_scale=2**8, growth_interval=3): three finite steps double the scale once.
    assert original["scaler"].state_dict()["scale"] == 512.0
    assert original["scaler"].state_dict()["_growth_tracker"] == 0
    path = save_checkpoint(tmp_path, 3, original, CONFIG, cur_nimg=3 * worker.BATCH, extra={"best_fid": 12.5})
    assert path == tmp_path / "checkpoints" / "ckpt-000000003"
    after_save = (torch.rand(4), np.random.rand(3), random.random())

    restored = worker.build(seed=2)
    assert not torch.equal(restored["G"][0].weight, original["G"][0].weight)   # the load has work to do
    torch.manual_seed(123), np.random.seed(123), random.seed(123)
    meta = load_checkpoint(path, restored)

    assert (meta["step"], meta["cur_nimg"], meta["config"], meta["extra"]) == (3, 96, CONFIG, {"best_fid": 12.5})
    for name in original:
        _assert_same_state(_state(restored[name]), _state(original[name]), name)
    assert isinstance(restored["opt_G"].param_groups[0]["betas"], tuple)
    assert torch.equal(torch.rand(4), after_save[0])
    assert np.array_equal(np.random.rand(3), after_save[1]) and random.random() == after_save[2]

    # The next step (same batch, noise and dropout) gives bitwise the same losses and weights.
    data, snapshot = worker.real_points(), _rng_snapshot()
    losses_original = worker.train_step(original, data, cur_nimg=4 * worker.BATCH)
    _rng_restore(snapshot)
    losses_restored = worker.train_step(restored, data, cur_nimg=4 * worker.BATCH)
    assert losses_restored == losses_original
    for name in original:
        _assert_same_state(_state(restored[name]), _state(original[name]), name)


def test_restore_rng_false_leaves_the_rng_alone(tmp_path):
    path = save_checkpoint(tmp_path, 0, {"G": nn.Linear(2, 2)}, CONFIG)
    fresh = nn.Linear(2, 2)
    torch.manual_seed(5)
    expected = torch.rand(3)
    torch.manual_seed(5)
    load_checkpoint(path, {"G": fresh}, restore_rng=False)
    assert torch.equal(torch.rand(3), expected)
    load_checkpoint(path, {"G": fresh})       # and restore_rng=True does change it
    assert not torch.equal(torch.rand(3), expected)


class _Stateful:
    """An object whose state uses every supported container and leaf type."""

    def __init__(self, state):
        self.state = state

    def state_dict(self):
        return self.state

    def load_state_dict(self, state):
        self.state = state


def test_generic_states_keep_their_types_and_values(tmp_path):
    state = {"k_t": 0.125, "none": None, "flag": True, "count": 7, "name": "began", "inf": float("inf"),
             "nan": float("nan"), "pair": (1, 2.5), "list": [1, [2, {"x": 3}]],
             "by_index": {0: torch.tensor(1.5), 3: torch.arange(4)},
             "scalar": torch.tensor(3.0), "empty": torch.zeros(0, 5), "bf16": torch.randn(3).bfloat16(),
             "int8": torch.tensor([-3, 4], dtype=torch.int8), "noncontig": torch.randn(4, 6)[:, ::2]}
    tied = nn.Linear(3, 3)
    tied_module = nn.Sequential(tied, tied)      # one weight under two keys: shared storage
    generator = torch.Generator().manual_seed(77)
    path = save_checkpoint(tmp_path, 1, {"loss": _Stateful(state), "tied": tied_module, "gen": generator}, {})

    restored, restored_generator = _Stateful(None), torch.Generator()
    restored_tied = nn.Sequential(nn.Linear(3, 3), nn.Linear(3, 3))
    load_checkpoint(path, {"loss": restored, "tied": restored_tied, "gen": restored_generator})
    _assert_same_state(restored.state, state)
    _assert_same_state(restored_tied.state_dict(), tied_module.state_dict())
    assert torch.equal(torch.rand(4, generator=restored_generator), torch.rand(4, generator=generator))


class _Versioned(nn.Linear):
    """Records the format version its state was saved with (what modules use to convert old states)."""
    _version = 3

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs):
        self.loaded_version = local_metadata.get("version")
        super()._load_from_state_dict(state_dict, prefix, local_metadata, *args, **kwargs)


def test_modules_keep_their_format_versions_and_lose_their_wrappers(tmp_path):
    wrapped = nn.DataParallel(nn.Sequential(_Versioned(2, 2)))    # keys "module.0.weight" when wrapped
    path = save_checkpoint(tmp_path, 1, {"G": wrapped}, CONFIG)
    bare = nn.Sequential(_Versioned(2, 2))
    load_checkpoint(path, {"G": bare})
    assert bare[0].loaded_version == 3
    assert torch.equal(bare[0].weight, wrapped.module[0].weight)
    load_checkpoint(path, {"G": nn.DataParallel(bare)})


def test_files_are_safetensors_and_json_with_the_documented_names(tmp_path):
    objects = _trained(seed=1, steps=2)
    path = save_checkpoint(tmp_path, 2, objects, CONFIG)
    assert sorted(p.name for p in path.iterdir()) == ["meta.json", "tensors.safetensors"]
    raw = (path / "tensors.safetensors").read_bytes()
    header_len, = struct.unpack("<Q", raw[:8])         # safetensors: u64 header length, JSON header
    names = set(json.loads(raw[8:8 + header_len])) - {"__metadata__"}
    assert {"G/0.weight", "D/3.bias", "G_ema/1.running_mean", "opt_G/state/0/exp_avg", "opt_D/state/3/step",
            "rng/torch_cpu", "rng/numpy_keys"} <= names
    meta = json.loads((path / "meta.json").read_text())
    assert meta["complete"] is True and meta["step"] == 2
    assert meta["tensors_sha256"] == hashlib.sha256(raw).hexdigest()
    assert meta["objects"]["scaler"]["kind"] == "state_dict" and meta["objects"]["opt_G"]["kind"] == "optimizer"


# ------------------------------------------------------------------------------------------------
# Pruning, temporary directories, failed saves.

def _steps(run_dir) -> list[int]:
    return [int(p.name[5:]) for p in list_checkpoints(run_dir)]


def test_keep_prunes_the_oldest_but_never_the_one_just_written(tmp_path):
    G = nn.Linear(2, 2)
    for step in range(1, 6):
        save_checkpoint(tmp_path, step, {"G": G}, CONFIG, keep=2)
    assert _steps(tmp_path) == [4, 5]
    with pytest.warns(UserWarning, match="newer checkpoints"):
        save_checkpoint(tmp_path, 3, {"G": G}, CONFIG, keep=1)   # an older step, written last
    assert _steps(tmp_path) == [3, 5]
    for step in (6, 7):
        save_checkpoint(tmp_path, step, {"G": G}, CONFIG, keep=None)
    assert _steps(tmp_path) == [3, 5, 6, 7]
    assert [p.name for p in (tmp_path / "checkpoints").iterdir() if p.name.startswith(".")] == []


def _dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_stale_tmp_dirs_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    root = tmp_path / "checkpoints"
    dead, live = _dead_pid(), os.getppid()
    stale = [root / f".tmp-ckpt-000000009-{dead}", root / f".tmp-del-ckpt-000000001-{dead}"]
    in_progress = root / f".tmp-ckpt-000000009-{live}"
    for d in stale + [in_progress]:
        d.mkdir(parents=True)
        (d / "tensors.safetensors").write_bytes(b"partial")
    save_checkpoint(tmp_path, 1, {"G": nn.Linear(2, 2)}, CONFIG)
    assert not any(d.exists() for d in stale)
    assert in_progress.exists()


def test_a_failing_save_leaves_no_trace_and_the_previous_checkpoint_intact(tmp_path):
    G = nn.Linear(2, 2)
    first = save_checkpoint(tmp_path, 1, {"G": G}, CONFIG)

    def fail(tmp_dir):
        assert (tmp_dir / "meta.json").is_file() and (tmp_dir / "tensors.safetensors").is_file()
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        save_checkpoint(tmp_path, 2, {"G": G}, CONFIG, _before_commit=fail)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == [first.name]
    assert latest_checkpoint(tmp_path) == first


def test_saving_a_step_again_replaces_it(tmp_path):
    G = nn.Linear(2, 2)
    save_checkpoint(tmp_path, 5, {"G": G}, CONFIG)
    with torch.no_grad():
        G.weight.fill_(0.25)
    path = save_checkpoint(tmp_path, 5, {"G": G}, CONFIG)
    fresh = nn.Linear(2, 2)
    load_checkpoint(path, {"G": fresh})
    assert torch.equal(fresh.weight, torch.full((2, 2), 0.25))


# ------------------------------------------------------------------------------------------------
# Corruption, resume semantics, load errors.

def _truncate(path):
    f = path / "tensors.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])


def _flip_last_byte(path):
    f = path / "tensors.safetensors"
    raw = bytearray(f.read_bytes())
    raw[-1] ^= 0x01
    f.write_bytes(bytes(raw))


def _set_incomplete(path):
    meta = json.loads((path / "meta.json").read_text())
    meta["complete"] = False
    (path / "meta.json").write_text(json.dumps(meta))


CORRUPTIONS = {
    "truncated tensors": (_truncate, "does not match its sha256"),
    "flipped byte": (_flip_last_byte, "does not match its sha256"),
    "meta missing": (lambda p: (p / "meta.json").unlink(), "meta.json is missing"),
    "meta torn": (lambda p: (p / "meta.json").write_text('{"format": "ganf'), "does not parse"),
    "meta not text": (lambda p: (p / "meta.json").write_bytes(b"\xff\xfe\x00garbage"), "does not parse"),
    "complete false": (_set_incomplete, "complete=true"),
    "tensors missing": (lambda p: (p / "tensors.safetensors").unlink(), "tensors.safetensors is missing"),
}


@pytest.mark.parametrize("corruption", list(CORRUPTIONS))
def test_corrupted_checkpoints_are_skipped_and_refused(tmp_path, corruption):
    corrupt, reason = CORRUPTIONS[corruption]
    G = nn.Linear(2, 2)
    good = save_checkpoint(tmp_path, 1, {"G": G}, CONFIG)
    bad = save_checkpoint(tmp_path, 2, {"G": G}, CONFIG)
    corrupt(bad)
    assert checkpoint_problem(good) is None and reason in checkpoint_problem(bad)
    with pytest.warns(UserWarning, match="ckpt-000000002") as caught:
        assert latest_checkpoint(tmp_path) == good
        assert resolve_resume(tmp_path, "auto") == good
    assert all(reason in str(w.message) for w in caught)
    with pytest.raises(ValueError, match=reason):
        load_checkpoint(bad, {"G": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match=reason):
        resolve_resume(tmp_path, bad)


def test_resolve_resume_none_auto_and_paths(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")     # an empty run directory is a fresh start, not a warning
        assert resolve_resume(tmp_path, "auto") is None
    G = nn.Linear(2, 2)
    first = save_checkpoint(tmp_path, 10, {"G": G}, CONFIG)
    second = save_checkpoint(tmp_path, 20, {"G": G}, CONFIG)
    assert resolve_resume(tmp_path, None) is None
    assert resolve_resume(tmp_path, "auto") == second
    assert resolve_resume(tmp_path, str(first)) == first
    with pytest.raises(ValueError, match="not a directory"):
        resolve_resume(tmp_path, str(tmp_path / "checkpoints" / "ckpt-000000099"))
    with pytest.raises(ValueError, match="ckpt-<9 digits>"):
        resolve_resume(tmp_path, tmp_path)
    with pytest.raises(ValueError, match="resume must be"):
        resolve_resume(tmp_path, 3)


def test_load_errors_name_the_object_or_key_and_load_nothing(tmp_path):
    G, D = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2)), nn.Linear(2, 1)
    path = save_checkpoint(tmp_path, 1, {"D": D, "G": G}, CONFIG)

    with pytest.raises(ValueError, match=r"no object\(s\) \['G_ema'\]"):
        load_checkpoint(path, {"D": D, "G": G, "G_ema": nn.Linear(2, 2)})
    with pytest.raises(ValueError, match=r"also holds \['G'\]"):
        load_checkpoint(path, {"D": D})
    only_G = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    load_checkpoint(path, {"G": only_G}, partial=True)
    assert torch.equal(only_G[1].weight, G[1].weight)

    fresh_D = nn.Linear(2, 1)
    before = fresh_D.weight.clone()
    wider_G = nn.Sequential(nn.Linear(2, 5), nn.Linear(5, 2))
    with pytest.raises(ValueError, match=r"'G/0.weight' has shape \[4, 2\] in the state dict, \[5, 2\] here"):
        load_checkpoint(path, {"D": fresh_D, "G": wider_G})
    assert torch.equal(fresh_D.weight, before)          # D comes first, yet nothing was loaded

    deeper_G = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"keys absent from the state dict \['G/2.weight', 'G/2.bias'\]"):
        load_checkpoint(path, {"D": D, "G": deeper_G})
    with pytest.raises(ValueError, match="'G' is of kind 'module' in the checkpoint, 'optimizer' here"):
        load_checkpoint(path, {"D": D, "G": torch.optim.SGD(D.parameters(), lr=0.1)})


def test_optimizer_group_mismatch_is_named(tmp_path):
    G = nn.Sequential(nn.Linear(2, 4), nn.Linear(4, 2))
    path = save_checkpoint(tmp_path, 1, {"opt": torch.optim.Adam(G.parameters())}, CONFIG)
    split = torch.optim.Adam([{"params": G[0].parameters()}, {"params": G[1].parameters()}])
    with pytest.raises(ValueError, match=r"'opt' does not match the checkpoint: parameter groups of sizes \[4\] "
                                         r"in the checkpoint, \[2, 2\] here"):
        load_checkpoint(path, {"opt": split})


@pytest.mark.parametrize("bad, match", [
    (dict(step=-1), "step must be"), (dict(step=True), "step must be"), (dict(keep=0), "keep must be"),
    (dict(objects={"a/b": nn.Linear(1, 1)}), "without '/'"), (dict(objects={"rng": nn.Linear(1, 1)}), "reserved"),
    (dict(objects={"x": object()}), "state_dict"), (dict(objects={}), "non-empty"),
    (dict(config={"t": torch.zeros(1)}), "JSON-able"),
    (dict(objects={"x": _Stateful({"w": np.zeros(2)})}), "cannot store ndarray at 'x/w'"),
])
def test_save_rejects_bad_arguments(tmp_path, bad, match):
    kwargs = dict(step=1, objects={"G": nn.Linear(1, 1)}, config=CONFIG) | bad
    with pytest.raises(ValueError, match=match):
        save_checkpoint(tmp_path, **kwargs)
    assert list_checkpoints(tmp_path) == []


# ------------------------------------------------------------------------------------------------
# kill -9 during training.

class _ForkServer:
    """Drives `_ckpt_worker.py serve`: one process pays for importing torch, each run is a forked
    child that the test can SIGKILL."""

    def __init__(self):
        env = dict(os.environ, PYTHONPATH=str(REPO_ROOT))
        self.proc = subprocess.Popen([sys.executable, str(Path(worker.__file__)), "serve"], cwd=REPO_ROOT,
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0)
        self._pending = b""
        self.child = None

    def _readline(self, timeout: float) -> str:
        deadline = time.monotonic() + timeout
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.proc.stdout], [], [], left)[0]:
                raise AssertionError(f"worker server silent for {timeout} s")
            chunk = os.read(self.proc.stdout.fileno(), 4096)
            if not chunk:
                raise AssertionError(f"worker server exited with {self.proc.wait()}")
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line.decode()

    def start(self, run_dir: Path, log: Path, steps: int, every: int, env: dict) -> int:
        request = {"run_dir": str(run_dir), "log": str(log), "steps": steps, "every": every, "env": env}
        self.proc.stdin.write((json.dumps(request) + "\n").encode())
        kind, pid = self._readline(timeout=60).split()
        assert kind == "pid"
        self.child = int(pid)
        return self.child

    def wait_exit(self, timeout: float = 60) -> int:
        kind, code = self._readline(timeout).split()
        assert kind == "exit"
        self.child = None
        return int(code)

    def close(self):
        """Also after a failed assertion: a child left hanging in a save would block the server."""
        if self.child is not None:
            try:
                os.kill(self.child, signal.SIGKILL)
            except ProcessLookupError:   # it had finished on its own
                pass
        self.proc.stdin.close()
        try:
            self.proc.wait(timeout=30)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()


def _wait_for(condition, what: str, timeout: float = 60):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.002)


def _step_lines(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("step ")] if log.exists() else []


def _last_value_per_step(log: Path) -> dict[int, str]:
    last = {}
    for line in _step_lines(log):
        _, step, values = line.split(" ", 2)
        last[int(step)] = values
    return last


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_uninterrupted_losses(tmp_path):
    steps, every, hang_at = 150, 10, 30
    server = _ForkServer()
    try:
        reference_log = tmp_path / "reference.log"
        server.start(tmp_path / "reference", reference_log, steps, every, env={})
        assert server.wait_exit() == 0

        run_dir, log = tmp_path / "run", tmp_path / "run.log"
        exit_codes = []

        # 1. Killed inside save_checkpoint of step 30: files written, not yet renamed.
        marker = run_dir / "hanging-in-save"
        pid = server.start(run_dir, log, steps, every, env={"GANFAST_TEST_HANG_AT_SAVE": str(hang_at)})
        _wait_for(marker.exists, "the save of step 30 to hang")
        tmp_dir = Path(marker.read_text())
        assert tmp_dir.name.startswith(".tmp-ckpt-000000030-") and (tmp_dir / "meta.json").is_file()
        os.kill(pid, signal.SIGKILL)
        exit_codes.append(server.wait_exit())
        assert tmp_dir.is_dir()                         # what the kill left behind ...
        assert latest_checkpoint(run_dir).name == "ckpt-000000020"   # ... is not taken for a checkpoint
        marker.unlink()

        # 2. Killed at random moments (mid-step, mid-save or between), each after some progress.
        chooser = random.Random(20240611)
        for _ in range(3):
            lines_before = len(_step_lines(log))
            pid = server.start(run_dir, log, steps, every, env={"GANFAST_TEST_STEP_SLEEP": "0.004"})
            target = lines_before + chooser.randint(4, 25)
            _wait_for(lambda: len(_step_lines(log)) >= target, "training progress")
            time.sleep(chooser.uniform(0.0, 0.03))
            os.kill(pid, signal.SIGKILL)
            exit_codes.append(server.wait_exit())
            for path in list_checkpoints(run_dir):
                assert checkpoint_problem(path) is None, path

        # 3. Run to the end.
        server.start(run_dir, log, steps, every, env={})
        exit_codes.append(server.wait_exit())
    finally:
        server.close()

    assert exit_codes == [-signal.SIGKILL] * 4 + [0]
    lines = log.read_text().splitlines()
    starts = [int(line.split()[1]) for line in lines if line.startswith("start ")]
    assert starts[:2] == [0, 20] and len(starts) == 5 and lines[-1] == "done"
    logged_steps = [int(line.split()[1]) for line in _step_lines(log)]
    assert len(logged_steps) > len(set(logged_steps))  # work after the last checkpoint was redone

    expected = _last_value_per_step(reference_log)
    got = _last_value_per_step(log)
    assert sorted(expected) == list(range(steps)) and sorted(got) == list(range(steps))
    mismatched = [(s, got[s], expected[s]) for s in range(steps) if got[s] != expected[s]]
    assert not mismatched, f"first mismatches (step, got, expected): {mismatched[:3]}"

    assert _steps(run_dir) == [130, 140, 150]
    assert [p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith(".")] == []
    for path in list_checkpoints(run_dir):
        meta = load_checkpoint(path, worker.build(seed=99))
        assert meta["step"] == int(path.name[5:]) and meta["cur_nimg"] == meta["step"] * worker.BATCH
