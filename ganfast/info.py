"""`ganfast info`: what is built and usable here, and why anything is not.

as_dict() gathers the facts (versions, CUDA, each backend's availability and gradient order, the
dtypes each registered op accepts per backend, the extension build record); report() renders them
as text. Nothing here raises because an extension, Triton or CUDA is missing.
"""
from __future__ import annotations

import os
import platform
import sys
from typing import Optional

import torch

import ganfast
from ganfast import _ext, backends


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def triton_version() -> tuple[Optional[str], Optional[str]]:
    """(triton's version, None) when importable, else (None, why not)."""
    try:
        import triton
    except ImportError as e:
        return None, f"not importable ({e})"
    return getattr(triton, "__version__", "unknown"), None


def versions() -> dict:
    """The versions every report and benchmark row records."""
    return {
        "ganfast": ganfast.__version__,
        "torch": torch.__version__,
        "triton": triton_version()[0],
        "python": platform.python_version(),
    }


def cuda_summary() -> dict:
    available = torch.cuda.is_available()
    devices = []
    if available:
        for i in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(i)
            devices.append({"index": i, "name": torch.cuda.get_device_name(i), "capability": f"sm_{major}{minor}"})
    return {"available": available, "torch_cuda": torch.version.cuda, "devices": devices}


def _backend_entry(name: str) -> dict:
    b = backends.get_backend(name)
    reason = b.unavailable_reason()
    return {
        "name": name,
        "description": b.description,
        "usable": reason is None,
        "reason": reason,
        "max_grad_order": b.max_grad_order,  # None: any order
    }


def _ops_table() -> dict:
    """op -> backend -> sorted dtype names; a backend without a kernel for the op is left out."""
    table = {}
    for op, by_backend in sorted(backends.registered_ops().items()):
        table[op] = {name: sorted(dtype_name(d) for d in by_backend[name])
                     for name in backends.BACKENDS if name in by_backend}
    return table


def _op_grad_orders() -> dict:
    """op -> backend -> highest gradient order (None: any), for every backend implementing the op."""
    return {op: {name: backends.op_grad_order(op, name) for name in backends.BACKENDS if name in by_backend}
            for op, by_backend in sorted(backends.registered_ops().items())}


def _extensions() -> dict:
    recorded = _ext.build_info()
    out = {}
    for kind, module in _ext.MODULES.items():
        rec = recorded.get(kind, {})
        load_error = _ext.unavailable_reason(kind)
        out[kind] = {
            "module": module,
            "built": rec.get("built"),          # None: setup.py recorded nothing
            "build_reason": rec.get("reason"),  # why the build was skipped or failed
            "loads": load_error is None,
            "load_error": load_error,
            "sources": rec.get("sources", []),
        }
    return {"built_against_torch": recorded.get("torch_version"),
            "built_against_cuda": recorded.get("torch_cuda"),
            "record_found": bool(recorded),
            **out}


def as_dict() -> dict:
    triton_ver, triton_why = triton_version()
    return {
        "versions": versions(),
        "platform": platform.platform(),
        "python_executable": sys.executable,
        "triton_error": triton_why,
        "triton_interpret": backends.triton_interpret(),
        "ganfast_backend_env": os.environ.get("GANFAST_BACKEND") or None,
        "cuda": cuda_summary(),
        "backends": [_backend_entry(name) for name in backends.BACKENDS],
        "auto_order": {dev: list(order) for dev, order in backends.AUTO_ORDER.items()},
        "ops": _ops_table(),
        "op_grad_orders": _op_grad_orders(),
        "op_notes": {op: backends.op_notes(op) for op in sorted(backends.registered_ops()) if backends.op_notes(op)},
        "extensions": _extensions(),
        "model_presets": _model_presets(),
    }


def _model_presets() -> dict:
    from ganfast import models
    return {name: models.get_preset(name).family for name in models.list_presets()}


def _cuda_line(cuda: dict) -> str:
    if not cuda["available"]:
        built = f"torch built with CUDA {cuda['torch_cuda']}" if cuda["torch_cuda"] else "torch is a CPU-only build"
        return f"not available ({built})"
    names = ", ".join(f"{d['index']}: {d['name']} ({d['capability']})" for d in cuda["devices"])
    return f"CUDA {cuda['torch_cuda']}; {names}"


def _extension_line(e: dict) -> str:
    if e["loads"]:
        srcs = f"  [{', '.join(e['sources'])}]" if e["sources"] else ""
        return f"built, loads{srcs}"
    if e["built"] is False:
        return f"not built: {e['build_reason'] or 'no reason recorded'}"
    return f"does not load: {e['load_error']}"


def report(info: Optional[dict] = None) -> str:
    """The `ganfast info` text."""
    info = info or as_dict()
    v = info["versions"]
    lines = [
        f"ganfast {v['ganfast']}",
        f"  python            {v['python']}  ({info['platform']})",
        f"  torch             {v['torch']}",
        f"  triton            {v['triton'] or info['triton_error']}",
        f"  CUDA              {_cuda_line(info['cuda'])}",
        f"  TRITON_INTERPRET  {'set' if info['triton_interpret'] else 'unset'}",
        f"  GANFAST_BACKEND   {info['ganfast_backend_env'] or 'unset'}",
        "",
        "backends (automatic order: " + "; ".join(f"{d}: {' -> '.join(o)}" for d, o in info["auto_order"].items()) + ")",
    ]
    width = max(len(b["name"]) for b in info["backends"])
    lines.append(f"  {'name':<{width}}  usable  grad order  notes")
    for b in info["backends"]:
        order = "any" if b["max_grad_order"] is None else str(b["max_grad_order"])
        note = f"why not: {b['reason']}" if b["reason"] else b["description"]
        lines.append(f"  {b['name']:<{width}}  {'yes' if b['usable'] else 'no':<6}  {order:<10}  {note}")
    lines += ["", "ops (dtypes and gradient order per backend)"]
    if not info["ops"]:
        lines.append("  none registered")
    op_width = max(map(len, info["ops"]), default=0)
    for op, by_backend in info["ops"].items():
        for i, (name, dtypes) in enumerate(by_backend.items()):
            order = info["op_grad_orders"][op][name]
            order = "any" if order is None else str(order)
            lines.append(f"  {op if i == 0 else '':<{op_width}}  {name + ':':<{width + 1}}  {' '.join(dtypes):<34}"
                         f"  grad order {order}")
        for name, note in info.get("op_notes", {}).get(op, {}).items():
            lines.append(f"  {'':<{op_width}}  {name + ':':<{width + 1}}  {note}")
    ext = info["extensions"]
    against = f" (built against torch {ext['built_against_torch']})" if ext["built_against_torch"] else ""
    lines += ["", "extensions" + against]
    if not ext["record_found"]:
        lines.append("  no build record (ganfast/_build_info.json missing): setup.py did not run here")
    for kind in _ext.MODULES:
        e = ext[kind]
        lines.append(f"  {kind:<4}  {e['module']:<16}  {_extension_line(e)}")
    presets = info.get("model_presets") or {}
    lines += ["", f"model presets (ganfast.models.create): {', '.join(presets) or 'none'}"]
    return "\n".join(lines)
