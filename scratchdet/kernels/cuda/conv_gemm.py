"""Implicit-GEMM convolution: the tiled GEMM of `gemm.py` reading its column matrix straight from the image.

A convolution is ``Y[n] = W @ cols[n]``, where ``cols[n]`` is the im2col matrix of image n
(Chellapilla, Puri and Simard 2006): row ``(c, i, j)``, column ``(oy, ox)`` holds
``x[n, c, oy*s - p + i, ox*s - p + j]`` (zero in the padding). Writing ``cols`` out moves 9 times the
input through memory twice; an *implicit* GEMM never does: when a block stages its ``BK x BN`` tile
of the column matrix in shared memory, each thread computes which pixel of ``x`` an element is and
loads it from there (as cuDNN's ``IMPLICIT_GEMM`` algorithm does; Chetlur et al. 2014, section 4).
The three products of a convolution layer are all of this form:

    forward        Y[n]  (K, H'W')  = W    (K, C kh kw)  @ cols[n]   (C kh kw, H'W')    + b
    filter grad    dW_n  (K, C kh kw) = dY[n] (K, H'W')  @ cols[n]^T (H'W', C kh kw)
    input grad     dX[n] (C, HW)    = W~   (C, K kh kw)  @ dcols[n]  (K kh kw, HW)

where ``W~[c, (k, i, j)] = W[k, c, i, j]`` and ``dcols[n][(k, i, j), (y, x)]`` is the ``dY[n, k, oy, ox]``
of the output pixel that read ``x[y, x]`` through tap ``(i, j)`` (``oy*s - p + i = y``), or 0 where no
output pixel did: the input gradient is the "full" correlation of dY with the flipped filters
(for stride 1), i.e. the adjoint of im2col folded into the product, so every stride works.

The A operand (W, dY or W~) is a dense row-major matrix; only the B operand is virtual. Everything
else -- tiles, register blocking, prefetching, autotuning -- is `gemm.py`'s kernel, line for line.
"""

import functools

import numba
import numpy as np
from numba import cuda

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda import gemm
from scratchdet.kernels.cuda.common import flat
from scratchdet.kernels.cuda.gemm import BIAS_NONE, BK, TX, TY

# Which product of a convolution layer a kernel computes (see the module docstring).
FORWARD = 0
FILTER_GRAD = 1
INPUT_GRAD = 2
PRODUCT_NAMES = {FORWARD: "forward", FILTER_GRAD: "filter_grad", INPUT_GRAD: "input_grad"}

_NUMBA_TYPES = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}


# ---------------------------------------------------------------------------------------------------
# The index arithmetic of one element of the column matrix, written as the math
# ---------------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def input_position(o, i, stride, padding):
    """The input row (or column) that output row o reads through kernel tap i: ``o*stride - padding + i``.

    So ``cols[(c, i, j), (oy, ox)] = x[n, c, input_position(oy, i), input_position(ox, j)]``, zero when
    that position lies in the padding (outside ``[0, H)`` or ``[0, W)``).
    """
    return o * stride - padding + i


@cuda.jit(device=True)
def output_position(y, i, stride, padding):
    """The inverse of `input_position`: the output row that read input row y through tap i, or -1 if none.

    ``oy*stride - padding + i = y``  =>  ``oy = (y + padding - i) / stride``, when that is a whole
    number >= 0 (the caller checks ``oy < H'``).
    """
    t = y + padding - i
    if t < 0:
        return -1
    if stride == 1:
        return t
    if t % stride != 0:
        return -1
    return t // stride


@cuda.jit(device=True)
def inside(a, row, col):
    """Whether (row, col) is a pixel of the (N, C, H, W) array a, not padding."""
    return 0 <= row < a.shape[2] and 0 <= col < a.shape[3]


