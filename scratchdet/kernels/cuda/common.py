"""Small helpers shared by the CUDA kernels: launch geometry, flat views and argument checks.

Every CUDA module of scratchdet takes and returns Numba device arrays (`numba.cuda.device_array`);
nothing here copies data between the host and the GPU.
"""

import math
import os

import numpy as np
from numba import cuda
from numba.cuda.core import config as cuda_config

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.launch import jit

if cuda_config.ENABLE_CUDASIM:  # the simulator's arrays are another class: views by slicing
    _DeviceNDArray = memory = None
else:
    from numba.cuda.cudadrv.devicearray import DeviceNDArray as _DeviceNDArray

    from scratchdet.kernels.cuda import memory

# One-dimensional launches use blocks of 256 threads: a multiple of the 32-thread warp that keeps
# enough blocks per multiprocessor resident on every GPU since Pascal.
THREADS = 256


def blocks_for(n, threads=THREADS):
    """The number of blocks of `threads` threads needed to give each of `n` items a thread (>= 1)."""
    return max(1, math.ceil(n / threads))


def threads_for(n):
    """Threads per block for `n` items: THREADS, or fewer (a whole number of warps) when n is small.

    Small launches then start no idle threads, which also keeps the simulator fast.
    """
    return min(THREADS, max(32, 32 * math.ceil(n / 32)))


def launch_1d(n):
    """``(blocks, threads)`` giving each of `n` items one thread."""
    threads = threads_for(n)
    return blocks_for(n, threads), threads


# Numba's host-side bookkeeping, not the GPU, dominates the small layers: on an H200
# (benchmarks/GPU_RESULTS.md, run 3) a launch of an empty kernel with one array took 27-43 us of Python
# and driver calls, a device array view (a reshape) 10-19 us, against 28 us of the GPU for a ReLU over
# 8 million values. So views are made once and kept (`flat`, `scratch`), and every public function of
# the CUDA modules enters the CUDA context once (`on_device`) instead of once per array it allocates or
# kernel it launches (each entry asks the driver for the current context).
on_device = cuda.require_context


def flat(a):
    """A 1-D view of a C-contiguous device array (no copy): shape ``(a.size,)``; made once per array and
    kept on it (the same view object on every call)."""
    if a.ndim == 1:
        return a
    view = getattr(a, "_scratchdet_flat", None)
    if view is None:
        if type(a) is _DeviceNDArray and a.size and a._dummy.flags["C_CONTIGUOUS"]:
            # what reshape makes, without working out the reshape (a new output's view, every layer call)
            view = _DeviceNDArray((a.size,), (a.dtype.itemsize,), a.dtype, gpu_data=a.gpu_data)
        else:
            view = a.reshape(a.size)
        try:
            a._scratchdet_flat = view
        except AttributeError:  # an array type that takes no attributes: a view each time
            pass
    return view


def part(flat_array, start, shape):
    """Elements ``start, start + 1, ...`` of a 1-D C-contiguous device array viewed as a C-contiguous
    array of `shape` (no copy; it keeps `flat_array`'s memory alive).

    The same as ``flat_array[start:start + size].reshape(shape)``, made directly on a GPU: Numba's
    slicing enters the CUDA context and works through its general indexing, which cost a layer's
    backward (two such views) about a third of its host time against the stand-in driver
    (benchmarks/fake_cuda)."""
    size = math.prod(shape)
    if flat_array.ndim != 1 or not 0 <= start <= start + size <= flat_array.size:
        raise IndexError(f"elements {start}..{start + size} of a 1-D array, got shape {flat_array.shape}")
    if _DeviceNDArray is None or type(flat_array) is not _DeviceNDArray or not size:
        view = flat_array[start:start + size]
        return view if view.shape == tuple(shape) else view.reshape(shape)
    itemsize = flat_array.dtype.itemsize
    data = flat_array.gpu_data.view(start * itemsize, (start + size) * itemsize)
    return _DeviceNDArray(shape, memory.contiguous_strides(shape, itemsize), flat_array.dtype, gpu_data=data)


def shaped(flat_array, shape):
    """`flat_array` (1-D, C-contiguous) viewed as `shape`, keeping `flat_array` as the view's `flat`."""
    view = flat_array.reshape(shape)
    if view.ndim != 1:
        try:
            view._scratchdet_flat = flat_array
        except AttributeError:  # an array type that takes no attributes: `flat` makes a view each time
            pass
    return view


