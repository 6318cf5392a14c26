"""A tiled shared-memory matrix multiply for the GPU: ``C[z] = A[z] @ B[z]`` (+ bias), strided and batched.

Every heavy layer of a conv net is a matrix multiply: a convolution is one after im2col
(Chellapilla, Puri and Simard 2006), a fully connected layer is one outright. This module holds the
kernel, written as in Kirk and Hwu, *Programming Massively Parallel Processors*
(ch. 5, tiled matrix multiplication): each block stages a ``BM x BK`` tile of A and a ``BK x BN``
tile of B in shared memory, and each of its 16 x 16 threads accumulates a ``TM x TN`` piece of the
``BM x BN`` output tile in registers (register blocking, Volkov and Demmel 2008). While the block
multiplies the tiles in shared memory, each thread already loads its part of the next tiles into
registers (software pipelining), so global-memory latency hides behind arithmetic. Which tile shape
is fastest depends on the GPU and the matrix shape, so on a GPU the first product of each shape
tries a few and keeps the fastest (as cuDNN's benchmark mode does).

Two details spare the GPU's instruction issue for the multiply-adds: a thread owns runs of 4
adjacent rows and columns of the output tile, so it reads the shared tiles with 16-byte vector loads
(`owned`), and where each element it stages lies in A or B is worked out once, before the loop, so
fetching the next tile only adds ``k0`` times a stride (through an unsigned index, to which Numba adds
no negative-index wraparound). In the sm_90 machine code the loop of a 4 x 4 tile went from 430 to
245 instructions per 128 multiply-adds (ptxas and cuobjdump); on an H200 the linear layer 256 x 4096 ->
1024 forward + backward went from 1.87 to 0.98 ms (benchmarks/GPU_RESULTS.md, runs 2 and 3).

Matrices are described by strides, as in cuBLAS's ``gemmStridedBatched``: element ``(i, k)`` of
batch ``z`` of A lives at ``a[z * a_bs + i * a_rs + k * a_cs]`` of the flat array ``a``. So a
transposed operand or a row of images is a choice of strides, never a copy. Convolutions use the
same kernel's inner loop (`tile_multiply`) with a virtual B operand (`conv_gemm`).
"""

import functools
import time

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import simulated
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import THREADS, blocks_for, empty, flat, on_device, scratch
from scratchdet.kernels.cuda.launch import jit

# Block shape: 16 x 16 = 256 threads; the depth of one staged tile along the summed dimension.
TY = 16
TX = 16
BK = 8

# A thread reads VECTOR adjacent elements of a shared-memory tile with one 16-byte load
# (``ld.shared.v4``, a quarter of the loads per multiply-add), so it owns runs of VECTOR adjacent rows
# and columns of the output tile (`owned`); the tiles are aligned to 16 bytes and their rows padded by
# VECTOR elements, which keeps every row aligned and the transposed stores of a tile on distinct
# banks. Numba's simulator rejects an alignment (it has no banks either).
VECTOR = 4
SHARED_ALIGNMENT = None if simulated() else 16

# Where the optional bias is added: nowhere, once per output row, or once per output column.
BIAS_NONE = 0
BIAS_ROW = 1
BIAS_COL = 2
# Or the product computes a bias *gradient* along with a weight gradient: B gets one more column, of
# ones, whose outputs are the rows' sums of A (a bias is the weight of an extra input fixed at 1;
# Bishop, *Pattern Recognition and Machine Learning*, section 5.1), written after C's ``m x n`` block.
# The linear layer's db = sum over the batch of dY then needs no reduction of its own, and the
# convolution's neither (`conv_gemm`'s filter gradient: two launches fewer per layer): on a GPU the
# host's launches and allocations, not the GPU, bound the small layers (benchmarks/GPU_RESULTS.md, run 3).
BIAS_GRAD = 3
_ONES = -2  # where a thread stages an element of the column of ones (-1: outside B)

_NUMBA_TYPES = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}


