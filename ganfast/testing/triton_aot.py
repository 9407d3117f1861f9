"""Ahead-of-time compilation of Triton kernels for NVIDIA targets, with resource checks, no GPU needed.

Every ganfast Triton kernel is compiled for sm_80 and sm_90 in the test suite and held to: it
compiles, ptxas spills nothing, its shared memory fits the chip, and (for memory-bound kernels)
its global accesses are 128-bit. A kernel configuration is a *spec*, a JSON-able dict:

    {"name": "elementwise fp16 tanh",                  # label for reports (optional)
     "kernel": "ganfast.ops.bias_act.triton:_bias_act_kernel",   # module:function
     "signature": {"x_ptr": "*fp16", "n": "i32", "alpha": "fp32", ...},   # every runtime argument
     "constexprs": {"BLOCK": 2048, "ACT": 3},          # every tl.constexpr argument (also ints the
                                                       #  JIT turns into constants: a value of 1)
     "aligned": ["x_ptr", "n"],                        # specialized like the JIT does real tensors:
                                                       #  pointers 16-byte aligned, ints % 16 == 0
     "options": {"num_warps": 4, "enable_fp_fusion": True}}   # triton.compile options

Any other keys ride along untouched in AotResult.spec.

`triton.jit` returns an interpreter wrapper when TRITON_INTERPRET is set (the test suite sets it),
and such a function cannot be compiled. `compile_specs_subprocess` therefore compiles in a child
Python without TRITON_INTERPRET; from a shell:

    python -m ganfast.testing.triton_aot --kernel mod:fn --signature '{"x_ptr": "*fp32", ...}' \\
        --constexprs '{"BLOCK": 1024}' --aligned x_ptr n --num-warps 4 --arch 80 --arch 90
    python -m ganfast.testing.triton_aot --specs specs.json --arch 80 --arch 90 [--jobs N]

prints a JSON list of results (one per spec and arch).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import importlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import tempfile
import time
from typing import Any, Iterable, Optional

# Largest dynamic shared memory one block may opt into, in bytes (CUDA programming guide, table
# "Technical Specifications per Compute Capability").
SHARED_MEMORY_LIMIT = {
    75: 64 * 1024,
    80: 163 * 1024,   # A100: 166912
    86: 99 * 1024,
    87: 163 * 1024,
    89: 99 * 1024,
    90: 227 * 1024,   # H100/H200: 232448
}

_VECTOR_LOAD = re.compile(r"\bld\.global(?:\.[\w:]+)*\.(?:v4\.[bfus]32|v2\.[bfus]64)\b")
_VECTOR_STORE = re.compile(r"\bst\.global(?:\.[\w:]+)*\.(?:v4\.[bfus]32|v2\.[bfus]64)\b")
_MMA = re.compile(r"\b(?:mma\.sync|wgmma\.mma_async|tcgen05\.mma)\b")


def has_vector_loads(ptx: str) -> bool:
    """True when the PTX has a 128-bit global load (ld.global.v4.b32 and kin)."""
    return _VECTOR_LOAD.search(ptx) is not None


def has_vector_stores(ptx: str) -> bool:
    """True when the PTX has a 128-bit global store (st.global.v4.b32 and kin)."""
    return _VECTOR_STORE.search(ptx) is not None


def has_mma(ptx: str) -> bool:
    """True when the PTX uses tensor cores (mma.sync on sm_80, wgmma on sm_90, tcgen05 on sm_100)."""
    return _MMA.search(ptx) is not None


@dataclasses.dataclass
class AotResult:
    name: str
    arch: int
    kernel: str                # the PTX entry name
    registers: int             # per thread, from ptxas -v
    spill_stores: int          # bytes
    spill_loads: int           # bytes
    stack_bytes: int
    shared_bytes: int          # from Triton's metadata (static + what the kernel allocates)
    num_warps: int
    compile_s: float
    ptx: str
    ptxas_log: str
    spec: dict

    @property
    def shared_limit(self) -> int:
        return SHARED_MEMORY_LIMIT[self.arch]

    def problems(self, vector_io: bool = False) -> list[str]:
        """Why this configuration is not fit to ship ([] when it is)."""
        found = []
        if self.spill_stores or self.spill_loads:
            found.append(f"spills {self.spill_stores} B stores / {self.spill_loads} B loads")
        if self.shared_bytes > self.shared_limit:
            found.append(f"shared memory {self.shared_bytes} B > sm_{self.arch} limit {self.shared_limit} B")
        if vector_io and not has_vector_loads(self.ptx):
            found.append("no 128-bit global loads (ld.global.v4) in the PTX")
        if vector_io and not has_vector_stores(self.ptx):
            found.append("no 128-bit global stores (st.global.v4) in the PTX")
        return found

    def row(self) -> str:
        return (f"sm_{self.arch:<3} regs {self.registers:>3}  spill {self.spill_stores}/{self.spill_loads} B  "
                f"smem {self.shared_bytes:>6} B  warps {self.num_warps}  {self.name}")


def _load_kernel(path: str):
    module_name, _, attr = path.partition(":")
    if not attr:
        raise ValueError(f"kernel must be 'module:function', got {path!r}")
    fn = getattr(importlib.import_module(module_name), attr)
    from triton.runtime.jit import JITFunction
    if not isinstance(fn, JITFunction):
        why = (" (TRITON_INTERPRET is set, so triton.jit made an interpreter wrapper; use "
               "compile_specs_subprocess or `python -m ganfast.testing.triton_aot`)"
               if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0") else "")
        raise TypeError(f"{path} is a {type(fn).__name__}, not a @triton.jit function{why}")
    return fn


def ptxas_resources(ptx: str, arch: int, fp_fusion: bool = True) -> dict[str, Any]:
    """Registers, spills and stack of the PTX's kernel, from `ptxas -v` for sm_<arch>, run the way
    Triton runs it (Triton's own ptxas for that arch, which accepts Triton's PTX version)."""
    from triton.backends.nvidia.compiler import get_ptxas, sm_arch_from_capability
    ptxas = get_ptxas(arch).path
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "kernel.ptx")
        with open(src, "w") as f:
            f.write(ptx)
        cmd = [ptxas, "-v", "--regAllocOptLevel=2", *([] if fp_fusion else ["--fmad=false"]),
               f"--gpu-name={sm_arch_from_capability(arch)}", src, "-o", os.path.join(tmp, "kernel.cubin")]
        proc = subprocess.run(cmd, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise RuntimeError(f"ptxas failed ({proc.returncode}): {' '.join(cmd)}\n{log}")

    def number(pattern: str) -> int:
        m = re.search(pattern, log)
        if m is None:
            raise RuntimeError(f"could not find {pattern!r} in the ptxas log:\n{log}")
        return int(m.group(1))

    return dict(registers=number(r"Used (\d+) registers"),
                spill_stores=number(r"(\d+) bytes spill stores"),
                spill_loads=number(r"(\d+) bytes spill loads"),
                stack_bytes=number(r"(\d+) bytes stack frame"),
                ptxas_log=log)


def compile_spec(spec: dict, arch: int) -> AotResult:
    """Compile one spec for sm_<arch> in this process (TRITON_INTERPRET must be unset)."""
    import triton
    from triton.backends.compiler import GPUTarget

    fn = _load_kernel(spec["kernel"])
    constexprs = dict(spec.get("constexprs", {}))
    runtime = dict(spec["signature"])
    missing = [a for a in fn.arg_names if a not in runtime and a not in constexprs]
    unknown = [a for a in list(runtime) + list(constexprs) if a not in fn.arg_names]
    if missing or unknown:
        raise ValueError(f"{spec['kernel']}: spec misses arguments {missing}, names unknown ones {unknown}")
    signature = {a: ("constexpr" if a in constexprs else runtime[a]) for a in fn.arg_names}
    attrs = {}
    for a in spec.get("aligned", ()):
        if a not in runtime:
            raise ValueError(f"{spec['kernel']}: aligned argument {a!r} is not a runtime argument")
        attrs[(fn.arg_names.index(a),)] = [["tt.divisibility", 16]]
    options = dict(spec.get("options", {}))
    options.setdefault("num_warps", 4)
    options.setdefault("enable_fp_fusion", True)  # Triton's JIT default; saying so silences its warning

    start = time.perf_counter()
    src = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs, attrs=attrs)
    compiled = triton.compile(src, target=GPUTarget("cuda", arch, 32), options=options)
    seconds = time.perf_counter() - start
    ptx = compiled.asm["ptx"]
    md = compiled.metadata
    res = ptxas_resources(ptx, arch, fp_fusion=md.enable_fp_fusion)
    return AotResult(name=spec.get("name", spec["kernel"]), arch=arch, kernel=md.name, num_warps=md.num_warps,
                     shared_bytes=int(md.shared), compile_s=round(seconds, 3), ptx=ptx, spec=spec, **res)


def _compile_job(job: tuple[dict, int]) -> dict:
    spec, arch = job
    return dataclasses.asdict(compile_spec(spec, arch))


def compile_specs(specs: Iterable[dict], archs: Iterable[int] = (80, 90), jobs: Optional[int] = None) -> list[AotResult]:
    """Compile every spec for every arch in this process (TRITON_INTERPRET unset), `jobs` at a time."""
    work = [(spec, arch) for spec in specs for arch in archs]
    jobs = jobs or os.cpu_count() or 1
    if jobs == 1 or len(work) == 1:
        return [compile_spec(s, a) for s, a in work]
    # fork: the workers inherit the imported modules; nothing here has touched CUDA.
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(max_workers=jobs, mp_context=ctx) as pool:
        return [AotResult(**r) for r in pool.map(_compile_job, work)]


def compile_specs_subprocess(specs: Iterable[dict], archs: Iterable[int] = (80, 90), jobs: Optional[int] = None,
                             timeout: float = 1800.0) -> list[AotResult]:
    """compile_specs in a child Python without TRITON_INTERPRET (safe to call from the test suite)."""
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    with tempfile.TemporaryDirectory() as tmp:
        spec_path, out_path = os.path.join(tmp, "specs.json"), os.path.join(tmp, "results.json")
        with open(spec_path, "w") as f:
            json.dump(list(specs), f)
        cmd = [sys.executable, "-m", "ganfast.testing.triton_aot", "--specs", spec_path, "--out", out_path,
               *[f"--arch={a}" for a in archs], *([f"--jobs={jobs}"] if jobs else [])]
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"AOT compile failed ({proc.returncode}): {' '.join(cmd)}\n"
                               f"{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}")
        with open(out_path) as f:
            return [AotResult(**r) for r in json.load(f)]


AOT_ARCHS = (80, 90)   # what every ganfast Triton kernel is compiled for in the test suite


def compile_by_name(specs: Iterable[dict], archs: Iterable[int] = AOT_ARCHS) -> dict:
    """{(spec name, arch): AotResult} for every spec and arch (one subprocess; see
    compile_specs_subprocess): the module-scoped fixture of each op's AOT tests."""
    return {(r.name, r.arch): r for r in compile_specs_subprocess(list(specs), tuple(archs))}


