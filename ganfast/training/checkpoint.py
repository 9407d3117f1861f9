"""Checkpoints that survive `kill -9`: safetensors + JSON, written aside, fsynced, renamed.

Layout: `<run_dir>/checkpoints/ckpt-<step:09d>/` holds
    tensors.safetensors  every tensor: object states under "<name>/<path>" (a module's
                         "G/mapping.fc0.weight", an optimizer's "opt_G/state/0/exp_avg"),
                         RNG states as uint8 tensors "rng/torch_cpu", "rng/torch_cuda/<i>",
                         "rng/numpy_keys"
    meta.json            step, cur_nimg, config, extra, the non-tensor part of every object's state
                         (optimizer hyperparameters, Adam's step when it is a number, a GradScaler's
                         scale ...), the python `random` state, versions, the sha256 of
                         tensors.safetensors, and "complete": true. Written last.

Writing happens in `checkpoints/.tmp-ckpt-<step>-<pid>/`; both files and the directory are
fsynced, then the directory is renamed to its final name (atomic on POSIX) and the parent is
fsynced. A kill at any moment therefore leaves either the finished checkpoint or a `.tmp-*`
directory, which a later save removes once its writer is dead. Old checkpoints are renamed to a
`.tmp-*` name before they are deleted, so a kill mid-delete cannot leave a half-deleted
`ckpt-*`. A directory counts as a checkpoint iff its name is `ckpt-<9 digits>`, meta.json parses,
says complete and the tensor file's sha256 matches (`checkpoint_problem` says why not).

Only safetensors and JSON are read back: loading a checkpoint never runs pickle, and a malformed
or hostile meta.json or tensor file (wrong types, bad header sizes or dtypes) is a ValueError
saying what is wrong, raised before anything is loaded.

A failed write (disk full, a file-size limit, an I/O error) raises the OSError, naming the file;
the temporary directory is removed and the earlier checkpoints are untouched.

State dicts are serialised generically: nested dicts (str or int keys), lists and tuples whose
leaves are tensors or JSON scalars (None, bool, int, float, str) round-trip with their types, so
`torch.optim` state dicts (int parameter indices, `betas` tuples, `step` tensor or number),
`torch.amp.GradScaler`, `ganfast.training.ema.EMA` and any object with state_dict() /
load_state_dict() of that shape need no special code. Floats are stored with repr, so they come
back bit for bit; non-finite ones are written as JSON's common Infinity / NaN extension.

Distributed runs: only one process (rank 0) should save; the RNG states saved are that process's.
"""
from __future__ import annotations

import collections
import contextlib
import hashlib
import json
import os
import random
import re
import shutil
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Union

import numpy as np
import safetensors.torch
import torch
from torch import nn

import ganfast
from ganfast.training.ema import state_dict_mismatch, unwrap_model

__all__ = ["save_checkpoint", "load_checkpoint", "latest_checkpoint", "resolve_resume",
           "checkpoint_problem", "list_checkpoints", "naming_write_errors", "CHECKPOINTS_DIRNAME"]

CHECKPOINTS_DIRNAME = "checkpoints"
TENSORS_FILENAME = "tensors.safetensors"
META_FILENAME = "meta.json"
FORMAT_NAME = "ganfast-checkpoint"
FORMAT_VERSION = 1

_CKPT_NAME = re.compile(r"ckpt-(\d{9})")
_TMP_NAME = re.compile(r"\.tmp-.*-(\d+)")          # the writer's pid comes last
_RNG_PREFIX = "rng"                                # reserved tensor-name prefix

PathLike = Union[str, os.PathLike]


# ----------------------------------------------------------------------------------------------
# State (de)serialisation: split a nested state into a JSON skeleton and a flat dict of tensors.

