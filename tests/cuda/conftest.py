"""The CUDA tests: each CUDA kernel against its CPU twin, on a GPU or in Numba's simulator.

CI runs this directory as its own pytest process with `NUMBA_ENABLE_CUDASIM=1` (the simulator must be
switched on before numba is imported); on a machine with a GPU the same tests run on the device. With
neither, every test here is skipped. Shapes are tiny: the simulator runs every GPU thread as a
Python thread.
"""

import sys

import numpy as np
import pytest

from scratchdet import backend

# The simulator runs a block's threads as Python threads, and a manager thread polls them in a loop to
# release each barrier once all have reached it. With Python's default switch interval (5 ms) the
# poller keeps the GIL for up to 5 ms at a time while the threads it waits for stand still; switching
# every 0.5 ms ran this directory in 41 s instead of 100 s on a 2-core machine.
sys.setswitchinterval(0.0005)


def _shared_arrays_made_once_per_block_and_cheaply():
    """The simulator gives each `cuda.shared.array` call the array of the block already made at the
    same source line, and makes it on the first call. Two things in how it does so are replaced, the
    key and the result kept:

    - it finds the caller's (file, line) with `traceback.extract_stack`, which reads the file and line
      of every frame on the thread's stack (an `os.stat` each), for every thread of every block; the
      caller's frame holds both;
    - it looks the array up, then stores a new one, in two steps: a thread switch between them (likelier
      with the short switch interval above) gave two threads of one block two different "shared"
      tiles, and the block wrong results, about once in 500 launches. `dict.setdefault` is one step.
    """
    from numba.cuda.simulator import kernelapi

    shared = getattr(kernelapi, "FakeCUDAShared", None)
    if shared is None or not hasattr(shared(0), "_allocations"):  # another simulator: leave it alone
        return
    types, numpy_support = kernelapi.types, kernelapi.numpy_support  # the simulator's own
    original = shared.array

    def array(self, shape, dtype, alignment=None):
        if shape == 0 or alignment is not None:  # dynamic shared memory, or the simulator's own refusal
            return original(self, shape, dtype, alignment)
        if isinstance(dtype, types.Type):
            dtype = numpy_support.as_dtype(dtype)
        caller = sys._getframe(1)
        key = (caller.f_code.co_filename, caller.f_lineno)
        made = self._allocations.get(key)
        return made if made is not None else self._allocations.setdefault(key, np.empty(shape, dtype))

    shared.array = array


if backend.simulated():
    _shared_arrays_made_once_per_block_and_cheaply()


@pytest.fixture(autouse=True)
def _needs_cuda():
    if "cuda" not in backend.available():
        pytest.skip("no CUDA GPU here and NUMBA_ENABLE_CUDASIM is not 1 (the simulator is off)")


@pytest.fixture(autouse=True)
def _default_tiles(monkeypatch):
    """On a GPU, products use their default tile as in the simulator: autotuning would compile every
    candidate tile for every shape tested (the tests that concern tiles pick them explicitly)."""
    from scratchdet.kernels.cuda import gemm

    monkeypatch.setattr(gemm, "AUTOTUNE", False)


@pytest.fixture
def gpu():
    """Copy a NumPy array to the device (the backend under test)."""
    return lambda a: backend.to_device(np.ascontiguousarray(a), "cuda")


@pytest.fixture
def host():
    """Copy a device array back to a NumPy array."""
    return backend.to_host


def _assert_close(ours, theirs, rtol=1e-5, atol=1e-6, what=""):
    assert backend.is_cuda_array(ours), f"{what}: the result is a {type(ours).__name__}, not a device array"
    ours = backend.to_host(ours)
    theirs = np.asarray(theirs)
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} on the GPU, {theirs.shape} on the CPU"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} on the GPU, {theirs.dtype} on the CPU"
    np.testing.assert_allclose(ours, theirs, rtol=rtol, atol=atol, err_msg=f"{what}: GPU (actual) vs CPU (desired)")


@pytest.fixture
def close():
    """assert_close(device_result, cpu_result, rtol=, atol=, what=): a device array equal to its CPU
    twin in shape, dtype and values (printing both on failure)."""
    return _assert_close
