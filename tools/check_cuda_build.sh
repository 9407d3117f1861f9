#!/usr/bin/env bash
# The CUDA build a GPU user does, checked on a machine with nvcc and no GPU:
#   (a) a venv with torch 2.14.1 (CUDA 13 build) and the build tools: GANFAST_CUDA_VENV, default
#       .venv-cuda in the repo root, reused when it already has torch 2.14.1 (the wheel is 5.5 GB);
#   (b) `setup.py build_ext --inplace` with GANFAST_FORCE_CUDA=1 in a temporary copy of the tree
#       (tracked and untracked-but-not-ignored files), so the dev venv's ganfast/_C*.so stay as
#       they are;
#   (c) the recorded build info says the CUDA extension was built (the CPU one is skipped:
#       GANFAST_SKIP_CPU_EXT=1; the test suite builds and tests it in the dev venv);
#   (d) it links: `import ganfast._C_cuda` in that venv (no GPU needed) has bias_act, and
#       cuobjdump lists a cubin for every requested architecture;
#   (e0) the build ran with ptxas -v: every .cu has kernels for every architecture, none spills;
#   (e) every .cu under csrc/ compiles on its own for each architecture with no register spills
#       (tools/cuda_resources.py prints registers / stack / spills per kernel).
# GANFAST_CUDA_BUILD_LOG_OUT=PATH keeps a copy of the build log (with its ptxas report) there.
# Environment: GANFAST_CUDA_VENV, GANFAST_CUDA_ARCHS (default "80;90"), CUDA_HOME (default
# /usr/local/cuda), PYTHON (the interpreter that makes the venv, default python3),
# GANFAST_KEEP_BUILD=1 keeps the temporary build tree.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${GANFAST_CUDA_VENV:-$REPO/.venv-cuda}"
TORCH_VERSION="2.14.1"
ARCHS="${GANFAST_CUDA_ARCHS:-80;90}"
export CUDA_HOME="${CUDA_HOME:-/usr/local/cuda}"
PY="$VENV/bin/python"
START=$SECONDS
declare -a SUMMARY=()

step() { printf '\n== %s\n' "$*"; }
note() { SUMMARY+=("$*"); printf '   %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
elapsed() { echo "$((SECONDS - $1)) s"; }

[[ -x "$CUDA_HOME/bin/nvcc" ]] || fail "no nvcc at $CUDA_HOME/bin/nvcc (set CUDA_HOME)"

# ---- (a) the venv ----
step "(a) venv $VENV with torch $TORCH_VERSION"
t=$SECONDS
venv_ready() {
  [[ -x "$PY" ]] && "$PY" - "$TORCH_VERSION" <<'EOF' 2>/dev/null
import sys
import ninja, numpy, setuptools, wheel  # noqa: F401  the build needs them too
import torch
sys.exit(0 if torch.__version__.split("+")[0] == sys.argv[1] and torch.version.cuda else 1)
EOF
}
if venv_ready; then
  note "venv: reused $VENV ($(elapsed "$t"))"
else
  [[ -x "$PY" ]] || "${PYTHON:-python3}" -m venv "$VENV"
  "$PY" -m pip install --quiet "torch==$TORCH_VERSION" ninja numpy setuptools wheel
  venv_ready || fail "$VENV has no CUDA torch $TORCH_VERSION after pip install"
  note "venv: installed torch $TORCH_VERSION into $VENV ($(elapsed "$t"))"
fi
TORCH_DESC="$("$PY" -c 'import torch; print(torch.__version__, "CUDA", torch.version.cuda)')"
note "torch: $TORCH_DESC; nvcc: $("$CUDA_HOME/bin/nvcc" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')"

# The CUDA library headers of the nvidia-* wheels (cusparse.h, ...), which ATen's CUDA headers
# include and a bare nvcc install may lack.
NV_INCLUDE="$("$PY" - <<'EOF'
import glob, os
try:
    import nvidia
    roots = list(nvidia.__path__)
except ImportError:
    roots = []
print(os.pathsep.join(sorted({os.path.dirname(h) for r in roots for h in glob.glob(os.path.join(r, "*", "include", "cusparse.h"))})))
EOF
)"

# ---- (b) build in a temporary copy ----
step "(b) python setup.py build_ext --inplace (GANFAST_FORCE_CUDA=1, archs $ARCHS) in a copy of the tree"
BUILD_DIR="$(mktemp -d "${TMPDIR:-/tmp}/ganfast-cuda-build.XXXXXX")"
if [[ "${GANFAST_KEEP_BUILD:-0}" == 1 ]]; then
  echo "   keeping $BUILD_DIR"
else
  trap 'rm -rf "$BUILD_DIR"' EXIT
fi
(cd "$REPO" && git ls-files -z --cached --others --exclude-standard \
   | while IFS= read -r -d '' f; do [[ -e "$f" ]] && printf '%s\0' "$f"; done \
   | tar --null -T - -cf -) | tar -xf - -C "$BUILD_DIR"
