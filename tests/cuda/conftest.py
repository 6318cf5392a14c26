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


def _name_shared_arrays_by_their_line_cheaply():
    """The simulator gives each `cuda.shared.array` the array of the block already made at the same
    source line, which it finds with `traceback.extract_stack`: that reads the file and line of every
    frame on the thread's stack (an `os.stat` each), for every thread of every block. Only the caller's
    (file, line) is used; take it from the frame directly."""
    import traceback

    from numba.cuda.simulator import kernelapi

    if getattr(kernelapi, "traceback", None) is not traceback:  # another simulator: leave it alone
        return

    class CallerOnly:
        @staticmethod
        def extract_stack(frame):
            """[..., (caller's file, line), (frame's file, line)], as the simulator reads it."""
            caller = frame.f_back
            return [(caller.f_code.co_filename, caller.f_lineno), (frame.f_code.co_filename, frame.f_lineno)]

    kernelapi.traceback = CallerOnly


if backend.simulated():
    _name_shared_arrays_by_their_line_cheaply()


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
