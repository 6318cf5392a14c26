"""A caching device-memory allocator for Numba: freed blocks are kept and handed out again.

Numba allocates each device array with ``cuMemAlloc`` and frees it with ``cuMemFree``, which waits
for the GPU. A training step allocates and drops dozens of activations and gradients, some of them
hundreds of MB: on an H200 (benchmarks/GPU_RESULTS.md, run 2) a whole conv2d forward took 0.28-0.41 ms
longer than its one kernel (Python, the launch and allocating a 67-134 MB output; how much of it is
the allocation was not measured). PyTorch keeps freed blocks in a caching allocator; this module is
the same idea for Numba, as an External Memory Management plugin (the NBEP 7 interface,
`numba.cuda.set_memory_manager`):

- a request is rounded up to a block size (`block_size`: steps of 512 bytes up to 1 MiB, PyTorch's
  smallest unit, and of 2 MiB above, so that nearby large sizes share blocks), and served from the
  blocks of exactly that size freed earlier, or by ``cuMemAlloc``;
- when an array dies its block goes back to the cache at once, with no ``cuMemFree`` and no wait.
  Reuse is safe because scratchdet runs every kernel and copy on the default stream, in order: work
  queued with the old array runs before any queued with the new one (the same argument as
  `common.scratch`). Arrays used on other streams need the default allocator.
- when ``cuMemAlloc`` runs out of memory, the cached blocks are freed and the allocation retried.

Switch it on before the first CUDA call, through Numba's own setting:

    NUMBA_CUDA_MEMORY_MANAGER=scratchdet.kernels.cuda.memory python train.py

or ``numba.cuda.set_memory_manager(CachingMemoryManager)``. It is off by default.
"""

import collections
import weakref

from numba.cuda.cudadrv import driver as _driver

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
        """A `numba.cuda` MemoryPointer of `size` bytes whose block returns to the cache when it dies."""
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


# the name Numba looks for when NUMBA_CUDA_MEMORY_MANAGER names this module
_numba_memory_manager = CachingMemoryManager
