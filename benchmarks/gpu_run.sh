#!/usr/bin/env bash
# The one prepared GPU check of the CUDA backend (run from the repository root on a machine with an
# NVIDIA GPU, python3 with numba-cuda, torch and torchvision; only the carried numpy wheel is installed):
#   1. the CUDA tests of conv, conv_gemm, training, gemm, boxes, backend, reduce, the detectors, the
#      optimisers and the losses on the real GPU (not the simulator), and tests/host_path (the short
#      launch path and the device-memory pool, with results checked)           -> $OUT/cuda_tests.log
#   2. benchmarks/bench_cuda.py against cuDNN / cuBLAS / torchvision   -> $OUT/gpu_results.md, $OUT/bench.log
#   3. if time is left: host and device time per operation (gpu_profile.py)   -> $OUT/profile.md
#   3b. if time is left: conv, linear and the training step with Numba's own launches and allocator
#      (SCRATCHDET_CUDA_FAST_LAUNCH=0 SCRATCHDET_CUDA_CACHE=0, run 3's host path), then with
#      scratchdet's again, each in a fresh process              -> $OUT/gpu_results_{numba,scratchdet}_*.md
# On an H200 (run 3) the tests took 130 s and the whole script 269 s, the detector and per-class NMS
# benchmarks not yet in it (Numba compiles each kernel on first use; autotuning compiles every
# candidate tile); the script stops itself by $GPU_RUN_LIMIT s (default 480). Leave ~35 s of the
# device budget for the machine's start.
set -o pipefail
source "$(dirname "$0")/gpu_env.sh" || exit 1
OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
status=0
begin=$SECONDS
limit="${GPU_RUN_LIMIT:-480}"

echo "== GPU"; nvidia-smi -L | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/gpu.txt"
date -u '+%Y-%m-%d %H:%M UTC' | tee -a "$OUT/gpu.txt"
git log -1 --format='commit %h %s' 2>/dev/null | tee -a "$OUT/gpu.txt"
python3 - <<'PY' 2>&1 | tee -a "$OUT/gpu.txt"
import sys, numpy, numba, torch
from numba import cuda
print("python", sys.version.split()[0], "numpy", numpy.__version__, "numba", numba.__version__, "torch", torch.__version__)
try:
    from importlib.metadata import version
    print("numba-cuda", version("numba-cuda"), "torchvision", version("torchvision"))
except Exception as error:
    print("version lookup failed:", error)
print("numba sees a GPU:", cuda.is_available(), cuda.get_current_device().name if cuda.is_available() else "")
PY

echo "== CUDA tests on the GPU"
start=$SECONDS
timeout 200 python3 -m pytest -q -p no:cacheprovider --durations=15 tests/cuda/test_nn_cuda.py tests/cuda/test_conv_gemm_cuda.py \
    tests/cuda/test_training_cuda.py tests/cuda/test_gemm_cuda.py tests/cuda/test_boxes_cuda.py \
    tests/cuda/test_backend_cuda.py tests/cuda/test_reduce_cuda.py tests/cuda/test_detectors_cuda.py \
    tests/cuda/test_commands_cuda.py tests/cuda/test_optim_cuda.py tests/cuda/test_losses_cuda.py \
    tests/host_path 2>&1 | tee "$OUT/cuda_tests.log" || status=1
echo "tests took $((SECONDS - start)) s" | tee -a "$OUT/cuda_tests.log"

echo "== benchmarks"
start=$SECONDS
timeout 170 python3 benchmarks/bench_cuda.py --breakdown --out "$OUT/gpu_results.md" 2>&1 | tee "$OUT/bench.log" || status=1
echo "benchmarks took $((SECONDS - start)) s" | tee -a "$OUT/bench.log"

# Host and device time per operation (benchmarks/gpu_profile.py), if the run is well inside its limit
left=$((limit - (SECONDS - begin)))
if [ "$left" -gt 120 ]; then
  echo "== host and device time per operation ($left s left)"
  start=$SECONDS
  timeout 90 python3 benchmarks/gpu_profile.py > "$OUT/profile.md" 2>&1
  echo "took $((SECONDS - start)) s" | tee -a "$OUT/profile.md"
  grep "^|" "$OUT/profile.md"
fi

# The host path A/B: run 3 measured Numba's launches (27-68 us each) and allocations (28-84 us) as
# most of the small layers' wall time. scratchdet now launches through kernels/cuda/launch.py and
# allocates from memory.DevicePool; the cases they change run again with both off (Numba's own path,
# as in run 3) and with both on, each in a fresh process (the switches are read at import)
for round in numba scratchdet; do
  left=$((limit - (SECONDS - begin)))
  if [ "$left" -lt 70 ]; then
    echo "== skipped the $round round: only $left s left"
    break
  fi
  echo "== conv, linear and training step, launches and allocations by $round ($left s left)"
  start=$SECONDS
  if [ "$round" = numba ]; then switch=0; else switch=1; fi
  SCRATCHDET_CUDA_FAST_LAUNCH=$switch SCRATCHDET_CUDA_CACHE=$switch timeout $((left - 5)) python3 benchmarks/bench_cuda.py \
      --only conv,linear,train --out "$OUT/gpu_results_${round}_$((SECONDS - begin)).md" 2>&1 \
      | tee -a "$OUT/bench_host_paths.log" | grep "^conv2d\|^linear\|^training" | cut -c1-150
  echo "took $((SECONDS - start)) s" | tee -a "$OUT/bench_host_paths.log"
done
echo "whole run took $((SECONDS - begin)) s"
exit $status