def _flatten_state(state: Any, path: str, tensors: dict[str, torch.Tensor]) -> Any:
    """The JSON skeleton of `state`; its tensors go into `tensors` under `path/...` names.
    dict -> {"dict": [[key, value], ...]} (keeps int keys), list -> {"list": [...]},
    tuple -> {"tuple": [...]}, tensor -> {"tensor": name}; scalars stay as they are."""
    if isinstance(state, torch.Tensor):
        if path in tensors:
            raise ValueError(f"save_checkpoint: two state entries map to the tensor name {path!r} "
                             f"(a key containing '/'?)")
        # A private CPU copy: safetensors refuses tensors that share storage (tied weights), and the
        # file must hold the values of this moment even if training continues on another thread.
        tensors[path] = state.detach().to("cpu", copy=True).contiguous()
        return {"tensor": path}
    if isinstance(state, Mapping):
        items = []
        for key, value in state.items():
            if not isinstance(key, (str, int)) or isinstance(key, bool):
                raise ValueError(f"save_checkpoint: state key {key!r} at {path!r} must be a str or int, "
                                 f"got {type(key).__name__}")
            items.append([key, _flatten_state(value, f"{path}/{key}", tensors)])
        return {"dict": items}
    if isinstance(state, (list, tuple)):
        kind = "tuple" if isinstance(state, tuple) else "list"
        return {kind: [_flatten_state(v, f"{path}/{i}", tensors) for i, v in enumerate(state)]}
    if state is None or isinstance(state, (bool, int, float, str)):
        return state
    raise ValueError(f"save_checkpoint: cannot store {type(state).__name__} at {path!r}; states may hold "
                     f"tensors, dicts, lists, tuples, None, bool, int, float and str")


def _unflatten_state(skeleton: Any, tensors: Mapping[str, torch.Tensor], path: str = "") -> Any:
    """The inverse of _flatten_state. meta.json is data from a file: every node is checked, so a
    malformed or hostile one is a ValueError naming where it is, never a TypeError or KeyError."""
    if isinstance(skeleton, dict):
        if len(skeleton) != 1:
            raise ValueError(f"load_checkpoint: entry {path!r} in meta.json has keys {sorted(skeleton)[:5]}, "
                             f"expected exactly one of tensor, dict, list, tuple")
        (kind, value), = skeleton.items()
        if kind == "tensor":
            if not isinstance(value, str) or value not in tensors:
                raise ValueError(f"load_checkpoint: tensor {value!r} named in meta.json is missing "
                                 f"from {TENSORS_FILENAME}")
            return tensors[value]
        if kind in ("dict", "list", "tuple") and not isinstance(value, list):
            raise ValueError(f"load_checkpoint: entry {path!r} in meta.json: {kind} holds a "
                             f"{type(value).__name__}, expected a list")
        if kind == "dict":
            items = {}
            for item in value:
                if (not isinstance(item, list) or len(item) != 2 or isinstance(item[0], bool)
                        or not isinstance(item[0], (str, int))):
                    raise ValueError(f"load_checkpoint: entry {path!r} in meta.json: a dict item must be "
                                     f"[str or int key, value], got {str(item)[:80]}")
                items[item[0]] = _unflatten_state(item[1], tensors, f"{path}/{item[0]}")
            return items
        if kind == "list":
            return [_unflatten_state(v, tensors, f"{path}/{i}") for i, v in enumerate(value)]
        if kind == "tuple":
            return tuple(_unflatten_state(v, tensors, f"{path}/{i}") for i, v in enumerate(value))
        raise ValueError(f"load_checkpoint: unknown entry kind {kind!r} in meta.json")
    if skeleton is None or isinstance(skeleton, (bool, int, float, str)):
        return skeleton
    raise ValueError(f"load_checkpoint: entry {path!r} in meta.json is a {type(skeleton).__name__}")


def _object_kind(name: str, obj: Any) -> str:
    if isinstance(obj, nn.Module):
        return "module"
    if isinstance(obj, torch.optim.Optimizer):
        return "optimizer"
    if isinstance(obj, torch.Generator):
        return "generator"
    if callable(getattr(obj, "state_dict", None)) and callable(getattr(obj, "load_state_dict", None)):
        return "state_dict"
    raise ValueError(f"objects[{name!r}]: expected an nn.Module, an Optimizer, a torch.Generator or an "
                     f"object with state_dict()/load_state_dict(), got {type(obj).__name__}")


def _object_state(obj: Any, kind: str) -> Any:
    if kind == "generator":
        return obj.get_state()
    if kind == "module":
        return unwrap_model(obj).state_dict()   # unwrapped: a DDP-wrapped G and a bare G share keys
    return obj.state_dict()


def _module_versions(state: Mapping) -> dict:
    """A module state dict's _metadata, {submodule prefix: {"version": n}}. Stored because without
    it a module's _load_from_state_dict takes the state for the oldest format (version None)."""
    return {prefix: dict(entry) for prefix, entry in getattr(state, "_metadata", {}).items()}


