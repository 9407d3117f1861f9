#!/usr/bin/env bash
# The C++ CPU kernels under AddressSanitizer (issue 26: no out-of-bounds read, no crash):
#   (a) a fresh `git clone` of this repository's committed HEAD into GANFAST_ASAN_DIR (default
#       /tmp/asan; removed first), so the dev tree's ganfast/_C*.so stay as they are;
#   (b) `setup.py build_ext --inplace` there with GANFAST_EXTRA_CFLAGS / GANFAST_EXTRA_LDFLAGS
#       (setup.py) = -fsanitize=address -fno-omit-frame-pointer -g -O1 (they come after -O3);
#   (c) the built ganfast/_C*.so links libasan, and the interpreter run below imports ganfast and
#       ganfast._C from the clone (not from the dev tree's editable install) with a usable cpu
#       backend, so the tests really reach the sanitized kernels; and the same environment reports
#       a heap-buffer-overflow planted in a tiny sanitized library loaded the same way (ctypes), so
#       a silent run means no report, not a deaf sanitizer;
#   (d) pytest on the op tests that run the CPU kernels (`tests/ops -k "not triton and not gpu"`)
#       with libasan preloaded into the (unsanitized) Python, and libstdc++ with it: ASan looks up
#       the real __cxa_throw when it starts, before Python has loaded libstdc++, and would
#       otherwise die on the first C++ exception (a TORCH_CHECK) with "CHECK failed:
#       ((__interception::real___cxa_throw)) != (0)". ASan aborts the process on its first error
#       (halt_on_error=1, abort_on_error=1), so a clean run is a full pytest summary with no
#       "AddressSanitizer" in the log. Leak checking is off (CPython and torch keep allocations
#       alive until exit on purpose). Tests that fail without an ASan report are listed apart:
#       the -O1 build rounds differently from the -O3 one.
# Environment: PYTHON (an interpreter with torch, numpy, pytest, hypothesis; default the repo's
# .venv/bin/python), GANFAST_ASAN_DIR, MAX_JOBS (compile jobs, default 1), OMP_NUM_THREADS
# (default 2: with more than one thread the kernels' work is split, so chunk edges are exercised),
# GANFAST_ASAN_PYTEST_ARGS (replaces the test selection, e.g. "tests/ops/test_bias_act.py"),
# GANFAST_ASAN_REUSE=1 (keep an earlier clone and sanitized build in GANFAST_ASAN_DIR: steps (a)
# and (b) are skipped when its extension links libasan).
# The log is $GANFAST_ASAN_DIR/asan_pytest.log. Exit status: 0 when pytest passed with no ASan
# report, 1 on an ASan report or a crash, 2 when only ordinary test failures remain.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="${PYTHON:-$REPO/.venv/bin/python}"
DIR="${GANFAST_ASAN_DIR:-/tmp/asan}"
ASAN_FLAGS="-fsanitize=address -fno-omit-frame-pointer -g -O1"
START=$SECONDS
declare -a SUMMARY=()

step() { printf '\n== %s\n' "$*"; }
note() { SUMMARY+=("$*"); printf '   %s\n' "$*"; }
fail() { printf '\nFAIL: %s\n' "$*" >&2; exit 1; }
summary() {
  printf '\n== summary (%s s in all)\n' "$((SECONDS - START))"
  printf '   %s\n' "${SUMMARY[@]}"
}

[[ -x "$PY" ]] || fail "no Python at $PY (set PYTHON)"
LIBASAN="$(gcc -print-file-name=libasan.so)"
[[ -f "$LIBASAN" ]] || fail "gcc has no libasan.so (gcc -print-file-name=libasan.so gave '$LIBASAN')"

LIBSTDCXX="$(gcc -print-file-name=libstdc++.so)"
[[ -e "$LIBSTDCXX" ]] || fail "gcc has no libstdc++.so (gcc -print-file-name=libstdc++.so gave '$LIBSTDCXX')"
[[ "$DIR" != "$REPO" ]] || fail "GANFAST_ASAN_DIR must not be the repository itself"
reusable() { ls "$DIR"/ganfast/_C.*.so >/dev/null 2>&1 && ldd "$DIR"/ganfast/_C.*.so | grep -q libasan; }

if [[ "${GANFAST_ASAN_REUSE:-0}" == 1 ]] && reusable; then
  step "(a, b) reuse the clone and sanitized build in $DIR (GANFAST_ASAN_REUSE=1)"
  note "commit: $(git -C "$DIR" log -1 --format='%h %s' | cut -c1-90) (reused build)"
else
  # ---- (a) the clone ----
  step "(a) clone $REPO (HEAD $(git -C "$REPO" rev-parse --short HEAD)) into $DIR"
  rm -rf "$DIR"
  git clone --quiet "$REPO" "$DIR"
  note "commit: $(git -C "$DIR" log -1 --format='%h %s' | cut -c1-90)"

  # ---- (b) the sanitized build ----
  step "(b) build ganfast._C with $ASAN_FLAGS (MAX_JOBS=${MAX_JOBS:-1})"
  t=$SECONDS
  (
    cd "$DIR"
    MAX_JOBS="${MAX_JOBS:-1}" GANFAST_EXTRA_CFLAGS="$ASAN_FLAGS" GANFAST_EXTRA_LDFLAGS="-fsanitize=address" \
      "$PY" setup.py build_ext --inplace > "$DIR/asan_build.log" 2>&1
  ) || { tail -30 "$DIR/asan_build.log"; fail "build_ext failed (log: $DIR/asan_build.log)"; }
  "$PY" - "$DIR/ganfast/_build_info.json" <<'EOF' || { tail -30 "$DIR/asan_build.log"; fail "the CPU extension was not built"; }
