"""Every .cu under csrc/ compiles for sm_80 and sm_90 with no register spills; no GPU needed.

Needs nvcc and a CUDA build of torch for its headers: GANFAST_CUDA_VENV, else .venv-cuda in the
repo root (tools/check_cuda_build.sh makes it), else /work/cudavenv; skips, naming what is missing.
Device code only (`nvcc -fatbin`, through tools/cuda_resources.py, the code the build script runs
with `-c`): ptxas reports the same resources as in the real build in about half the time, since
the host half of a torch extension source is most of its compile. tools/check_cuda_build.sh
compiles and links the host side too.

In CI (.ci/run) the full build has just run with ptxas -v, and GANFAST_CUDA_BUILD_LOG names its
log: the per-source test then checks that build's report (every .cu, both architectures, no
spills) rather than compiling everything a second time.
"""
from __future__ import annotations

import importlib.util
import os
import sys
from types import SimpleNamespace

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ARCHS = ("sm_80", "sm_90")


def _load_tool():
    spec = importlib.util.spec_from_file_location("cuda_resources", os.path.join(REPO, "tools", "cuda_resources.py"))
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up there
    spec.loader.exec_module(mod)
    return mod


cuda_resources = _load_tool()


def _missing(why):
    # CI sets GANFAST_REQUIRE_NVCC=1: there a missing toolchain is a failure, not a quiet skip.
    if os.environ.get("GANFAST_REQUIRE_NVCC", "0") == "1":
        pytest.fail(f"GANFAST_REQUIRE_NVCC=1 but {why}")
    pytest.skip(why)


@pytest.fixture(scope="module")
def toolchain():
    nvcc = cuda_resources.find_nvcc()
    if nvcc is None:
        _missing("nvcc not found (set CUDA_HOME or put nvcc on PATH)")
    _, info, why = cuda_resources.find_torch_cuda()
    if info is None:
        _missing(why)
    return nvcc, info


def _from_build_log(source):
    """KernelResources of `source` from GANFAST_CUDA_BUILD_LOG, the log of a full build made with
    ptxas -v in this same CI run (.ci/run: tools/check_cuda_build.sh keeps it), or None when no
    such log is named. Reading it instead of compiling every .cu again saves CI a second nvcc pass
    over all sources (~15 min on two cores) and checks the objects that were actually linked."""
    path = os.environ.get("GANFAST_CUDA_BUILD_LOG")
    if not path:
        return None
    with open(path, errors="replace") as f:  # a named but missing log is an error, not a fallback
        found = cuda_resources.parse_build_log(f.read())
    return found.get(source, [])


@pytest.mark.slow
@pytest.mark.parametrize("source", cuda_resources.cuda_sources())
def test_cu_compiles_for_sm80_sm90_without_spills(source, record_property, request):
    kernels = _from_build_log(source)
    if kernels is None:
        nvcc, info = request.getfixturevalue("toolchain")
        res = cuda_resources.compile_source(source, info, ";".join(a[3:] for a in ARCHS), mode="fatbin", nvcc=nvcc)
        assert res.returncode == 0, f"nvcc failed on {source} (torch {info['torch']}):\n" + "\n".join(res.output.splitlines()[-40:])
        kernels = res.kernels
    res = SimpleNamespace(kernels=kernels)
    archs = {k.arch for k in res.kernels}
    assert archs == set(ARCHS), f"{source}: ptxas reported kernels for {sorted(archs)}, expected {ARCHS}"
    record_property("max_registers", {a: max(k.registers for k in res.kernels if k.arch == a) for a in ARCHS})
    spilled = [k for k in res.kernels if k.spills]
    assert not spilled, f"{source}: register spills:\n" + cuda_resources.format_table(spilled)


def test_build_log_parsing_attributes_ptxas_lines_to_their_source():
    # Non-interactive ninja: "[i/N] command" when a step ends, then that step's output.
    log = """running build_ext
[1/3] /usr/bin/g++ -MMD -MF /r/build/temp/csrc/bindings.o.d -c /r/csrc/bindings.cpp -o /r/build/temp/csrc/bindings.o
[2/3] /usr/local/cuda/bin/nvcc -MD -MF /r/build/temp/csrc/a/a_cuda.o.d -I/r/csrc -c /r/csrc/a/a_cuda.cu -o /r/build/temp/csrc/a/a_cuda.o -Xptxas=-v
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_90'
ptxas info    : Function properties for _Z1kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 30 registers, used 0 barriers
ptxas info    : Compiling entry function '_Z1kPf' for 'sm_80'
ptxas info    : Function properties for _Z1kPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 32 registers, used 0 barriers
[3/3] /usr/local/cuda/bin/nvcc -MD -MF /r/build/temp/csrc/b/b_cuda.o.d -c /r/csrc/b/b_cuda.cu -o /r/build/temp/csrc/b/b_cuda.o -Xptxas=-v
ptxas info    : Compiling entry function '_Z1gPf' for 'sm_90'
ptxas info    : Function properties for _Z1gPf
    8 bytes stack frame, 8 bytes spill stores, 8 bytes spill loads
ptxas info    : Used 255 registers, used 0 barriers
g++ -shared ... -o build/lib/ganfast/_C_cuda.so
"""
    found = cuda_resources.parse_build_log(log)
    assert sorted(found) == ["csrc/a/a_cuda.cu", "csrc/b/b_cuda.cu"]
    assert [(k.arch, k.registers, k.spills) for k in found["csrc/a/a_cuda.cu"]] == [("sm_90", 30, False), ("sm_80", 32, False)]
    assert [(k.arch, k.registers, k.spills) for k in found["csrc/b/b_cuda.cu"]] == [("sm_90", 255, True)]
    problems = cuda_resources.build_log_problems(found, ["csrc/a/a_cuda.cu", "csrc/b/b_cuda.cu", "csrc/c/c_cuda.cu"], "80;90")
    assert len(problems) == 3
    assert "no kernels for ['sm_80']" in problems[0] and "spills" in problems[1] and "no ptxas report" in problems[2]
    assert cuda_resources.build_log_problems(found, ["csrc/a/a_cuda.cu"], "80;90") == []


def test_ptxas_report_parsing():
    # The parser on the lines ptxas -v prints (so a format change fails loudly, not silently).
    out = """ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_90'
ptxas info    : Function properties for _Z6kernelPf
    8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 40 registers, used 0 barriers, 8 bytes cumulative stack size
ptxas info    : Compiling entry function '_Z6kernelPf' for 'sm_80'
ptxas info    : Function properties for _Z6kernelPf
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 24 registers, used 0 barriers, 360 bytes cmem[0]
"""
    ks = cuda_resources.parse_ptxas(out, "k.cu")
    assert [(k.arch, k.registers, k.stack_bytes, k.spill_stores, k.spill_loads, k.spills) for k in ks] == [
        ("sm_90", 40, 8, 4, 4, True), ("sm_80", 24, 0, 0, 0, False)]
    assert ks[0].name.startswith("kernel")
