"""What each backend supports, why it cannot run a call, and the dispatch order.

Order of choice: the ``backend=`` argument, then ``with ganfast.use_backend(...)``, then the
``GANFAST_BACKEND`` environment variable, then the automatic order for the tensors' device
(CUDA: cuda -> triton -> reference; CPU: cpu -> reference). An explicitly requested backend that
cannot run raises :class:`BackendNotSupported` with its reasons; an automatic fallback warns once,
naming the op and the reason.

Decided once, not per call: the environment (``GANFAST_BACKEND``, ``TRITON_INTERPRET``) is read
at import and by :func:`refresh`; the choice for a call is cached per (op, requested backend,
device type and dtype of each tensor). Call :func:`refresh` after changing either variable or
building an extension in a running process.
"""
from __future__ import annotations

import contextlib
import dataclasses
import functools
import importlib
import os
import threading
import warnings
from typing import Iterable, Iterator, Optional

import torch

from ganfast import _ext

BACKENDS = ("reference", "cpu", "triton", "cuda")
AUTO_ORDER = {"cuda": ("cuda", "triton", "reference"), "cpu": ("cpu", "reference")}
# The backends that are C++ extensions (ganfast._C, ganfast._C_cuda): where an op may compose its
# passes in one extension call.
EXTENSION_BACKENDS = ("cpu", "cuda")


class BackendNotSupported(RuntimeError):
    """An explicitly requested backend cannot run this call; the message lists why."""


@dataclasses.dataclass(frozen=True)
class Backend:
    name: str
    description: str
    max_grad_order: Optional[int]  # None: any order

    def unavailable_reason(self) -> Optional[str]:
        """None when the backend can run at all on this machine, else why not."""
        return _unavailable_reason(self.name)

    def accepts_device(self, device: torch.device) -> bool:
        if self.name == "reference":
            return True
        if self.name == "cpu":
            return device.type == "cpu"
        if self.name == "cuda":
            return device.type == "cuda"
        # triton: CUDA tensors; CPU tensors only under the interpreter (TRITON_INTERPRET=1)
        return device.type == "cuda" or (device.type == "cpu" and triton_interpret())

    def not_supported_reasons(self, op: str, tensors: Iterable[Optional[torch.Tensor]]) -> list[str]:
        """Every reason this backend cannot run `op` on these tensors ([] when it can)."""
        reasons = []
        why = self.unavailable_reason()
        if why:
            reasons.append(why)
        dtypes = op_dtypes(op, self.name)
        if dtypes is None:
            reasons.append(f"backend '{self.name}' has no {op} kernel")
        for t in tensors:
            if t is None:
                continue
            if not self.accepts_device(t.device):
                extra = " (set TRITON_INTERPRET=1 to run Triton on CPU tensors)" if self.name == "triton" and t.device.type == "cpu" else ""
                reasons.append(f"backend '{self.name}' does not run on {t.device.type} tensors{extra}")
                break
        for t in tensors:
            if t is not None and dtypes is not None and t.dtype not in dtypes:
                names = ", ".join(sorted(str(d).replace("torch.", "") for d in dtypes))
                reasons.append(f"backend '{self.name}' {op} supports dtypes {{{names}}}, got {str(t.dtype).replace('torch.', '')}")
                break
        return reasons


_BACKENDS = {
    "reference": Backend("reference", "plain PyTorch; the specification; any device; gradients of any order", None),
    "cpu": Backend("cpu", "C++17 kernels in ganfast._C, multithreaded through ATen's OpenMP pool", 2),
    "triton": Backend("triton", "Triton kernels (CUDA tensors; CPU tensors under TRITON_INTERPRET=1)", 2),
    "cuda": Backend("cuda", "CUDA C++ kernels in ganfast._C_cuda", 2),
}

# op -> backend -> dtypes it accepts; filled by each op package when it is imported.
_OP_DTYPES: dict[str, dict[str, frozenset]] = {}
# op -> backend -> gradient order, where an op differs from its backend's max_grad_order.
_OP_GRAD_ORDERS: dict[str, dict[str, Optional[int]]] = {}
# op -> backend -> a note for `ganfast info`.
_OP_NOTES: dict[str, dict[str, str]] = {}


