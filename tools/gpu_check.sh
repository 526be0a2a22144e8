#!/usr/bin/env bash
# The GPU check: run on a machine with an NVIDIA GPU and a CUDA build of torch already installed
# (the lent H100/H200 machine: torch 2.11+cu130, nvcc, compute-sanitizer). In one go it
#   1. builds fusedopt from this checkout for the local GPU's architecture,
#   2. runs the whole test suite (CUDA tests included),
#   3. runs the CUDA tests of the kernels under compute-sanitizer (memcheck, initcheck),
#   4. runs the benchmarks on the GPU,
# and prints a short summary table last. Logs and benchmark results go to $OUT (or ./gpu_check_out).
#
#   bash tools/gpu_check.sh [--skip-sanitizer] [--bench-args "..."]
set -uo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=${OUT:-$REPO/gpu_check_out}
mkdir -p "$OUT"
PY=${PYTHON:-python3}
SANITIZER=1
BENCH_ARGS=""
while [[ $# -gt 0 ]]; do
  case $1 in
    --skip-sanitizer) SANITIZER=0 ;;
    --bench-args) BENCH_ARGS=$2; shift ;;
    *) echo "unknown argument $1"; exit 2 ;;
  esac
  shift
done
export PYTHONUNBUFFERED=1
declare -A STATUS

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
step build build.log env TORCH_CUDA_ARCH_LIST="$ARCH" FUSEDOPT_CUDA=1 MAX_JOBS=${MAX_JOBS:-$(nproc)} \
  $PY -m pip install --no-build-isolation --no-deps --force-reinstall "$REPO" || { echo "build failed"; exit 1; }

cd /tmp  # import the installed package, not the source tree
step tests tests.log $PY -m pytest "$REPO/tests" -q -ra -p no:cacheprovider
grep -E "^[0-9]+ (passed|failed)|passed|failed" "$OUT/tests.log" | tail -1 > "$OUT/tests_summary.txt"

if [[ $SANITIZER == 1 ]]; then
  for tool in memcheck initcheck; do
    step "sanitizer-$tool" "sanitizer_$tool.log" compute-sanitizer --tool "$tool" --error-exitcode 17 \
      --target-processes all $PY -m pytest "$REPO/tests" -q -p no:cacheprovider -m cuda -x \
      -k "not graph and not compiled"
  done
fi

step bench bench.log $PY "$REPO/benchmarks/run.py" --device cuda --no-progress --out "$OUT" $BENCH_ARGS

echo
echo "=== summary"
printf "%-22s %s\n" "gpu" "$(head -1 "$OUT/gpu.txt")"
for name in build tests sanitizer-memcheck sanitizer-initcheck bench; do
  [[ -n ${STATUS[$name]:-} ]] && printf "%-22s %s\n" "$name" "${STATUS[$name]}"
done
printf "%-22s %s\n" "test result" "$(cat "$OUT/tests_summary.txt")"
for tool in memcheck initcheck; do
  [[ -f $OUT/sanitizer_$tool.log ]] && printf "%-22s %s\n" "$tool" "$(grep -E 'ERROR SUMMARY' "$OUT/sanitizer_$tool.log" | tail -1)"
done
echo
grep -E "^(case|sgd|  |-)" "$OUT/bench.log" | grep -E "fusedopt|^case|^sgd" | head -40
