"""The CUDA tests: each CUDA kernel against its CPU twin, on a GPU or in Numba's simulator.

CI runs this directory as its own pytest process with `NUMBA_ENABLE_CUDASIM=1` (the simulator must be
switched on before numba is imported); on a machine with a GPU the same tests run on the device. With
neither, every test here is skipped. Shapes are tiny: the simulator runs every GPU thread as a
Python thread.
"""

import sys
import threading

import numpy as np
import pytest

from scratchdet import backend

def _shared_arrays_made_once_per_block_and_cheaply():
    """The simulator gives each `cuda.shared.array` call the array of the block already made at the
    same source line, and makes it on the first call. Two things in how it does so are replaced, the
    key and the result kept:

    - it finds the caller's (file, line) with `traceback.extract_stack`, which reads the file and line
      of every frame on the thread's stack (an `os.stat` each), for every thread of every block; the
      caller's frame holds both;
    - it looks the array up, then stores a new one, in two steps: a thread switch between them (likelier
      with many threads per block) gave two threads of one block two different "shared"
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


def _barriers_that_wait_instead_of_polling():
    """The simulator's manager thread polls every thread of a block in a loop (`is_alive` and a flag
    each) to see when all have reached `cuda.syncthreads()`: it holds the GIL while the threads it waits
    for stand still, and most of a small kernel's time went to it. Here each block gets a condition
    variable instead: a thread arriving at the barrier counts itself and sleeps, the last live thread to
    arrive wakes them all, and a thread that ends (returns or raises) leaves the count, so that the
    others' barrier no longer waits for it (what the simulator did too). The manager only joins the
    threads. The first exception in a block wakes the block's other threads, which stop at their next
    barrier, and is raised once all have ended, as the simulator raises it: with the thread and block
    in its message.

    Measured on the 2-core VM, this directory: 162 s with the simulator's polling, 53 s with it and a
    0.5 ms switch interval (the poller then gave the GIL up sooner), 33 s with these barriers and
    Python's default interval (which now suits best: 0.1 ms took 45 s).
    """
    from numba.cuda.simulator import kernel as simulator

    manager, thread = getattr(simulator, "BlockManager", None), getattr(simulator, "BlockThread", None)
    if manager is None or thread is None or not hasattr(thread, "syncthreads"):  # another simulator
        return

    class Stopped(Exception):
        """Raised at a barrier in the other threads of a block where one thread failed."""

    class Barrier:
        def __init__(self, threads):
            self.condition = threading.Condition()
            self.live = threads  # threads that have not ended
            self.waiting = 0  # live threads waiting at the barrier
            self.generation = 0  # barriers passed
            self.failure = None  # (exception, traceback) of the block's first failing thread

        def _open(self):
            self.waiting = 0
            self.generation += 1
            self.condition.notify_all()

        def wait(self):
            with self.condition:
                if self.failure is None:
                    self.waiting += 1
                    generation = self.generation
                    if self.waiting == self.live:
                        self._open()
                    while generation == self.generation and self.failure is None:
                        self.condition.wait()
                if self.failure is not None:
                    raise Stopped

        def leave(self, failure):
            with self.condition:
                self.live -= 1
                if failure is not None and self.failure is None:
                    self.failure = failure
                    self.condition.notify_all()
                elif self.live and self.waiting == self.live:
                    self._open()

    def run_thread(self):
        failure = None
        try:
            threading.Thread.run(self)
        except Stopped:
            pass
        except Exception as error:  # noqa: BLE001 (handed to the manager, as the simulator does)
            where = f"tid={list(self.threadIdx)} ctaid={list(self.blockIdx)}"
            failure = (type(error)(f"{where}: {error}" if str(error) else where), sys.exc_info()[2])
        finally:
            self._manager.barrier.leave(failure)

    def syncthreads(self):
        self._manager.barrier.wait()

    def run_block(self, grid_point, *args):
        self.barrier = Barrier(int(np.prod(self._block_dim)))
        threads = []
        for block_point in np.ndindex(*self._block_dim):
            threads.append(thread(lambda: self._f(*args), self, grid_point, block_point, self._debug))
            threads[-1].start()
        for t in threads:
            t.join()
        if self.barrier.failure is not None:
            error, traceback = self.barrier.failure
            raise error.with_traceback(traceback)

    thread.run, thread.syncthreads, manager.run = run_thread, syncthreads, run_block


if backend.simulated():
    _shared_arrays_made_once_per_block_and_cheaply()
    _barriers_that_wait_instead_of_polling()


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
