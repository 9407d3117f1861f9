"""Compile each CUDA source under csrc/ on its own with nvcc and report ptxas resources per kernel.

Needs nvcc and a CUDA build of torch (for its headers), no GPU. Used by tools/check_cuda_build.sh
and tests/test_cuda_build.py; run it directly as

    python tools/cuda_resources.py [--python VENV/bin/python] [--archs "80;90"] [--mode object|fatbin]

It prints registers, stack and spills for every kernel and architecture and exits 1 when a source
fails to compile or any kernel spills. Standard library only: the CUDA torch is asked through
its own interpreter, so this runs under any Python (the CPU-only dev venv included).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Optional

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CSRC = os.path.join(REPO, "csrc")

# Flags of the real build (setup.py's nvcc flags; torch.utils.cpp_extension adds -std=c++20, the
# standard torch 2.14's headers require, when setup.py names none).
BUILD_FLAGS = ["-O3", "--use_fast_math", "-lineinfo", "-std=c++20", "-DGANFAST_WITH_CUDA"]

# Asked of the CUDA torch's interpreter: where its headers are and the flags torch's extension
# builder always passes to nvcc.
_TORCH_QUERY = r"""
import glob, json, os, sysconfig
import torch
from torch.utils import cpp_extension as ce
try:
    inc = ce.include_paths(device_type="cuda")
except TypeError:  # torch < 2.6
    inc = ce.include_paths(cuda=True)
# CUDA headers shipped in the nvidia-* wheels (cusparse.h, cublas_v2.h, ...) that ATen's CUDA
# headers include and a bare nvcc install may lack.
nv = []
try:
    import nvidia
    for root in nvidia.__path__:
        nv += sorted(os.path.dirname(h) for h in glob.glob(os.path.join(root, "*", "include", "cusparse.h")))
except ImportError:
    pass
print(json.dumps({"torch": torch.__version__, "cuda": torch.version.cuda,
                  "include": inc + nv + [sysconfig.get_paths()["include"]],
                  "nvidia_include": nv, "nvcc_flags": list(ce.COMMON_NVCC_FLAGS)}))
