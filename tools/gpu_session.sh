#!/usr/bin/env bash
# One prepared run on a lent GPU machine (the library's device tool), in the repo root there:
#   (1) environment facts; (2) builds ganfast._C and ganfast._C_cuda in place (sm_90 only unless
#   GANFAST_CUDA_ARCHS says otherwise) in the background; (3) meanwhile, when the tests section is
#   on, runs the Triton GPU tests (GANFAST_TEST_GPU=1, so the kernels run on the GPU, not in the
#   interpreter: they need no extension and time nothing); (4) once both are done, the sections in
#   GPU_SECTIONS order:
#     models    whole-model training iterations (bench/train_step.py --device cuda): StyleGAN2-256,
#               BigGAN-128 and the small stylegan2-32-fmnist, ganfast vs reference ops, with and
#               without CUDA graphs, fp16 / NVIDIA mixed precision, torch.compile last; each run under
#               its own `timeout`, the section ending by GPU_MODELS_END
#     tests     the CUDA-extension GPU tests
#     overhead  bench/overhead.py --device cuda (host time per call, OVERHEAD_BUDGET)
#     ops       `ganfast bench OP --device cuda` for the ops listed in GPU_BENCH_OPS
#   Models come first by default, so a short lease measures whole models even when later sections
#   are cut. Logs and bench rows land in $OUT (at most 8 files: the tool's limit), bench rows as
#   results.tar.gz of the bench/results/*.jsonl this run wrote (re-packed after every bench run).
# Usage there:  OUT=/some/dir bash tools/gpu_session.sh
# (The two extensions build one after the other: `build_ext -j 2` makes both write the same
# build.ninja in build/temp.*, and ninja then fails with a lexing error.)
# Knobs: GPU_SECTIONS (default "models tests overhead ops"), GPU_TRITON_TESTS (-k expression, default
# "triton"), GPU_BENCH_OPS ("op:dtype ..."), GPU_DEADLINE (seconds since the start; a bench that would
# end past it is skipped), GPU_MODELS_END (seconds since the start by which the models section ends,
# default 480), GPU_*_BUDGET (per-step limits).
set -u
OUT="${OUT:?set OUT to the folder that should receive the logs}"
export PYTHONUNBUFFERED=1 GANFAST_TEST_GPU=1 TRITON_CACHE_DIR=/tmp/triton-cache
unset TRITON_INTERPRET
PY="${PY:-python3}"
T0=$SECONDS
stamp() { echo "[gpu_session +$((SECONDS - T0)) s] $*"; }
SECTIONS="${GPU_SECTIONS:-models tests overhead ops}"
want() { [[ " $SECTIONS " == *" $1 "* ]]; }
DEADLINE="${GPU_DEADLINE:-100000}"
MODELS_END="${GPU_MODELS_END:-480}"
TEST_BUDGET="${GPU_TEST_BUDGET:-200}"
CUDA_TEST_BUDGET="${GPU_CUDA_TEST_BUDGET:-120}"
BUILD_BUDGET="${GPU_BUILD_BUDGET:-330}"
BENCH_BUDGET="${GPU_BENCH_BUDGET:-45}"
WORKERS="${GPU_TEST_WORKERS:-6}"
RES=/tmp/gpu-bench-results
mkdir -p "$RES"
pack() { tar -czf "$OUT/results.tar.gz" -C "$RES" . 2>/dev/null; }

{
  nvidia-smi -L; nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv
  "$PY" -c 'import sys, torch, triton; print(sys.version); print("torch", torch.__version__, "cuda", torch.version.cuda, torch.cuda.get_device_name(0)); print("triton", triton.__version__)'
  which nvcc && nvcc --version | tail -n 2; nproc
} >"$OUT/env.txt" 2>&1
stamp "environment written; sections: $SECTIONS"

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
if want tests; then
  stamp "triton GPU tests (while the build runs)"
  timeout "$TEST_BUDGET" "$PY" -m pytest -q -ra --tb=short --maxfail=40 -p no:cacheprovider $XDIST \
      tests/ops/ -m gpu -k "${GPU_TRITON_TESTS:-triton}" >"$OUT/tests_triton.log" 2>&1
  echo "TESTS EXIT $?" >>"$OUT/tests_triton.log"
  stamp "triton GPU tests done: $(tail -n 2 "$OUT/tests_triton.log" | head -n 1)"
fi

wait "$BUILD_PID"
stamp "build done: $(tail -n 1 "$OUT/build.log")"
cat ganfast/_build_info.json >>"$OUT/build.log" 2>/dev/null