def _load_object(obj: Any, kind: str, state: Any, module_versions: Optional[dict]) -> None:
    if kind == "generator":
        obj.set_state(state.cpu())
    elif kind == "module":
        state = collections.OrderedDict(state)
        state._metadata = collections.OrderedDict(module_versions or {})
        unwrap_model(obj).load_state_dict(state)
    else:
        obj.load_state_dict(state)


def _check_objects(objects: Any) -> dict[str, str]:
    """name -> kind, after checking the names can prefix tensor names."""
    if not isinstance(objects, Mapping) or not objects:
        raise ValueError(f"objects must be a non-empty dict name -> object, got {objects!r}")
    kinds = {}
    for name, obj in objects.items():
        if not isinstance(name, str) or not name or "/" in name or name == _RNG_PREFIX:
            raise ValueError(f"objects: name {name!r} must be a non-empty str without '/', and not "
                             f"{_RNG_PREFIX!r} (reserved)")
        kinds[name] = _object_kind(name, obj)
    return kinds


# ----------------------------------------------------------------------------------------------
# RNG states.

def _rng_state(tensors: dict[str, torch.Tensor]) -> dict:
    tensors[f"{_RNG_PREFIX}/torch_cpu"] = torch.get_rng_state()
    cuda_count = 0
    if torch.cuda.is_available() and torch.cuda.is_initialized():   # never initialise CUDA just to save
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"{_RNG_PREFIX}/torch_cuda/{i}"] = state.cpu()
        cuda_count = torch.cuda.device_count()
    bit_generator, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    tensors[f"{_RNG_PREFIX}/numpy_keys"] = torch.from_numpy(
        np.ascontiguousarray(keys, dtype="<u4").view(np.uint8).copy())
    version, internal, gauss_next = random.getstate()
    return {"torch_cuda_count": cuda_count,
            "numpy": [bit_generator, int(pos), int(has_gauss), float(cached_gaussian)],
            "python": [version, list(internal), gauss_next]}


def _restore_rng(rng: dict, tensors: Mapping[str, torch.Tensor]) -> None:
    torch.set_rng_state(tensors[f"{_RNG_PREFIX}/torch_cpu"].cpu())
    saved_cuda = rng["torch_cuda_count"]
    if saved_cuda:
        here = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if here != saved_cuda:
            warnings.warn(f"load_checkpoint: the checkpoint has CUDA RNG states for {saved_cuda} devices, "
                          f"this machine has {here}; restoring the first {min(here, saved_cuda)}")
        for i in range(min(here, saved_cuda)):
            torch.cuda.set_rng_state(tensors[f"{_RNG_PREFIX}/torch_cuda/{i}"].cpu(), i)
    bit_generator, pos, has_gauss, cached_gaussian = rng["numpy"]
    keys = tensors[f"{_RNG_PREFIX}/numpy_keys"].cpu().numpy().view("<u4").astype(np.uint32)
    np.random.set_state((bit_generator, keys, pos, has_gauss, cached_gaussian))
    version, internal, gauss_next = rng["python"]
    random.setstate((version, tuple(internal), gauss_next))


# ----------------------------------------------------------------------------------------------
# Files and directories.

def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes the names inside it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            digest.update(chunk)
    return digest.hexdigest()


@contextlib.contextmanager
def naming_write_errors(path: PathLike):
    """Re-raise an OSError from the block (disk full, file too large, I/O error) with `path` as its
    file name when it has none: a failing write() reports no file, and the user needs it."""
    try:
        yield
    except OSError as e:
        if e.filename is None:
            raise OSError(e.errno, e.strerror, str(path)) from e
        raise


def _write_file(path: Path, data: bytes) -> None:
    """Write `data` to `path` and fsync it (an OSError names `path`)."""
    with naming_write_errors(path), open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _write_json(path: Path, value: Any) -> None:
    _write_file(path, json.dumps(value).encode("utf-8"))


def _checkpoints_dir(run_dir: PathLike) -> Path:
    return Path(run_dir) / CHECKPOINTS_DIRNAME


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # exists, owned by someone else
        return True
    return True


def _remove_dir(path: Path) -> None:
    """Rename aside first, then delete: a kill mid-delete leaves a stale `.tmp-*` directory (cleaned
    by a later save), never a half-deleted `ckpt-*` that looks like a checkpoint."""
    doomed = path.parent / f".tmp-del-{path.name}-{os.getpid()}"
    os.rename(path, doomed)
    _fsync_path(path.parent)
    shutil.rmtree(doomed)


