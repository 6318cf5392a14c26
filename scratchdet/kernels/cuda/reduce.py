"""Reductions on the GPU: the shared-memory tree sum that losses and bias gradients are built from.

A block of threads sums its values by halving (Harris, "Optimizing Parallel Reduction in CUDA",
NVIDIA 2007): at each step the first half of the threads adds the second half's values onto its
own, until thread 0 holds the block's total. Sums run in float64 whatever the input dtype, and in
a fixed order, so the same input gives the same result on every run. (Accumulators start as
``numba.float64(0.0)``, not ``0.0``: compiled, both are float64, but in the simulator a Python float
plus a NumPy float32 stays float32 under NumPy 2's promotion rules, and the simulator would then
sum in float32.)
"""

import numba
import numpy as np
from numba import cuda

from scratchdet.kernels.cuda.common import THREADS, blocks_for, empty, flat
from scratchdet.kernels.cuda.launch import jit

# Blocks launched by a grid-stride reduction: enough to fill an H100 (132 multiprocessors)
# several times over, few enough that the second pass (one block) is short.
MAX_REDUCE_BLOCKS = 1024


def reduce_threads(n):
    """Threads per block for a reduction over `n` items: a power of two from 32 to THREADS."""
    threads = 32
    while threads < THREADS and threads < n:
        threads *= 2
    return threads


@cuda.jit(device=True)
def block_sum(scratch, value):
    """The sum of `value` over the threads of a 1-D block (valid in thread 0).

    The block's size must be a power of two, at most THREADS (see `reduce_threads`).

    Args:
        scratch: a shared float64 array of THREADS elements.
        value: this thread's number.
    """
    t = cuda.threadIdx.x
    scratch[t] = value
    cuda.syncthreads()
    half = cuda.blockDim.x // 2
    while half > 0:
        if t < half:
            scratch[t] += scratch[t + half]
        cuda.syncthreads()
        half //= 2
    return scratch[0]


@jit(cache=True)
def sum_partials_kernel(a, partials):
    """partials[b] = sum of a[i] over the i that block b visits (grid-stride)."""
    scratch = cuda.shared.array(THREADS, numba.float64)
    total = numba.float64(0.0)
    for i in range(cuda.grid(1), a.size, cuda.gridsize(1)):
        total += a[i]
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        partials[cuda.blockIdx.x] = total


@jit(cache=True)
def sum_rows_kernel(a, out):
    """out[r] = sum_j a[r, j]: one block per row (a is (R, L))."""
    scratch = cuda.shared.array(THREADS, numba.float64)
    r = cuda.blockIdx.x
    total = numba.float64(0.0)
    for j in range(cuda.threadIdx.x, a.shape[1], cuda.blockDim.x):
        total += a[r, j]
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        out[r] = total


# Rows of at most this many elements are summed by 32 threads each (`sum_short_rows_kernel`): a
# 256-thread block per row would spend most of its time in the 8 halving steps (the bias gradient
# of a conv layer, a row of H'*W' values per image and filter: measured a fixed ~0.47 ms on an H200,
# benchmarks/GPU_RESULTS.md run 2).
SHORT_ROW = 4096
ROW_THREADS = 32


