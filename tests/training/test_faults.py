"""Faults of a training run (issue 26), each with what ganfast does about it:

    SIGTERM / SIGINT        finish the step, checkpoint, exit 128 + signum with the resume command
    a second signal         exit at once, by that signal; the cut save leaves only a .tmp directory
    disk full (checkpoint)  real EFBIG from RLIMIT_FSIZE: earlier checkpoints intact, exit 1, message
    disk full (logs)        the same for a sample grid / log file
    corrupt newest ckpt     --resume auto warns and resumes from the newest good one
    hostile files           checkpoints, weights and pickles are refused with a ValueError; no
                            torch.load without weights_only=True and no pickle in the package (AST)
    dead / hung worker      2 gloo processes launched by hand (no torchrun, which would kill the
                            survivor itself): the survivor exits 1 with a clear message

Training runs are stylegan2-32-fmnist shrunk to seconds, as in test_run.py.
"""
from __future__ import annotations

import ast
import hashlib
import json
import os
import pickle
import resource
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from torch import nn

from ganfast.cli import main
from ganfast.training import loop
from ganfast.training.checkpoint import (checkpoint_problem, latest_checkpoint, list_checkpoints, load_checkpoint,
                                         save_checkpoint)
from tests.training import _fault_worker

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE = REPO_ROOT / "ganfast"
TINY = ("--preset", "stylegan2-32-fmnist", "--model", "channel_max=8,channel_base=256,z_dim=16,w_dim=16")
# The resume-exactness checks use stylegan2: its steps draw from the global torch RNG (noise inputs,
# style mixing, path-length noise), so they also prove that RNG is seeded and restored
TINY_EXACT = TINY
PROCESS_TIMEOUT_S = 300          # generous: only a hang trips it (imports take ~5 s on 2 busy cores)


def train_argv(out: Path, *extra: str, model: tuple = TINY) -> list[str]:
    """`ganfast train` of a tiny model: 8 images a step, a tick and a checkpoint every step."""
    return ["train", "--out", str(out), *model, "--batch", "8", "--tick", "0.008", "--snap", "0.008",
            "--metrics", "none", "--no-progress", "--no-tensorboard", *extra]


def resume_command(stderr: str) -> list[str]:
    """The argv of the command the message says to run next (after 'To continue: ganfast')."""
    line = next(line for line in stderr.splitlines() if "To continue: ganfast " in line)
    return shlex.split(line.split("To continue: ganfast ", 1)[1])


def names(out: Path) -> list[str]:
    return [p.name for p in list_checkpoints(out)]


def tmp_dirs(out: Path) -> list[str]:
    return sorted(p.name for p in (out / "checkpoints").iterdir() if p.name.startswith(".tmp"))


def digest(path: Path) -> str:
    """sha256 over a checkpoint directory's files (names and bytes)."""
    h = hashlib.sha256()
    for f in sorted(path.iterdir()):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------
# Signals.

def _signal_at_step(monkeypatch, at: int, signum: int) -> None:
    """Send this process `signum` (a real signal) as step `at` begins; the step still runs."""
    real_step = loop.Trainer.step

    def step(self):
        if self.progress.step == at:
            os.kill(os.getpid(), signum)
        return real_step(self)
    monkeypatch.setattr(loop.Trainer, "step", step)


