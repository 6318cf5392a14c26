"""Implicit-GEMM convolution: a tiled GEMM reading its column matrix straight from the image.

A convolution is ``Y[n] = W @ cols[n]``, where ``cols[n]`` is the im2col matrix of image n
(Chellapilla, Puri and Simard 2006): row ``(c, i, j)``, column ``(oy, ox)`` holds
``x[n, c, oy*s - p + i, ox*s - p + j]`` (zero in the padding). Writing ``cols`` out moves 9 times the
input through memory twice; an *implicit* GEMM never does: when a block stages its ``BK x BN`` tile
of the column matrix in shared memory, each thread computes which pixel of ``x`` an element is and
loads it from there (as cuDNN's ``IMPLICIT_GEMM`` algorithm does; Chetlur et al. 2014, section 4).
The three products of a convolution layer are all of this form:

    forward        Y[n]  (K, H'W') = W     (K, C kh kw) @ cols[n]   (C kh kw, H'W')    + b
    filter grad    dW_n  (K, C kh kw) = dY[n] (K, H'W') @ cols[n]^T (H'W', C kh kw)
    input grad     dX[n] (C, HW)   = W~    (C, K kh kw) @ dcols[n]  (K kh kw, HW)

(the filter gradient's product also sums each row of dY[n], the bias gradient db_n, through a column of
ones appended to cols[n]^T: `gemm.BIAS_GRAD`; dW_n and db_n then take one sum over the images together)

where ``W~[c, (k, i, j)] = W[k, c, i, j]`` and ``dcols[n][(k, i, j), (y, x)]`` is the ``dY[n, k, oy, ox]``
of the output pixel that read ``x[y, x]`` through tap ``(i, j)`` (``oy*s - p + i = y``), or 0 where no
output pixel did: the input gradient is the "full" correlation of dY with the flipped filters
(for stride 1), i.e. the adjoint of im2col folded into the product, so every stride works.

Where an element of the virtual matrix B lives is an *outer sum*. The pixel of
``cols[(c, i, j), (oy, ox)]`` is ``c*H*W + (oy*s - p + i)*W + (ox*s - p + j)``: a part that depends only
on the row, ``c*H*W + i*W + j``, plus a part that depends only on the column, ``(oy*s - p)*W + ox*s - p``;
and it is padding exactly when the row's ``i`` plus the column's ``oy*s - p`` falls outside
``[0, H)`` (or ``j + ox*s - p`` outside ``[0, W)``). So each product gets two small tables,
``(offset, y, x)`` per row of B and per column of B (`offset_tables`, built on the device once per
layer shape). A thread stages one column of B, whose entry it reads once; each element is then three
reads of the row's entry (cached: every thread of the block reads the same few), three additions, a
bounds test and one load, with no division in the loop. The filter gradient's B is cols transposed (the tables swap roles) and the input
gradient's is dcols, whose tables hold the negated taps (``oy = y + p - i``); for a stride above 1 the
adjoint also needs ``y + p - i`` to be a multiple of the stride, the one case that divides.

The A operand (W, dY or W~) is a dense row-major matrix. Tiles, register blocking, prefetching and
the inner loop (`gemm.tile_multiply`, 16-byte shared-memory loads) are `gemm.py`'s. Against the
earlier kernel, which walked each staged element's (c, i, j) with divisions and loops, the sm_90
machine code of a 16 x 16 x 4 x 4 tile's loop went from 453 to 268 instructions per 128
multiply-adds, and its registers from 80 to 63 (ptxas and cuobjdump). Timed on an H200
(benchmarks/GPU_RESULTS.md, run 3 against run 2), the three products of 256x32x32x32 -> 64 went from
1.04, 1.11 and 1.58 ms to 0.56, 0.71 and 0.73 ms.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import simulated
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda import gemm
from scratchdet.kernels.cuda.common import empty, flat, launch_1d, scratch
from scratchdet.kernels.cuda.gemm import BIAS_GRAD, BIAS_NONE, BK, SHARED_ALIGNMENT, TX, TY, VECTOR, owned, part_length
from scratchdet.kernels.cuda.launch import jit

# Which product of a convolution layer a kernel computes (see the module docstring).
FORWARD = 0
FILTER_GRAD = 1
INPUT_GRAD = 2
PRODUCT_NAMES = {FORWARD: "forward", FILTER_GRAD: "filter_grad", INPUT_GRAD: "input_grad"}

_NUMBA_TYPES = {np.dtype(np.float32): numba.float32, np.dtype(np.float64): numba.float64}
# Offsets into one image (or one dY) must fit the int32 tables.
_INT32_MAX = np.iinfo(np.int32).max


# ---------------------------------------------------------------------------------------------------
# Where each element of B is: the offset tables
# ---------------------------------------------------------------------------------------------------


@jit(cache=True)
def tap_table_kernel(table, kh, kw, plane, width, sign, shift, with_offset):
    """table[:, e] = (offset, y, x) of filter tap e = (c, i, j) (j fastest, im2col's row order):
    ``y = sign*i + shift``, ``x = sign*j + shift``, ``offset = c*plane + y*width + x`` (``c*plane`` alone
    when not `with_offset`: the strided adjoint adds the pixel itself)."""
    e = cuda.grid(1)
    if e < table.shape[1]:
        c = e // (kh * kw)
        y = sign * ((e // kw) % kh) + shift
        x = sign * (e % kw) + shift
        table[0, e] = c * plane + (y * width + x if with_offset else 0)
        table[1, e] = y
        table[2, e] = x


@jit(cache=True)
def pixel_table_kernel(table, grid_w, step, shift, width, with_offset):
    """table[:, e] = (offset, y, x) of pixel e = (py, px) of a grid grid_w wide (row-major):
    ``y = py*step + shift``, ``x = px*step + shift``, ``offset = y*width + x`` (0 when not `with_offset`)."""
    e = cuda.grid(1)
    if e < table.shape[1]:
        y = (e // grid_w) * step + shift
        x = (e % grid_w) * step + shift
        table[0, e] = y * width + x if with_offset else 0
        table[1, e] = y
        table[2, e] = x


def _tap_table(count, kh, kw, plane, width, sign, shift, with_offset=True):
    table = empty((3, count), np.int32)
    tap_table_kernel[launch_1d(count)](table, kh, kw, plane, width, sign, shift, with_offset)
    return table


def _pixel_table(count, grid_w, step, shift, width, with_offset=True):
    table = empty((3, count), np.int32)
    pixel_table_kernel[launch_1d(count)](table, grid_w, step, shift, width, with_offset)
    return table


def offset_tables(product, src_shape, geometry, k, n):
    """The row and column tables of the virtual B operand of one product (see the module docstring).

    ``B[r, col]`` of image z is ``src[z].flat[rows[0, r] + cols[0, col]]`` when ``0 <= rows[1, r] + cols[1, col]
    < src_h`` and ``0 <= rows[2, r] + cols[2, col] < src_w``, and 0 otherwise. For the input gradient of
    a strided convolution the sums ``t`` of the y and x parts must also be multiples of the stride, and
    the element is ``src[z].flat[rows[0, r] + (t_y / s) * src_w + t_x / s]`` (``cols[0]`` is 0).
    Built on the device by two small kernels: a training step copies nothing from the host.

    Args:
        product: FORWARD, FILTER_GRAD or INPUT_GRAD.
        src_shape: shape of the 4-D array B is read from, (N, C, H, W) x or (N, K, H', W') dY.
        geometry: ``(kh, kw, stride, padding, cols_w)`` as `conv_gemm_launch` takes it.
        k, n: B is ``k x n``.

    Returns:
        ``(rows (3, k), cols (3, n))`` int32 device arrays: offsets, y parts, x parts.
    """
    channels, src_h, src_w = src_shape[1:]
    kh, kw, stride, padding, cols_w = geometry
    plane = src_h * src_w
    taps = channels * kh * kw
    # the filter gradient's rows are pixels and its columns taps; the other two products the reverse
    expected = (cols_w * (k // cols_w), taps) if product == FILTER_GRAD else (taps, cols_w * (n // cols_w))
    if product not in PRODUCT_NAMES:
        raise InvalidArgumentError(f"unknown product {product!r}")
    if expected != (k, n):
        raise InvalidArgumentError(f"B is {k} x {n} but the geometry {geometry} of {tuple(src_shape)} gives {expected[0]} x {expected[1]}")
    reach = channels * plane + (max(src_h, src_w) + max(kh, kw) + padding) * (src_w + 1)
    if reach > _INT32_MAX:
        raise InvalidArgumentError(f"an image of {tuple(src_shape[1:])} elements is too large for 32-bit offsets")
    if product == FORWARD:
        # rows: filter taps (c, i, j); columns: output pixels, the window's top-left corner
        return _tap_table(k, kh, kw, plane, src_w, 1, 0), _pixel_table(n, cols_w, stride, -padding, src_w)
    if product == FILTER_GRAD:
        # B = cols^T: rows are output pixels, columns are taps (the padding goes with the taps)
        return _pixel_table(k, cols_w, stride, 0, src_w), _tap_table(n, kh, kw, plane, src_w, 1, -padding)
    # INPUT_GRAD: rows are taps (k, i, j) negated, columns input pixels (y, x) shifted by the padding; src
    # is dY, and the output pixel that read (y, x) through tap (i, j) is ((y + p - i) / s, (x + p - j) / s)
    unit = stride == 1
    return (
        _tap_table(k, kh, kw, plane, src_w, -1, 0, with_offset=unit),
        _pixel_table(n, cols_w, 1, padding, src_w, with_offset=unit),
    )


_tables = {}


def device_tables(product, src_shape, geometry, k, n):
    """`offset_tables`, built once per layer shape (like an autotuned tile) and kept."""
    key = (product, tuple(src_shape[1:]), tuple(geometry), k, n)
    tables = _tables.get(key)
    if tables is None:
        tables = _tables[key] = offset_tables(product, src_shape, geometry, k, n)
    return tables


# ---------------------------------------------------------------------------------------------------
# The kernel
# ---------------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def conv_gemm_kernel(tile, dtype, strided_adjoint=False):
    """The implicit-GEMM kernel for one tile shape (any of the three products: the tables tell which).

    Args:
        tile: ``(ty, tx, tm, tn)``: blocks of ``ty x tx`` threads, each owning ``tm x tn`` outputs, as in
            `gemm.gemm_kernel` (16 x 16 threads there); a block computes a ``ty*tm x tx*tn`` tile of c.
        dtype: ``np.float32`` or ``np.float64``.
        strided_adjoint: the input gradient of a convolution with stride > 1 (the dividing case).

    Returns:
        a kernel ``conv_gemm(a, src, rows, cols, c, bias, m, n, k, a_bs, a_rs, c_bs, c_rs, bias_mode,
        image, src_h, src_w, stride, splits, k_chunk)``: ``c[z] (m, n) = a[z] (m, k) @ B[z] (k, n)``
        (+ bias per row), over the flat row-major arrays a and c (batch strides a_bs, c_bs; row strides
        a_rs, c_rs) and the flat array ``src`` (x, or dY for the input gradient; ``image`` elements per
        image) that B is read from through the int32 tables ``rows`` (3, k) and ``cols`` (3, n) of
        `offset_tables`. With ``bias_mode`` BIAS_GRAD, B's last column (n - 1, beyond ``cols``) is all
        ones and output (i, n - 1) goes to ``c[z * c_bs + m * c_rs + i]``, after the other columns.
        With ``splits`` > 1 each image's sum is cut into parts of ``k_chunk`` (a
        multiple of BK) and c[image * splits + part] gets part's share (`reduction_splits`).
        Grid: (column blocks, row blocks, images * splits); block (tx, ty).
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
    # thread (ty, tx) owns runs of vm adjacent rows, ty_count*vm apart (columns likewise; `gemm.owned`)
    vm = min(tm, VECTOR)
    vn = min(tn, VECTOR)
    a_tile_shape = (BK, bm + VECTOR)
    b_tile_shape = (BK, bn + VECTOR)
    multiply = gemm.tile_multiply(ty_count, tx_count, tm, tn)
    ntype = _NUMBA_TYPES[np.dtype(dtype)]
    zero = np.dtype(dtype).type(0)  # a constant of the element type (a bare 0.0 would be a float64)
    one = np.dtype(dtype).type(1)
    int64 = numba.int64
    uint64 = numba.uint64

    @cuda.jit(device=True)
    def b_element(src, image0, col, rows, r, src_h, src_w, stride):
        """B[r, column] of one image, whose column's (offset, y, x) are `col`: a pixel of src or 0."""
        offset = int64(rows[0, r])
        yy = col[1] + int64(rows[1, r])
        xx = col[2] + int64(rows[2, r])
        if strided_adjoint:
            # dY[k, oy, ox] with oy*s = y + p - i: only taps that land on a multiple of the stride
            if yy < 0 or xx < 0 or yy % stride != 0 or xx % stride != 0:
                return zero
            yy //= stride
            xx //= stride
            if yy < src_h and xx < src_w:
                return src[uint64(image0 + offset + yy * src_w + xx)]
            return zero
        if 0 <= yy < src_h and 0 <= xx < src_w:
            return src[uint64(image0 + col[0] + offset)]
        return zero

    @jit
    def conv_gemm(a, src, rows, cols, c, bias, m, n, k, a_bs, a_rs, c_bs, c_rs, bias_mode, image, src_h, src_w, stride,
                  splits, k_chunk):
        tx = cuda.threadIdx.x
        ty = cuda.threadIdx.y
        tid = ty * tx_count + tx
        row0 = cuda.blockIdx.y * bm
        col0 = cuda.blockIdx.x * bn
        z = cuda.blockIdx.z
        img, k_lo, k_hi = gemm.sum_part(z, splits, k, k_chunk)  # image z // splits, its terms [k_lo, k_hi)
        a0 = img * a_bs
        image0 = img * image
        a_tile = cuda.shared.array(a_tile_shape, ntype, alignment=SHARED_ALIGNMENT)
        b_tile = cuda.shared.array(b_tile_shape, ntype, alignment=SHARED_ALIGNMENT)
        a_next = cuda.local.array(a_per_thread, ntype)
        b_next = cuda.local.array(b_per_thread, ntype)
        acc = cuda.local.array((tm, tn), ntype)
        a_reg = cuda.local.array(tm, ntype)
        b_reg = cuda.local.array(tn, ntype)
        for i in range(tm):
            for j in range(tn):
                acc[i, j] = 0

        # 0. what stays the same in every tile: where this thread's A elements are at k = 0 (-1: below
        #    the last row), and the (offset, y, x) of the one column of B it stages
        a_at = cuda.local.array(a_per_thread, int64)
        for step in range(a_per_thread):
            e = tid + step * nt
            gi = row0 + e // BK
            a_at[step] = a0 + gi * a_rs + e % BK if e < a_elems and gi < m else -1
        cc = tid % bn
        gj = col0 + cc
        kk0 = tid // bn
        ones = bias_mode == BIAS_GRAD and gj == n - 1  # this thread stages the column of ones
        col = cuda.local.array(3, int64)
        for t in range(3):
            col[t] = cols[t, uint64(gj)] if gj < n and not ones else 0

        for k0 in range(k_lo - BK, k_hi, BK):
            # 1. fetch this thread's elements of the tiles at k0 + BK into registers (in flight
            #    while step 2 multiplies the tiles at k0)
            k1 = k0 + BK
            if k1 < k_hi:
                for step in range(a_per_thread):
                    gk = k1 + (tid + step * nt) % BK
                    a_next[step] = a[uint64(a_at[step] + k1)] if a_at[step] >= 0 and gk < k_hi else zero
                for step in range(b_per_thread):
                    r = k1 + kk0 + step * rows_apart
                    if r >= k_hi or gj >= n:
                        b_next[step] = zero
                    elif ones:
                        b_next[step] = one
                    else:
                        b_next[step] = b_element(src, image0, col, rows, uint64(r), src_h, src_w, stride)
            # 2. multiply the tiles in shared memory (none before the first tile arrives)
            if k0 >= k_lo:
                multiply(a_tile, b_tile, acc, a_reg, b_reg, ty, tx)
            cuda.syncthreads()
            # 3. store the fetched tiles into shared memory for the next round
            if k1 < k_hi:
                for step in range(a_per_thread):
                    e = tid + step * nt
                    if e < a_elems:
                        a_tile[e % BK, e // BK] = a_next[step]
                for step in range(b_per_thread):
                    b_tile[kk0 + step * rows_apart, cc] = b_next[step]
            cuda.syncthreads()

        # 4. write the thread's outputs, adding the bias of the row (the filter); the column of ones'
        #    sums after the other columns
        c0 = z * c_bs
        for i in range(tm):
            gi = row0 + owned(i, ty, ty_count, vm)
            if gi < m:
                for j in range(tn):
                    gj = col0 + owned(j, tx, tx_count, vn)
                    if gj < n:
                        value = acc[i, j]
                        if bias_mode == gemm.BIAS_ROW:
                            value += bias[gi]
                        if bias_mode == BIAS_GRAD and gj == n - 1:
                            c[uint64(c0 + m * c_rs + gi)] = value
                        else:
                            c[uint64(c0 + gi * c_rs + gj)] = value

    return conv_gemm


def tile_candidates(m, n):
    """The ``(ty, tx, tm, tn)`` tiles autotuning tries: `gemm.tile_candidates` on 16 x 16 threads, plus a
    flat 4 x 64 block when c has few rows (a layer with at most 8 filters; the input gradient of one
    with 5-8 channels, fewer going to `nn.input_grad_few_channels`) and a narrow 32 x 8 block
    when it has few columns (an RGB layer's filter gradient: n = 3*3*3 = 27), which would otherwise
    leave most of a 16-row or 64-column tile idle."""
    out = [(TY, TX, tm, tn) for tm, tn in gemm.tile_candidates(m, n)]
    if m <= 8:
        out.append((4, 64, 1, 4))
    if n <= 32:
        out.append((32, 8, 1, 4))
    return out


def default_tile(m, n):
    """The tile used without autotuning (and to size the parts of long sums): `gemm.tile_shape` on 16 x 16
    threads."""
    return (TY, TX, *gemm.tile_shape(m, n))


# The tile of every product in Numba's simulator: blocks of `gemm.SIMULATOR_THREADS` (the tiles a GPU runs
# are each tested on their own, tests/cuda/test_conv_gemm_cuda.py).
SIMULATOR_TILE = (*gemm.SIMULATOR_THREADS, 1, 4)


def reduction_splits(images, m, n, k):
    """Into how many parts to cut each image's sum of a ``(m, n)`` product over ``k`` terms (1: none):
    `gemm.reduction_splits` for the default tile (the filter gradient of an RGB layer, 32 x 27 outputs
    per image summed over the 4,096 pixels of a 64 x 64 map, is cut into 8 parts)."""
    ty, tx, tm, tn = default_tile(m, n)
    return gemm.reduction_splits(images, m, n, k, ty * tm, tx * tn)


def conv_gemm_launch(product, a, src, c, m, n, k, a_strides, c_strides, geometry, bias=None, tile=None, splits=1):
    """Launch ``c[z] = a[z] @ B[z] (+ bias per row)`` for every image z of `src`; returns c. The filter
    gradient's launch also writes the row sums of each a[z] (the bias gradient, `BIAS_GRAD`) to
    ``c[z * c_strides[0] + m * c_strides[1] + i]``, after the (m, n) block.

    Args:
        product: FORWARD, FILTER_GRAD or INPUT_GRAD.
        a: device array read as row-major (m, k) matrices, batch stride ``a_strides[0]`` (0: shared),
            row stride ``a_strides[1]``.
        src: (N, C, H, W) device array B is read from (x, or dY for INPUT_GRAD).
        c: device array written as row-major (m, n) matrices with ``c_strides`` (batch, row).
        geometry: ``(kh, kw, stride, padding, cols_w)``.
        bias: optional (m,) device array added per row.
        tile: ``(ty, tx, tm, tn)`` to use; by default the autotuned one (`tile_candidates`).
        splits: cut each image's sum into this many parts, c[image * splits + part] holding each
            part's share (c then has ``images * splits`` batches); a count from `reduction_splits`
            (of ``n + 1`` columns for the filter gradient).
    """
    batches = src.shape[0]
    bias_grad = product == FILTER_GRAD
    n_out = n + 1 if bias_grad else n  # the kernel's columns: B's, and the column of ones
    if m == 0 or n_out == 0 or batches == 0:  # (with no channels, the filter gradient still sums dY's rows)
        return c
    k_chunk = part_length(k, splits)
    if splits < 1 or (k and -(-k // k_chunk) != splits) or (splits > 1 and bias is not None):
        raise InvalidArgumentError(f"cannot cut a sum of {k} terms into {splits} parts of whole tiles (or with a bias)")
    if batches * splits > 65535:
        raise InvalidArgumentError(f"at most 65535 images (times parts) per launch, got {batches} x {splits}")
    if bias_grad and bias is not None:
        raise InvalidArgumentError("the filter gradient's product adds no bias (it computes the bias gradient)")
    kh, kw, stride, padding, cols_w = geometry = tuple(int(v) for v in geometry)
    bias_mode = gemm.BIAS_ROW if bias is not None else BIAS_GRAD if bias_grad else BIAS_NONE
    bias_flat = flat(bias) if bias is not None else scratch("no_bias", (1,), c.dtype)  # not read
    a_flat, c_flat, src_flat = flat(a), flat(c), flat(src)
    rows, cols = device_tables(product, src.shape, geometry, k, n)
    strided_adjoint = product == INPUT_GRAD and stride > 1
    image, src_h, src_w = math.prod(src.shape[1:]), src.shape[2], src.shape[3]

    def launch(tile):
        ty_count, tx_count, tm, tn = tile
        kernel = conv_gemm_kernel(tile, np.dtype(c.dtype), strided_adjoint)
        grid = ((n_out + tx_count * tn - 1) // (tx_count * tn), (m + ty_count * tm - 1) // (ty_count * tm), batches * splits)
        kernel[grid, (tx_count, ty_count)](
            a_flat, src_flat, rows, cols, c_flat, bias_flat, m, n_out, k, a_strides[0], a_strides[1], c_strides[0],
            c_strides[1], bias_mode, image, src_h, src_w, stride, splits, k_chunk,
        )

    key = (PRODUCT_NAMES[product], m, n_out, k, batches, splits, np.dtype(c.dtype).str, kh, kw, stride, padding, cols_w)
    if tile is not None:
        launch(tile)
    else:
        default = SIMULATOR_TILE if simulated() else default_tile(m, n_out)
        gemm.launch_autotuned(key, default, tile_candidates(m, n_out), launch)
    return c


def compile_signatures():
    """``(name, kernel, argument types)`` for the float32 implicit-GEMM kernels (for compile_ptx): every
    tile the autotuner may pick (`tile_candidates` of small and large m, n), and the strided adjoint."""
    ft = numba.float32
    i64 = numba.int64
    table = numba.int32[:, ::1]
    sig = (ft[::1], ft[::1], table, table, ft[::1], ft[::1]) + (i64,) * 14
    tiles = sorted({tile for m, n in ((3, 27), (16, 100), (64, 1000), (128, 1000)) for tile in tile_candidates(m, n)})
    out = [
        ("tap_table", tap_table_kernel, (table,) + (i64,) * 6 + (numba.boolean,)),
        ("pixel_table", pixel_table_kernel, (table,) + (i64,) * 4 + (numba.boolean,)),
    ]
    for tile in tiles:
        for strided_adjoint in (False, True):
            label = "x".join(map(str, tile)) + ("_strided_adjoint" if strided_adjoint else "")
            out.append((f"conv_gemm_{label}_float32", conv_gemm_kernel(tile, np.float32, strided_adjoint), sig))
    return out