def list_checkpoints(run_dir: PathLike) -> list[Path]:
    """Every `ckpt-<9 digits>` directory under run_dir/checkpoints, oldest step first, complete or
    not (see `checkpoint_problem`)."""
    root = _checkpoints_dir(run_dir)
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _CKPT_NAME.fullmatch(p.name) and p.is_dir()]
    return sorted(found, key=lambda p: int(p.name[5:]))


def _read_meta(path: Path) -> tuple[Optional[dict], Optional[str]]:
    """(meta, None) or (None, why meta.json is unusable)."""
    meta_path = path / META_FILENAME
    try:
        raw = meta_path.read_bytes()
    except FileNotFoundError:
        return None, f"{META_FILENAME} is missing"
    try:
        meta = json.loads(raw)
    except ValueError as e:   # JSONDecodeError, or UnicodeDecodeError for bytes that are not text
        return None, f"{META_FILENAME} does not parse ({e})"
    except RecursionError:
        return None, f"{META_FILENAME} is nested too deeply to parse"
    if not isinstance(meta, dict) or meta.get("format") != FORMAT_NAME:
        return None, f"{META_FILENAME} is not a {FORMAT_NAME} file"
    if meta.get("complete") is not True:
        return None, f"{META_FILENAME} does not say complete=true"
    return meta, None


def checkpoint_problem(path: PathLike, verify_hash: bool = True) -> Optional[str]:
    """Why `path` is not a complete checkpoint, or None when it is. verify_hash=False skips reading
    the tensor file (the sha256 check), for cheap listings."""
    path = Path(path)
    if not path.is_dir():
        return "not a directory"
    if not _CKPT_NAME.fullmatch(path.name):
        return "the directory name is not ckpt-<9 digits>"
    meta, problem = _read_meta(path)
    if problem:
        return problem
    if meta.get("format_version") != FORMAT_VERSION:
        return f"format_version {meta.get('format_version')!r}, this ganfast reads {FORMAT_VERSION}"
    if meta.get("step") != int(path.name[5:]):
        return f"meta.json says step {meta.get('step')!r}, the directory name {path.name}"
    if verify_hash:
        tensors_path = path / TENSORS_FILENAME
        if not tensors_path.is_file():
            return f"{TENSORS_FILENAME} is missing"
        if _sha256_file(tensors_path) != meta.get("tensors_sha256"):
            return f"{TENSORS_FILENAME} does not match its sha256 in {META_FILENAME} (truncated or corrupted)"
    return None


def latest_checkpoint(run_dir: PathLike) -> Optional[Path]:
    """The newest complete checkpoint under run_dir/checkpoints, or None. Newer incomplete or
    corrupted ones are skipped with one warning naming them and why."""
    skipped = []
    for path in reversed(list_checkpoints(run_dir)):
        problem = checkpoint_problem(path)
        if problem is None:
            break
        skipped.append(f"{path} ({problem})")
    else:
        path = None
    if skipped:
        warnings.warn("latest_checkpoint: skipping incomplete or corrupted checkpoints: " + "; ".join(skipped))
    return path


def resolve_resume(run_dir: PathLike, resume: Optional[PathLike]) -> Optional[Path]:
    """What `--resume` means: None -> None (fresh start); "auto" -> the newest complete checkpoint
    in run_dir, or None if there is none; anything else -> that checkpoint directory, which must be
    complete (ValueError with the reason otherwise)."""
    if resume is None:
        return None
    if isinstance(resume, str) and resume == "auto":
        return latest_checkpoint(run_dir)
    if not isinstance(resume, (str, os.PathLike)):
        raise ValueError(f"resume must be None, 'auto' or a checkpoint directory, got {resume!r}")
    problem = checkpoint_problem(resume)
    if problem:
        raise ValueError(f"resume: {str(resume)!r} is not a complete checkpoint: {problem}")
    return Path(resume)


def _remove_stale_tmp_dirs(root: Path) -> None:
    for path in root.iterdir():
        match = _TMP_NAME.fullmatch(path.name)
        if match and path.is_dir() and not _pid_alive(int(match.group(1))):
            shutil.rmtree(path)


