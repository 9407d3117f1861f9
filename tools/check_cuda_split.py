"""Check one op's CUDA sources the way the real build compiles them, without a GPU or a full build.

    python tools/check_cuda_split.py OP [--python VENV/bin/python] [--archs "80;90"]

For csrc/OP/OP_cuda.cu (kernels and launch functions, no torch headers) and
csrc/OP/OP_cuda_host.cpp (the torch side, see csrc/common/cuda_launch.h):
  1. the .cu includes no torch/ATen header (only c10/util value types through cuda_launch.h),
  2. nvcc -c of the .cu for every architecture, with its ptxas report (no spills) and time,
  3. g++ -c of the _cuda_host.cpp and the OP_common.cpp with the CUDA torch's headers, as the
     CUDAExtension compiles them,
  4. every ganfast symbol the host objects leave undefined is defined by the .cu object or the
     common object (a link check of the split itself).
Needs nvcc and a venv with a CUDA torch (default: GANFAST_CUDA_VENV, .venv-cuda); exits 1 on any
failure.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import cuda_resources as cr  # noqa: E402

REPO = cr.REPO
_TORCH_INCLUDE = re.compile(r'#\s*include\s*[<"](torch/|ATen/|c10/(?!util/(Half|BFloat16)\.h))')


def _symbols(obj: str, undefined: bool) -> set:
    out = subprocess.run(["nm", "-C", "--undefined-only" if undefined else "--defined-only", obj],
                         capture_output=True, text=True, check=True).stdout
    names = set()
    for line in out.splitlines():
        name = line.split(None, 2)[-1] if not undefined else line.split(None, 1)[-1]
        if name.startswith("ganfast::"):
            names.add(name)
    return names


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("op")
    ap.add_argument("--python")
    ap.add_argument("--archs", default="80;90")
    args = ap.parse_args(argv)
    cu = f"csrc/{args.op}/{args.op}_cuda.cu"
    host = f"csrc/{args.op}/{args.op}_cuda_host.cpp"
    common = f"csrc/{args.op}/{args.op}_common.cpp"
    for p in (cu, host):
        if not os.path.exists(os.path.join(REPO, p)):
            print(f"FAIL: {p} does not exist")
            return 1
    ok = True
    with open(os.path.join(REPO, cu)) as f:
        bad = [l.strip() for l in f if _TORCH_INCLUDE.search(l)]
    if bad:
        print(f"FAIL: {cu} includes torch headers: {bad}")
        ok = False
    nvcc = cr.find_nvcc()
    python, info, why = cr.find_torch_cuda(args.python)
    if nvcc is None or info is None:
        print(f"FAIL: {why if info is None else 'nvcc not found'}")
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        res = cr.compile_source(cu, info, args.archs, "object", nvcc, outdir=tmp)
        print(f"nvcc {cu}: rc {res.returncode} in {res.seconds:.1f} s, {len(res.kernels)} kernel builds")
        if res.returncode != 0:
            print("\n".join(res.output.splitlines()[-40:]))
            return 1
        print(cr.format_table(res.kernels))
        if any(k.spills for k in res.kernels):
            print("FAIL: a kernel spills")
            ok = False
        cu_obj = os.path.join(tmp, os.path.basename(cu) + ".o")
        objs = []
        for src in (host, common):
            obj = os.path.join(tmp, os.path.basename(src) + ".o")
            cmd = (["g++", "-c", os.path.join(REPO, src), "-o", obj, "-std=c++20", "-O1", "-fPIC",
                    "-DGANFAST_WITH_CUDA=1", "-DTORCH_EXTENSION_NAME=_C_cuda", "-I" + cr.CSRC]
                   + ["-I" + p for p in info["include"]] + [f"-I{os.environ.get('CUDA_HOME', '/usr/local/cuda')}/include"])
            t0 = time.perf_counter()
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
            print(f"g++ {src}: rc {proc.returncode} in {time.perf_counter() - t0:.1f} s")
            if proc.returncode != 0:
                print("\n".join((proc.stdout + proc.stderr).splitlines()[-40:]))
                return 1
            objs.append(obj)
        defined = _symbols(cu_obj, False) | _symbols(objs[1], False)
        missing = sorted(s for s in _symbols(objs[0], True) if s not in defined)
        # Symbols defined in other ops' common files or bindings are not this op's business, but a
        # launch function must come from this .cu.
        missing = [s for s in missing if "launch" in s or args.op in s]
        if missing:
            print("FAIL: the host object needs symbols that neither the .cu nor the common object defines:\n  "
                  + "\n  ".join(missing))
            ok = False
        launches = sorted(s for s in _symbols(cu_obj, False) if "launch" in s)
        print(f"launch functions defined by {cu}: {len(launches)}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