def register_op(op: str, dtypes_by_backend: dict[str, Iterable[torch.dtype]],
                grad_orders: Optional[dict[str, Optional[int]]] = None,
                notes: Optional[dict[str, str]] = None) -> None:
    """Declare which backends implement `op`, for which dtypes, and (grad_orders) the gradient
    order of each backend where the op differs from the backend's max_grad_order (None: any).
    notes: backend -> a line for `ganfast info`, e.g. why a backend has no kernel for the op."""
    for name in list(dtypes_by_backend) + list(grad_orders or {}) + list(notes or {}):
        if name not in _BACKENDS:
            raise ValueError(f"unknown backend {name!r} for op {op!r}; expected one of {BACKENDS}")
    _OP_DTYPES[op] = {k: frozenset(v) for k, v in dtypes_by_backend.items()}
    _OP_GRAD_ORDERS[op] = dict(grad_orders or {})
    _OP_NOTES[op] = dict(notes or {})


def op_notes(op: str) -> dict[str, str]:
    """backend -> the note registered for `op` (e.g. why it has no kernel there)."""
    return dict(_OP_NOTES.get(op, {}))


def op_grad_order(op: str, backend: str) -> Optional[int]:
    """The highest gradient order `backend` computes for `op` (None: any order)."""
    return _OP_GRAD_ORDERS.get(op, {}).get(backend, _BACKENDS[backend].max_grad_order)


# The table of an op with every fused backend: fp16/bf16/fp32 everywhere, fp64 on the CPU paths.
HALF_AND_FLOAT = (torch.float16, torch.bfloat16, torch.float32)
FUSED_OP_DTYPES = {
    "reference": HALF_AND_FLOAT + (torch.float64,),
    "cpu": HALF_AND_FLOAT + (torch.float64,),
    "triton": HALF_AND_FLOAT,
    "cuda": HALF_AND_FLOAT,
}


@functools.lru_cache(maxsize=None)
def kernel_module(op: str, name: str):
    """ganfast.ops.<op>.<name>: the module implementing op's kernel contract on backend `name`
    (imported once; dispatch runs on every call)."""
    return importlib.import_module(f"ganfast.ops.{op}.{name}")


def op_dtypes(op: str, backend: str) -> Optional[frozenset]:
    return _OP_DTYPES.get(op, {}).get(backend)


def registered_ops() -> dict[str, dict[str, frozenset]]:
    return dict(_OP_DTYPES)


def get_backend(name: str) -> Backend:
    if name not in _BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return _BACKENDS[name]


# The environment, read once (refresh() reads it again): os.environ lookups cost ~2 us each, and
# dispatch runs on every call of every op.
_env_backend: Optional[str] = None
_env_interpret: bool = False


def _read_environment() -> None:
    global _env_backend, _env_interpret
    _env_backend = os.environ.get("GANFAST_BACKEND") or None
    _env_interpret = os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


_read_environment()


def triton_interpret() -> bool:
    """Whether TRITON_INTERPRET was set (when ganfast was imported or refresh() last ran)."""
    return _env_interpret


@functools.lru_cache(maxsize=None)
def _triton_import_error() -> Optional[str]:
    try:
        import triton  # noqa: F401
        return None
    except ImportError as e:
        return f"triton is not importable ({e})"


def _unavailable_reason(name: str) -> Optional[str]:
    if name == "reference":
        return None
    if name == "cpu":
        return _ext.unavailable_reason("cpu")
    if name == "triton":
        why = _triton_import_error()
        if why:
            return why
        if not (torch.cuda.is_available() or triton_interpret()):
            return "no CUDA device and TRITON_INTERPRET is not set"
        return None
    # cuda
    why = _ext.unavailable_reason("cuda")
    if why:
        return why
    if not torch.cuda.is_available():
        return "torch sees no CUDA device"
    return None


# ---- the requested backend: argument, context, environment ----

_local = threading.local()


@contextlib.contextmanager
def use_backend(name: str) -> Iterator[None]:
    """Run ganfast ops inside this block on backend `name` (unless a call passes backend=)."""
    get_backend(name)  # validate now, not at the first op
    stack = _local.__dict__.setdefault("stack", [])
    stack.append(name)
    try:
        yield
    finally:
        stack.pop()


def requested_backend(backend: Optional[str] = None) -> Optional[str]:
    """The explicitly requested backend for a call, or None for automatic choice."""
    if backend is None:
        stack = _local.__dict__.get("stack")
        backend = stack[-1] if stack else _env_backend
        if backend is None:
            return None
    if backend not in _BACKENDS:
        get_backend(backend)   # raises, naming the valid backends
    return backend


