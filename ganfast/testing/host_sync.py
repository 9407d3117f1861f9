"""Find host synchronizations in ganfast's code: `host_syncs()` patches the Python-level entry
points through which a device tensor's value reaches the host, and records (or refuses) every call
made on behalf of ganfast code.

On a GPU each such call stalls the host until the device has drained its queue, and none of them
can be captured in a CUDA graph. On the CPU they cost nothing, which is why they go unnoticed; this
makes them visible there:

    with host_syncs(raise_on_sync=True):
        trainer.step()                          # HostSyncError names the first one and where

    with host_syncs() as found:
        trainer.step()
    found.events                                # [(entry point, "ganfast/...py:LINE"), ...]

What counts. A value read on the host: Tensor.item, tolist, __bool__, __int__, __float__,
__index__, __complex__, numpy / __array__, cpu, nonzero (and torch.nonzero, torch.equal,
torch.allclose, torch.is_nonzero, torch.unique, torch.masked_select, whose output size or value
needs the data), and a host-built tensor (torch.tensor / torch.as_tensor / torch.from_numpy: on
CUDA a copy from pageable memory, also uncapturable); explicit waits (torch.cuda.synchronize,
Stream.synchronize, Event.synchronize). A call counts when ganfast code is on the stack, attributed
to the innermost ganfast frame, so a sync inside a torch helper that ganfast calls counts too.

What does not. Calls made inside torch.optim (a non-capturable optimizer keeps its step counter
as a CPU tensor and reads it there; that is torch's business and no device sync), calls from
ganfast.data (the data pipeline works on host tensors by design: the dataset lives in host memory
and its batches are copied to the device without blocking), and calls from this module.

Limits: only Python-level entry points are seen. A C++ op that reads a tensor's value (a Scalar
argument given a tensor, a size computed from data) is invisible here; so is a boolean-mask index
`x[mask]`. Tests keep that in mind by construction (ganfast's code passes Python numbers or tensors,
never a tensor where torch wants a Scalar).
"""
from __future__ import annotations

import contextlib
import os
import sys
from dataclasses import dataclass, field
from typing import Iterator, Optional

import torch

__all__ = ["HostSyncError", "HostSyncs", "host_syncs", "SYNC_ENTRY_POINTS"]

_GANFAST = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep
_EXEMPT_GANFAST = (os.path.join(_GANFAST, "data") + os.sep, os.path.abspath(__file__))
_TORCH_OPTIM = os.path.join(os.path.dirname(os.path.abspath(torch.__file__)), "optim") + os.sep

# (owner, attribute) of every patched entry point
SYNC_ENTRY_POINTS = tuple((torch.Tensor, name) for name in (
    "item", "tolist", "__bool__", "__int__", "__float__", "__index__", "__complex__", "numpy", "__array__",
    "cpu", "nonzero")) + tuple((torch, name) for name in (
    "nonzero", "equal", "allclose", "is_nonzero", "unique", "masked_select", "tensor", "as_tensor",
    "from_numpy")) + ((torch.cuda, "synchronize"), (torch.cuda.Stream, "synchronize"),
                      (torch.cuda.Event, "synchronize"))


class HostSyncError(RuntimeError):
    """A host synchronization was made by ganfast code inside `host_syncs(raise_on_sync=True)`."""


@dataclass
class HostSyncs:
    """What `host_syncs` found: events [(entry point, "path:line" of the innermost ganfast frame)]."""
    raise_on_sync: bool = False
    events: list = field(default_factory=list)
    paused: int = 0

    def count(self) -> int:
        return len(self.events)

    def where(self) -> dict:
        """{(entry point, location): calls}, for reports."""
        out: dict = {}
        for e in self.events:
            out[e] = out.get(e, 0) + 1
        return out

    @contextlib.contextmanager
    def allowed(self) -> Iterator[None]:
        """Calls inside this block are not recorded (the test's own reads)."""
        self.paused += 1
        try:
            yield
        finally:
            self.paused -= 1


def _ganfast_caller() -> Optional[str]:
    """"path:line" of the innermost ganfast frame on the stack, or None when the call is exempt."""
    frame = sys._getframe(2)
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(_TORCH_OPTIM):
            return None
        if path.startswith(_GANFAST):
            if path.startswith(_EXEMPT_GANFAST):
                return None
            return f"{os.path.relpath(path, os.path.dirname(_GANFAST))}:{frame.f_lineno}"
        frame = frame.f_back
    return None


@contextlib.contextmanager
def host_syncs(raise_on_sync: bool = False) -> Iterator[HostSyncs]:
    """Patch SYNC_ENTRY_POINTS for the duration of the block; yields a HostSyncs that records each
    call made for ganfast code, or raises HostSyncError at the first one when raise_on_sync."""
    found = HostSyncs(raise_on_sync=raise_on_sync)
    saved = []

    def wrap(owner, name, original):
        label = f"{getattr(owner, '__name__', owner)}.{name}"

        def patched(*args, **kwargs):
            if not found.paused:
                where = _ganfast_caller()
                if where is not None:
                    found.events.append((label, where))
                    if found.raise_on_sync:
                        raise HostSyncError(f"host synchronization {label} called from {where}")
            return original(*args, **kwargs)

        patched.__name__ = name
        return patched

    try:
        for owner, name in SYNC_ENTRY_POINTS:
            original = owner.__dict__.get(name, getattr(owner, name, None))
            if original is None:
                continue
            saved.append((owner, name, name in owner.__dict__, original))
            setattr(owner, name, wrap(owner, name, getattr(owner, name)))
        yield found
    finally:
        for owner, name, own, original in reversed(saved):
            if own:
                setattr(owner, name, original)
            else:
                delattr(owner, name)
