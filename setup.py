"""Build ganfast's two optional extensions.

- ``ganfast._C``      C++17 + OpenMP CPU kernels; built whenever torch and a C++ compiler exist.
- ``ganfast._C_cuda`` CUDA kernels; built when torch has CUDA and nvcc is found, or when
  ``GANFAST_FORCE_CUDA=1``. Architectures from ``GANFAST_CUDA_ARCHS`` (default "80;90").
- ``GANFAST_SKIP_EXT=1`` skips both; ``GANFAST_SKIP_CPU_EXT=1`` skips ``ganfast._C`` only
  (tools/check_cuda_build.sh: the CUDA build check has no use for a second CPU build).
- ``GANFAST_NVCC_VERBOSE=1`` adds ``-Xptxas=-v``: the build log then holds registers, stack and
  spills per kernel (tools/check_cuda_build.sh reads them with tools/cuda_resources.py).
- ``GANFAST_CPU_ARCH`` sets ``-march=`` for the CPU extension (default "native": the extension is
  built on the machine that runs it; set "x86-64-v2" or similar for a portable wheel).
- ``GANFAST_EXTRA_CFLAGS`` / ``GANFAST_EXTRA_LDFLAGS`` (space-separated) go last on the CPU
  extension's compile / link lines, so they override the defaults (tools/asan_check.sh builds with
  ``-fsanitize=address -O1`` this way).

A failed optional build never fails the install: the reason is written to
``ganfast/_build_info.json`` beside the extensions and ``ganfast info`` shows it.
"""
import glob
import json
import os
import shutil
import sys
import traceback

from setuptools import setup
from setuptools.command.build_ext import build_ext as _setuptools_build_ext
from setuptools.command.build_py import build_py as _setuptools_build_py

ROOT = os.path.dirname(os.path.abspath(__file__))
CSRC = os.path.join(ROOT, "csrc")


def _env_flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _rel(paths):
    return sorted(os.path.relpath(p, ROOT) for p in paths)


def _cuda_archs():
    archs = os.environ.get("GANFAST_CUDA_ARCHS", "80;90")
    flags = []
    for a in archs.replace(",", ";").split(";"):
        a = a.strip().replace("sm_", "").replace(".", "")
        if a:
            flags.append(f"-gencode=arch=compute_{a},code=sm_{a}")
    return flags


def _plan_extensions():
    """Return (extensions, build_info) without ever raising."""
    info = {"cpu": {"built": False, "reason": None}, "cuda": {"built": False, "reason": None}}
    if _env_flag("GANFAST_SKIP_EXT"):
        info["cpu"]["reason"] = info["cuda"]["reason"] = "skipped: GANFAST_SKIP_EXT=1 at install time"
        return [], info, None
    try:
        import torch
        from torch.utils import cpp_extension
    except Exception as e:  # torch missing at build time: pure-Python install
        reason = f"torch was not importable at install time ({type(e).__name__}: {e}); install torch first and use --no-build-isolation"
        info["cpu"]["reason"] = info["cuda"]["reason"] = reason
        return [], info, None

    exts = []
    common_inc = [os.path.join(CSRC)]
    # <op>_common.cpp: host code (argument checks, parameter setup) that both extensions need.
    shared_sources = _rel(glob.glob(os.path.join(CSRC, "*", "*_common.cpp"))) + ["csrc/bindings.cpp"]
    cpu_sources = _rel(glob.glob(os.path.join(CSRC, "*", "*_cpu.cpp"))) + shared_sources
    march = os.environ.get("GANFAST_CPU_ARCH", "native")
    # No -std flag: torch.utils.cpp_extension adds the one its headers need (torch 2.14's
    # headers reject C++17 with "#error C++20 or later compatible compiler is required").
    cxx_flags = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math"]
    if march:
        cxx_flags.append(f"-march={march}")
    cxx_flags += os.environ.get("GANFAST_EXTRA_CFLAGS", "").split()
    cpu_link_flags = ["-fopenmp"] + os.environ.get("GANFAST_EXTRA_LDFLAGS", "").split()
    if _env_flag("GANFAST_SKIP_CPU_EXT"):
        info["cpu"]["reason"] = "skipped: GANFAST_SKIP_CPU_EXT=1 at install time"
    else:
        exts.append(cpp_extension.CppExtension(
            "ganfast._C", cpu_sources, include_dirs=common_inc,
            extra_compile_args={"cxx": cxx_flags}, extra_link_args=cpu_link_flags))
        info["cpu"]["sources"] = cpu_sources

    force_cuda = _env_flag("GANFAST_FORCE_CUDA")
    cuda_home = cpp_extension.CUDA_HOME
    if torch.version.cuda is None:
        info["cuda"]["reason"] = f"torch {torch.__version__} is a CPU-only build"
    elif cuda_home is None or shutil.which(os.path.join(cuda_home, "bin", "nvcc")) is None:
        info["cuda"]["reason"] = "nvcc not found (set CUDA_HOME)"
    elif not (force_cuda or torch.cuda.is_available()):
        info["cuda"]["reason"] = "no CUDA device visible at install time (set GANFAST_FORCE_CUDA=1 to build anyway)"
    else:
        # <op>_cuda.cu: kernels and plain launch functions, no torch headers (nvcc is slow on
        # those); <op>_cuda_host.cpp: the torch side of each launch (common/cuda_launch.h).
        cuda_sources = (_rel(glob.glob(os.path.join(CSRC, "*", "*_cuda.cu")))
                        + _rel(glob.glob(os.path.join(CSRC, "*", "*_cuda_host.cpp"))) + shared_sources)
        extra_inc = [p for p in os.environ.get("GANFAST_EXTRA_INCLUDE", "").split(os.pathsep) if p]
        exts.append(cpp_extension.CUDAExtension(
            "ganfast._C_cuda", cuda_sources, include_dirs=common_inc + extra_inc,
            define_macros=[("GANFAST_WITH_CUDA", "1")],
            extra_compile_args={
                "cxx": ["-O3"],
                "nvcc": ["-O3", "--use_fast_math", "-lineinfo"] + _cuda_archs()
                        + (["-Xptxas=-v"] if _env_flag("GANFAST_NVCC_VERBOSE") else []),
            }))
        info["cuda"]["sources"] = cuda_sources
        info["cuda"]["archs"] = os.environ.get("GANFAST_CUDA_ARCHS", "80;90")
    return exts, info, cpp_extension.BuildExtension