def _prune(root: Path, keep: int, just_written: Path) -> None:
    """Delete all but the `keep` newest complete checkpoints, never `just_written`. Completeness
    here is the cheap meta.json check: hashing every old checkpoint on every save costs too much,
    and deleting one whose tensors rotted loses nothing."""
    complete = [p for p in list_checkpoints(root.parent) if checkpoint_problem(p, verify_hash=False) is None]
    for path in complete[:-keep]:
        if path != just_written:
            _remove_dir(path)


# ----------------------------------------------------------------------------------------------
# Save and load.

def save_checkpoint(run_dir: PathLike, step: int, objects: Mapping[str, Any], config: Mapping[str, Any],
                    keep: Optional[int] = 3, cur_nimg: Optional[int] = None,
                    extra: Optional[Mapping[str, Any]] = None,
                    _before_commit: Optional[Callable[[Path], None]] = None) -> Path:
    """Write `run_dir/checkpoints/ckpt-<step:09d>/` atomically and return its path.

    Args:
        step: the training step (>= 0) the states belong to; names and orders checkpoints.
        objects: name -> nn.Module / torch.optim.Optimizer / torch.Generator / object with
            state_dict() and load_state_dict() (GradScaler, EMA, a loss with state ...).
            Names must not contain '/'; "rng" is reserved.
        config: the run's configuration, JSON-able.
        keep: how many complete checkpoints to keep (the one just written always stays);
            None keeps all.
        cur_nimg: images seen so far, stored in meta.json.
        extra: other JSON-able progress to store in meta.json (e.g. the best metric so far).
        _before_commit: test hook, called with the temporary directory once everything is
            written and fsynced, just before the rename.
    """
    if isinstance(step, bool) or not isinstance(step, int) or not 0 <= step < 10 ** 9:
        raise ValueError(f"save_checkpoint: step must be an int in [0, 1e9), got {step!r}")
    if keep is not None and (isinstance(keep, bool) or not isinstance(keep, int) or keep < 1):
        raise ValueError(f"save_checkpoint: keep must be an int >= 1 or None, got {keep!r}")
    kinds = _check_objects(objects)
    try:
        json_parts = json.dumps({"config": config, "extra": extra, "cur_nimg": cur_nimg})
    except (TypeError, ValueError) as e:
        raise ValueError(f"save_checkpoint: config, extra and cur_nimg must be JSON-able: {e}") from e

    tensors: dict[str, torch.Tensor] = {}
    object_entries = {}
    for name, obj in objects.items():
        state = _object_state(obj, kinds[name])
        object_entries[name] = {"kind": kinds[name], "state": _flatten_state(state, name, tensors)}
        if kinds[name] == "module":
            object_entries[name]["module_versions"] = _module_versions(state)
    rng = _rng_state(tensors)

    root = _checkpoints_dir(run_dir)
    root.mkdir(parents=True, exist_ok=True)
    final = root / f"ckpt-{step:09d}"
    tmp = root / f".tmp-ckpt-{step:09d}-{os.getpid()}"
    if tmp.exists():   # left by an earlier failed save of this process
        shutil.rmtree(tmp)
    tmp.mkdir()
    try:
        # Serialized in memory (a second copy of the tensors, briefly) and written by Python, so a
        # full disk or a file-size limit is an OSError naming the file (safetensors' own writer
        # reports it as a SafetensorError without errno or path); the hash comes from the bytes.
        data = safetensors.torch.save(tensors, metadata={"format": FORMAT_NAME})
        _write_file(tmp / TENSORS_FILENAME, data)
        tensors_sha256 = hashlib.sha256(data).hexdigest()
        del data
        meta = {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "step": step,
                **json.loads(json_parts), "objects": object_entries, "rng": rng,
                "ganfast_version": ganfast.__version__, "torch_version": torch.__version__,
                "saved_unix_time": time.time(), "tensors_sha256": tensors_sha256,
                "complete": True}
        _write_json(tmp / META_FILENAME, meta)
        _fsync_path(tmp)
        if _before_commit is not None:
            _before_commit(tmp)
        if final.exists():
            # Re-saving a step (a run resumed from an older checkpoint): the old one must go first,
            # since a rename cannot replace a non-empty directory.
            _remove_dir(final)
        os.rename(tmp, final)
        _fsync_path(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)   # the original error is the one worth raising
        raise

    newer = [p.name for p in list_checkpoints(run_dir) if int(p.name[5:]) > step]
    if newer:
        warnings.warn(f"save_checkpoint: {run_dir} already holds newer checkpoints {newer} (from an earlier "
                      f"run?); resume='auto' will pick those, not {final.name}")
    _remove_stale_tmp_dirs(root)
    if keep is not None:
        _prune(root, keep, final)
    return final