def spec_id(spec: dict) -> str:
    """A pytest id for a spec: its name without spaces."""
    return spec["name"].replace(" ", "-")


def reported(result: AotResult, record_property=None) -> AotResult:
    """result, after printing its row and recording its registers and shared memory as test
    properties (so the junit XML carries the resource table)."""
    print(result.row())
    if record_property is not None:
        record_property("registers", result.registers)
        record_property("shared_bytes", result.shared_bytes)
    return result


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m ganfast.testing.triton_aot", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--specs", help="JSON file holding a list of specs (see the module docstring)")
    p.add_argument("--kernel", help="module:function of one kernel (instead of --specs)")
    p.add_argument("--signature", default="{}", help="JSON {arg: type} of the runtime arguments")
    p.add_argument("--constexprs", default="{}", help="JSON {arg: value} of the constexpr arguments")
    p.add_argument("--aligned", nargs="*", default=[], help="arguments specialized as 16-byte aligned / % 16")
    p.add_argument("--num-warps", type=int, default=4)
    p.add_argument("--arch", type=int, action="append", help="compute capability, e.g. 80 (repeatable; default 80, 90)")
    p.add_argument("--jobs", type=int, default=None, help="parallel compiles (default: CPU count)")
    p.add_argument("--out", help="write the JSON here instead of stdout")
    p.add_argument("--summary", action="store_true", help="print one line per result instead of JSON")
    args = p.parse_args(argv)
    if os.environ.get("TRITON_INTERPRET", "0") not in ("", "0"):
        p.error("TRITON_INTERPRET is set: unset it, the interpreter's triton.jit functions cannot be compiled")
    if args.specs:
        with open(args.specs) as f:
            specs = json.load(f)
    elif args.kernel:
        specs = [dict(kernel=args.kernel, signature=json.loads(args.signature),
                      constexprs=json.loads(args.constexprs), aligned=args.aligned,
                      options={"num_warps": args.num_warps})]
    else:
        p.error("give --specs or --kernel")
    results = compile_specs(specs, args.arch or (80, 90), args.jobs)
    if args.summary:
        text = "\n".join(r.row() for r in results) + "\n"
    else:
        text = json.dumps([dataclasses.asdict(r) for r in results])
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
