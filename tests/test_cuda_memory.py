"""The caching device allocator (`scratchdet.kernels.cuda.memory`), driven by a fake CUDA driver: the
block sizes, reuse of freed blocks, and freeing the cache when the GPU runs out of memory. No GPU is
needed: the plugin's only CUDA calls are cuMemAlloc / cuMemFree / cuMemGetInfo, replaced here."""

import gc

import pytest
from numba import cuda
from numba.cuda.cudadrv import driver as numba_driver

from scratchdet.kernels.cuda import memory

MIB = 1 << 20


class FakeDriver:
    """cuMemAlloc hands out increasing addresses and fails past `capacity` bytes in use."""

    def __init__(self, capacity):
        self.capacity = capacity
        self.in_use = {}
        self.next_address = 0x1000
        self.calls = []

    def cuMemAlloc(self, size):
        self.calls.append(("alloc", size))
        if sum(self.in_use.values()) + size > self.capacity:
            raise numba_driver.CudaAPIError(numba_driver.binding.CUresult.CUDA_ERROR_OUT_OF_MEMORY, "out of memory")
        address = self.next_address
        self.next_address += size
        self.in_use[address] = size
        return address

    def cuMemFree(self, address):
        self.calls.append(("free", self.in_use.pop(address)))

    def cuMemGetInfo(self):
        return self.capacity - sum(self.in_use.values()), self.capacity


class FakeContext:
    pass


@pytest.fixture
def manager(monkeypatch):
    fake = FakeDriver(capacity=64 * MIB)
    monkeypatch.setattr(numba_driver, "driver", fake)
    context = FakeContext()  # kept alive by the test: the pointers hold a weak proxy
    mm = memory.CachingMemoryManager(context=context)
    mm.initialize()
    mm.fake, mm.fake_context = fake, context
    return mm


@pytest.mark.parametrize(
    ("size", "block"),
    [(0, 512), (1, 512), (512, 512), (513, 1024), (MIB, MIB), (MIB + 1, 2 * MIB), (5 * MIB, 6 * MIB), (6 * MIB, 6 * MIB)],
)
def test_requests_round_up_to_512_bytes_below_a_mib_and_2_mib_above(size, block):
    assert memory.block_size(size) == block


def test_the_cache_hands_back_a_block_of_the_exact_size_latest_first():
    cache = memory.BlockCache()
    assert cache.take(512) is None
    cache.give("a", 512)
    cache.give("b", 512)
    cache.give("c", 1024)
    assert cache.cached_bytes == 2048
    assert cache.take(512) == "b" and cache.take(512) == "a" and cache.take(512) is None
    assert cache.drain() == [("c", 1024)] and cache.cached_bytes == 0 and cache.take(1024) is None


def test_host_memory_keeps_numbas_pending_frees_sized_by_the_gpu(manager):
    assert manager.deallocations.memory_capacity == 64 * MIB


def test_a_dropped_array_block_is_reused_without_a_new_allocation(manager):
    first = manager.memalloc(1000)
    assert first.size == 1000 and manager.fake.calls == [("alloc", 1024)]
    address = first.device_pointer
    other = manager.memalloc(1000)  # the first is alive: a second block
    assert other.device_pointer != address
    del first
    gc.collect()
    assert manager.cache.cached_bytes == 1024
    again = manager.memalloc(700)  # rounds to the same 1024-byte block
    assert again.device_pointer == address and again.size == 700
    assert manager.fake.calls == [("alloc", 1024), ("alloc", 1024)]  # and no cuMemFree at all
    del other, again


def test_running_out_of_memory_frees_the_cached_blocks_and_retries(manager):
    blocks = [manager.memalloc(16 * MIB) for _ in range(4)]  # the whole 64 MiB
    del blocks
    gc.collect()
    assert manager.cache.cached_bytes == 64 * MIB
    big = manager.memalloc(40 * MIB)  # no cached block of 40 MiB, no room: free the cache, retry
    assert big.size == 40 * MIB
    assert manager.fake.calls[-6:] == [("alloc", 40 * MIB)] + [("free", 16 * MIB)] * 4 + [("alloc", 40 * MIB)]
    assert manager.cache.cached_bytes == 0
    with pytest.raises(numba_driver.CudaAPIError):
        manager.memalloc(40 * MIB)  # really out of memory: the error reaches the caller
    assert manager.get_memory_info().free == 24 * MIB


def test_numba_accepts_the_plugin(monkeypatch):
    monkeypatch.setattr(numba_driver, "_memory_manager", None)
    cuda.set_memory_manager(memory.CachingMemoryManager)
    assert numba_driver._memory_manager is memory.CachingMemoryManager
    assert memory._numba_memory_manager is memory.CachingMemoryManager  # NUMBA_CUDA_MEMORY_MANAGER's name


def test_a_block_returns_to_the_cache_only_when_its_last_view_dies(manager):
    """A Numba view of an array (a slice) holds the array's pointer: the block of an array that died
    while a view of it lives is not handed out again."""
    base = manager.memalloc(4096)
    view = base.view(1024)
    address = base.device_pointer
    del base
    gc.collect()
    assert manager.cache.cached_bytes == 0
    other = manager.memalloc(4096)
    assert other.device_pointer != address
    del view
    gc.collect()
    assert manager.cache.cached_bytes == 4096
    assert manager.memalloc(4096).device_pointer == address
    del other


class FakeBlocks:
    """A context for `DevicePool`: memalloc hands out increasing addresses (Numba's would be device memory)."""

    def __init__(self, start):
        self.next_address = start
        self.allocated = []

    def memalloc(self, size):
        block = FakeAllocation(self.next_address, size)
        self.next_address += size
        self.allocated.append(size)
        return block


class FakeAllocation:
    def __init__(self, address, size):
        self.device_pointer, self.size = address, size


def test_the_pool_serves_each_context_from_its_own_blocks_and_drops_a_closed_ones(monkeypatch):
    """`DevicePool` keeps a cache per CUDA context; a context Numba closed loses its cache."""
    pool = memory.DevicePool()
    first, second = FakeBlocks(0x10000), FakeBlocks(0x20000)
    current = [first]
    monkeypatch.setattr(memory._devices, "get_context", lambda: current[0])
    a = pool.empty((256,), "float32")  # 1 KiB
    address = a.device_ctypes_pointer.value
    del a
    gc.collect()
    current[0] = second  # another context: the first's free block is not handed out here
    b = pool.empty((256,), "float32")
    assert b.device_ctypes_pointer.value != address and second.allocated == [1024]
    current[0] = first
    assert pool.empty((256,), "float32").device_ctypes_pointer.value == address and first.allocated == [1024]
    assert pool.cached_bytes == 1024  # the array just made died at once: its block is back
    current[0] = second
    del first  # Numba closed the first context
    gc.collect()
    current[0] = FakeBlocks(0x30000)  # and made another: its first request drops the closed one's pool
    pool.empty((8,), "float32")
    assert len(pool._pools) == 2 and pool.cached_bytes == 512
    del b
