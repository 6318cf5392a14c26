"""Which backend an array lives on, and moving arrays between them.

Dispatch is by the array (see DESIGN.md, Backends): a NumPy array runs on the Numba CPU kernels,
a Numba CUDA device array on the Numba CUDA kernels. `NUMBA_ENABLE_CUDASIM=1` (set before numba is
imported) makes the CUDA kernels run in Numba's simulator on the CPU, which is how the tests run
them on machines without a GPU.
"""

import functools
import os

import numpy as np

from scratchdet.errors import BackendUnavailableError, InvalidArgumentError

DEVICES = ("cpu", "cuda")


def simulated():
    """True when Numba's CUDA simulator stands in for a GPU (`NUMBA_ENABLE_CUDASIM=1`)."""
    return os.environ.get("NUMBA_ENABLE_CUDASIM", "0") == "1"


@functools.lru_cache(maxsize=None)
def _cuda_usable():
    try:
        from numba import cuda
    except ImportError:  # pragma: no cover - numba always ships numba.cuda
        return False
    try:
        return bool(cuda.is_available())
    except Exception:  # a broken driver install counts as no GPU
        return False


def available():
    """The backends that can run here: always ``"cpu"``, and ``"cuda"`` with a GPU or the simulator.

    Returns:
        tuple of str, e.g. ``("cpu",)`` or ``("cpu", "cuda")``.
    """
    return ("cpu", "cuda") if _cuda_usable() else ("cpu",)


def require(device):
    """Raise a clear error unless `device` ("cpu" or "cuda") can run here."""
    if device not in DEVICES:
        raise InvalidArgumentError(f"device must be one of {DEVICES}, got {device!r}")
    if device not in available():
        raise BackendUnavailableError(
            f"the {device!r} backend is not available here: no CUDA GPU was found "
            "(set NUMBA_ENABLE_CUDASIM=1 before importing scratchdet to run the CUDA kernels "
            "in Numba's simulator)"
        )


def is_cuda_array(x):
    """True for a Numba CUDA device array (or any object exposing `__cuda_array_interface__`).

    Under the simulator (`NUMBA_ENABLE_CUDASIM=1`) device arrays are `FakeCUDAArray`s, which mark
    themselves with `__cuda_ndarray__` instead of the interface.
    """
    if isinstance(x, np.ndarray):
        return False
    # Numba's arrays (and the simulator's) say so in a class attribute: checked first, since the
    # interface of a Numba array is a property that builds a dict (each layer checks several arrays)
    return getattr(x, "__cuda_ndarray__", False) is True or hasattr(x, "__cuda_array_interface__")


def device_of(x):
    """``"cuda"`` for a device array, ``"cpu"`` for anything else."""
    return "cuda" if is_cuda_array(x) else "cpu"


def to_device(x, device):
    """Return `x` on `device` ("cpu" -> NumPy array, "cuda" -> Numba device array).

    An array already on `device` is returned as it is (no copy).
    """
    require(device)
    if device == "cpu":
        return x.copy_to_host() if is_cuda_array(x) else np.asarray(x)
    from numba import cuda

    if is_cuda_array(x):
        return x
    x = np.asarray(x)
    return cuda.to_device(np.ascontiguousarray(x) if x.ndim else x.copy())  # (ascontiguousarray makes 0-d 1-d)


def to_host(x):
    """Return `x` as a NumPy array (copying from the GPU when it is a device array)."""
    return x.copy_to_host() if is_cuda_array(x) else np.asarray(x)


def zeros_like(x):
    """A zero array with `x`'s shape and dtype, on `x`'s backend (for optimiser state, gradients)."""
    if is_cuda_array(x):
        out = empty_like(x)
        _fill_zero(out)
        return out
    return np.zeros_like(x)


def empty_like(x):
    """An uninitialised array with `x`'s shape and dtype, on `x`'s backend."""
    if is_cuda_array(x):
        from scratchdet.kernels.cuda.common import empty

        return empty(x.shape, x.dtype)
    return np.empty_like(x)


def release_cached_memory():
    """Let the GPU memory scratchdet keeps for reuse go: the free blocks of its device-array pool
    (`scratchdet.kernels.cuda.memory.DevicePool`) and its work buffers, which Numba then frees.
    Arrays in use keep theirs; nothing to do without CUDA. The pool drops its blocks by itself when
    the GPU runs out of memory; call this to hand the memory to another library or process."""
    if "cuda" not in available():
        return
    from scratchdet.kernels.cuda.common import release_memory

    release_memory()


def _fill_zero(out):
    # the kernel lives at module level in the CUDA package: the simulator can only stand in for
    # `numba.cuda` inside kernels that name it as a module global
    from scratchdet.kernels.cuda.common import fill

    fill(out, 0)