@cuda.jit(device=True)
def owned(index, thread, threads, run):
    """The tile row (column) of a thread's index-th output row (column): runs of `run` adjacent rows,
    `threads * run` apart, thread t owning the t-th row of each run (so `run` <= VECTOR rows are one load)."""
    return (index // run) * (threads * run) + thread * run + index % run


@cuda.jit(device=True)
def sum_part(z, splits, k, k_chunk):
    """``(product, k_lo, k_hi)`` of block z of a launch whose sums are cut into `splits` parts of k_chunk
    terms (`reduction_splits`): product ``z // splits``, terms ``[k_lo, k_hi)`` (part ``z % splits``). In
    32 bits: a 64-bit division is a subroutine call, which had put the 8 x 8 tile's accumulators on the stack."""
    product = numba.int64(numba.uint32(z) // numba.uint32(splits))
    k_lo = numba.int64(numba.uint32(z) % numba.uint32(splits)) * k_chunk
    return product, k_lo, min(k, k_lo + k_chunk)


@functools.lru_cache(maxsize=None)
def tile_multiply(ty_count, tx_count, tm, tn):
    """The device function ``multiply(a_tile, b_tile, acc, a_reg, b_reg, ty, tx)`` adding the product of
    the staged tiles, ``a_tile`` (BK, rows) and ``b_tile`` (BK, columns), to thread (ty, tx)'s ``tm x tn``
    block of outputs ``acc`` (rows and columns as `owned` with runs of up to VECTOR): the inner loop of
    both GEMM kernels (this one and `conv_gemm`'s), inlined into them so that acc stays in registers."""
    vm = min(tm, VECTOR)
    vn = min(tn, VECTOR)

    @cuda.jit(device=True, inline="always")
    def multiply(a_tile, b_tile, acc, a_reg, b_reg, ty, tx):
        # (a while loop: the compiler proves kk >= 0 and unrolls it, where a range() loop keeps
        # Numba's negative-index test on every shared-memory load)
        kk = 0
        while kk < BK:
            for i in range(tm):
                a_reg[i] = a_tile[kk, owned(i, ty, ty_count, vm)]
            for j in range(tn):
                b_reg[j] = b_tile[kk, owned(j, tx, tx_count, vn)]
            for i in range(tm):
                for j in range(tn):
                    acc[i, j] += a_reg[i] * b_reg[j]
            kk += 1

    return multiply


@functools.lru_cache(maxsize=None)
def gemm_kernel(tm, tn, dtype, threads=(TY, TX)):
    """The tiled GEMM kernel whose threads each own a ``tm x tn`` block of outputs.

    Args:
        tm, tn: rows and columns of outputs per thread (1, 2, 4 or 8; 4 or 8); a block covers a
            ``ty*tm x tx*tn`` tile of C.
        dtype: ``np.float32`` or ``np.float64``, the element type of A, B, C and the bias.
        threads: ``(ty, tx)`` threads per block, 16 x 16 (fewer in the simulator, `SIMULATOR_THREADS`).

    Returns:
        a ``numba.cuda`` kernel ``gemm(a, b, c, bias, m, n, k, a_bs, a_rs, a_cs, b_bs, b_rs, b_cs,
        c_bs, c_rs, c_cs, bias_mode, splits, k_chunk)`` over flat 1-D arrays, launched with
        ``gemm_launch``. With ``bias_mode`` BIAS_GRAD, B's last column (n - 1, not read from b) is all
        ones and output (i, n - 1) goes to ``c[z * c_bs + m * c_rs + i]``, after the other columns.
    """
    ty_count, tx_count = threads
    bm = ty_count * tm
    bn = tx_count * tn
    nt = ty_count * tx_count
    a_elems = bm * BK  # elements of one A tile
    b_elems = BK * bn
    a_per_thread = (a_elems + nt - 1) // nt  # how many each thread stages
    b_per_thread = (b_elems + nt - 1) // nt
    a_tile_shape = (BK, bm + VECTOR)
    b_tile_shape = (BK, bn + VECTOR)
    vm = min(tm, VECTOR)
    vn = min(tn, VECTOR)
    multiply = tile_multiply(ty_count, tx_count, tm, tn)
    ntype = _NUMBA_TYPES[np.dtype(dtype)]
    zero = np.dtype(dtype).type(0)  # a constant of the element type (a bare 0 would make the load a float64)
    one = np.dtype(dtype).type(1)
    int64 = numba.int64
    uint64 = numba.uint64  # (an unsigned index: Numba adds no negative-index wraparound)

    @cuda.jit(device=True)
    def a_slot(e, a_cs):
        """(row, k) of A-tile element e: neighbouring threads take neighbouring addresses of A."""
        if a_cs == 1:
            return e // BK, e % BK
        return e % bm, e // bm

    @cuda.jit(device=True)
    def b_slot(e, b_cs):
        """(k, column) of B-tile element e: neighbouring threads take neighbouring addresses of B."""
        if b_cs == 1:
            return e // bn, e % bn
        return e % BK, e // BK

    @jit
    def gemm(a, b, c, bias, m, n, k, a_bs, a_rs, a_cs, b_bs, b_rs, b_cs, c_bs, c_rs, c_cs, bias_mode, splits, k_chunk):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * tx_count + tx
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        z = cuda.blockIdx.z
        product, k_lo, k_hi = sum_part(z, splits, k, k_chunk)
        a0 = product * a_bs
        b0 = product * b_bs
        a_tile = cuda.shared.array(a_tile_shape, ntype, alignment=SHARED_ALIGNMENT)
        b_tile = cuda.shared.array(b_tile_shape, ntype, alignment=SHARED_ALIGNMENT)
        a_next = cuda.local.array(a_per_thread, ntype)  # the next tiles, fetched ahead into registers
        b_next = cuda.local.array(b_per_thread, ntype)
        acc = cuda.local.array((tm, tn), ntype)
        a_reg = cuda.local.array(tm, ntype)
        b_reg = cuda.local.array(tn, ntype)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0

        # 0. what stays the same in every tile: where each element this thread stages goes in its tile,
        #    (row, depth) of A and (depth, column) of B, and where it is in A or B at k = 0 (-1: past
        #    the last row or column, or not an element of the tile; _ONES: in the column of ones)
        a_r = cuda.local.array(a_per_thread, int64)
        a_kk = cuda.local.array(a_per_thread, int64)
        a_at = cuda.local.array(a_per_thread, int64)
        for step in range(a_per_thread):
            e = tid + step * nt
            a_r[step], a_kk[step] = a_slot(e, a_cs)
            gi = row0 + a_r[step]
            a_at[step] = a0 + gi * a_rs + a_kk[step] * a_cs if e < a_elems and gi < m else -1
        b_kk = cuda.local.array(b_per_thread, int64)
        b_c = cuda.local.array(b_per_thread, int64)
        b_at = cuda.local.array(b_per_thread, int64)
        for step in range(b_per_thread):
            e = tid + step * nt
            b_kk[step], b_c[step] = b_slot(e, b_cs)
            gj = col0 + b_c[step]
            b_at[step] = b0 + b_kk[step] * b_rs + gj * b_cs if e < b_elems and gj < n else -1
            if bias_mode == BIAS_GRAD and gj == n - 1 and e < b_elems:
                b_at[step] = _ONES

        for k0 in range(k_lo - BK, k_hi, BK):
            # 1. fetch this thread's elements of the tiles at k0 + BK from global memory into
            #    registers: the loads are in flight while step 2 multiplies the tiles at k0
            k1 = k0 + BK
            if k1 < k_hi:
                for step in range(a_per_thread):
                    ok = a_at[step] >= 0 and k1 + a_kk[step] < k_hi
                    a_next[step] = a[uint64(a_at[step] + k1 * a_cs)] if ok else zero
                for step in range(b_per_thread):
                    inside = k1 + b_kk[step] < k_hi
                    if b_at[step] >= 0 and inside:
                        b_next[step] = b[uint64(b_at[step] + k1 * b_rs)]
                    else:
                        b_next[step] = one if b_at[step] == _ONES and inside else zero
            # 2. multiply the tiles in shared memory (none before the first tile arrives)
            if k0 >= k_lo:
                multiply(a_tile, b_tile, acc, a_reg, b_reg, ty, tx)
            cuda.syncthreads()
            # 3. store the fetched tiles into shared memory for the next round
            if k1 < k_hi:
                for step in range(a_per_thread):
                    if tid + step * nt < a_elems:
                        a_tile[a_kk[step], a_r[step]] = a_next[step]
                for step in range(b_per_thread):
                    if tid + step * nt < b_elems:
                        b_tile[b_kk[step], b_c[step]] = b_next[step]
            cuda.syncthreads()

        # 4. write the thread's outputs, adding the bias of the row or column
        c0 = z * c_bs
        for i in range(tm):
            gi = row0 + owned(i, ty, ty_count, vm)
            if gi < m:
                for j in range(tn):
                    gj = col0 + owned(j, tx, tx_count, vn)
                    if gj < n:
                        value = acc[i, j]
                        if bias_mode == BIAS_ROW:
                            value += bias[gi]
                        elif bias_mode == BIAS_COL:
                            value += bias[gj]
                        if bias_mode == BIAS_GRAD and gj == n - 1:
                            c[uint64(c0 + m * c_rs + gi)] = value
                        else:
                            c[uint64(c0 + gi * c_rs + gj * c_cs)] = value

    return gemm


def tile_shape(m, n):
    """The default per-thread output block ``(tm, tn)`` for an ``m x n`` output.

    Few rows (a conv layer with 16 filters) get short, wide tiles so that no thread computes
    rows that do not exist; long rows get 8 columns per thread, the most work per staged element.
    """
    tm = 1
    while tm < 4 and TY * tm < m:
        tm *= 2
    tn = 8 if n >= 512 else 4
    return tm, tn


def tile_candidates(m, n):
    """The tile shapes autotuning tries: the default's row count and half of it, 4 or 8 columns; and
    for at least 128 rows also 8 rows per thread (a 128-row tile: the most arithmetic per staged
    element, at the cost of registers and so of resident blocks)."""
    tm, _ = tile_shape(m, n)
    rows = [tm, tm // 2] if tm > 1 else [tm]
    if m >= 128:
        rows = [8] + rows
    return [(r, c) for r in rows for c in (4, 8)]


# Like cuDNN's benchmark mode: on a GPU, the first product of each shape times every candidate tile
# and keeps the fastest (the best one depends on the GPU and on the shape). The simulator, where
# timings mean nothing, uses `tile_shape`.
AUTOTUNE = not simulated()
_chosen_tiles = {}


def chosen_tiles():
    """{key: (tm, tn)} for every product shape seen so far: ("gemm", m, n, k, batches, dtype, a_cs == 1,
    b_cs == 1) for plain products, (product name, m, n, k, images, dtype, geometry...) for `conv_gemm`."""
    return dict(_chosen_tiles)


# Numba's simulator runs each thread of a block as a Python thread, and its cost grows with the threads
# times the barriers they meet. Products run there on 8 x 8 threads, a quarter of a GPU's 16 x 16 block
# (with the smaller conv tiles this halved tests/cuda's time); the 16 x 16 blocks a GPU runs are each
# tested on their own (tests/cuda/test_gemm_cuda.py and test_conv_gemm_cuda.py launch every tile).
SIMULATOR_THREADS = (8, 8)


def _launch(tile, a, b, c, bias, m, n, k, a_strides, b_strides, c_strides, batches, bias_mode, splits=1, threads=(TY, TX)):
    tm, tn = tile
    ty_count, tx_count = threads
    kernel = gemm_kernel(tm, tn, np.dtype(c.dtype), threads)
    grid = ((n + tx_count * tn - 1) // (tx_count * tn), (m + ty_count * tm - 1) // (ty_count * tm), batches * splits)
    kernel[grid, (tx_count, ty_count)](
        a, b, c, bias, m, n, k, *a_strides, *b_strides, *c_strides, bias_mode, splits, part_length(k, splits)
    )


# A product with few output tiles and a long sum gives each block a long chain of tiles and leaves most
# of the GPU idle: a fully connected layer's forward, 256 x 4096 -> 1024, has 32 tiles of 64 x 128
# outputs, each summing 4,096 terms; a first conv layer's filter gradient, 32 x 27 outputs per image
# summed over 4,096 pixels, ran 256 blocks 512 tiles deep (0.73 ms for 0.9 GFLOP on an H200 in run 2,
# benchmarks/GPU_RESULTS.md). Such sums are cut into parts of at least MIN_PART terms until about
# TARGET_BLOCKS blocks run; each part's product goes to a work buffer and the parts are added in a
# fixed order (the split depends on the shapes alone: the same result on every run).
TARGET_BLOCKS = 2048
MIN_PART = 256
MAX_GRID_Z = 65535  # blocks along a grid's z dimension (products x parts)


def part_length(k, splits):
    """The terms of each of `splits` parts of a sum over k: ceil(k / splits) rounded up to whole tiles (BK)."""
    return BK * max(1, -(-k // (splits * BK)))


def reduction_splits(batches, m, n, k, bm, bn):
    """Into how many parts to cut the sums of `batches` ``(m, n)`` products over ``k`` terms, computed by
    ``bm x bn`` output tiles (1: none). The count s returned has ``ceil(k / part_length(k, s)) == s``:
    every part has terms; and ``batches * s`` blocks fit the grid's z dimension."""
    blocks = batches * -(-m // bm) * -(-n // bn)
    if blocks == 0:  # an empty product: nothing to cut
        return 1
    splits = max(1, min(k // MIN_PART, -(-TARGET_BLOCKS // blocks), MAX_GRID_Z // batches))
    return max(1, -(-k // part_length(k, splits)))


@jit(cache=True)
def add_parts_kernel(parts, splits, m, n, c, c_bs, c_rs, c_cs, bias, bias_mode):
    """c[z][i, j] = sum over p of parts[z * splits + p][i, j], p in order, plus the row or column bias.

    parts: flat ``(batches * splits, m, n)``; one thread per output (i, j), grid (blocks, batches):
    neighbouring threads read neighbouring elements of each part."""
    e = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    z = cuda.blockIdx.y
    if e < m * n:
        plane = m * n
        first = z * splits * plane + e
        total = parts[first]
        for p in range(1, splits):
            total += parts[first + p * plane]
        i = e // n
        j = e % n
        if bias_mode == BIAS_ROW:
            total += bias[i]
        elif bias_mode == BIAS_COL:
            total += bias[j]
        c[numba.uint64(z * c_bs + i * c_rs + j * c_cs)] = total


def _autotune(launch, candidates):
    """The fastest of the candidate tiles for one product: each is run once (compiling it), then timed twice.

    ``launch(tile)`` runs the product with that tile; it must overwrite its output (not accumulate).
    """
    best_tile, best_time = None, float("inf")
    for tile in candidates:
        launch(tile)
        cuda.synchronize()
        start = time.perf_counter()
        for _ in range(2):
            launch(tile)
        cuda.synchronize()
        elapsed = time.perf_counter() - start
        if elapsed < best_time:
            best_tile, best_time = tile, elapsed
    return best_tile


def launch_autotuned(key, default, candidates, launch):
    """Run ``launch(tile)`` with the tile chosen for this product shape (`key`, hashable): on a GPU the
    first call of each key times every candidate and keeps the fastest, in the simulator `default` is used."""
    tile = _chosen_tiles.get(key)
    if tile is None:
        tile = _chosen_tiles[key] = _autotune(launch, candidates) if AUTOTUNE else default
    launch(tile)


def gemm_launch(a, b, c, m, n, k, a_strides, b_strides, c_strides, batches=1, bias=None, bias_mode=BIAS_NONE):
    """Launch ``C[z] = A[z] @ B[z] (+ bias)`` for ``z < batches`` on flat device arrays.

    Args:
        a, b, c: device arrays of one float dtype, read and written through their flat views.
        m, n, k: C[z] is ``m x n``; the product sums over ``k``.
        a_strides, b_strides, c_strides: ``(batch, row, column)`` strides in elements.
        batches: how many independent products (grid z).
        bias: optional device array added per row (``bias_mode=BIAS_ROW``, length m) or per column
            (``BIAS_COL``, length n).
        bias_mode: also BIAS_GRAD (no `bias`): the row sums of A[z] follow C[z]'s elements, at
            ``c[z * c_strides[0] + m * n + i]``; C[z] must then be row-major (``c_strides[1:] == (n, 1)``).

    Long sums of products with few output tiles are cut into parts (`reduction_splits`) computed side
    by side and added afterwards (`add_parts_kernel`).
    """
    bias_grad = bias_mode == BIAS_GRAD
    if bias_grad and (bias is not None or tuple(c_strides[1:]) != (n, 1)):
        raise InvalidArgumentError(f"a bias gradient needs no bias and a row-major C (strides (., {n}, 1)), got {c_strides}")
    n_out = n + 1 if bias_grad else n  # the kernel's columns: B's, and the column of ones
    if m == 0 or n_out == 0 or batches == 0:
        return c
    if batches > 65535:
        raise InvalidArgumentError(f"at most 65535 batched products per launch, got {batches}")
    if bias is None and not bias_grad:
        bias_mode = BIAS_NONE
    tm, tn = tile_shape(m, n_out)
    splits = reduction_splits(batches, m, n_out, k, TY * tm, TX * tn)
    bias_flat = flat(bias) if bias is not None else scratch("no_bias", (1,), c.dtype)  # not read
    key = ("gemm", m, n_out, k, batches, splits, np.dtype(c.dtype).str, a_strides[2] == 1, b_strides[2] == 1, bias_grad)
    if splits == 1:
        out, out_strides, out_bias = flat(c), c_strides, bias_mode
    else:  # the parts' products go to a work buffer, without a bias (with the bias gradient's sums)
        plane = m * n_out  # what each part holds: C's elements (and the m sums)
        out = scratch("gemm_parts", (batches * splits * plane,), c.dtype)
        out_strides, out_bias = (plane, n, 1), BIAS_GRAD if bias_grad else BIAS_NONE
    args = (flat(a), flat(b), out, bias_flat, m, n_out, k, a_strides, b_strides, out_strides, batches, out_bias, splits)
    threads = SIMULATOR_THREADS if simulated() else (TY, TX)
    launch_autotuned(key, (tm, tn), tile_candidates(m, n_out), lambda tile: _launch(tile, *args, threads=threads))
    if splits > 1 and bias_grad:  # each product's m*n + m values, contiguous in the parts and in c
        add_parts_kernel[(blocks_for(plane), batches), THREADS](out, splits, 1, plane, flat(c), c_strides[0], 0, 1, bias_flat, BIAS_NONE)
    elif splits > 1:  # their sum, in part order, into c with the bias
        add_parts_kernel[(blocks_for(m * n), batches), THREADS](out, splits, m, n, flat(c), *c_strides, bias_flat, bias_mode)
    return c


@on_device
def matmul(a, b, *, transpose_a=False, transpose_b=False, out=None):
    """``op(a) @ op(b)`` of two C-contiguous 2-D device arrays, ``op`` an optional transpose.

    Args:
        a: ``(m, k)`` device array (``(k, m)`` with ``transpose_a``).
        b: ``(k, n)`` device array (``(n, k)`` with ``transpose_b``).
        out: optional ``(m, n)`` device array to write into.

    Returns:
        ``(m, n)`` device array of a's dtype.
    """
    m, ka = (a.shape[1], a.shape[0]) if transpose_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if transpose_b else b.shape
    if ka != kb:
        raise InvalidArgumentError(f"matmul: inner dimensions differ ({ka} and {kb})")
    if out is None:
        out = empty((m, n), a.dtype)
    a_strides = (0, 1, a.shape[1]) if transpose_a else (0, a.shape[1], 1)
    b_strides = (0, 1, b.shape[1]) if transpose_b else (0, b.shape[1], 1)
    return gemm_launch(a, b, out, m, n, ka, a_strides, b_strides, (0, n, 1))


def compile_signatures():
    """``(name, kernel, argument types)`` for every float32 GEMM kernel the library launches (for compile_ptx)."""
    out = []
    for dtype in (np.float32,):
        arr = _NUMBA_TYPES[np.dtype(dtype)][::1]
        i64 = numba.int64
        sig = (arr, arr, arr, arr) + (i64,) * 15
        for tm in (1, 2, 4, 8):
            for tn in (4, 8):
                out.append((f"gemm_{tm}x{tn}_{np.dtype(dtype).name}", gemm_kernel(tm, tn, dtype), sig))
        out.append((f"add_parts_{np.dtype(dtype).name}", add_parts_kernel, (arr, i64, i64, i64, arr) + (i64,) * 3 + (arr, i64)))
    return out
