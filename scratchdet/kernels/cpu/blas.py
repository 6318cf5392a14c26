"""Matrix products by NumPy's BLAS, cut so that small ones stay on the calling thread: BLAS's threads
and Numba's then do not fight over the cores.

The CPU layers are Numba kernels (`prange` loops on Numba's thread pool) except the products of
linear layers and of the im2col convolutions, which NumPy hands to its BLAS, usually OpenBLAS with
a pool of threads of its own. After a product on several threads OpenBLAS's workers keep spinning
a while, waiting for the next one; a Numba kernel started meanwhile shares the cores with them, and
a parallel loop goes at the pace of its slowest thread. Measured on this project's 2-core VM (NumPy
2.4 and its OpenBLAS, Numba's OpenMP pool), a product then a conv2d backward that takes 2.8 ms alone:

    product              time    then the backward: BLAS on 2 threads   BLAS on 1 thread
    64x2048 @ 2048x10    0.02 ms                    7.6 ms              2.8 ms
    128x4096 @ 4096x256  1.3 ms                     7.9 ms              4.9 ms
    256x1024 @ 1024x1024 2.3 ms                     7.2 ms              7.3 ms
    256x4096 @ 4096x1024 8.9 ms                    18.4 ms             19.6 ms

OpenBLAS decides per call: a product of at most ONE_THREAD_MNK multiply-adds runs on the caller's
thread. `matmul` cuts a small product (at most MAX_PIECES such pieces) into bands of rows under that
size, so no worker wakes; its thread count, a process-wide setting, is left alone. A classifier's
last layer (64 x 2048 -> 10 in bench_nn.py's training step) is such a product: that step took 24-30
ms before, 15-21 ms after (this VM). Larger products go to BLAS whole: their threads pay for
themselves. With another BLAS (MKL, Accelerate) the bands are merely more calls.
"""

import numpy as np

# OpenBLAS runs a product of at most this many multiply-adds (m * n * k) on the calling thread alone
# (its interface/gemm.c: SMP_THRESHOLD_MIN (65536) * GEMM_MULTITHREAD_THRESHOLD (4, the default); it
# also gives each thread at least that many, so on 2 cores one thread runs up to twice this: measured
# here, 64x2048 @ 2048x10-like products slowed the next Numba kernel from 573,440 multiply-adds on,
# not up to 491,520).
ONE_THREAD_MNK = 65536 * 4
# Products of up to this many such pieces are cut into them; larger ones go to BLAS whole.
MAX_PIECES = 64


def matmul(a, b, out=None):
    """a (m, k) @ b (k, n) -> (m, n), `out` as `np.matmul`'s; a small product is cut into bands of
    rows that BLAS runs on the calling thread (see the module docstring).

    The bands are cut so that each has at most ONE_THREAD_MNK multiply-adds: when a row of the
    product is within that (k n <= ONE_THREAD_MNK) and the product needs at most MAX_PIECES bands.
    Otherwise, or for other shapes, it is one `np.matmul` call.
    """
    if a.ndim != 2 or b.ndim != 2:
        return np.matmul(a, b, out=out)
    (m, k), n = a.shape, b.shape[1]
    rows = ONE_THREAD_MNK // max(k * n, 1)
    if m * k * n <= ONE_THREAD_MNK or rows == 0 or -(-m // rows) > MAX_PIECES:
        return np.matmul(a, b, out=out)
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    for start in range(0, m, rows):
        np.matmul(a[start : start + rows], b, out=out[start : start + rows])
    return out
