"""The simulator's barriers as `conftest.py` replaces them: kernels that rely on `cuda.syncthreads()`
still see every thread of the block arrive, threads that return early do not hold the others back,
and an error in one thread is raised, naming it, instead of hanging the block."""

import numpy as np
import pytest
from numba import cuda, float64

from scratchdet.backend import simulated

BLOCK = 64


@cuda.jit
def sum_of_the_first_n(values, n, out):
    """out[0] = values[0] + ... + values[n - 1] by a tree in shared memory; threads at or past n return
    before the first barrier (on a GPU an exited thread no longer counts at a barrier)."""
    partial = cuda.shared.array(BLOCK, float64)
    t = cuda.threadIdx.x
    partial[t] = 0.0
    cuda.syncthreads()
    if t >= n:
        return
    partial[t] = values[t]
    cuda.syncthreads()
    half = BLOCK // 2
    while half > 0:
        if t < half and t + half < n:
            partial[t] += partial[t + half]
        cuda.syncthreads()
        half //= 2
    if t == 0:
        out[0] = partial[0]


@pytest.mark.parametrize("n", [1, 5, 33, BLOCK])
def test_threads_that_return_early_do_not_hold_back_the_barrier(n, gpu, host):
    values = np.arange(1.0, BLOCK + 1)
    out = gpu(np.zeros(1))
    sum_of_the_first_n[1, BLOCK](gpu(values), n, out)
    assert host(out)[0] == values[:n].sum()


@cuda.jit
def fails_in_one_thread(out):
    t = cuda.threadIdx.x
    cuda.syncthreads()
    if t == 3 and cuda.blockIdx.x == 1:
        raise ValueError("thread three failed")
    cuda.syncthreads()
    out[t] = t


@pytest.mark.skipif(not simulated(), reason="only the simulator raises a kernel's exception on the host")
def test_an_error_in_one_thread_is_raised_naming_the_thread(gpu):
    with pytest.raises(ValueError, match=r"tid=\[3, 0, 0\] ctaid=\[1, 0, 0\]: thread three failed"):
        fails_in_one_thread[2, 8](gpu(np.zeros(8)))