def test_sigterm_finishes_the_step_saves_and_the_resume_command_continues_exactly(tmp_path, monkeypatch, capfd):
    """SIGTERM as step 3 begins: step 3 finishes, its checkpoint is written (snapshots fall on even
    steps, so this one is the signal's), exit 143, the previous handler is back, and the printed
    command continues to the same weights as a run never interrupted."""
    out, full = tmp_path / "run", tmp_path / "full"
    args = ("--kimg", "0.04", "--snap", "0.016")

    def previous_handler(signum, frame):
        raise AssertionError("the run's handler should have been called")
    before = signal.signal(signal.SIGTERM, previous_handler)
    try:
        with monkeypatch.context() as m:
            _signal_at_step(m, 2, signal.SIGTERM)
            assert main(train_argv(out, *args, model=TINY_EXACT)) == 128 + signal.SIGTERM
        assert signal.getsignal(signal.SIGTERM) is previous_handler
    finally:
        signal.signal(signal.SIGTERM, before)
    err = capfd.readouterr().err          # fd level: the handler writes with os.write
    ckpt = out / "checkpoints" / "ckpt-000000003"
    assert "SIGTERM received: finishing the current step" in err
    assert f"stopped by SIGTERM at 0.024 kimg (step 3); the last checkpoint is {ckpt}" in err, err
    assert names(out) == ["ckpt-000000002", "ckpt-000000003"] and checkpoint_problem(ckpt) is None
    command = resume_command(err)
    assert command == train_argv(out, *args, model=TINY_EXACT) + ["--resume", "auto"]

    assert main(command) == 0
    assert main(train_argv(full, *args, model=TINY_EXACT)) == 0
    resumed = load_file(out / "checkpoints" / "ckpt-000000005" / "tensors.safetensors")
    uninterrupted = load_file(full / "checkpoints" / "ckpt-000000005" / "tensors.safetensors")
    assert resumed.keys() == uninterrupted.keys()
    differ = [k for k in resumed if not torch.equal(resumed[k], uninterrupted[k])]
    assert not differ, f"interrupted + resumed differs from uninterrupted in {differ[:5]}"


def load_file(path: Path) -> dict:
    from safetensors.torch import load_file as load
    return load(path)


def test_sigint_exits_130_and_handlers_are_left_alone_off_the_main_thread(tmp_path, monkeypatch, capsys):
    # the handler this process had (Python's default_int_handler; SIG_IGN when pytest was started
    # as a background job of a non-interactive shell): what the run must restore
    before = signal.getsignal(signal.SIGINT)
    with monkeypatch.context() as m:
        _signal_at_step(m, 0, signal.SIGINT)
        assert main(train_argv(tmp_path / "a", "--kimg", "0.024", "--snap", "1")) == 128 + signal.SIGINT
    assert "stopped by SIGINT at 0.008 kimg (step 1)" in capsys.readouterr().err
    assert names(tmp_path / "a") == ["ckpt-000000001"]
    assert signal.getsignal(signal.SIGINT) is before

    # from another thread (Python code may do that) nothing is installed, and training works
    result = {}
    thread = threading.Thread(target=lambda: result.setdefault("rc", main(train_argv(tmp_path / "b", "--kimg",
                                                                                      "0.008"))))
    thread.start()
    thread.join(PROCESS_TIMEOUT_S)
    assert result.get("rc") == 0 and names(tmp_path / "b") == ["ckpt-000000001"]
    assert signal.getsignal(signal.SIGINT) is before


def _wait_for(predicate, what: str, proc: subprocess.Popen, timeout: float = PROCESS_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            pytest.fail(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {timeout} s")
        time.sleep(0.05)


def _env() -> dict:
    return dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(
        [str(REPO_ROOT)] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])))