def _first_shape_mismatch(current: Any, saved: Any, path: str) -> Optional[str]:
    """Compare tensor shapes wherever `current` and `saved` both have a tensor at the same path."""
    if isinstance(current, torch.Tensor) and isinstance(saved, torch.Tensor):
        if tuple(current.shape) != tuple(saved.shape):
            return f"{path!r} has shape {list(saved.shape)} in the state dict, {list(current.shape)} here"
        return None
    if isinstance(current, torch.Tensor):
        return f"{path!r} is a {type(saved).__name__} in the state dict, a tensor here"
    if isinstance(current, Mapping) and isinstance(saved, Mapping):
        pairs = [(current[k], saved[k], f"{path}/{k}") for k in current if k in saved]
    elif isinstance(current, (list, tuple)) and isinstance(saved, (list, tuple)):
        pairs = [(c, s, f"{path}/{i}") for i, (c, s) in enumerate(zip(current, saved))]
    else:
        return None
    for c, s, p in pairs:
        problem = _first_shape_mismatch(c, s, p)
        if problem:
            return problem
    return None


def _check_compatible(name: str, kind: str, obj: Any, saved: Any) -> None:
    """Raise ValueError, naming the keys, if `saved` cannot be loaded into `obj`; nothing is
    loaded until every object passes."""
    current = _object_state(obj, kind)
    if isinstance(current, Mapping) and not isinstance(saved, Mapping):
        raise ValueError(f"load_checkpoint: object {name!r} is a {type(saved).__name__} in the checkpoint, "
                         f"expected a state dict")
    if kind == "optimizer" and not (isinstance(saved.get("param_groups"), list) and all(
            isinstance(g, Mapping) and isinstance(g.get("params"), list) for g in saved["param_groups"])):
        raise ValueError(f"load_checkpoint: object {name!r}: the checkpoint's optimizer state has no valid "
                         f"param_groups")
    strict_keys = kind == "module" or (
        isinstance(current, Mapping) and current and all(isinstance(v, torch.Tensor) for v in current.values()))
    if strict_keys:
        problem = (state_dict_mismatch(current, saved, key_prefix=f"{name}/")
                   or _first_shape_mismatch(current, saved, name))
    else:
        problem = _first_shape_mismatch(current, saved, name)
    if kind == "optimizer":
        here = [len(g["params"]) for g in current["param_groups"]]
        there = [len(g["params"]) for g in saved["param_groups"]]
        if here != there:
            problem = f"parameter groups of sizes {there} in the checkpoint, {here} here"
    if problem:
        raise ValueError(f"load_checkpoint: object {name!r} does not match the checkpoint: {problem}")


_OBJECT_KINDS = ("module", "optimizer", "generator", "state_dict")


def _check_layout(path: Path, meta: dict, with_rng: bool) -> None:
    """The parts of meta.json load_checkpoint reads have the types it writes (ValueError if not)."""
    def bad(what: str) -> ValueError:
        return ValueError(f"load_checkpoint: {path / META_FILENAME} is malformed: {what}")
    objects = meta.get("objects")
    if not isinstance(objects, dict):
        raise bad(f"'objects' is a {type(objects).__name__}, expected a dict")
    for name, entry in objects.items():
        if not isinstance(entry, dict) or entry.get("kind") not in _OBJECT_KINDS or "state" not in entry:
            raise bad(f"object {name!r} must be a dict with 'state' and a 'kind' in {_OBJECT_KINDS}")
        versions = entry.get("module_versions")
        if versions is not None and not (isinstance(versions, dict) and all(
                isinstance(v, dict) and all(isinstance(k, str) for k in v) for v in versions.values())):
            raise bad(f"object {name!r}: 'module_versions' must map prefixes to dicts")
    if with_rng:
        rng = meta.get("rng")
        numpy_state = rng.get("numpy") if isinstance(rng, dict) else None
        python_state = rng.get("python") if isinstance(rng, dict) else None
        if not (isinstance(rng, dict) and isinstance(rng.get("torch_cuda_count"), int)
                and isinstance(numpy_state, list) and len(numpy_state) == 4 and isinstance(numpy_state[0], str)
                and all(isinstance(v, (int, float)) for v in numpy_state[1:])
                and isinstance(python_state, list) and len(python_state) == 3 and isinstance(python_state[0], int)
                and isinstance(python_state[1], list) and all(isinstance(v, int) for v in python_state[1])
                and (python_state[2] is None or isinstance(python_state[2], float))):
            raise bad("'rng' does not hold the RNG states ganfast writes")


