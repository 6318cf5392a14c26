"""Caching device memory: blocks of dead arrays are kept and handed out again, with no cudaMalloc/cudaFree.

Numba allocates each device array with ``cuMemAlloc`` and frees it with ``cuMemFree``, which waits
for the GPU. A training step allocates and drops dozens of activations and gradients: on an H200
(benchmarks/GPU_RESULTS.md, run 3) an allocation took 28 us of host time for 64 KB and 79-84 us for
17-134 MB, of which the driver's share is 10-65 us (the same allocations cost 18-19 us against a
stand-in driver whose calls cost nothing, `benchmarks/fake_cuda`). PyTorch keeps freed blocks in a
caching allocator; this module is the same idea, twice:

- `DevicePool`: the arrays scratchdet itself allocates (`common.empty`, so every output and gradient
  of the CUDA layers) come from a pool per CUDA context, on by default (``SCRATCHDET_CUDA_CACHE=0``
  turns it off); Numba's allocator supplies the blocks, arrays the user allocates are untouched;
- `CachingMemoryManager`: the same for every Numba allocation of the process, as an External Memory
  Management plugin (the NBEP 7 interface), off unless asked for:
  ``NUMBA_CUDA_MEMORY_MANAGER=scratchdet.kernels.cuda.memory python train.py``.

Both round a request up to a block size (`block_size`: steps of 512 bytes up to 1 MiB, PyTorch's
smallest unit, and of 2 MiB above, so that nearby large sizes share blocks) and serve it from the
blocks of exactly that size freed earlier. A block returns to the cache when its pointer dies: when
the array and every view of it are gone (a Numba view holds its array's pointer). Reuse without
waiting is safe because scratchdet runs every kernel and copy on the default stream, in order: work
queued with the old array runs before any queued with the new one (the same argument as
`common.scratch`); Numba's other streams are blocking streams, which the legacy default stream waits
for. An array read on a non-blocking stream, or with a per-thread default stream, must be kept alive
until that work is done. When the GPU runs out of memory the cached blocks are freed and the
allocation retried; `scratchdet.backend.release_cached_memory()` frees them on demand.
"""

import collections
import math
import os
import weakref

import numpy as np
from numba import cuda
from numba.cuda.cudadrv import devices as _devices
from numba.cuda.cudadrv import driver as _driver
from numba.cuda.cudadrv.devicearray import DeviceNDArray

MIB = 1 << 20
SMALL_ROUND = 512  # bytes: requests up to 1 MiB are rounded up to a multiple of this
LARGE_ROUND = 2 * MIB  # and larger ones to a multiple of this