@pytest.mark.slow
def test_a_second_signal_exits_at_once_and_loses_only_the_save_it_cut(tmp_path, capsys):
    """Real signals from outside: while the save of step 3 is held open (everything written, not
    yet renamed), a first SIGTERM only announces the stop; a second one ends the process by
    SIGTERM. Checkpoints 1 and 2 are intact, step 3 is only a .tmp directory, and --resume auto
    continues from step 2 (removing the dead writer's .tmp directory)."""
    out = tmp_path / "run"
    stderr_path = tmp_path / "stderr.txt"
    with open(stderr_path, "wb") as stderr:
        proc = subprocess.Popen([sys.executable, _fault_worker.__file__, "3", *train_argv(out, "--kimg", "0.04")],
                                cwd=REPO_ROOT, env=_env(), stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        _wait_for(lambda: (out / "hanging-in-save").exists(), "save of step 3", proc)
        proc.send_signal(signal.SIGTERM)
        _wait_for(lambda: b"SIGTERM received" in stderr_path.read_bytes(), "message of the first signal", proc)
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    finally:
        proc.kill()
        proc.wait()
    err = stderr_path.read_text()
    assert proc.returncode == -signal.SIGTERM, err
    assert "SIGTERM again: exiting now, without a checkpoint" in err
    assert names(out) == ["ckpt-000000001", "ckpt-000000002"]
    assert all(checkpoint_problem(p) is None for p in list_checkpoints(out))
    assert tmp_dirs(out) == [f".tmp-ckpt-000000003-{proc.pid}"]

    assert main(train_argv(out, "--kimg", "0.032", "--resume", "auto")) == 0
    assert "resumed from " + str(out / "checkpoints" / "ckpt-000000002") in capsys.readouterr().out
    assert names(out)[-1] == "ckpt-000000004" and tmp_dirs(out) == []


# ------------------------------------------------------------------------------------------------
# Write errors: a real kernel-level failure. RLIMIT_FSIZE makes a write past the limit fail with
# EFBIG ("File too large") once SIGXFSZ is ignored, as ENOSPC fails it on a full disk.

@pytest.fixture
def file_size_limit():
    """set_limit(n): writes past n bytes in any file fail with EFBIG; undone afterwards."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)

    def set_limit(n: int) -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (n, hard))
    try:
        yield set_limit
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)


def _limit_after_first_checkpoint(monkeypatch, set_limit, limit_of) -> dict:
    """After the first checkpoint is written, limit file sizes to limit_of(checkpoint path);
    returns {"first": path, "digest": its digest then}."""
    real_save = loop.save_checkpoint
    first = {}

    def save(*args, **kwargs):
        path = real_save(*args, **kwargs)
        if not first:
            first.update(first=path, digest=digest(path))
            set_limit(limit_of(path))
        return path
    monkeypatch.setattr(loop, "save_checkpoint", save)
    return first


def test_a_failed_checkpoint_write_keeps_the_earlier_ones_and_says_how_to_resume(
        tmp_path, monkeypatch, capsys, file_size_limit):
    """The tensor file of step 2's checkpoint cannot be written (half the size of step 1's): exit 1,
    the message names the file, the errno text and the last good checkpoint; step 1's checkpoint
    is byte for byte intact and no .tmp directory is left. With the limit lifted, the printed
    command continues from step 1."""
    out = tmp_path / "run"
    first = _limit_after_first_checkpoint(monkeypatch, file_size_limit,
                                          lambda path: (path / "tensors.safetensors").stat().st_size // 2)
    assert main(train_argv(out, "--kimg", "0.032")) == 1
    file_size_limit(resource.RLIM_INFINITY)
    monkeypatch.undo()
    err = capsys.readouterr().err
    good = out / "checkpoints" / "ckpt-000000001"
    assert first["first"] == good
    assert "could not write the checkpoint of step 2 (snapshot): [Errno 27] File too large" in err, err
    assert "ckpt-000000002" in err and "tensors.safetensors" in err
    assert f"the earlier checkpoints are intact" in err and f"the last checkpoint is {good}" in err
    assert names(out) == [good.name] and digest(good) == first["digest"] and tmp_dirs(out) == []

    assert main(resume_command(err)) == 0
    assert "resumed from " + str(good) in capsys.readouterr().out
    assert names(out)[-1] == "ckpt-000000004"


def test_a_failed_log_write_stops_the_run_with_the_file_named(tmp_path, monkeypatch, capsys, file_size_limit):
    """After step 1's checkpoint, files may not grow past half a sample grid: step 2's grid fails.
    Exit 1; the message names the grid, the errno text, and step 1's checkpoint."""
    out = tmp_path / "run"
    _limit_after_first_checkpoint(monkeypatch, file_size_limit,
                                  lambda path: (out / "samples" / "latest.png").stat().st_size // 2)
    assert main(train_argv(out, "--kimg", "0.032")) == 1
    file_size_limit(resource.RLIM_INFINITY)
    err = capsys.readouterr().err
    grid = out / "samples" / "grid-000000016img.png"
    assert f"I/O error at 0.016 kimg (step 2): [Errno 27] File too large: '{grid}'" in err, err
    assert f"the last checkpoint is {out / 'checkpoints' / 'ckpt-000000001'}" in err and "--resume auto" in err


# ------------------------------------------------------------------------------------------------
# Corrupt newest checkpoint, end to end.

@pytest.fixture(scope="module")
def two_checkpoints(tmp_path_factory):
    out = tmp_path_factory.mktemp("two") / "run"
    assert main(train_argv(out, "--kimg", "0.016")) == 0
    assert names(out) == ["ckpt-000000001", "ckpt-000000002"]
    return out


def _rewrite_meta(path: Path, change) -> None:
    meta = json.loads((path / "meta.json").read_text())
    change(meta)
    (path / "meta.json").write_text(json.dumps(meta))


NEWEST_CORRUPTIONS = {
    "truncated tensors": lambda p: (p / "tensors.safetensors").write_bytes(
        (p / "tensors.safetensors").read_bytes()[:1000]),
    "wrong hash": lambda p: _rewrite_meta(p, lambda m: m.update(tensors_sha256="0" * 64)),
    "missing meta.json": lambda p: (p / "meta.json").unlink(),
    "garbled meta.json": lambda p: (p / "meta.json").write_bytes(b'{"format": "ganfast-checkpoint", "ste\x00'),
}


@pytest.mark.parametrize("corruption", list(NEWEST_CORRUPTIONS))
def test_resume_auto_warns_and_falls_back_to_the_newest_good_checkpoint(two_checkpoints, tmp_path, capsys,
                                                                        corruption):
    out = tmp_path / "run"
    shutil.copytree(two_checkpoints, out)
    NEWEST_CORRUPTIONS[corruption](out / "checkpoints" / "ckpt-000000002")
    with pytest.warns(UserWarning, match="skipping incomplete or corrupted checkpoints: .*ckpt-000000002"):
        assert main(train_argv(out, "--kimg", "0.024", "--resume", "auto")) == 0
    assert "resumed from " + str(out / "checkpoints" / "ckpt-000000001") in capsys.readouterr().out
    assert names(out) == ["ckpt-000000001", "ckpt-000000002", "ckpt-000000003"]
    assert all(checkpoint_problem(p) is None for p in list_checkpoints(out))      # step 2 written afresh


# ------------------------------------------------------------------------------------------------
# Hostile files: nothing from a file is run, and malformed ones are a clear error.

SENTINEL_NAME = "ran-code-from-a-file"


class _RunsACommand:
    """Unpickling this calls os.system (what a hostile .pt does)."""

    def __init__(self, sentinel: Path):
        self.sentinel = sentinel

    def __reduce__(self):
        return os.system, (f"touch {shlex.quote(str(self.sentinel))}",)


@pytest.mark.parametrize("container", ["torch.save", "raw pickle"])
def test_weights_files_whose_pickle_runs_code_are_refused(tmp_path, container):
    from ganfast.models.convert import load_rosinality, read_weights
    sentinel = tmp_path / SENTINEL_NAME
    path = tmp_path / "weights.pt"
    payload = {"style.1.weight": torch.zeros(2), "evil": _RunsACommand(sentinel)}
    if container == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    for load in (read_weights, load_rosinality):
        with pytest.raises(ValueError, match="refuses to load unsafe pickles"):
            load(path)
    assert not sentinel.exists()


def _with_tensor_file(raw: bytes):
    """A corruption: replace tensors.safetensors by `raw` and fix the sha256, so only the
    contents are hostile."""
    def corrupt(path: Path) -> None:
        (path / "tensors.safetensors").write_bytes(raw)
        _rewrite_meta(path, lambda m: m.update(tensors_sha256=hashlib.sha256(raw).hexdigest()))
    return corrupt


def _safetensors(header: dict, data: bytes = b"") -> bytes:
    raw = json.dumps(header).encode()
    return struct.pack("<Q", len(raw)) + raw + data


HOSTILE_CHECKPOINTS = {   # name: (corruption, what the ValueError says)
    "header length 2**62": (_with_tensor_file(struct.pack("<Q", 2 ** 62) + b"{}"), "not a valid safetensors file"),
    "tensor larger than the file": (_with_tensor_file(_safetensors(
        {"G/weight": {"dtype": "F32", "shape": [2 ** 40, 2 ** 20], "data_offsets": [0, 2 ** 62]}}, b"\0" * 16)),
        "not a valid safetensors file"),
    "unknown dtype": (_with_tensor_file(_safetensors(
        {"G/weight": {"dtype": "EVIL", "shape": [2, 2], "data_offsets": [0, 16]}}, b"\0" * 16)),
        "not a valid safetensors file"),
    "objects not a dict": (lambda p: _rewrite_meta(p, lambda m: m.update(objects=[1, 2])), "malformed"),
    "object kind unknown": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"].update(kind="exec")),
                            "malformed"),
    "state node with two kinds": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"].update(
        state={"dict": [], "list": []})), "expected exactly one of"),
    "dict item not a pair": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"].update(
        state={"dict": [["weight"]]})), r"must be \[str or int key, value\]"),
    "a number where a tensor was": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"]["state"]["dict"][0]
                                                            .__setitem__(1, 3.0)), "is a float in the state dict"),
    "tensor name not a string": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"]["state"]["dict"][0]
                                                         .__setitem__(1, {"tensor": [1]})), "is missing from"),
    "module_versions junk": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["G"].update(module_versions={"": 3})),
                             "module_versions"),
    "rng junk": (lambda p: _rewrite_meta(p, lambda m: m.update(rng={"numpy": "x"})), "'rng'"),
    "optimizer without param_groups": (lambda p: _rewrite_meta(p, lambda m: m["objects"]["opt"].update(
        state={"dict": [["state", {"dict": []}]]})), "param_groups"),
    "nested 100000 deep": (lambda p: (p / "meta.json").write_text("[" * 100000 + "]" * 100000), None),
    "meta.json a list": (lambda p: (p / "meta.json").write_text("[1, 2, 3]"), None),
}


