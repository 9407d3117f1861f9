"""Loading the optional compiled extensions; never raises at import of ganfast."""
from __future__ import annotations

import functools
import importlib
import json
import os
from types import ModuleType

MODULES = {"cpu": "ganfast._C", "cuda": "ganfast._C_cuda"}


class ExtensionUnavailable(RuntimeError):
    """Raised when a kernel of an extension that is not built (or does not load) is called."""


def build_info() -> dict:
    """What setup.py recorded about the extension builds ({} if it recorded nothing)."""
    path = os.path.join(os.path.dirname(__file__), "_build_info.json")
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return {}


@functools.lru_cache(maxsize=None)
def _load(kind: str) -> tuple[ModuleType | None, str | None]:
    try:
        return importlib.import_module(MODULES[kind]), None
    except ImportError as e:
        recorded = build_info().get(kind, {}).get("reason")
        why = recorded or f"{MODULES[kind]} does not import ({e})"
        if recorded and "No module named" not in str(e):
            why = f"{recorded}; import error: {e}"
        return None, why


def extension(kind: str) -> ModuleType:
    """The loaded extension `kind` ("cpu" or "cuda"), or ExtensionUnavailable with the reason."""
    mod, why = _load(kind)
    if mod is None:
        raise ExtensionUnavailable(f"{MODULES[kind]} is not available: {why}")
    return mod


def unavailable_reason(kind: str) -> str | None:
    """None when extension `kind` loads, else why not."""
    return _load(kind)[1]