def block_size(size):
    """The bytes a request of `size` bytes gets: the next multiple of 512 up to 1 MiB, of 2 MiB above
    (one block size serves many nearby requests; at most 1/4 of a large block is wasted)."""
    size = max(int(size), 1)
    step = SMALL_ROUND if size <= MIB else LARGE_ROUND
    return -(-size // step) * step


class BlockCache:
    """Free device blocks by size: pure bookkeeping of opaque pointers (no CUDA calls).

    `take` returns a free block of exactly the asked size, most recently freed first (likeliest
    still in the GPU's L2 cache), or None; `give` returns one; `drain` empties the cache.
    """

    def __init__(self):
        self._free = collections.defaultdict(list)
        self.cached_bytes = 0

    def take(self, size):
        blocks = self._free.get(size)
        if not blocks:
            return None
        self.cached_bytes -= size
        return blocks.pop()

    def give(self, pointer, size):
        self._free[size].append(pointer)
        self.cached_bytes += size

    def drain(self):
        """Every cached block as ``(pointer, size)``; the cache is empty afterwards."""
        blocks = [(pointer, size) for size, pointers in self._free.items() for pointer in pointers]
        self._free.clear()
        self.cached_bytes = 0
        return blocks


class CachingMemoryManager(_driver.GetIpcHandleMixin, _driver.HostOnlyCUDAMemoryManager):
    """Numba EMM plugin: device allocations through a `BlockCache` (host memory as Numba's own)."""

    def initialize(self):
        self.cache = BlockCache()
        # pinned host memory still goes through Numba's pending frees: size them as Numba's own manager does
        if self.deallocations.memory_capacity == _driver._SizeNotSet:
            self.deallocations.memory_capacity = self.get_memory_info().total

    def memalloc(self, size):
        """A `numba.cuda` MemoryPointer of `size` bytes whose block returns to the cache when it dies
        (the views of an array hold its pointer)."""
        block = block_size(size)
        pointer = self.cache.take(block)
        if pointer is None:
            pointer = self._allocate(block)
        cache = self.cache

        def give_back():
            cache.give(pointer, block)

        return _driver.MemoryPointer(weakref.proxy(self.context), pointer, size, finalizer=give_back)

    def _allocate(self, block):
        try:
            return _driver.driver.cuMemAlloc(block)
        except _driver.CudaAPIError as error:
            if error.code != _driver.binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                raise
            self.release_cached()
            return _driver.driver.cuMemAlloc(block)

    def release_cached(self):
        """Free every cached block (``cuMemFree``, which waits for the GPU); returns the bytes freed."""
        blocks = self.cache.drain()
        for pointer, _ in blocks:
            _driver.driver.cuMemFree(pointer)
        return sum(size for _, size in blocks)

    def get_memory_info(self):
        free, total = _driver.driver.cuMemGetInfo()
        return _driver.MemoryInfo(free=free, total=total)

    def reset(self):
        self.release_cached()
        super().reset()

    @property
    def interface_version(self):
        return 1


class DevicePool:
    """Device arrays from cached blocks, per CUDA context (see the module's docstring).

    The blocks are Numba allocations (through whatever memory manager Numba uses) kept alive by the
    pool; `release` drops the cached ones, which Numba then frees."""

    def __init__(self):
        self._pools = {}  # id of the Numba context -> (weak reference to it, BlockCache)

    def empty(self, shape, dtype):
        """An uninitialised C-contiguous `numba.cuda` device array of `shape` (tuple of ints) and `dtype`."""
        if type(shape) is not tuple:
            shape = tuple(shape) if isinstance(shape, (list, np.ndarray)) else (shape,)
        dtype = np.dtype(dtype)
        size = math.prod(shape)
        if any(extent < 0 for extent in shape):
            raise ValueError(f"negative dimensions are not allowed: {shape}")
        if size == 0:
            return cuda.device_array(shape, dtype=dtype)  # no memory to hand out
        nbytes = size * dtype.itemsize
        context, cache = self._pool()
        block = block_size(nbytes)
        memory = cache.take(block)
        if memory is None:
            memory = self._allocate(context, cache, block)
        # the Numba allocation stays alive in the finalizer while the block is handed out
        pointer = _driver.MemoryPointer(weakref.proxy(context), memory.device_pointer, nbytes,
                                        finalizer=lambda: cache.give(memory, block))
        return DeviceNDArray(shape, contiguous_strides(shape, dtype.itemsize), dtype, gpu_data=pointer)

    def _pool(self):
        """``(context, cache)`` of the current CUDA context; a context Numba has since closed
        (`numba.cuda.close`) loses its pool, and with it the blocks of its memory."""
        context = _devices.get_context()
        pool = self._pools.get(id(context))
        if pool is None or pool[0]() is not context:
            for key in [key for key, (ref, _) in self._pools.items() if ref() is None]:
                del self._pools[key]
            pool = self._pools[id(context)] = (weakref.ref(context), BlockCache())
        return context, pool[1]

    def _allocate(self, context, cache, block):
        try:
            return context.memalloc(block)
        except _driver.CudaAPIError as error:
            if error.code != _driver.binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY:
                raise
            cache.drain()  # Numba frees the dropped blocks when it retries after running out
            return context.memalloc(block)

    @property
    def cached_bytes(self):
        """Bytes of cached (free) blocks over all contexts."""
        return sum(cache.cached_bytes for _, cache in self._pools.values())

    def release(self):
        """Drop every cached block (Numba frees them); arrays in use keep theirs. Returns the bytes dropped."""
        return sum(sum(size for _, size in cache.drain()) for _, cache in self._pools.values())


def contiguous_strides(shape, itemsize):
    """The strides in bytes of a C-contiguous array of `shape`."""
    strides = []
    step = itemsize
    for extent in reversed(shape):
        strides.append(step)
        step *= extent
    return tuple(reversed(strides))


POOL = DevicePool()
CACHE = os.environ.get("SCRATCHDET_CUDA_CACHE", "1") != "0"


# the name Numba looks for when NUMBA_CUDA_MEMORY_MANAGER names this module
_numba_memory_manager = CachingMemoryManager
