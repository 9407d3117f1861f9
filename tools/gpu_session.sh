#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the library's device tool), in the repo root there:
#   (1) environment facts; (2) builds ganfast._C and ganfast._C_cuda in place (sm_90 only unless
#   GANFAST_CUDA_ARCHS says otherwise) in the background; (3) meanwhile runs the Triton GPU tests
#   (GANFAST_TEST_GPU=1, so the kernels run on the GPU, not in the interpreter); (4) once the build
#   is done, the CUDA-extension GPU tests; (5) bench/overhead.py --device cuda (host time per call,
#   OVERHEAD_BUDGET); (6) `ganfast bench OP --device cuda` for the ops listed in GPU_BENCH_OPS. Every step has its own time limit; logs and bench rows land in $OUT (at most
#   8 files: the tool's limit), bench rows as results.tar.gz of bench/results/*.jsonl.
# Usage there:  OUT=/some/dir bash tools/gpu_session.sh
# (The two extensions build one after the other: `build_ext -j 2` makes both write the same
# build.ninja in build/temp.*, and ninja then fails with a lexing error.)
# Knobs: GPU_TRITON_TESTS (-k expression, default "triton"), GPU_BENCH_OPS ("op:dtype ..."),
# GPU_DEADLINE (seconds; a bench that would end past it is skipped), GPU_*_BUDGET (per-step limits).
set -u
OUT="${OUT:?set OUT to the folder that should receive the logs}"
export PYTHONUNBUFFERED=1 GANFAST_TEST_GPU=1 TRITON_CACHE_DIR=/tmp/triton-cache
unset TRITON_INTERPRET
PY="${PY:-python3}"
T0=$SECONDS
stamp() { echo "[gpu_session +$((SECONDS - T0)) s] $*"; }
TEST_BUDGET="${GPU_TEST_BUDGET:-200}"
CUDA_TEST_BUDGET="${GPU_CUDA_TEST_BUDGET:-120}"
BUILD_BUDGET="${GPU_BUILD_BUDGET:-330}"
BENCH_BUDGET="${GPU_BENCH_BUDGET:-45}"
WORKERS="${GPU_TEST_WORKERS:-6}"

{
  nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$PY" -c 'import sys, torch, triton; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0)); print("triton", triton.__version__)'
  which nvcc && nvcc --version | tail -n 2; nproc
} >"$OUT/env.txt" 2>&1
stamp "environment written"

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
( env GANFAST_FORCE_CUDA=1 GANFAST_CUDA_ARCHS="${GANFAST_CUDA_ARCHS:-90}" GANFAST_EXTRA_INCLUDE="$NV_INCLUDE" \
      MAX_JOBS="${MAX_JOBS:-12}" timeout "$BUILD_BUDGET" "$PY" setup.py build_ext --inplace >"$OUT/build.log" 2>&1
  echo "BUILD EXIT $?" >>"$OUT/build.log" ) &
BUILD_PID=$!
stamp "build started (pid $BUILD_PID)"

XDIST=""
"$PY" -c 'import xdist' 2>/dev/null && XDIST="-n $WORKERS"
stamp "triton GPU tests"
timeout "$TEST_BUDGET" "$PY" -m pytest -q -ra --tb=short --maxfail=40 -p no:cacheprovider $XDIST \
    tests/ops/ -m gpu -k "${GPU_TRITON_TESTS:-triton}" >"$OUT/tests_triton.log" 2>&1
echo "TESTS EXIT $?" >>"$OUT/tests_triton.log"
stamp "triton GPU tests done: $(tail -n 2 "$OUT/tests_triton.log" | head -n 1)"

wait "$BUILD_PID"
stamp "build done: $(tail -n 1 "$OUT/build.log")"
cat ganfast/_build_info.json >>"$OUT/build.log" 2>/dev/null

timeout "$CUDA_TEST_BUDGET" "$PY" -m pytest -q -ra --tb=short --maxfail=40 -p no:cacheprovider $XDIST \
    tests/ops/ -m gpu -k "not triton" >"$OUT/tests_cuda.log" 2>&1
echo "TESTS EXIT $?" >>"$OUT/tests_cuda.log"
stamp "cuda GPU tests done: $(tail -n 2 "$OUT/tests_cuda.log" | head -n 1)"

RES=/tmp/gpu-bench-results
mkdir -p "$RES"
# host time per call of every op and module on CUDA (bench/overhead.py: one synchronize per batch of
# calls), beside the eager composite and torch.add: what decides GPU speed at GAN layer sizes
if (( SECONDS - T0 + ${OVERHEAD_BUDGET:-240} <= ${GPU_DEADLINE:-100000} )); then
  stamp "overhead bench"
  timeout "${OVERHEAD_BUDGET:-240}" "$PY" bench/overhead.py --device cuda --repeats 3 --calls 200 \
      --label "gpu_session" --out "$RES/overhead.jsonl" >>"$OUT/bench.log" 2>&1
  echo "OVERHEAD EXIT $?" >>"$OUT/bench.log"
  tar -czf "$OUT/results.tar.gz" -C "$RES" . 2>/dev/null
fi
for spec in ${GPU_BENCH_OPS:-conditional_batch_norm:bfloat16 power_iteration:bfloat16 spectral_norm:bfloat16 modulated_conv2d:bfloat16 upfirdn2d:bfloat16 adain_noise:bfloat16 bias_act:bfloat16}; do
  op="${spec%%:*}"; dt="${spec##*:}"
  if (( SECONDS - T0 + BENCH_BUDGET > ${GPU_DEADLINE:-100000} )); then stamp "deadline: bench $op skipped"; continue; fi
  stamp "bench $op $dt"
  timeout "$BENCH_BUDGET" "$PY" -c 'import sys; from ganfast.cli import main; sys.exit(main(sys.argv[1:]))' \
      bench "$op" --device cuda --dtype "$dt" --quick --warmup 10 --repeats 50 --out "$RES" >>"$OUT/bench.log" 2>&1
  echo "BENCH $op $dt EXIT $?" >>"$OUT/bench.log"
  tar -czf "$OUT/results.tar.gz" -C "$RES" . 2>/dev/null
done
stamp "all done"
