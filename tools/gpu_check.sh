#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU and a CUDA build of torch already installed
# (the lent H100/H200 machine: torch 2.11+cu130, nvcc, compute-sanitizer). In one go it
#   1. builds fusedopt from this checkout for the local GPU's architecture,
#   2. runs the whole test suite (CUDA tests included),
#   3. runs the CUDA tests of the kernels under compute-sanitizer (memcheck, initcheck),
#   4. runs the benchmarks on the GPU,
# and prints a short summary table last. Logs and benchmark results go to $OUT (or ./gpu_check_out).
#
#   bash tools/gpu_check.sh [--quick] [--skip-sanitizer] [--bench-args "..."]
#
# --quick fits one 10-minute call of a lent machine (15 minutes of device time per session, start-up
# included): the CUDA tests, and the CPU tests of code that differs by Python version (CI runs the
# other CPU tests, on another Python), memcheck on a smoke subset (one or two tests
# per kernel family), and the GPU-goal, optimizer and clipping benchmarks without torch.compile'd
# variants; each stage has a time cap, so a slow stage costs its cap and the results before it still
# come back (a capped stage shows rc=124).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SANITIZER=1
QUICK=0
BENCH_ARGS=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --quick) QUICK=1 ;;
    --skip-sanitizer) SANITIZER=0 ;;
    --bench-args) BENCH_ARGS=$2; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
  shift
done
export PYTHONUNBUFFERED=1
declare -A STATUS

# Per-stage caps in seconds (none without --quick), the tests and sanitizer selections, the benchmarks.
if [[ $QUICK == 1 ]]; then
  CAP_BUILD=300 CAP_TESTS=150 CAP_SANITIZER=100 CAP_BENCH=180
  TEST_SELECT=(-m "cuda or python_version_specific")
  SANITIZER_TOOLS=(memcheck)
  SANITIZER_K="opcheck or counted_once or mixed_dtypes_and_many_tensors or op_grad_scale_and_found_inf \
or update_running_stats or empty_batch or cpu_and_cuda_masks_are_identical or large_mean_no_cancellation \
or master_weights_op_unscales or float16_norm_beyond_range or functional_matches_torch"
  BENCH_ARGS=${BENCH_ARGS:-"--no-compile --reps 25 --only gpu-goals adam adam-models sgd rmsprop adagrad clip clip-step"}
else
  CAP_BUILD=0 CAP_TESTS=0 CAP_SANITIZER=0 CAP_BENCH=0  # timeout 0: no cap
  TEST_SELECT=()
  SANITIZER_TOOLS=(memcheck initcheck)
  SANITIZER_K="not graph and not compiled"
fi

step() {  # step NAME LOGFILE COMMAND...
  local name=$1 log=$2; shift 2
  echo "=== $name"
  local t0=$SECONDS
  "$@" 2>&1 | tee "$OUT/$log"
  local rc=${PIPESTATUS[0]}
  STATUS[$name]="rc=$rc $((SECONDS - t0))s"
  return "$rc"
}

nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/gpu.txt"

# The local GPU's architecture unless the caller chose (e.g. 9.0 on H100/H200).
ARCH=${TORCH_CUDA_ARCH_LIST:-$($PY -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")}
step build build.log timeout $CAP_BUILD env TORCH_CUDA_ARCH_LIST="$ARCH" FUSEDOPT_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  $PY -m pip install -v --no-build-isolation --no-deps --force-reinstall "$REPO" > "$OUT/build_verbose.log" 2>&1 \
  || { tail -50 "$OUT/build_verbose.log"; echo "build failed"; exit 1; }
grep -E "^ *(c\+\+|g\+\+|x86_64-linux-gnu-g\+\+|clang\+\+).* -shared" "$OUT/build_verbose.log" | tail -1 | cut -c1-600 > "$OUT/link_line.txt"
$PY - <<'PYEOF' | tee -a "$OUT/gpu.txt"
import sysconfig
print({k: sysconfig.get_config_var(k) for k in ("CC", "CXX", "LDSHARED", "LDCXXSHARED", "LDFLAGS")})
PYEOF

cd /tmp  # import the installed package, not the source tree
# The image's Python holds dozens of pytest plugins (jax, hypothesis, ...); our tests need none. A crash
# in std::ostream inside TORCH_CHECK messages was seen there with them autoloaded (2026-11-22, H100),
# the signature of a second, statically linked libstdc++ in the process (pytorch/pytorch#109923). This
# lists any such object after importing every plugin, then runs the tests without autoloaded plugins.
PLUGINS=$($PY -c "import importlib.metadata as m; print(' '.join(sorted({e.module.split(':')[0] for e in m.entry_points(group='pytest11')})))")
step libstdcxx libstdcxx.log $PY "$REPO/tools/find_private_libstdcxx.py" --ignore-import-errors $PLUGINS torch fusedopt
export PYTEST_DISABLE_PLUGIN_AUTOLOAD=1
step tests tests.log timeout $CAP_TESTS $PY -m pytest "$REPO/tests" -q -ra -p no:cacheprovider "${TEST_SELECT[@]}"
grep -E "^[0-9]+ (passed|failed)|passed|failed" "$OUT/tests.log" | tail -1 > "$OUT/tests_summary.txt"

if [[ $SANITIZER == 1 ]]; then
  for tool in "${SANITIZER_TOOLS[@]}"; do
    step "sanitizer-$tool" "sanitizer_$tool.log" timeout $CAP_SANITIZER compute-sanitizer --tool "$tool" \
      --error-exitcode 17 --target-processes all $PY -m pytest "$REPO/tests" -q -p no:cacheprovider -m cuda -x \
      -k "$SANITIZER_K"
  done
fi

# Recorded under benchmarks/results/gpu-<name>.jsonl (copied to $OUT: commit it, then RESULTS.md
# is regenerated by benchmarks/report.py).
GPU_SLUG=gpu-$(nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr 'A-Z ' 'a-z-' | tr -cd 'a-z0-9-')
step bench bench.log timeout $CAP_BENCH $PY "$REPO/benchmarks/run.py" --device cuda --no-progress --out "$OUT/bench_out" \
  --record "$GPU_SLUG" $BENCH_ARGS
cp "$REPO/benchmarks/results/$GPU_SLUG.jsonl" "$OUT/" 2>/dev/null

echo
echo "=== summary"
printf "%-22s %s\n" "gpu" "$(head -1 "$OUT/gpu.txt")"
for name in build libstdcxx tests sanitizer-memcheck sanitizer-initcheck bench; do
  [[ -n ${STATUS[$name]:-} ]] && printf "%-22s %s\n" "$name" "${STATUS[$name]}"
done
printf "%-22s %s\n" "test result" "$(cat "$OUT/tests_summary.txt")"
for tool in memcheck initcheck; do
  [[ -f $OUT/sanitizer_$tool.log ]] && printf "%-22s %s\n" "$tool" "$(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
done
echo
grep -E "^(case|sgd|  |-)" "$OUT/bench.log" | grep -E "fusedopt|^case|^sgd" | head -40
