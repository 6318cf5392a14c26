# Sourced by the GPU scripts (gpu_run.sh; before gpu_profile.py): the environment they run in on a
# machine with an NVIDIA GPU, from the repository root.
export PYTHONUNBUFFERED=1
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
export NUMBA_CUDA_LOW_OCCUPANCY_WARNINGS=0
unset NUMBA_ENABLE_CUDASIM NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT NUMBA_CUDA_MEMORY_MANAGER SCRATCHDET_CUDA_FAST_LAUNCH SCRATCHDET_CUDA_CACHE
# compile every kernel afresh: Numba's cache checks only a kernel's own file, so a kernel cached by an
# earlier call on a warm machine would miss a change to the shared device functions it calls
export NUMBA_CACHE_DIR="$(mktemp -d)"
# [lead] The device image's numpy (2.5) lacks np.row_stack, which numba-cuda's import still uses, and its
# numba CPU target wants numpy <= 2.4: install the numpy 2.4.6 wheel carried in .whl/ (call `run` with
# carry=[".whl"]) and shim row_stack, as the proposals engineer's successful GPU run did. To fetch it:
#   pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#       --platform manylinux_2_28_x86_64 -d .whl numpy==2.4.6      (and add /.whl/ to .git/info/exclude)
if ls .whl/numpy-*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
fi
mkdir -p /tmp/site
printf 'import numpy\nif not hasattr(numpy, "row_stack"):\n    numpy.row_stack = numpy.vstack\n' > /tmp/site/sitecustomize.py
export PYTHONPATH="/tmp/site:$PYTHONPATH"