def _check_rng(path: Path, rng: dict, tensors: Mapping[str, torch.Tensor]) -> None:
    """The RNG tensors _restore_rng reads exist with the dtype it writes (uint8), before anything
    is loaded."""
    names = [f"{_RNG_PREFIX}/torch_cpu", f"{_RNG_PREFIX}/numpy_keys"]
    names += [f"{_RNG_PREFIX}/torch_cuda/{i}" for i in range(rng["torch_cuda_count"])]
    for name in names:
        t = tensors.get(name)
        if t is None or t.dtype != torch.uint8 or t.dim() != 1:
            raise ValueError(f"load_checkpoint: {path / TENSORS_FILENAME} lacks the RNG state {name!r} "
                             f"(a 1-D uint8 tensor)")
    if tensors[f"{_RNG_PREFIX}/numpy_keys"].numel() != 624 * 4:
        raise ValueError(f"load_checkpoint: {path / TENSORS_FILENAME}: the numpy RNG key is not 624 uint32")
    if tensors[f"{_RNG_PREFIX}/torch_cpu"].numel() != torch.get_rng_state().numel():
        raise ValueError(f"load_checkpoint: {path / TENSORS_FILENAME}: the torch RNG state has the wrong size")


def load_checkpoint(path: PathLike, objects: Mapping[str, Any], map_location: Union[str, torch.device] = "cpu",
                    restore_rng: bool = True, partial: bool = False) -> dict:
    """Restore every object in `objects` (and, with restore_rng, the torch / CUDA / numpy / python
    RNG states) from the checkpoint directory `path`; returns its meta.json as a dict (step,
    cur_nimg, config, extra, ...).

    Strict: every object must be in the checkpoint with the same kind, keys and shapes, else
    ValueError naming the key, before anything is loaded. Objects in the checkpoint but not in
    `objects` are an error too unless partial=True (e.g. loading G_ema alone for sampling).
    Tensors are read onto map_location; modules and optimizers then copy them to their own devices.
    """
    path = Path(path)
    kinds = _check_objects(objects)
    problem = checkpoint_problem(path)
    if problem:
        raise ValueError(f"load_checkpoint: {str(path)!r} is not a complete checkpoint: {problem}")
    meta, _ = _read_meta(path)
    _check_layout(path, meta, restore_rng)
    saved_objects = meta["objects"]
    missing = [name for name in objects if name not in saved_objects]
    if missing:
        raise ValueError(f"load_checkpoint: {path.name} has no object(s) {missing}; it holds {sorted(saved_objects)}")
    unused = [name for name in saved_objects if name not in objects]
    if unused and not partial:
        raise ValueError(f"load_checkpoint: {path.name} also holds {unused}, which `objects` lacks "
                         f"(pass them, or partial=True to load a subset)")

    try:
        tensors = safetensors.torch.load_file(path / TENSORS_FILENAME, device=str(torch.device(map_location)))
    except safetensors.SafetensorError as e:     # a malformed header: sizes, offsets, dtypes
        raise ValueError(f"load_checkpoint: {path / TENSORS_FILENAME} is not a valid safetensors file: {e}") from e
    if restore_rng:
        _check_rng(path, meta["rng"], tensors)
    states = {}
    for name, obj in objects.items():
        entry = saved_objects[name]
        if entry["kind"] != kinds[name]:
            raise ValueError(f"load_checkpoint: object {name!r} is of kind {entry['kind']!r} in the "
                             f"checkpoint, {kinds[name]!r} here")
        try:
            states[name] = _unflatten_state(entry["state"], tensors, name)
        except RecursionError:
            raise ValueError(f"load_checkpoint: the state of {name!r} in {path / META_FILENAME} is nested "
                             f"too deeply") from None
        _check_compatible(name, kinds[name], obj, states[name])

    for name, obj in objects.items():
        _load_object(obj, kinds[name], states[name], saved_objects[name].get("module_versions"))
    if restore_rng:
        _restore_rng(meta["rng"], tensors)
    return meta