@pytest.mark.parametrize("hostile", list(HOSTILE_CHECKPOINTS))
def test_hostile_checkpoints_are_a_clear_error_or_skipped(tmp_path, hostile):
    """A checkpoint whose meta.json or tensor file is malformed on purpose (with its sha256 made to
    match): load_checkpoint raises a ValueError saying what is wrong, and changes nothing; files
    that are not checkpoints at all (None) are skipped by --resume auto."""
    corrupt, message = HOSTILE_CHECKPOINTS[hostile]
    G = nn.Linear(2, 2)
    objects = {"G": G, "opt": torch.optim.Adam(G.parameters())}
    good = save_checkpoint(tmp_path, 1, objects, {})
    bad = save_checkpoint(tmp_path, 2, objects, {})
    corrupt(bad)
    fresh = nn.Linear(2, 2)
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    if message is None:
        assert checkpoint_problem(bad) is not None
        with pytest.warns(UserWarning, match="ckpt-000000002"):
            assert latest_checkpoint(tmp_path) == good
    else:
        assert checkpoint_problem(bad) is None          # looks complete: only loading finds out
        with pytest.raises(ValueError, match=message):
            load_checkpoint(bad, {"G": fresh, "opt": torch.optim.Adam(fresh.parameters())})
    assert all(torch.equal(v, before[k]) for k, v in fresh.state_dict().items())


