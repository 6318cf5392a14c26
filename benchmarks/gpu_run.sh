#!/usr/bin/env bash
# The one prepared GPU check of the CUDA backend (run from the repository root on a machine with an
# NVIDIA GPU, python3 with numba-cuda, torch and torchvision; nothing is installed):
#   1. the CUDA tests of tests/cuda on the real GPU (not the simulator)  -> $OUT/cuda_tests.log
#   2. benchmarks/bench_cuda.py against cuDNN / cuBLAS / torchvision       -> $OUT/gpu_results.md, $OUT/bench.log
#   3. the conv and training-step benchmarks again with Numba's frees batched -> $OUT/gpu_results_batched_frees.md
# Whole run: about 5 minutes at most (Numba compiles each kernel on first use).
set -o pipefail
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
unset NUMBA_ENABLE_CUDASIM
# [lead] The device image's numpy (2.5) lacks np.row_stack, which numba-cuda's import still uses, and its
# numba CPU target wants numpy <= 2.4: install the numpy 2.4.6 wheel carried in .whl/ (call `run` with
# carry=[".whl"]) and shim row_stack, as the proposals engineer's successful GPU run did.
if ls .whl/numpy-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
mkdir -p /tmp/site
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > /tmp/site/sitecustomize.py
export PYTHONPATH="/tmp/site:$PYTHONPATH"
OUT="${OUT:-/tmp/gpu_out}"
mkdir -p "$OUT"
status=0

echo "== GPU"; nvidia-smi -L | tee "$OUT/gpu.txt"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv | tee -a "$OUT/gpu.txt"
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

echo "== tests/cuda on the GPU"
start=$SECONDS
timeout 120 python3 -m pytest -q -p no:cacheprovider tests/cuda 2>&1 | tee "$OUT/cuda_tests.log" || status=1
echo "tests took $((SECONDS - start)) s" | tee -a "$OUT/cuda_tests.log"

echo "== benchmarks"
start=$SECONDS
timeout 100 python3 benchmarks/bench_cuda.py --breakdown --out "$OUT/gpu_results.md" 2>&1 | tee "$OUT/bench.log" || status=1
echo "benchmarks took $((SECONDS - start)) s" | tee -a "$OUT/bench.log"

# Numba frees device memory in batches of 10 by default (each cuMemFree waits for the GPU); the same
# convolution and training step with frees batched 100000 at a time shows what that costs
echo "== benchmarks with batched frees"
start=$SECONDS
NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT=100000 timeout 60 python3 benchmarks/bench_cuda.py --only conv,train \
    --out "$OUT/gpu_results_batched_frees.md" 2>&1 | tee "$OUT/bench_batched_frees.log" || status=1
echo "took $((SECONDS - start)) s" | tee -a "$OUT/bench_batched_frees.log"
exit $status