@cuda.jit(device=True)
def next_tap(c, i, j, steps, kh, kw):
    """(c, i, j) moved `steps` rows further down the column matrix, whose rows run c, i, j (j fastest).

    A thread stages the same row of every BK-deep tile, so it walks its row index by BK each round;
    walking replaces the divisions ``c = r // (kh*kw)`` etc. in the inner loop.
    """
    j += steps
    while j >= kw:
        j -= kw
        i += 1
    while i >= kh:
        i -= kh
        c += 1
    return c, i, j


@cuda.jit(device=True)
def next_pixel(oy, ox, steps, width):
    """(oy, ox) moved `steps` pixels further in row-major order across an image `width` pixels wide."""
    ox += steps
    while ox >= width:
        ox -= width
        oy += 1
    return oy, ox


# ---------------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def conv_gemm_kernel(tile, dtype, product):
    """The implicit-GEMM kernel for one product of a convolution.

    Args:
        tile: ``(ty, tx, tm, tn)``: blocks of ``ty x tx`` threads, each owning ``tm x tn`` outputs, as in
            `gemm.gemm_kernel` (16 x 16 threads there); a block computes a ``ty*tm x tx*tn`` tile of c.
        dtype: ``np.float32`` or ``np.float64``.
        product: FORWARD, FILTER_GRAD or INPUT_GRAD.

    Returns:
        a kernel ``conv_gemm(a, src, c, bias, m, n, k, a_bs, a_rs, c_bs, c_rs, bias_mode, kh, kw,
        stride, padding, cols_w)``: ``c[z] (m, n) = a[z] (m, k) @ B[z] (k, n)`` (+ bias per row),
        over the flat row-major arrays a and c (batch strides a_bs, c_bs; row strides a_rs, c_rs), and
        the 4-D array ``src`` (x, or dY for INPUT_GRAD) that B is read from. ``cols_w`` is the width
        of the image whose pixels index B's columns (H' W' grid for FORWARD, the input's for INPUT_GRAD)
        or rows (FILTER_GRAD). Grid: (column blocks, row blocks, images); block (tx, ty).
    """
    ty_count, tx_count, tm, tn = tile
    bm = ty_count * tm
    bn = tx_count * tn
    nt = ty_count * tx_count
    if nt % bn or BK * bn < nt:
        raise InvalidArgumentError(f"a B tile of {BK} x {bn} cannot be staged evenly by {nt} threads")
    a_elems = bm * BK
    a_per_thread = (a_elems + nt - 1) // nt
    b_per_thread = BK * bn // nt
    rows_apart = nt // bn  # a thread stages B rows kk0, kk0 + rows_apart, ... of each tile, all in one column
    a_tile_shape = (BK, bm + 1)
    b_tile_shape = (BK, bn + 1)
    ntype = _NUMBA_TYPES[np.dtype(dtype)]
    zero = np.dtype(dtype).type(0)  # a constant of the element type (a bare 0.0 would be a float64)
    int64 = numba.int64

    @cuda.jit
    def conv_gemm(a, src, c, bias, m, n, k, a_bs, a_rs, c_bs, c_rs, bias_mode, kh, kw, stride, padding, cols_w):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * tx_count + tx
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        z = cuda.blockIdx.z  # the image
        a0 = z * a_bs
        a_tile = cuda.shared.array(a_tile_shape, ntype)
        b_tile = cuda.shared.array(b_tile_shape, ntype)
        a_next = cuda.local.array(a_per_thread, ntype)
        b_next = cuda.local.array(b_per_thread, ntype)
        acc = cuda.local.array((tm, tn), ntype)
        a_reg = cuda.local.array(tm, ntype)
        b_reg = cuda.local.array(tn, ntype)
        # where along B's summed dimension this thread's staged elements are: (c, i, j) taps for
        # FORWARD / INPUT_GRAD, (unused, oy, ox) pixels for FILTER_GRAD
        walk_c = cuda.local.array(b_per_thread, int64)
        walk_i = cuda.local.array(b_per_thread, int64)
        walk_j = cuda.local.array(b_per_thread, int64)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0

        # 0. the one column of B this thread stages, and the first row of each of its elements
        cc = tid % bn
        gj = col0 + cc
        kk0 = tid // bn
        if product == FILTER_GRAD:
            # B[(oy, ox), (c, i, j)] = cols[(c, i, j), (oy, ox)]: the column is a filter tap
            tap_c = gj // (kh * kw)
            tap_i = (gj // kw) % kh
            tap_j = gj % kw
            for step in range(b_per_thread):
                r = kk0 + step * rows_apart
                walk_i[step] = r // cols_w
                walk_j[step] = r % cols_w
        else:
            # the column is an output pixel (FORWARD) or an input pixel (INPUT_GRAD)
            py = gj // cols_w
            px = gj % cols_w
            for step in range(b_per_thread):
                r = kk0 + step * rows_apart
                walk_c[step] = r // (kh * kw)
                walk_i[step] = (r // kw) % kh
                walk_j[step] = r % kw

        for k0 in range(-BK, k, BK):
            # 1. fetch this thread's elements of the tiles at k0 + BK into registers (in flight
            #    while step 2 multiplies the tiles at k0)
            k1 = k0 + BK
            if k1 < k:
                for step in range(a_per_thread):
                    e = tid + step * nt
                    if e < a_elems:
                        gi = row0 + e // BK
                        gk = k1 + e % BK
                        a_next[step] = a[a0 + gi * a_rs + gk] if gi < m and gk < k else zero
                for step in range(b_per_thread):
                    gk = k1 + kk0 + step * rows_apart
                    value = zero
                    if gk < k and gj < n:
                        if product == FORWARD:
                            # cols[(c, i, j), (oy, ox)] = x[n, c, oy*s - p + i, ox*s - p + j]
                            yy = input_position(py, walk_i[step], stride, padding)
                            xx = input_position(px, walk_j[step], stride, padding)
                            if inside(src, yy, xx):
                                value = src[z, walk_c[step], yy, xx]
                        elif product == FILTER_GRAD:
                            # cols[(c, i, j), (oy, ox)] again, walking the pixel (oy, ox)
                            yy = input_position(walk_i[step], tap_i, stride, padding)
                            xx = input_position(walk_j[step], tap_j, stride, padding)
                            if inside(src, yy, xx):
                                value = src[z, tap_c, yy, xx]
                        else:
                            # dcols[(k, i, j), (y, x)] = dY[n, k, oy, ox] with oy*s - p + i = y
                            oy = output_position(py, walk_i[step], stride, padding)
                            ox = output_position(px, walk_j[step], stride, padding)
                            if inside(src, oy, ox):
                                value = src[z, walk_c[step], oy, ox]
                    b_next[step] = value
                    # move to this element's row of the next tile, BK rows down
                    if product == FILTER_GRAD:
                        walk_i[step], walk_j[step] = next_pixel(walk_i[step], walk_j[step], BK, cols_w)
                    else:
                        walk_c[step], walk_i[step], walk_j[step] = next_tap(
                            walk_c[step], walk_i[step], walk_j[step], BK, kh, kw
                        )
            # 2. multiply the tiles in shared memory (none before the first tile arrives)
            if k0 >= 0:
                # (a while loop: the compiler proves kk >= 0 and unrolls it, where a range() loop
                # keeps Numba's negative-index test on every shared-memory load)
                kk = 0
                while kk < BK:
                    for i in range(tm):
                        a_reg[i] = a_tile[kk, ty + ty_count * i]
                    for j in range(tn):
                        b_reg[j] = b_tile[kk, tx + tx_count * j]
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
                        a_tile[e % BK, e // BK] = a_next[step]
                for step in range(b_per_thread):
                    b_tile[kk0 + step * rows_apart, cc] = b_next[step]
            cuda.syncthreads()

        # 4. write the thread's outputs, adding the bias of the row (the filter)
        c0 = z * c_bs
        for i in range(tm):
            gi = row0 + ty + ty_count * i
            if gi < m:
                for j in range(tn):
                    gj = col0 + tx + tx_count * j
                    if gj < n:
                        value = acc[i, j]
                        if bias_mode == gemm.BIAS_ROW:
                            value += bias[gi]
                        c[c0 + gi * c_rs + gj] = value

    return conv_gemm


def tile_candidates(m, n):
    """The ``(ty, tx, tm, tn)`` tiles autotuning tries: `gemm.tile_candidates` on 16 x 16 threads, plus a
    flat 4 x 64 block when c has few rows (the input gradient of an RGB layer: m = 3) and a narrow
    32 x 8 block when it has few columns (that layer's filter gradient: n = 3*3*3 = 27), which would
    otherwise leave most of a 16-row or 64-column tile idle."""
    out = [(TY, TX, tm, tn) for tm, tn in gemm.tile_candidates(m, n)]
    if m <= 8:
        out.append((4, 64, 1, 4))
    if n <= 32:
        out.append((32, 8, 1, 4))
    return out


def default_tile(m, n):
    """The tile used without autotuning (in the simulator): `gemm.tile_shape` on 16 x 16 threads."""
    return (TY, TX, *gemm.tile_shape(m, n))


def conv_gemm_launch(product, a, src, c, m, n, k, a_strides, c_strides, geometry, bias=None, tile=None):
    """Launch ``c[z] = a[z] @ B[z] (+ bias per row)`` for every image z of `src`; returns c.

    Args:
        product: FORWARD, FILTER_GRAD or INPUT_GRAD.
        a: device array read as row-major (m, k) matrices, batch stride ``a_strides[0]`` (0: shared),
            row stride ``a_strides[1]``.
        src: (N, C, H, W) device array B is read from (x, or dY for INPUT_GRAD).
        c: device array written as row-major (m, n) matrices with ``c_strides`` (batch, row).
        geometry: ``(kh, kw, stride, padding, cols_w)``.
        bias: optional (m,) device array added per row.
        tile: ``(ty, tx, tm, tn)`` to use; by default the autotuned one (`tile_candidates`).
    """
    batches = src.shape[0]
    if m == 0 or n == 0 or batches == 0:
        return c
    if batches > 65535:
        raise InvalidArgumentError(f"at most 65535 images per launch, got {batches}")
    kh, kw, stride, padding, cols_w = (int(v) for v in geometry)
    bias_mode = gemm.BIAS_ROW if bias is not None else BIAS_NONE
    bias_flat = flat(bias) if bias is not None else flat(c)[:1]
    a_flat, c_flat = flat(a), flat(c)

    def launch(tile):
        ty_count, tx_count, tm, tn = tile
        kernel = conv_gemm_kernel(tile, np.dtype(c.dtype), product)
        grid = ((n + tx_count * tn - 1) // (tx_count * tn), (m + ty_count * tm - 1) // (ty_count * tm), batches)
        kernel[grid, (tx_count, ty_count)](
            a_flat, src, c_flat, bias_flat, m, n, k, a_strides[0], a_strides[1], c_strides[0], c_strides[1],
            bias_mode, kh, kw, stride, padding, cols_w,
        )

    key = (PRODUCT_NAMES[product], m, n, k, batches, np.dtype(c.dtype).str, kh, kw, stride, padding, cols_w)
    if tile is not None:
        launch(tile)
    else:
        gemm.launch_autotuned(key, default_tile(m, n), tile_candidates(m, n), launch)
    return c


def compile_signatures():
    """``(name, kernel, argument types)`` for the float32 implicit-GEMM kernels (for compile_ptx):
    every product with every tile the autotuner may pick (`tile_candidates` of small and large m, n)."""
    ft = numba.float32
    i64 = numba.int64
    out = []
    for product, name in PRODUCT_NAMES.items():
        sig = (ft[::1], ft[:, :, :, ::1], ft[::1], ft[::1]) + (i64,) * 13
        tiles = sorted({tile for m, n in ((3, 27), (16, 100), (64, 1000), (128, 1000)) for tile in tile_candidates(m, n)})
        for tile in tiles:
            label = "x".join(map(str, tile))
            out.append((f"conv_gemm_{name}_{label}_float32", conv_gemm_kernel(tile, np.float32, product), sig))
    return out