t=$SECONDS
LOG="$BUILD_DIR/build.log"
if ! (cd "$BUILD_DIR" && env GANFAST_FORCE_CUDA=1 GANFAST_SKIP_CPU_EXT=1 GANFAST_CUDA_ARCHS="$ARCHS" GANFAST_NVCC_VERBOSE=1 \
        GANFAST_EXTRA_INCLUDE="$NV_INCLUDE" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
        "$PY" setup.py build_ext --inplace) >"$LOG" 2>&1; then
  tail -n 60 "$LOG"
  fail "setup.py build_ext exited non-zero (log above)"
fi
BUILD_TIME="$(elapsed "$t")"
note "build: $BUILD_TIME"

# ---- (c) the recorded build info ----
step "(c) ganfast/_build_info.json"
"$PY" - "$BUILD_DIR/ganfast/_build_info.json" <<'EOF' || { tail -n 60 "$LOG"; fail "the CUDA extension was not built (build log tail above)"; }
import json, sys
info = json.load(open(sys.argv[1]))
for kind in ("cpu", "cuda"):
    i = info.get(kind, {})
    print(f"   {kind}: built={i.get('built')} reason={i.get('reason')} sources={i.get('sources')}")
    for line in i.get("log_tail", []):
        print("     ", line)
sys.exit(0 if info.get("cuda", {}).get("built") else 1)
EOF
note "build info: cuda built (the CPU extension is skipped here: GANFAST_SKIP_CPU_EXT=1)"

# ---- (d) it links ----
step "(d) import ganfast._C_cuda (no GPU) and list its cubins"
SO="$(cd "$BUILD_DIR" && "$PY" - <<'EOF'
import importlib
for name in ("ganfast._C_cuda",):
    m = importlib.import_module(name)  # dlopen resolves every symbol: this is the link check
    assert hasattr(m, "bias_act"), f"{name} has no bias_act"
import ganfast._C_cuda as m
print(m.__file__)
EOF
)" || fail "ganfast._C_cuda does not import"
note "import: ganfast._C_cuda imports, bias_act bound ($(basename "$SO"))"

CUOBJDUMP=""
for c in "$CUDA_HOME/bin/cuobjdump" "$(command -v cuobjdump || true)" \
         "$("$PY" -c 'import os, triton; print(os.path.join(os.path.dirname(triton.__file__), "backends/nvidia/bin/cuobjdump"))' 2>/dev/null || true)"; do
  if [[ -n "$c" && -x "$c" ]]; then CUOBJDUMP="$c"; break; fi
done
[[ -n "$CUOBJDUMP" ]] || fail "cuobjdump not found (CUDA_HOME/bin, PATH, or the venv's triton)"
ELF_LIST="$("$CUOBJDUMP" --list-elf "$SO")"
echo "$ELF_LIST" | sed 's/^/   /'
for a in ${ARCHS//[;,]/ }; do
  a="${a#sm_}"; a="${a//./}"
  grep -q "\.sm_${a}\.cubin" <<<"$ELF_LIST" || fail "no sm_${a} cubin in $(basename "$SO")"
done
note "cubins: $(grep -o 'sm_[0-9a-z]*' <<<"$ELF_LIST" | sort -u | tr '\n' ' ')embedded ($CUOBJDUMP)"

# ---- (e0) ptxas resources of the real build ----
step "(e0) ptxas -v of the build: every .cu has kernels for $ARCHS, none spills"
[[ -n "${GANFAST_CUDA_BUILD_LOG_OUT:-}" ]] && cp "$LOG" "$GANFAST_CUDA_BUILD_LOG_OUT"
if "$PY" "$BUILD_DIR/tools/cuda_resources.py" --archs "$ARCHS" --from-build-log "$LOG" | tee "$BUILD_DIR/resources_build.txt"; then
  note "build resources: $(tail -n 1 "$BUILD_DIR/resources_build.txt")"
else
  fail "the build's ptxas report is missing a source or architecture, or a kernel spills (table above)"
fi

# ---- (e) each .cu on its own, with ptxas resources ----
# GANFAST_CUDA_STANDALONE=0 skips it: .ci/run does, because (e0) already checked the same
# resources on the real build, and tests/test_cuda_build.py re-reads that build's log
# (GANFAST_CUDA_BUILD_LOG) instead of compiling every .cu a second time.
if [[ "${GANFAST_CUDA_STANDALONE:-1}" == 1 ]]; then
step "(e) each .cu under csrc/ through nvcc -c for $ARCHS, ptxas -v"
t=$SECONDS
RES_LOG="$BUILD_DIR/resources.txt"
if "$PY" "$BUILD_DIR/tools/cuda_resources.py" --python "$PY" --archs "$ARCHS" --mode object | tee "$RES_LOG"; then
  note "standalone nvcc: $(tail -n 1 "$RES_LOG") ($(elapsed "$t"))"
else
  fail "standalone nvcc compile failed or a kernel spills (table above)"
fi
while read -r line; do note "  $line"; done < <(grep -E '^sm_[0-9]+:' "$RES_LOG")
else
  note "standalone nvcc: skipped (GANFAST_CUDA_STANDALONE=0; tests/test_cuda_build.py covers it)"
fi

step "summary"
for s in "${SUMMARY[@]}"; do echo "   $s"; done
echo "OK: CUDA build checked in $(elapsed "$START")"