"""


@dataclasses.dataclass
class KernelResources:
    source: str
    arch: str
    mangled: str
    name: str          # demangled, namespaces and parameter list dropped
    registers: int
    stack_bytes: int
    spill_stores: int
    spill_loads: int

    @property
    def spills(self) -> bool:
        return self.spill_stores > 0 or self.spill_loads > 0


@dataclasses.dataclass
class CompileResult:
    source: str
    returncode: int
    seconds: float
    command: list
    output: str
    kernels: list


def find_nvcc() -> Optional[str]:
    """nvcc from $CUDA_HOME, /usr/local/cuda, or PATH; None when there is none."""
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and os.access(os.path.join(home, "bin", "nvcc"), os.X_OK):
            return os.path.join(home, "bin", "nvcc")
    return shutil.which("nvcc")


def cuda_venv_candidates() -> list:
    """Interpreters that may hold a CUDA build of torch, most specific first."""
    roots = [os.environ.get("GANFAST_CUDA_VENV"), os.path.join(REPO, ".venv-cuda"), "/work/cudavenv"]
    return [os.path.join(r, "bin", "python") for r in roots if r]


def torch_cuda_info(python: str) -> Optional[dict]:
    """Headers and nvcc flags of the CUDA torch under `python`; None if it has no CUDA torch."""
    if not os.access(python, os.X_OK):
        return None
    env = dict(os.environ)
    nvcc = find_nvcc()
    if nvcc:  # so that include_paths names this toolkit's include/ (torch guesses otherwise)
        env["CUDA_HOME"] = os.path.dirname(os.path.dirname(os.path.realpath(nvcc)))
    proc = subprocess.run([python, "-c", _TORCH_QUERY], capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        return None
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    return info if info.get("cuda") else None


def find_torch_cuda(python: Optional[str] = None) -> tuple[Optional[str], Optional[dict], str]:
    """(python, info, why-not) for the first interpreter with a CUDA torch."""
    tried = [python] if python else cuda_venv_candidates()
    for p in tried:
        info = torch_cuda_info(p)
        if info:
            return p, info, ""
    return None, None, ("no CUDA build of torch at " + ", ".join(tried) +
                        " (set GANFAST_CUDA_VENV, or run tools/check_cuda_build.sh to make .venv-cuda)")


def cuda_sources() -> list:
    """Every .cu under csrc/, relative to the repository root."""
    found = []
    for root, _, files in os.walk(CSRC):
        found += [os.path.relpath(os.path.join(root, f), REPO) for f in files if f.endswith(".cu")]
    return sorted(found)


def gencode_flags(archs: str) -> list:
    flags = []
    for a in archs.replace(",", ";").split(";"):
        a = a.strip().replace("sm_", "").replace(".", "")
        if a:
            flags += ["-gencode", f"arch=compute_{a},code=sm_{a}"]
    return flags


_ENTRY = re.compile(r"Compiling entry function '([^']+)' for '(sm_\w+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_REGS = re.compile(r"Used (\d+) registers")


def _short_name(demangled: str) -> str:
    name = demangled.replace("(anonymous namespace)::", "").replace("ganfast::", "")
    depth = 0
    for i, ch in enumerate(name):  # drop the parameter list: the '(' at template depth 0
        depth += ch == "<"
        depth -= ch == ">"
        if ch == "(" and depth == 0 and i > 0 and name[i - 1] != "<":
            return name[:i].replace("void ", "", 1)
    return name.replace("void ", "", 1)


def _demangle(names: list) -> list:
    cxxfilt = shutil.which("c++filt")
    if not cxxfilt or not names:
        return names
    out = subprocess.run([cxxfilt], input="\n".join(names), capture_output=True, text=True).stdout
    lines = out.splitlines()
    return lines if len(lines) == len(names) else names


def parse_ptxas(output: str, source: str) -> list:
    """KernelResources for each entry function in `nvcc -Xptxas -v` output."""
    rows, cur = [], None
    for line in output.splitlines():
        m = _ENTRY.search(line)
        if m:
            cur = {"mangled": m.group(1), "arch": m.group(2), "registers": 0, "stack": 0, "st": 0, "ld": 0}
            rows.append(cur)
            continue
        if cur is None:
            continue
        m = _PROPS.search(line)
        if m:
            cur["stack"], cur["st"], cur["ld"] = (int(g) for g in m.groups())
        m = _REGS.search(line)
        if m:
            cur["registers"] = int(m.group(1))
    names = _demangle([r["mangled"] for r in rows])
    return [KernelResources(source, r["arch"], r["mangled"], _short_name(n), r["registers"], r["stack"],
                            r["st"], r["ld"]) for r, n in zip(rows, names)]


_NINJA_STEP = re.compile(r"^\[\d+/\d+\] ")


def parse_build_log(text: str) -> dict:
    """{source: [KernelResources]} from the log of a real build made with `-Xptxas -v`
    (setup.py's GANFAST_NVCC_VERBOSE=1). Non-interactive ninja prints each finished step as
    `[i/N] command` followed by that command's whole output, so a step's ptxas lines belong to the
    .cu named in its command. A .cu that appears with no ptxas lines maps to []."""
    found: dict = {}
    source, block = None, []

    def flush():
        if source is not None:
            found.setdefault(source, []).extend(parse_ptxas("\n".join(block), source))

    for line in text.splitlines():
        if _NINJA_STEP.match(line):
            flush()
            cu = [t for t in line.split() if t.endswith(".cu") and "csrc/" in t]
            source, block = (cu[0][cu[0].rindex("csrc/"):] if cu else None), []
            continue
        if source is not None:
            block.append(line)
    flush()
    return found


def build_log_problems(found: dict, sources: list, archs: str) -> list:
    """What parse_build_log's result lacks: a source with no ptxas report, an architecture a
    source has no kernels for, or a kernel that spills. [] when all is well."""
    want = {"sm_" + a.strip().replace("sm_", "").replace(".", "") for a in archs.replace(",", ";").split(";") if a.strip()}
    problems = []
    for src in sources:
        ks = found.get(src)
        if not ks:
            problems.append(f"{src}: no ptxas report in the build log (built without GANFAST_NVCC_VERBOSE=1?)")
            continue
        missing = want - {k.arch for k in ks}
        if missing:
            problems.append(f"{src}: no kernels for {sorted(missing)}")
        problems += [f"{src}: {k.name} ({k.arch}) spills {k.spill_stores} B stores, {k.spill_loads} B loads"
                     for k in ks if k.spills]
    return problems


def compile_source(source: str, info: dict, archs: str = "80;90", mode: str = "object",
                   nvcc: Optional[str] = None, outdir: Optional[str] = None) -> CompileResult:
    """nvcc one .cu (relative to the repo) for `archs`; mode 'object' is `-c` (host and device
    code, as the real build), 'fatbin' the device code alone (about half the time)."""
    nvcc = nvcc or find_nvcc()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(outdir or tmp, os.path.basename(source) + (".o" if mode == "object" else ".fatbin"))
        cmd = ([nvcc, "-c" if mode == "object" else "-fatbin", os.path.join(REPO, source), "-o", out]
               + BUILD_FLAGS + info["nvcc_flags"] + gencode_flags(archs)
               + ["-I" + CSRC] + ["-I" + p for p in info["include"]]
               + ["--threads", "0", "-Xptxas", "-v"])
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
        seconds = time.perf_counter() - t0
    output = proc.stdout + proc.stderr
    return CompileResult(source, proc.returncode, seconds, cmd, output, parse_ptxas(output, source))


def format_table(kernels: list) -> str:
    archs = sorted({k.arch for k in kernels})
    by_name: dict = {}
    for k in kernels:
        by_name.setdefault((k.source, k.name), {})[k.arch] = k
    width = max([len(n) for _, n in by_name] + [6])
    head = f"{'kernel':<{width}}  " + "  ".join(f"{a + ' regs/stack/spill(st,ld)':<30}" for a in archs)
    lines = [head, "-" * len(head)]
    for (src, name), per_arch in sorted(by_name.items()):
        cells = []
        for a in archs:
            k = per_arch.get(a)
            cells.append("-" if k is None else
                         f"{k.registers:>3} / {k.stack_bytes:>3}B / {k.spill_stores},{k.spill_loads}"
                         + ("  SPILL" if k.spills else ""))
        lines.append(f"{name:<{width}}  " + "  ".join(f"{c:<30}" for c in cells))
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--python", help="interpreter of a venv with a CUDA torch (default: GANFAST_CUDA_VENV, "
                                     ".venv-cuda, /work/cudavenv)")
    ap.add_argument("--archs", default=os.environ.get("GANFAST_CUDA_ARCHS", "80;90"))
    ap.add_argument("--mode", choices=("object", "fatbin"), default="object")
    ap.add_argument("--from-build-log", metavar="LOG", help="compile nothing: read the ptxas report of a real "
                    "build's log (setup.py with GANFAST_NVCC_VERBOSE=1) and check it")
    ap.add_argument("sources", nargs="*", help="default: every .cu under csrc/")
    args = ap.parse_args(argv)
    sources = args.sources or cuda_sources()

    if args.from_build_log:
        with open(args.from_build_log, errors="replace") as f:
            found = parse_build_log(f.read())
        kernels = [k for src in sources for k in found.get(src, [])]
        print(f"ptxas report of {args.from_build_log}; archs {args.archs}; {len(sources)} source(s)")
        for src in sources:
            print(f"  {src}: {len(found.get(src, []))} kernel builds")
        if kernels:
            print()
            print(format_table(kernels))
            print()
        for arch in sorted({k.arch for k in kernels}):
            ks = [k for k in kernels if k.arch == arch]
            print(f"{arch}: {len(ks)} kernels, registers {min(k.registers for k in ks)}-{max(k.registers for k in ks)}, "
                  f"max stack {max(k.stack_bytes for k in ks)} B, {sum(k.spills for k in ks)} spilling")
        problems = build_log_problems(found, sources, args.archs)
        if problems:
            print("FAIL:\n" + "\n".join("  " + p for p in problems))
            return 1
        print(f"OK: {len(sources)} source(s) built for {args.archs}, no kernel spills")
        return 0

    nvcc = find_nvcc()
    if nvcc is None:
        print("cuda_resources: nvcc not found (set CUDA_HOME)", file=sys.stderr)
        return 2
    python, info, why = find_torch_cuda(args.python)
    if info is None:
        print(f"cuda_resources: {why}", file=sys.stderr)
        return 2
    print(f"nvcc {nvcc}; torch {info['torch']} (CUDA {info['cuda']}) from {python}; archs {args.archs}; "
          f"mode {args.mode}; {len(sources)} source(s)")
    failed, kernels = [], []
    for src in sources:
        res = compile_source(src, info, args.archs, args.mode, nvcc)
        status = "ok" if res.returncode == 0 else f"FAILED (rc {res.returncode})"
        print(f"  {src}: {status} in {res.seconds:.0f} s, {len(res.kernels)} kernel builds")
        if res.returncode != 0:
            failed.append(src)
            errors = [l for l in res.output.splitlines() if "error" in l.lower()]
            print("\n".join("    " + l for l in (errors or res.output.splitlines())[-30:]))
        kernels += res.kernels
    if kernels:
        print()
        print(format_table(kernels))
    spilled = [k for k in kernels if k.spills]
    print()
    for arch in sorted({k.arch for k in kernels}):
        ks = [k for k in kernels if k.arch == arch]
        print(f"{arch}: {len(ks)} kernels, registers {min(k.registers for k in ks)}-{max(k.registers for k in ks)}, "
              f"max stack {max(k.stack_bytes for k in ks)} B, {sum(k.spills for k in ks)} spilling")
    if failed or spilled:
        print(f"FAIL: {len(failed)} source(s) failed to compile, {len(spilled)} kernel build(s) spill: "
              + ", ".join(f"{k.name} ({k.arch})" for k in spilled))
        return 1
    print(f"OK: {len(sources)} source(s) compiled for {args.archs}, no kernel spills")
    return 0


if __name__ == "__main__":
    sys.exit(main())