# -- no code from files: a scan of the package's source

ALLOWED_PICKLE = {"ganfast/models/nvlabs_pkl.py"}     # a restricted Unpickler (find_class overridden)
FORBIDDEN_CALLS = {("pickle", "load"), ("pickle", "loads"), ("pickle", "Unpickler"), ("_pickle", "load"),
                   ("_pickle", "loads"), ("marshal", "load"), ("marshal", "loads"), ("dill", "load"),
                   ("dill", "loads"), ("joblib", "load"), ("shelve", "open")}


def _aliases(tree: ast.Module) -> dict[str, str]:
    """local name -> dotted origin for every import in the file ('T' -> 'torch', 'tl' -> 'torch.load')."""
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                names[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            for a in node.names:
                names[a.asname or a.name] = f"{node.module}.{a.name}"
    return names


def _dotted(node: ast.AST, aliases: dict[str, str]) -> str:
    """'torch.load' for torch.load(...), T.load(...), `from torch import load` ... load(...)."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return ""
    parts.append(aliases.get(node.id, node.id))
    return ".".join(reversed(parts))


def _problems(source: str, relative: str) -> list[str]:
    tree = ast.parse(source)
    aliases = _aliases(tree)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            name = _dotted(node.func, aliases)
            where = f"{relative}:{node.lineno}"
            if name in ("torch.load", "torch.serialization.load"):
                safe = any(k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
                           for k in node.keywords)
                if not safe:
                    found.append(f"{where}: {name}(...) without the literal weights_only=True")
            elif tuple(name.rsplit(".", 1)) in FORBIDDEN_CALLS and relative not in ALLOWED_PICKLE:
                found.append(f"{where}: {name}(...) can run code from the file")
            elif name in ("numpy.load", "np.load") and any(
                    k.arg == "allow_pickle" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                    for k in node.keywords):
                found.append(f"{where}: {name}(...) with allow_pickle other than False")
        elif isinstance(node, ast.ClassDef) and relative not in ALLOWED_PICKLE:
            if any(_dotted(b, aliases) in ("pickle.Unpickler", "_pickle.Unpickler") for b in node.bases):
                found.append(f"{relative}:{node.lineno}: class {node.name} subclasses pickle.Unpickler outside "
                             f"the allow-list {sorted(ALLOWED_PICKLE)}")
    return found


def test_the_scan_catches_what_it_looks_for():
    """The scanner itself: each unsafe form is reported, the safe ones are not."""
    bad = ("import torch\ntorch.load(f)\n", "import torch as T\nT.load(f, weights_only=False)\n",
           "from torch import load\nload(f, weights_only=flag)\n", "import pickle\npickle.loads(b)\n",
           "from pickle import Unpickler as U\nU(f).load()\n", "import numpy as np\nnp.load(f, allow_pickle=True)\n",
           "import pickle\nclass R(pickle.Unpickler):\n    pass\n")
    for source in bad:
        assert _problems(source, "ganfast/x.py"), source
    good = ("import torch\ntorch.load(f, map_location='cpu', weights_only=True)\n",
            "import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass\n",
            "import numpy as np\nnp.load(f, allow_pickle=False)\n", "model.load(f)\n")
    for source in good:
        assert not _problems(source, "ganfast/x.py"), source


def test_no_code_from_files_torch_load_is_weights_only_and_no_pickle_in_the_package():
    files = sorted(PACKAGE.rglob("*.py"))
    assert len(files) > 50
    problems = []
    for path in files:
        problems += _problems(path.read_text(encoding="utf-8"), path.relative_to(REPO_ROOT).as_posix())
    assert not problems, "\n".join(problems)


def test_allowed_unpicklers_restrict_what_they_build():
    """Each allow-listed file that exists defines only Unpickler subclasses that override
    find_class (what decides which callables a pickle may reach), and never calls the
    unrestricted pickle.load / pickle.loads / pickle.Unpickler(...) itself."""
    for relative in sorted(ALLOWED_PICKLE):
        path = REPO_ROOT / relative
        if not path.exists():
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        aliases = _aliases(tree)
        subclasses = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)
                      and any(_dotted(b, aliases) in ("pickle.Unpickler", "_pickle.Unpickler") for b in node.bases)]
        assert subclasses, f"{relative}: no pickle.Unpickler subclass"
        for cls in subclasses:
            methods = {n.name for n in cls.body if isinstance(n, ast.FunctionDef)}
            assert "find_class" in methods, f"{relative}: class {cls.name} does not override find_class"
        unrestricted = [f"{relative}:{node.lineno}" for node in ast.walk(tree) if isinstance(node, ast.Call)
                        and _dotted(node.func, aliases) in ("pickle.load", "pickle.loads", "pickle.Unpickler")]
        assert not unrestricted, f"unrestricted unpickling at {unrestricted}"


# ------------------------------------------------------------------------------------------------
# A dead or hung process in a 2-process run.

# GANFAST_DIST_TIMEOUT of the hung-process test (it waits this long); short, but well above how far
# apart two processes starting together reach their first collective on a loaded machine
HUNG_TIMEOUT_S = 10
DIST_TIMEOUT_S = 120     # the other 2-process tests: nothing there should wait for it


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TwoProcesses:
    """`ganfast train` as ranks 0 and 1 of a gloo group, started by hand (torchrun's environment
    variables, no torchrun), each process's output in tmp_path/rank<r>.txt."""

    def __init__(self, tmp_path: Path, out: Path, timeout_s: float = DIST_TIMEOUT_S):
        env = dict(_env(), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
                   GANFAST_DIST_TIMEOUT=str(timeout_s))
        self.out, self.procs, self.logs = out, [], [tmp_path / f"rank{rank}.txt" for rank in range(2)]
        for rank in range(2):
            with open(self.logs[rank], "wb") as log:
                self.procs.append(subprocess.Popen(
                    [sys.executable, "-m", "ganfast.cli", *train_argv(out, "--kimg", "100", "--device", "cpu")],
                    cwd=REPO_ROOT, env=dict(env, RANK=str(rank), LOCAL_RANK=str(rank)), stdout=log,
                    stderr=subprocess.STDOUT))

    def wait_for_logged_steps(self, n: int) -> None:
        log = self.out / "log.jsonl"
        _wait_for(lambda: log.exists() and log.read_text().count("\n") >= n, f"{n} logged steps", self.procs[0])

    def output(self, rank: int) -> str:
        return self.logs[rank].read_text()

    def close(self) -> None:
        for proc in self.procs:
            proc.kill()
            proc.wait()


@pytest.mark.slow
def test_a_signal_to_one_rank_stops_every_rank_after_the_same_step(tmp_path):
    """SIGTERM to rank 1 alone: the ranks all-reduce the flag after each step, so both stop after
    the same step; rank 0 writes that step's checkpoint and says so; both exit 143."""
    out = tmp_path / "run"
    ranks = TwoProcesses(tmp_path, out)
    try:
        ranks.wait_for_logged_steps(2)
        ranks.procs[1].send_signal(signal.SIGTERM)
        for proc in ranks.procs:
            proc.wait(timeout=PROCESS_TIMEOUT_S)
    finally:
        ranks.close()
    outputs = [ranks.output(rank) for rank in range(2)]
    assert [proc.returncode for proc in ranks.procs] == [128 + signal.SIGTERM] * 2, outputs
    assert "SIGTERM received" in outputs[1] and "SIGTERM received" not in outputs[0]
    stop = [line for line in outputs[0].splitlines() if "stopped by SIGTERM" in line]
    assert len(stop) == 1 and "stopped by SIGTERM" not in outputs[1], outputs
    newest = list_checkpoints(out)[-1]
    assert f"(step {int(newest.name[5:])}); the last checkpoint is {newest}" in stop[0]
    assert checkpoint_problem(newest) is None
    assert "To continue: torchrun <the same torchrun options> -m ganfast.cli train" in stop[0]


@pytest.mark.slow
@pytest.mark.parametrize("fault", ["SIGKILL", "SIGSTOP"])
def test_the_survivor_of_a_dead_or_hung_process_exits_with_an_error(tmp_path, fault):
    """Once rank 0 has logged two steps, rank 1 is killed (SIGKILL: its connections close, the
    survivor's next collective fails at once) or frozen (SIGSTOP: the survivor's collective times
    out after GANFAST_DIST_TIMEOUT). Either way rank 0 exits 1 with a message saying it lost the
    other processes, instead of waiting forever. (torchrun would stop the survivor itself.)"""
    out = tmp_path / "run"
    timeout_s = HUNG_TIMEOUT_S if fault == "SIGSTOP" else DIST_TIMEOUT_S
    ranks = TwoProcesses(tmp_path, out, timeout_s)
    try:
        ranks.wait_for_logged_steps(2)
        ranks.procs[1].send_signal(getattr(signal, fault))
        ranks.procs[0].wait(timeout=timeout_s + 120)
    finally:
        ranks.close()
    output = ranks.output(0)
    assert ranks.procs[0].returncode == 1, output
    assert "rank 0 of 2 lost the other processes" in output and f"GANFAST_DIST_TIMEOUT={timeout_s} s" in output
    assert ("Timed out" if fault == "SIGSTOP" else "Connection") in output, output
    assert "To continue: torchrun <the same torchrun options> -m ganfast.cli train" in output
    assert checkpoint_problem(list_checkpoints(out)[-1]) is None
