"""scratchdet's own device arrays come from cached blocks (`memory.DevicePool`, through
`common.empty`): a dead array's block is handed out again without cudaMalloc or cudaFree, never while
a view of it lives, and the cache is dropped when the GPU runs out of memory."""

import gc
import os

import numpy as np
import pytest
from numba import cuda

from scratchdet import backend
from scratchdet.kernels.cuda import common, memory


def _address(a):
    return a.device_ctypes_pointer.value


@pytest.fixture(autouse=True)
def empty_cache():
    """An empty cache, and no automatic garbage collection meanwhile (an array of an earlier test
    collected mid-test would put its block in the cache the test counts)."""
    if common._POOL is None:
        pytest.skip("the pool is off (SCRATCHDET_CUDA_CACHE=0)")
    gc.collect()
    common.release_memory()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        gc.collect()
        common.release_memory()


def test_arrays_have_the_asked_shape_and_dtype_and_keep_their_values():
    for shape, dtype in (((3, 4), np.float32), ((5,), np.int64), (7, np.uint8), ((2, 1, 3), np.float64), ((), np.float32)):
        a = common.empty(shape, dtype)
        expected = np.empty(shape, dtype)
        assert (a.shape, a.strides, a.dtype) == (expected.shape, expected.strides, expected.dtype)
        values = np.arange(expected.size).reshape(expected.shape).astype(dtype)
        a.copy_to_device(values)
        np.testing.assert_array_equal(a.copy_to_host(), values)
    assert common.empty((0, 3), np.float32).shape == (0, 3)
    with pytest.raises(ValueError):
        common.empty((-1, 3), np.float32)


def test_a_dead_arrays_block_is_handed_out_again_for_a_request_of_its_size():
    a = common.empty((1000,), np.float32)  # 4,000 bytes: a block of 4,096
    address = _address(a)
    del a
    assert memory.POOL.cached_bytes == 4096
    b = common.empty((32, 32), np.float32)  # 4,096 bytes: the same block
    assert _address(b) == address and memory.POOL.cached_bytes == 0
    c = common.empty((1000,), np.float32)  # b is alive: another block
    assert _address(c) != address


def test_a_block_waits_for_the_last_view_of_its_array():
    a = common.empty((10, 100), np.float32)
    address = _address(a)
    views = [a[3:], a.reshape(1000), common.flat(a)[5:]]
    del a
    gc.collect()
    assert memory.POOL.cached_bytes == 0, "a view is alive: the block must not be reused"
    assert _address(common.empty((10, 100), np.float32)) != address
    del views
    gc.collect()
    assert _address(common.empty((10, 100), np.float32)) == address


def test_release_drops_the_cached_blocks():
    arrays = [common.empty((4096,), np.float32) for _ in range(3)]
    del arrays
    assert memory.POOL.cached_bytes == 3 * 16384
    backend.release_cached_memory()
    assert memory.POOL.cached_bytes == 0
    source = common.empty((3, 2), np.float64)
    like = backend.zeros_like(source)  # the backend's arrays come from the pool too
    del like
    gc.collect()  # a first launch compiles the fill kernel, which leaves a reference cycle to its arguments
    assert memory.POOL.cached_bytes == 512


@pytest.mark.skipif(not os.environ.get("FAKE_CUDA_MEMORY"), reason="needs the stand-in driver's memory limit")
def test_running_out_of_memory_frees_the_cached_blocks_and_retries(fake):
    limit = int(os.environ["FAKE_CUDA_MEMORY"])
    _, total = cuda.current_context().get_memory_info()
    assert fake and total == limit
    block = limit // 4  # blocks are multiples of 2 MiB above 1 MiB
    arrays = [common.empty((block,), np.uint8) for _ in range(3)]  # three quarters of the memory
    del arrays
    assert memory.POOL.cached_bytes == 3 * block
    big = common.empty((2 * block,), np.uint8)  # no cached block of that size, and no room for it
    assert big.size == 2 * block and memory.POOL.cached_bytes == 0


def test_the_pool_can_be_switched_off(monkeypatch):
    monkeypatch.setattr(memory, "CACHE", False)
    assert common._device_pool() is None
    monkeypatch.setattr(memory, "CACHE", True)
    assert common._device_pool() is memory.POOL


def test_parts_of_an_array_are_views_of_its_elements_that_keep_its_block():
    values = np.arange(30, dtype=np.float32)
    base = common.empty((30,), np.float32)
    base.copy_to_device(values)
    address = _address(base)
    head, tail = common.part(base, 0, (4, 6)), common.part(base, 24, (6,))
    np.testing.assert_array_equal(head.copy_to_host(), values[:24].reshape(4, 6))
    np.testing.assert_array_equal(tail.copy_to_host(), values[24:])
    assert head.strides == (24, 4) and _address(tail) == address + 24 * 4
    tail.copy_to_device(-values[:6])  # a view: writes reach the base array
    np.testing.assert_array_equal(base.copy_to_host()[24:], -values[:6])
    with pytest.raises(IndexError):
        common.part(base, 25, (6,))
    del base, head
    gc.collect()
    assert _address(common.empty((30,), np.float32)) != address  # tail still uses the block


def test_flat_views_share_the_array_memory_and_refuse_what_is_not_contiguous():
    values = np.arange(24, dtype=np.float64).reshape(2, 3, 4)
    a = common.empty((2, 3, 4), np.float64)
    a.copy_to_device(values)
    view = common.flat(a)
    assert view.shape == (24,) and view.strides == (8,) and _address(view) == _address(a)
    assert common.flat(a) is view  # kept on the array
    np.testing.assert_array_equal(view.copy_to_host(), values.ravel())
    with pytest.raises(NotImplementedError):  # Numba's refusal: a flat view would need a copy
        common.flat(a[:, ::2])