# ---- models: whole training iterations (bench/train_step.py; its docstring says what a row holds).
# Every phase runs every step there (r1_interval = pl_interval = 1) and the iteration is the
# recipe's amortized sum, so a few steps measure the lazy phases too. A graphs configuration warms
# up for at least 4 steps (graphs.GRAPH_WARMUP_CALLS = 3 eager calls, then the capture), a compile
# one for 3; rows are appended as each configuration ends, so a timeout loses only the one running.
# Plan on an H100 / H200 (estimates: process start 10-20 s, then per configuration its warm-up, a
# few seconds of first-call work, and the measured steps):
#   stylegan2-256 b32 bf16, ganfast / reference x graphs off / on    ~60 s  (limit 150)
#   biggan-128 b64 bf16, ganfast / reference x graphs off / on       ~80 s  (limit 180)
#   stylegan2-32-fmnist b32 bf16, x graphs off / on, 20 steps        ~30 s  (limit 90)
#   stylegan2-256 b32 amp fp16 (GradScaler) and amp none (the preset's num_fp16_res=4 /
#     conv_clamp=256 on CUDA: NVIDIA's recipe), ganfast / reference, no graphs     ~60 s  (limit 120)
#   stylegan2-256 b32 bf16, reference / ganfast / torch.compile(reference), no graphs: compile is
#     last and gets what is left (cold inductor compile of G and D, several variants: 1-4 min)
# A run gets at most what is left before min(GPU_MODELS_END, GPU_DEADLINE); under 40 s left, skipped.
run_model() {
  local name="$1" limit="$2"; shift 2
  local end=$(( MODELS_END < DEADLINE ? MODELS_END : DEADLINE ))
  local left=$(( end - (SECONDS - T0) ))
  if (( left < 40 )); then
    stamp "models: $name skipped (${left} s left before the section's end)"
    echo "MODEL $name SKIPPED (${left} s left)" >>"$OUT/models.log"
    return
  fi
  (( limit > left )) && limit=$left
  stamp "models: $name (limit $limit s)"
  echo "=== $name: bench/train_step.py $* (limit $limit s)" >>"$OUT/models.log"
  timeout -k 10 "$limit" "$PY" bench/train_step.py --device cuda --label "$MODEL_LABEL; $name" \
      --out "$RES/train_step.jsonl" "$@" >>"$OUT/models.log" 2>&1
  echo "MODEL $name EXIT $? after $(( SECONDS - T0 )) s" >>"$OUT/models.log"
  pack
}

section_models() {
  MODEL_LABEL="gpu_session"
  local check='from ganfast import _ext; why = _ext.unavailable_reason("cuda")
print("ganfast._C_cuda:", why or "loads"); raise SystemExit(why is not None)'
  if ! "$PY" -c "$check" >>"$OUT/models.log" 2>&1; then
    # the models still run: ganfast's automatic backends fall back to Triton (rows: auto_backends)
    MODEL_LABEL="gpu_session, ganfast._C_cuda NOT built (build.log): ganfast ops on Triton / reference"
    stamp "models: no ganfast._C_cuda; the ganfast rows use the Triton / reference backends"
  fi
  run_model "stylegan2-256 bf16" 150 --preset stylegan2-256 --batch 32 --amp bf16 --ops ganfast reference \
      --cuda-graphs both --steps 6 --warmup 2
  run_model "biggan-128 bf16" 180 --preset biggan-128 --batch 64 --amp bf16 --ops ganfast reference \
      --cuda-graphs both --steps 5 --warmup 2
  run_model "stylegan2-32-fmnist bf16" 90 --preset stylegan2-32-fmnist --batch 32 --amp bf16 \
      --ops ganfast reference --cuda-graphs both --steps 20 --warmup 3
  run_model "stylegan2-256 fp16 and NVIDIA mixed precision" 120 --preset stylegan2-256 --batch 32 \
      --amp fp16 none --ops ganfast reference --cuda-graphs off --steps 6 --warmup 2
  run_model "stylegan2-256 bf16 vs torch.compile" 300 --preset stylegan2-256 --batch 32 --amp bf16 \
      --ops ganfast reference compile --cuda-graphs off --steps 5 --warmup 2
  stamp "models done: $(cat "$RES/train_step.jsonl" 2>/dev/null | grep -c '"status": "ok"') configurations measured"
}

section_tests() {
  timeout "$CUDA_TEST_BUDGET" "$PY" -m pytest -q -ra --tb=short --maxfail=40 -p no:cacheprovider $XDIST \
      tests/ops/ -m gpu -k "not triton" >"$OUT/tests_cuda.log" 2>&1
  echo "TESTS EXIT $?" >>"$OUT/tests_cuda.log"
  stamp "cuda GPU tests done: $(tail -n 2 "$OUT/tests_cuda.log" | head -n 1)"
}

# host time per call of every op and module on CUDA (bench/overhead.py: one synchronize per batch of
# calls), beside the eager composite and torch.add: what decides GPU speed at GAN layer sizes
section_overhead() {
  if (( SECONDS - T0 + ${OVERHEAD_BUDGET:-240} <= DEADLINE )); then
    stamp "overhead bench"
    timeout "${OVERHEAD_BUDGET:-240}" "$PY" bench/overhead.py --device cuda --repeats 3 --calls 200 \
        --label "gpu_session" --out "$RES/overhead.jsonl" >>"$OUT/bench.log" 2>&1
    echo "OVERHEAD EXIT $?" >>"$OUT/bench.log"
    pack
  else
    stamp "deadline: overhead bench skipped"
  fi
}

section_ops() {
  for spec in ${GPU_BENCH_OPS:-conditional_batch_norm:bfloat16 power_iteration:bfloat16 spectral_norm:bfloat16 modulated_conv2d:bfloat16 upfirdn2d:bfloat16 adain_noise:bfloat16 bias_act:bfloat16}; do
    op="${spec%%:*}"; dt="${spec##*:}"
    if (( SECONDS - T0 + BENCH_BUDGET > DEADLINE )); then stamp "deadline: bench $op skipped"; continue; fi
    stamp "bench $op $dt"
    timeout "$BENCH_BUDGET" "$PY" -c 'import sys; from ganfast.cli import main; sys.exit(main(sys.argv[1:]))' \
        bench "$op" --device cuda --dtype "$dt" --quick --warmup 10 --repeats 50 --out "$RES" >>"$OUT/bench.log" 2>&1
    echo "BENCH $op $dt EXIT $?" >>"$OUT/bench.log"
    pack
  done
}

for section in $SECTIONS; do
  case "$section" in
    models|tests|overhead|ops) "section_$section" ;;
    *) stamp "unknown section '$section' (known: models tests overhead ops): skipped" ;;
  esac
done
stamp "all done"