@jit(cache=True)
def sum_short_rows_kernel(a, out):
    """out[r] = sum_j a[r, j] with ROW_THREADS threads per row, up to THREADS // ROW_THREADS rows per block:
    each thread sums the row's elements lane, lane + 32, ... (neighbouring threads read neighbouring
    elements), then each group halves 5 times in shared memory, in a fixed order."""
    scratch = cuda.shared.array(THREADS, numba.float64)
    t = cuda.threadIdx.x
    lane = t % ROW_THREADS
    r = cuda.blockIdx.x * (cuda.blockDim.x // ROW_THREADS) + t // ROW_THREADS
    total = numba.float64(0.0)
    if r < a.shape[0]:
        for j in range(lane, a.shape[1], ROW_THREADS):
            total += a[r, j]
    scratch[t] = total
    cuda.syncthreads()
    half = ROW_THREADS // 2
    while half > 0:
        if lane < half:
            scratch[t] += scratch[t + half]
        cuda.syncthreads()
        half //= 2
    if lane == 0 and r < a.shape[0]:
        out[r] = scratch[t]


# Column sums: a block covers COLUMN_LANES neighbouring columns (a warp reads 128 contiguous bytes of a
# row) and splits the rows among `row_groups` groups of threads, one per 32 rows, up to
# MAX_ROW_GROUPS. With a single thread per column, the filter-gradient sum of an RGB layer (256 images
# x 864 columns) kept 4 multiprocessors busy on a chain of 64 dependent loads (0.2 ms on an H200,
# benchmarks/GPU_RESULTS.md run 2); split 8 ways, the chain is 8 loads long.
COLUMN_LANES = 32
MAX_ROW_GROUPS = 32


def row_groups(rows):
    """Groups of threads sharing each column's rows: a power of two, about one per 32 rows, 1 to 32."""
    groups = 1
    while groups < MAX_ROW_GROUPS and groups * 32 < rows:
        groups *= 2
    return groups


@jit(cache=True)
def sum_axis0_kernel(a, out):
    """out[j] = sum_b a[b, j] (a is (B, L)): thread (lane, g) of block x sums column 32 x + lane over rows
    g, g + G, g + 2G, ... (G = blockDim.y groups, `row_groups`) with four running sums (four loads in
    flight), then the G groups' sums are added in group order: a fixed order for a shape, the same
    result on every run and every GPU."""
    partial = cuda.shared.array((MAX_ROW_GROUPS, COLUMN_LANES), numba.float64)
    lane = cuda.threadIdx.x
    g = cuda.threadIdx.y
    groups = cuda.blockDim.y
    j = cuda.blockIdx.x * COLUMN_LANES + lane
    rows = a.shape[0]
    t0 = numba.float64(0.0)
    t1 = numba.float64(0.0)
    t2 = numba.float64(0.0)
    t3 = numba.float64(0.0)
    if j < a.shape[1]:
        b = g
        while b + 3 * groups < rows:
            t0 += a[b, j]
            t1 += a[b + groups, j]
            t2 += a[b + 2 * groups, j]
            t3 += a[b + 3 * groups, j]
            b += 4 * groups
        while b < rows:  # this group's last rows, fewer than four
            t0 += a[b, j]
            b += groups
    partial[g, lane] = (t0 + t1) + (t2 + t3)
    cuda.syncthreads()
    if g == 0 and j < a.shape[1]:
        total = numba.float64(0.0)
        for h in range(groups):
            total += partial[h, lane]
        out[j] = total


def sum_all(a):
    """The sum of every element of a device array, as a (1,) float64 device array (no host copy)."""
    values = flat(a)
    threads = reduce_threads(values.size)
    n_blocks = min(blocks_for(values.size, threads), MAX_REDUCE_BLOCKS)
    partials = empty((n_blocks,), np.float64)
    sum_partials_kernel[n_blocks, threads](values, partials)
    total = empty((1,), np.float64)
    sum_partials_kernel[1, reduce_threads(n_blocks)](partials, total)
    return total


def sum_rows(a, dtype=None, out=None):
    """Row sums of a 2-D device array ``(R, L) -> (R,)`` (float64 accumulation, `dtype` output,
    written into `out` when given)."""
    if out is None:
        out = empty((a.shape[0],), dtype or a.dtype)
    rows, length = a.shape
    if rows and length <= SHORT_ROW:
        per_block = min(THREADS // ROW_THREADS, rows)  # fewer rows than a block holds: a smaller block
        sum_short_rows_kernel[(rows + per_block - 1) // per_block, per_block * ROW_THREADS](a, out)
    elif rows:
        sum_rows_kernel[rows, reduce_threads(length)](a, out)
    return out


def sum_axis0(a, dtype=None, out=None):
    """Column sums of a 2-D device array ``(B, L) -> (L,)`` (float64 accumulation, `dtype` output,
    written into `out` when given)."""
    if out is None:
        out = empty((a.shape[1],), dtype or a.dtype)
    if a.shape[1]:
        sum_axis0_kernel[blocks_for(a.shape[1], COLUMN_LANES), (COLUMN_LANES, row_groups(a.shape[0]))](a, out)
    return out


def compile_signatures():
    """``(name, kernel, argument types)`` for every reduction kernel as the library launches it."""
    f32, f64 = numba.float32, numba.float64
    return [
        ("sum_partials_f32", sum_partials_kernel, (f32[::1], f64[::1])),
        ("sum_partials_f64", sum_partials_kernel, (f64[::1], f64[::1])),
        ("sum_rows_f32", sum_rows_kernel, (f32[:, ::1], f32[::1])),
        ("sum_short_rows_f32", sum_short_rows_kernel, (f32[:, ::1], f32[::1])),
        ("sum_short_rows_f64", sum_short_rows_kernel, (f64[:, ::1], f64[::1])),
        ("sum_axis0_f32", sum_axis0_kernel, (f32[:, ::1], f32[::1])),
        ("sum_axis0_f64", sum_axis0_kernel, (f64[:, ::1], f64[::1])),
    ]
