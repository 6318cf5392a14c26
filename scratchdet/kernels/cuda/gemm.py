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

Matrices are described by strides, as in cuBLAS's ``gemmStridedBatched``: element ``(i, k)`` of
batch ``z`` of A lives at ``a[z * a_bs + i * a_rs + k * a_cs]`` of the flat array ``a``. So a
transposed operand or a row of images is a choice of strides, never a copy. Convolutions use the
same kernel with a virtual B operand (`conv_gemm`).
"""

import functools
import time

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import simulated
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import empty, flat

# Block shape: 16 x 16 = 256 threads; the depth of one staged tile along the summed dimension.
TY = 16
TX = 16
BK = 8

# Where the optional bias is added: nowhere, once per output row, or once per output column.
BIAS_NONE = 0
BIAS_ROW = 1
BIAS_COL = 2

_NUMBA_TYPES = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}


@functools.lru_cache(maxsize=None)
def gemm_kernel(tm, tn, dtype):
    """The tiled GEMM kernel whose threads each own a ``tm x tn`` block of outputs.

    Args:
        tm, tn: rows and columns of outputs per thread (1, 2, 4 or 8; 4 or 8); a block covers a
            ``16*tm x 16*tn`` tile of C.
        dtype: ``np.float32`` or ``np.float64``, the element type of A, B, C and the bias.

    Returns:
        a ``numba.cuda`` kernel ``gemm(a, b, c, bias, m, n, k, a_bs, a_rs, a_cs, b_bs, b_rs, b_cs,
        c_bs, c_rs, c_cs, bias_mode)`` over flat 1-D arrays, launched with ``gemm_launch``.
    """
    bm = TY * tm
    bn = TX * tn
    nt = TY * TX
    a_elems = bm * BK  # elements of one A tile
    b_elems = BK * bn
    a_per_thread = (a_elems + nt - 1) // nt  # how many each thread stages
    b_per_thread = (b_elems + nt - 1) // nt
    # One padding column keeps threads that stage down a column on different memory banks.
    a_tile_shape = (BK, bm + 1)
    b_tile_shape = (BK, bn + 1)
    ntype = _NUMBA_TYPES[np.dtype(dtype)]
    zero = np.dtype(dtype).type(0)  # a constant of the element type (a bare 0 would make the load a float64)

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

    @cuda.jit
    def gemm(a, b, c, bias, m, n, k, a_bs, a_rs, a_cs, b_bs, b_rs, b_cs, c_bs, c_rs, c_cs, bias_mode):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * TX + tx
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        a0 = cuda.blockIdx.z * a_bs
        b0 = cuda.blockIdx.z * b_bs
        a_tile = cuda.shared.array(a_tile_shape, ntype)
        b_tile = cuda.shared.array(b_tile_shape, ntype)
        a_next = cuda.local.array(a_per_thread, ntype)  # the next tiles, fetched ahead into registers
        b_next = cuda.local.array(b_per_thread, ntype)
        acc = cuda.local.array((tm, tn), ntype)
        a_reg = cuda.local.array(tm, ntype)
        b_reg = cuda.local.array(tn, ntype)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0

        for k0 in range(-BK, k, BK):
            # 1. fetch this thread's elements of the tiles at k0 + BK from global memory into
            #    registers: the loads are in flight while step 3 multiplies the tiles at k0
            k1 = k0 + BK
            if k1 < k:
                for step in range(a_per_thread):
                    e = tid + step * nt
                    if e < a_elems:
                        r, kk = a_slot(e, a_cs)
                        gi = row0 + r
                        gk = k1 + kk
                        a_next[step] = a[a0 + gi * a_rs + gk * a_cs] if gi < m and gk < k else zero
                for step in range(b_per_thread):
                    e = tid + step * nt
                    if e < b_elems:
                        kk, cc = b_slot(e, b_cs)
                        gj = col0 + cc
                        gk = k1 + kk
                        b_next[step] = b[b0 + gk * b_rs + gj * b_cs] if gj < n and gk < k else zero
            # 2. multiply the tiles in shared memory: thread (ty, tx) owns rows ty + 16 i and
            #    columns tx + 16 j of the output tile (none before the first tile arrives)
            if k0 >= 0:
                # (a while loop: the compiler proves kk >= 0 and unrolls it, where a range() loop
                # keeps Numba's negative-index test on every shared-memory load)
                kk = 0
                while kk < BK:
                    for i in range(tm):
                        a_reg[i] = a_tile[kk, ty + TY * i]
                    for j in range(tn):
                        b_reg[j] = b_tile[kk, tx + TX * j]
                    for i in range(tm):
                        for j in range(tn):
                            acc[i, j] += a_reg[i] * b_reg[j]
                    kk += 1
            cuda.syncthreads()
            # 3. store the fetched tiles into shared memory for the next round
            if k1 < k:
                for step in range(a_per_thread):
                    e = tid + step * nt
                    if e < a_elems:
                        r, kk = a_slot(e, a_cs)
                        a_tile[kk, r] = a_next[step]
                for step in range(b_per_thread):
                    e = tid + step * nt
                    if e < b_elems:
                        kk, cc = b_slot(e, b_cs)
                        b_tile[kk, cc] = b_next[step]
            cuda.syncthreads()

        # 4. write the thread's outputs, adding the bias of the row or column
        c0 = cuda.blockIdx.z * c_bs
        for i in range(tm):
            gi = row0 + ty + TY * i
            if gi < m:
                for j in range(tn):
                    gj = col0 + tx + TX * j
                    if gj < n:
                        value = acc[i, j]
                        if bias_mode == BIAS_ROW:
                            value += bias[gi]
                        elif bias_mode == BIAS_COL:
                            value += bias[gj]
                        c[c0 + gi * c_rs + gj * c_cs] = value

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


def _launch(tile, a, b, c, bias, m, n, k, a_strides, b_strides, c_strides, batches, bias_mode):
    tm, tn = tile
    kernel = gemm_kernel(tm, tn, np.dtype(c.dtype))
    grid = ((n + TX * tn - 1) // (TX * tn), (m + TY * tm - 1) // (TY * tm), batches)
    kernel[grid, (TX, TY)](a, b, c, bias, m, n, k, *a_strides, *b_strides, *c_strides, bias_mode)


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
    """
    if m == 0 or n == 0 or batches == 0:
        return c
    if batches > 65535:
        raise InvalidArgumentError(f"at most 65535 batched products per launch, got {batches}")
    if bias is None:
        bias_mode = BIAS_NONE
    args = (
        flat(a), flat(b), flat(c), flat(bias) if bias is not None else flat(c)[:1],
        m, n, k, a_strides, b_strides, c_strides, batches, bias_mode,
    )
    key = ("gemm", m, n, k, batches, np.dtype(c.dtype).str, a_strides[2] == 1, b_strides[2] == 1)
    launch_autotuned(key, tile_shape(m, n), tile_candidates(m, n), lambda tile: _launch(tile, *args))
    return c


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
        sig = (arr, arr, arr, arr) + (i64,) * 13
        for tm in (1, 2, 4, 8):
            for tn in (4, 8):
                out.append((f"gemm_{tm}x{tn}_{np.dtype(dtype).name}", gemm_kernel(tm, tn, dtype), sig))
    return out