import json, sys
info = json.load(open(sys.argv[1]))["cpu"]
sys.exit(0 if info["built"] else f"cpu extension not built: {info['reason']}")
EOF
  grep -q -- "-fsanitize=address" "$DIR/asan_build.log" || fail "the compile lines in $DIR/asan_build.log lack -fsanitize=address"
  note "build: $((SECONDS - t)) s"
fi

# ---- (c) the tests reach the sanitized extension ----
step "(c) ganfast._C links libasan and is the one imported; ASan reports a planted error"
SO="$(ls "$DIR"/ganfast/_C.*.so)"
ldd "$SO" | grep -q libasan || fail "$SO does not link libasan"
export PYTHONPATH="$DIR"
export LD_PRELOAD="$LIBASAN $LIBSTDCXX"
# verify_asan_link_order=0: the interpreter itself is not sanitized, libasan comes in by preload.
export ASAN_OPTIONS="detect_leaks=0:abort_on_error=1:halt_on_error=1:verify_asan_link_order=0"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-2}"
cd "$DIR"
"$PY" - "$DIR" <<'EOF' || fail "the sanitized extension is not what the tests would use"
import os, sys
import ganfast, ganfast._C
from ganfast import backends
root = os.path.realpath(sys.argv[1]) + os.sep
for mod in (ganfast, ganfast._C):
    if not os.path.realpath(mod.__file__).startswith(root):
        sys.exit(f"{mod.__name__} comes from {mod.__file__}, not from {root}")
reason = backends.get_backend("cpu").unavailable_reason()
if reason is not None:
    sys.exit(f"cpu backend unavailable: {reason}")
print("   imported", ganfast._C.__file__)
EOF
note "extension: $(basename "$SO") from $DIR, links $(ldd "$SO" | grep -o 'libasan[^ ]*' | head -1)"
CANARY="$DIR/build/asan_canary"
mkdir -p "$CANARY"
cat > "$CANARY/canary.cpp" <<'EOF'
#include <cstdlib>
// Reads one int past the end of a heap block: what ASan must report.
extern "C" int read_past_end(int n) {
  int* a = static_cast<int*>(std::malloc(n * sizeof(int)));
  for (int i = 0; i < n; ++i) a[i] = i;
  volatile int v = a[n];
  std::free(a);
  return v;
}
EOF
"${CXX:-c++}" -shared -fPIC $ASAN_FLAGS -o "$CANARY/canary.so" "$CANARY/canary.cpp"
if ("$PY" -c 'import ctypes, sys; ctypes.CDLL(sys.argv[1]).read_past_end(4)' "$CANARY/canary.so"; exit $?) \
    > "$CANARY/canary.log" 2>&1; then
  fail "a planted out-of-bounds read ran without an ASan report (ASAN_OPTIONS=$ASAN_OPTIONS)"
fi
grep -q "ERROR: AddressSanitizer: heap-buffer-overflow" "$CANARY/canary.log" \
  || { tail -20 "$CANARY/canary.log"; fail "the planted out-of-bounds read died without an ASan report"; }
note "canary: a planted heap-buffer-overflow in a sanitized library is reported"

# ---- (d) the op tests under ASan ----
read -r -a PYTEST_ARGS <<< "${GANFAST_ASAN_PYTEST_ARGS:-tests/ops -k}"
[[ -n "${GANFAST_ASAN_PYTEST_ARGS:-}" ]] || PYTEST_ARGS+=("not triton and not gpu")
step "(d) pytest ${PYTEST_ARGS[*]} under ASan (OMP_NUM_THREADS=$OMP_NUM_THREADS)"
t=$SECONDS
LOG="$DIR/asan_pytest.log"
set +e
"$PY" -m pytest -q -rfE -p no:cacheprovider "${PYTEST_ARGS[@]}" > "$LOG" 2>&1
rc=$?
set -e
tail -5 "$LOG"
result="$(grep -E '^=* ?[0-9]+ (passed|failed|errors?|skipped|deselected)[ ,]' "$LOG" | tail -1 | tr -d '=' | xargs || true)"
note "pytest: ${result:-no summary: the process died} (exit $rc, $((SECONDS - t)) s)"
if grep -q "AddressSanitizer" "$LOG"; then
  note "ASan: REPORT (first one below; full log $LOG)"
  grep -n -B2 -A40 -m1 "AddressSanitizer" "$LOG"
  summary
  exit 1
fi
note "ASan: no report"
if [[ -z "$result" ]]; then
  grep -n -B5 -A20 -m1 "Fatal Python error" "$LOG" || tail -40 "$LOG"
  summary
  fail "pytest died without an ASan report (log: $LOG)"
fi
while read -r line; do note "  $line"; done < <(grep -E '^(FAILED|ERROR) ' "$LOG" | cut -c1-200)
summary
[[ $rc -eq 0 ]] || exit 2