_warned: set = set()
# (op, backend, (device type, dtype) of each tensor) -> reasons. The verdict depends only on that
# signature (and the environment, which refresh() re-reads, clearing this).
_verdicts: dict = {}
# (op, requested backend or None, (device type, dtype) of each tensor) -> the backend select()
# returns; failures are not cached (they raise).
_choices: dict = {}


def _signature(tensors) -> tuple:
    return tuple((t.device.type, t.dtype) for t in tensors if t is not None)


def _reasons(op: str, name: str, tensors: list, sig: tuple) -> list[str]:
    key = (op, name, sig)   # sig: _signature(tensors)
    found = _verdicts.get(key)
    if found is None:
        found = _verdicts[key] = _BACKENDS[name].not_supported_reasons(op, tensors)
    return found


def clear_cache() -> None:
    """Forget cached support verdicts and choices (after an extension was built or loaded)."""
    _verdicts.clear()
    _choices.clear()
    _warned.clear()


def refresh() -> None:
    """Re-read GANFAST_BACKEND and TRITON_INTERPRET and forget every cached decision. Dispatch reads
    the environment once; call this after changing either variable in a running process."""
    _read_environment()
    clear_cache()


def select(op: str, tensors: Iterable[Optional[torch.Tensor]], backend: Optional[str] = None) -> str:
    """Name of the backend that runs `op` on `tensors` (see the module docstring for the order).

    Cached per (op, requested backend, the first tensor's device, every tensor's dtype): the
    tensors of one call share a device (each op checks that), and support depends on nothing else.
    """
    if backend is None:
        stack = _local.__dict__.get("stack")
        backend = stack[-1] if stack else _env_backend
    if torch.compiler.is_compiling():
        # traced: decided once at trace time and baked into the graph as a constant (a cache miss
        # would import the extension, which dynamo cannot trace, and a cache hit would make dynamo
        # guard on the cache's contents); support depends only on devices and dtypes
        present = [t for t in tensors if t is not None]
        return _select_constant(op, backend, str(present[0].device),
                                ",".join(str(t.dtype).removeprefix("torch.") for t in present))
    return _select_cached(op, tensors, backend)


def _select_cached(op: str, tensors: Iterable[Optional[torch.Tensor]], backend: Optional[str]) -> str:
    key = [op, backend]
    device = None
    for t in tensors:
        if t is not None:
            if device is None:
                device = t.device
                key.append(device)
            key.append(t.dtype)
    key = tuple(key)
    name = _choices.get(key)
    if name is None:
        tensors = list(tensors)
        requested = requested_backend(backend)
        name = _choices[key] = _choose(op, tensors, requested, _signature(tensors))
    return name


@torch.compiler.assume_constant_result
def _select_constant(op: str, backend: Optional[str], device: str, dtypes: str) -> str:
    """select() for a traced call, from plain values: empty stand-in tensors of the call's device
    and dtypes (support depends on nothing else). Runs eagerly while torch.compile traces."""
    device = torch.device(device)
    stand_ins = [torch.empty(0, device=device, dtype=getattr(torch, d)) for d in dtypes.split(",")]
    return _select_cached(op, stand_ins, backend)


def _choose(op: str, tensors: list, requested: Optional[str], sig: tuple) -> str:
    """select() without the cache: raises BackendNotSupported, warns on an automatic fallback."""
    if requested is not None:
        reasons = _reasons(op, requested, tensors, sig)
        if reasons:
            raise BackendNotSupported(f"ganfast.ops.{op}: backend '{requested}' cannot run this call: " + "; ".join(reasons))
        return requested
    device = next(t.device for t in tensors if t is not None)
    skipped = []
    for name in AUTO_ORDER.get(device.type, ("reference",)):
        reasons = _reasons(op, name, tensors, sig)
        if not reasons:
            if skipped:
                key = (op, name, tuple(skipped))
                if key not in _warned:
                    _warned.add(key)
                    warnings.warn(f"ganfast.ops.{op}: falling back to backend '{name}' on {device.type}: "
                                  + "; ".join(skipped), RuntimeWarning, stacklevel=4)
            return name
        skipped.extend(f"{name}: {r}" for r in reasons)
    raise BackendNotSupported(f"ganfast.ops.{op}: no backend can run this call: " + "; ".join(skipped))