EXTENSIONS, BUILD_INFO, _TorchBuildExt = _plan_extensions()
_Base = _TorchBuildExt or _setuptools_build_ext


class OptionalBuildExt(_Base):
    """Build each extension on its own; a failure is recorded, never raised."""

    failed = set()

    def build_extension(self, ext):
        key = "cuda" if ext.name.endswith("_C_cuda") else "cpu"
        try:
            super().build_extension(ext)
            BUILD_INFO[key]["built"] = True
            BUILD_INFO[key]["reason"] = None
        except Exception as e:
            self.failed.add(ext.name)
            tail = traceback.format_exc().strip().splitlines()[-6:]
            BUILD_INFO[key]["reason"] = f"build failed: {type(e).__name__}: {e}"
            BUILD_INFO[key]["log_tail"] = tail
            sys.stderr.write(f"\n[ganfast] optional extension {ext.name} failed to build; "
                             f"ganfast still installs and falls back. Reason: {e}\n")

    def run(self):
        super().run()
        self._write_build_info()

    # Failed extensions have no file: keep them out of what install / editable mode copies.
    def get_outputs(self):
        return [o for o in super().get_outputs() if not self._is_failed_output(o)]

    def get_output_mapping(self):
        return {k: v for k, v in super().get_output_mapping().items() if not self._is_failed_output(k)}

    def copy_extensions_to_source(self):
        kept = self.extensions
        self.extensions = [e for e in kept if e.name not in self.failed]
        try:
            super().copy_extensions_to_source()
        finally:
            self.extensions = kept

    def _is_failed_output(self, path):
        return any(os.path.abspath(path) == os.path.abspath(self.get_ext_fullpath(n)) for n in self.failed)

    def _write_build_info(self):
        # Next to the built extension (build_lib for wheels, the source tree for --inplace / -e).
        targets = {os.path.dirname(self.get_ext_fullpath("ganfast._C"))}
        if self.inplace:
            targets.add(os.path.join(ROOT, "ganfast"))
        for d in targets:
            _write_info(d)


def _write_info(pkg_dir):
    try:
        import torch
        BUILD_INFO["torch_version"] = torch.__version__
        BUILD_INFO["torch_cuda"] = torch.version.cuda
    except ImportError:
        pass
    os.makedirs(pkg_dir, exist_ok=True)
    with open(os.path.join(pkg_dir, "_build_info.json"), "w") as f:
        json.dump(BUILD_INFO, f, indent=2)


class BuildPyWithInfo(_setuptools_build_py):
    """With no extension planned, build_ext never runs: record why here instead."""

    def run(self):
        super().run()
        if not EXTENSIONS:
            _write_info(os.path.join(self.build_lib, "ganfast"))


setup(
    ext_modules=EXTENSIONS,
    cmdclass={"build_ext": OptionalBuildExt, "build_py": BuildPyWithInfo},
)