# Numba frees device memory lazily: once more than NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT arrays (10 by
# default) wait to be freed it frees them all, and freeing waits for the GPU to finish its queued work.
# A training step drops dozens of activations and gradients, so with the default the host stalls
# every few layers and the GPU idles while Python catches up (measured on an H200, benchmarks/
# GPU_RESULTS.md: the 256x3x32x32->16 convolution took 3.20 ms, 1.77 ms with 100000). Unless the user
# chose a count, scratchdet lets up to PENDING_FREES arrays wait; the byte limit
# (NUMBA_CUDA_MAX_PENDING_DEALLOCS_RATIO, 20% of the GPU's memory by default) still bounds what they hold.
PENDING_FREES = 1000
if "NUMBA_CUDA_MAX_PENDING_DEALLOCS_COUNT" not in os.environ:
    cuda_config.CUDA_DEALLOCS_COUNT = max(cuda_config.CUDA_DEALLOCS_COUNT, PENDING_FREES)

# Work buffers by (name, dtype), each with the views of it handed out by shape; see `scratch`.
_SCRATCH = {}


def scratch(name, shape, dtype):
    """A work buffer reused across calls: per-image partial sums, swapped filters, loss partials.

    Allocating on the GPU (cudaMalloc) and freeing (which waits for the device) cost more than many
    kernels, so each named buffer is kept and grown when a larger one is needed. This is safe
    because every kernel runs on the default stream, in launch order: a buffer is only rewritten
    after the kernels that read it have run. The contents are undefined on return; a buffer is valid
    until the next `scratch` call with the same name, so it never leaves the function that asked
    for it: what a function returns is always freshly allocated.

    Args:
        name: which buffer ("cols", "dw_per_image", ...).
        shape: tuple of ints; dtype: NumPy dtype.

    Returns:
        a C-contiguous device array of `shape` and `dtype`.
    """
    shape = tuple(int(s) for s in shape)
    size = math.prod(shape)
    key = (name, np.dtype(dtype).str)
    buffer, views = _SCRATCH.get(key, (None, None))
    if buffer is None or buffer.size < size:
        buffer, views = _SCRATCH[key] = cuda.device_array(max(size, 1), dtype=dtype), {}
    view = views.get(shape)
    if view is None:
        view = views[shape] = buffer[:size].reshape(shape)
    return view


def release_memory():
    """Drop every cached work buffer and every cached free block (their GPU memory is freed when no
    array uses it)."""
    _SCRATCH.clear()
    if _POOL is not None:
        _POOL.release()


def empty(shape, dtype):
    """An uninitialised C-contiguous device array of `shape` (tuple of ints) and `dtype`.

    On a GPU its memory comes from scratchdet's cache of blocks (`memory.DevicePool`: no cudaMalloc,
    and no cudaFree when it dies) unless ``SCRATCHDET_CUDA_CACHE=0``."""
    if _POOL is None:
        return cuda.device_array(shape, dtype=dtype)
    return _POOL.empty(shape, dtype)


def _device_pool():
    if memory is None:
        return None
    return memory.POOL if memory.CACHE else None


_POOL = _device_pool()


@jit(cache=True)
def fill_kernel(a, value):
    """a[i] = value for every element of a flat array."""
    i = cuda.grid(1)
    if i < a.size:
        a[i] = value


def fill(a, value):
    """Set every element of a C-contiguous device array (any shape and dtype) to `value`, on the GPU;
    returns a."""
    if a.size:
        fill_kernel[launch_1d(a.size)](flat(a), value)
    return a


def zeros(shape, dtype):
    """A C-contiguous device array of zeros of `shape` (tuple of ints) and `dtype` (filled on the
    GPU, no host copy)."""
    return fill(empty(shape, dtype), 0)


def require_device(name, a):
    """Raise InvalidArgumentError unless `a` is a CUDA device array."""
    if not is_cuda_array(a):
        raise InvalidArgumentError(
            f"{name} must be a CUDA device array (scratchdet.backend.to_device(x, 'cuda')), "
            f"got {type(a).__name__}"
        )
    return a


def compile_signatures():
    """``(name, kernel, argument types)`` of the fill kernel as `fill` and `zeros` launch it."""
    from numba import float32, float64, int64, uint64

    return [(f"fill_{t}", fill_kernel, (t[::1], int64)) for t in (float32, float64, int64, uint64)]
