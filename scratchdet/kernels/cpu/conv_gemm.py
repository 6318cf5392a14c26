"""Register-tiled convolution for float32, stride 1: the matrix products computed straight from the image.

`scratchdet.nn.functional` computes a convolution as im2col + a matrix product (OpenBLAS). This module
computes the same three products of a layer without the column matrix and without OpenBLAS, with a
register-tiled multiply written here (a "micro-kernel", the innermost piece of every fast GEMM:
Goto and van de Geijn 2008, "Anatomy of high-performance matrix multiplication"):

    forward        y[n]  (K, pixels)      = W  (K, C kh kw)  @ cols[n]   (C kh kw, pixels)   + b
    filter grad    dW    (C kh kw, K)     = sum_n cols[n] (C kh kw, pixels) @ dy[n]^T (pixels, K)
    input grad     dx[n] (C, pixels)      = Wf (C, K kh kw)  @ dcols[n]  (K kh kw, pixels)

`cols[n]` is never written out. Two observations make it unnecessary:

1. *Full-width rows.* Let the image be zero-padded and flattened, `xf[c*Hp*Wp + y*Wp + x]`, and number
   the output pixels with the padded width, `col = oy*Wp + ox` (the `kw - 1` columns with ox >= W' are
   computed and thrown away). Then row (c, i, j) of the column matrix is `xf` shifted by
   `c*Hp*Wp + i*Wp + j`: a contiguous stretch of memory, read in place. The kernels lay out only the
   rows one block of outputs reads ("slabs", `fill_slab`), each small enough to stay in the L2 cache.
2. *The input gradient is a forward pass.* For stride 1, `dx` is the correlation of `dy`, zero-padded
   by `kh - 1 - padding`, with the filters flipped in space and their two channel axes swapped:
   `Wf[c, k, i, j] = W[k, c, kh-1-i, kw-1-j]` (the transposed convolution of Dumoulin and Visin 2016,
   "A guide to convolution arithmetic", section 4). So it runs through the forward kernel.

The micro-kernel keeps an MR x NR = 6 x 64 tile of the product in registers: each step of the
reduction loads 64 values of one operand (4 AVX-512 vectors) and 6 of the other, and does 384
multiply-adds (24 vector FMAs) on them. The tile lives in a stack array with constant indices, which
the compiler turns into registers; measured 263-267 GFLOP/s on one Zen 5 core, where the same
loop accumulating into a heap array runs at 8. Numba only vectorises it well as a separate (not
inlined) function: inlined into the parallel loop, it ran at half that speed. Each micro-kernel is one
loop over the reduction: around a nested loop the compiler stores and reloads the tile every time the
inner loop ends (see `rows_times_tile`). And every access to the tile after that loop has a constant
index or goes through a row view (`add_tile`): with a variable column index the compiler kept the tile
in memory (15 % slower on long reductions, 2.5x on short ones, measured).

Where a 6 x 64 tile would be mostly zeros, the shapes pick a variant: narrow maps tile four 16-pixel
runs (`tile_times_segments`), small maps tile 6 pixels x 64 filters (`correlate_pixel_tiles`), layers
with few filters sum their filter gradient with the vector lanes along the pixels (`dot_tile`), and
RGB-like inputs get their input gradient as W^T @ dy followed by col2im (`input_gradient_few_channels`).
Layers without padding read x in place where the kernels' reads stay inside it. `scratchdet.nn.functional`
sends float32 stride-1 convolutions here, except 3 x 3 layers with enough channels and filters, which
take Winograd's algorithm (`scratchdet.kernels.cpu.winograd`, built on `rows_times_tile`); float64 keeps
the im2col route, whose OpenBLAS dgemm beats a 6 x 64 tile of doubles.
"""

import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic

from scratchdet.kernels.cpu.nn import col2im

MR = 6  # rows of the register tile
NR = 64  # columns of the register tile: 4 AVX-512 vectors of float32
HALF = NR // 2  # columns of a product that `rows_times_folded_tile` computes
SEGMENT = NR // 4  # a tile of `tile_times_segments` is four runs of this many output pixels
LANES = 16  # float32 lanes of an AVX-512 vector
DOT_FILTERS = NR // LANES  # filters per `dot_tile`
ROW_BLOCK = 1024  # at most this many output columns (whole padded-width rows) per work item
REDUCTION_BLOCK = 8192  # at most this many reduction steps per pass over a tile (one pass up to 910 channels, 3 x 3;
# measured: 2048, two or three passes through a scratch block, made 256- and 512-channel layers on one 38 x 63
# map 10-14 % slower)
PIXEL_TILE_PASS = 1024  # reduction steps per pass of `correlate_pixel_tiles`: a 64-filter panel's 256 KB stay in L2
PIXEL_TILE_SCRATCH = 65536  # at most this many (pixel, filter) sums per work item of `correlate_pixel_tiles` (256 KB)
FILTER_GRAD_PIXELS = 1024  # output pixels per block of the filter gradient (measured: 64-256 slower, 512-2048 alike)
DOT_PIXELS = 4096  # output pixels per block of `filter_gradient_few_filters` (measured: 1024-2048 slower)
FILTER_GRAD_CHUNKS = 8  # the filter gradient is summed in this many fixed parts (same result on any thread count)
TILE_PACKING = 24  # `few_filters`: laying dy out as panels costs about as much as this many more taps (fitted to the measurements there)


# ---------------------------------------------------------------------------------------------------
# The register tile and the micro-kernels
# ---------------------------------------------------------------------------------------------------


@intrinsic
def _stack_tile_pointer(typingctx, like):
    """A pointer to MR*NR elements of `like`'s dtype on the stack (an LLVM alloca in the entry block)."""

    def codegen(context, builder, signature, args):
        element = context.get_value_type(signature.args[0].dtype)
        return cgutils.alloca_once(builder, element, size=llvm_ir.Constant(llvm_ir.IntType(64), MR * NR))

    return types.CPointer(like.dtype)(like), codegen


if numba.config.DISABLE_JIT:

    def new_tile(like):
        """A scratch (MR, NR) tile (plain Python: a NumPy array)."""
        return np.zeros((MR, NR), dtype=like.dtype)

else:

    @numba.njit(inline="always")
    def new_tile(like):
        """A scratch (MR, NR) tile of `like`'s dtype on the stack, so that the compiler keeps it in registers."""
        return numba.carray(_stack_tile_pointer(like), (MR, NR))


def _transpose_stages():
    """The shuffles of a 16 x 16 transpose in four stages: stage d (1, 2, 4, 8) swaps, between rows r and r + d
    (r without bit d), the entries whose row and column differ in bit d. Two-input shuffle masks: lane c of
    the new row r takes lane mask_a[c] of (row r, row r + d) side by side, the new row r + d lane mask_b[c]."""
    stages = []
    for bit in range(4):
        d = 1 << bit
        mask_a = [c if not c & d else LANES + c - d for c in range(LANES)]
        mask_b = [LANES + c if c & d else c + d for c in range(LANES)]
        stages.append((d, mask_a, mask_b))
    return stages


if numba.config.DISABLE_JIT:

    def transpose_block(source, source_start, source_pitch, target, target_start, target_pitch):
        """target[target_start + c*target_pitch + r] = source[source_start + r*source_pitch + c], r, c < 16 (plain Python)."""
        for r in range(LANES):
            for c in range(LANES):
                target[target_start + c * target_pitch + r] = source[source_start + r * source_pitch + c]

else:

    @intrinsic
    def transpose_block(typingctx, source, source_start, source_pitch, target, target_start, target_pitch):
        """target[target_start + c*target_pitch + r] = source[source_start + r*source_pitch + c] for r, c < 16: a 16 x 16
        block of float32 transposed in registers (16 vector loads, 64 two-input shuffles, 16 vector stores;
        measured 0.38 cycles per value, against 1.25 for the best element loop). Both arrays 1-D float32;
        no bounds are checked."""

        def codegen(context, builder, signature, args):
            vector = llvm_ir.VectorType(llvm_ir.FloatType(), LANES)
            index = llvm_ir.IntType(64)
            source_data = context.make_array(signature.args[0])(context, builder, args[0]).data
            target_data = context.make_array(signature.args[3])(context, builder, args[3]).data
            start, pitch, out_start, out_pitch = (context.cast(builder, args[i], signature.args[i], types.int64) for i in (1, 2, 4, 5))
            rows = []
            for r in range(LANES):
                where = builder.gep(source_data, [builder.add(start, builder.mul(pitch, llvm_ir.Constant(index, r)))])
                rows.append(builder.load(builder.bitcast(where, vector.as_pointer()), align=4))
            for d, mask_a, mask_b in _transpose_stages():
                shuffled = list(rows)
                for r in range(LANES):
                    if not r & d:
                        for out, mask in ((r, mask_a), (r + d, mask_b)):
                            lanes = llvm_ir.Constant(llvm_ir.VectorType(llvm_ir.IntType(32), LANES), mask)
                            shuffled[out] = builder.shuffle_vector(rows[r], rows[r + d], lanes)
                rows = shuffled
            for c in range(LANES):
                where = builder.gep(target_data, [builder.add(out_start, builder.mul(out_pitch, llvm_ir.Constant(index, c)))])
                builder.store(rows[c], builder.bitcast(where, vector.as_pointer()), align=4)
            return context.get_dummy_value()

        return types.void(source, source_start, source_pitch, target, target_start, target_pitch), codegen


@numba.njit(inline="always")
def zero_tile(acc):
    """acc (MR, NR) = 0, element by element with constant indices (see `add_tile`)."""
    for i in range(MR):
        for j in range(NR):
            acc[i, j] = 0.0


@numba.njit(inline="always")
def tap_rows(image, row_offsets, column):
    """The MR = 6 rows of a tile's left operand that the kernels read in place: image[row_offsets[i] + column :]."""
    return (image[row_offsets[0] + column :], image[row_offsets[1] + column :], image[row_offsets[2] + column :],
            image[row_offsets[3] + column :], image[row_offsets[4] + column :], image[row_offsets[5] + column :])


@numba.njit(fastmath=True, inline="always")
def add_tile(acc, out, top, left):
    """out[top : top + MR, left : left + NR] += acc, through a view of each row. Indexed as out[top + i, left + j]
    instead, with `left` a variable, the micro-kernels ran 15 % slower (measured: 425 against 495 GFLOP/s on
    two cores, the same kernel with left a constant 0)."""
    for i in range(MR):
        row = out[top + i, left:]
        for j in range(NR):
            row[j] += acc[i, j]


@numba.njit(fastmath=True, inline="always")
def rank_one_update(acc, x0, x1, x2, x3, x4, x5, b_row, first, columns):
    """acc[i, first + j] += x_i * b_row[j] for i < MR, j < columns: one step of a tile's reduction, 6 broadcast
    values times one row of the right operand (inlined, with constant first and columns, into the kernels)."""
    for j in range(columns):
        b = b_row[j]
        acc[0, first + j] += x0 * b
        acc[1, first + j] += x1 * b
        acc[2, first + j] += x2 * b
        acc[3, first + j] += x3 * b
        acc[4, first + j] += x4 * b
        acc[5, first + j] += x5 * b


@numba.njit(fastmath=True, inline="always")
def column_update(acc, column, x0, x1, x2, x3, x4, x5, b):
    """acc[i, column] += x_i * b for i < MR: one lane of `dot_tile`'s step (inlined; the compiler runs the lanes as one vector)."""
    acc[0, column] += x0 * b
    acc[1, column] += x1 * b
    acc[2, column] += x2 * b
    acc[3, column] += x3 * b
    acc[4, column] += x4 * b
    acc[5, column] += x5 * b


@numba.njit(fastmath=True, inline="always")
def store_tile(acc, out, top, left, column_bias):
    """out[top : top + MR, left : left + NR] = acc + column_bias[:NR] (added to every row), through a view of each
    row (see `add_tile`). The bias is first copied to the stack: read from its array, the compiler could not
    prove it apart from out and stored the tile one value at a time (measured 40 % slower on 64-step reductions)."""
    bias = new_tile(acc)
    for j in range(NR):
        bias[0, j] = column_bias[j]
    for i in range(MR):
        row = out[top + i, left:]
        for j in range(NR):
            row[j] = acc[i, j] + bias[0, j]


@numba.njit(cache=True, fastmath=True)
def tile_times_rows(steps, a_panel, image, row_offsets, column, out, top, left):
    """out[top : top + MR, left : left + NR] += a_panel^T @ B, where row p of B is image[row_offsets[p] + column :][:NR].

    Args:
        steps: reduction length. a_panel: (>= steps, MR) packed rows of the left operand (see `pack_panels`).
        image: 1-D flat padded image; row_offsets: (>= steps,) int64; column: first column of the tile.
        out: 2-D C-contiguous float32, added to (passed whole, so the compiler knows its rows are contiguous
            and adds the tile with vector instructions); top, left: where the tile goes.
    """
    acc = new_tile(image)
    zero_tile(acc)
    for p in range(steps):
        b_row = image[row_offsets[p] + column :]  # a slice, so the index j below is known >= 0
        for i in range(MR):
            a = a_panel[p, i]
            for j in range(NR):
                acc[i, j] += a * b_row[j]
    add_tile(acc, out, top, left)


@numba.njit(fastmath=True, inline="always")
def accumulate_segments(steps, a_panel, image, row_offsets, starts, acc):
    """acc (MR, NR) = a_panel^T @ B, where row p of B is four runs of SEGMENT values, image[row_offsets[p] +
    starts[m] :] for m = 0..3, side by side: the product of `tile_times_segments` and
    `tile_times_segments_store` (inlined into both, so that acc stays in registers)."""
    zero_tile(acc)
    # unsigned offsets: the compiler then adds no test for negative indices (a slice per run and step,
    # as in `tile_times_rows`, costs 4 bounds computations a step: measured 9 % slower)
    s0, s1, s2, s3 = numba.uint64(starts[0]), numba.uint64(starts[1]), numba.uint64(starts[2]), numba.uint64(starts[3])
    for p in range(steps):
        offset = numba.uint64(row_offsets[p])
        b0 = offset + s0
        b1 = offset + s1
        b2 = offset + s2
        b3 = offset + s3
        for i in range(MR):
            a = a_panel[p, i]
            for j in range(SEGMENT):  # one loop with four lines, not four loops: measured 70x faster compiled
                u = numba.uint64(j)
                acc[i, j] += a * image[b0 + u]
                acc[i, SEGMENT + j] += a * image[b1 + u]
                acc[i, 2 * SEGMENT + j] += a * image[b2 + u]
                acc[i, 3 * SEGMENT + j] += a * image[b3 + u]


@numba.njit(cache=True, fastmath=True)
def tile_times_segments(steps, a_panel, image, row_offsets, starts, out, top, left):
    """As `tile_times_rows`, but row p of B is four runs of SEGMENT values, image[row_offsets[p] + starts[m] :]
    for m = 0..3, side by side: a tile that covers up to four output rows of a narrow image (see `correlate`).

    Args:
        starts: (4,) int64, where each run starts in the image, relative to row_offsets[p]. Others as in
            `tile_times_rows`.
    """
    acc = new_tile(image)
    accumulate_segments(steps, a_panel, image, row_offsets, starts, acc)
    add_tile(acc, out, top, left)


@numba.njit(cache=True, fastmath=True)
def tile_times_segments_store(steps, a_panel, image, row_offsets, starts, out, top, left, bias):
    """out[top + i, left + j] = (the `tile_times_segments` product)[i, j] + bias[top + i]: a tile whose four runs
    are 64 consecutive output pixels (W' a multiple of SEGMENT, the tile inside its block) and whose MR rows
    are all filters, stored straight into y with the bias. Other tiles are stored into a scratch tile
    and their valid runs copied out (`store_runs`).

    Every index of the tile is a constant or goes through a row view, as in `add_tile`: storing runs of
    any length from the tile, the compiler kept the tile in memory instead of registers (2.5x slower per
    tile on a 27-step reduction, 7 % on a 576-step one, measured).

    Args:
        out: (rows, pixels) float32, e.g. one image's output planes, flattened; top + MR <= rows;
            left: the tile's first pixel. bias: float32, bias[top : top + MR] used. Others as in
            `tile_times_segments`.
    """
    acc = new_tile(image)
    accumulate_segments(steps, a_panel, image, row_offsets, starts, acc)
    for i in range(MR):
        row = out[top + i, left:]
        b = bias[top + i]
        for j in range(NR):
            row[j] = acc[i, j] + b


@numba.njit(cache=True, fastmath=True)
def store_runs(tile, out, rows, first_filter, out_starts, out_lengths):
    """Run m = 0..3 of the tile's row i goes to out[first_filter + i, out_starts[m] :][:out_lengths[m]], for i < rows:
    a `tile_times_segments_store` tile that is partial (a run that ends past its row keeps only its valid
    pixels; rows past the last filter are dropped).

    A whole run is copied through a stack buffer, all loads then all stores, which the compiler does as
    one vector each without proving that tile and out do not overlap (element by element it copied one
    value at a time).

    Args:
        tile: (MR, NR) float32; out: (K, H'*W') float32, one image's output planes; rows: valid tile rows;
            first_filter: the filter of the tile's row 0; out_starts, out_lengths: (4,) int64.
    """
    buffer = new_tile(tile)
    for i in range(rows):
        for m in range(4):
            run = out[first_filter + i, out_starts[m] :]
            if out_lengths[m] == SEGMENT:
                for j in range(SEGMENT):
                    buffer[0, j] = tile[i, m * SEGMENT + j]
                for j in range(SEGMENT):
                    run[j] = buffer[0, j]
            else:
                for j in range(out_lengths[m]):
                    run[j] = tile[i, m * SEGMENT + j]


@numba.njit(cache=True, fastmath=True)
def rows_times_tile(steps, pixels, image, row_offsets, column, b_panel, out, top, left, column_bias=None, tiles=1):
    """out[top : top + MR, left : left + NR] += A @ b_panel, where A's row i is image[row_offsets[i] + column + pixels[s]]
    for s < steps: the reduction runs over the valid output pixels of a block of rows only, none of the
    padding columns between them.

    One loop over a table of pixel offsets, not a loop over rows around a loop over pixels: with two
    loops the compiler stores the 24 accumulators to memory and reloads them at every row (measured
    12 % slower on 16-pixel rows).

    Args:
        steps: reduction length; pixels: (>= steps,) uint64 offsets of the block's pixels from `column`
            (unsigned: the compiler then adds no test for negative indices).
        image: 1-D flat padded image; row_offsets: (MR * tiles,) int64; column: where the block's first row starts.
        b_panel: (>= steps, NR) packed right operand. out, top, left: as in `tile_times_rows`.
        column_bias: None adds the product to out; else out = the product + column_bias[:NR] (each row).
        tiles: this many tiles down, tile g with rows row_offsets[g*MR : (g + 1)*MR] going to out's rows
            top + g*MR ..: one call for all of them (per call, the set-up cost up to 25 % of a tile with a
            32-step reduction, measured: Winograd's products reduce over the channels alone).
    """
    for g in range(tiles):
        acc = new_tile(image)
        zero_tile(acc)
        a0, a1, a2, a3, a4, a5 = tap_rows(image, row_offsets[g * MR :], column)
        for s in range(steps):
            q = pixels[s]
            rank_one_update(acc, a0[q], a1[q], a2[q], a3[q], a4[q], a5[q], b_panel[s], 0, NR)
        if column_bias is None:
            add_tile(acc, out, top + g * MR, left)
        else:
            store_tile(acc, out, top + g * MR, left, column_bias)


@numba.njit(cache=True, fastmath=True)
def rows_times_folded_tile(steps, fold, pixels, image, row_offsets, column, b_panel, out, top, left, column_bias=None, tiles=1):
    """`rows_times_tile` for products only HALF = NR / 2 columns wide (32 filters): the reduction folded in two.
    Row s of b_panel holds the right operand's rows for step s (columns 0 .. HALF - 1) and for step s of the
    reduction's second half (columns HALF ..), A's two values are image[row_offsets[i] + column + pixels[s]]
    and the same + fold: the tile's two halves sum the two halves of the reduction, added together at the end. A plain tile would leave half
    of its columns empty (each of the 24 multiply-adds a step would do half the work).

    Args:
        steps: steps of each half; fold: uint64 offset in `image` of the second half's A operand from the first's.
        out[top + i, left : left + HALF] += (or = ... + column_bias[:HALF] for column_bias not None) the product.
        Others as in `rows_times_tile`.
    """
    for g in range(tiles):
        acc = new_tile(image)
        zero_tile(acc)
        a0, a1, a2, a3, a4, a5 = tap_rows(image, row_offsets[g * MR :], column)
        for s in range(steps):
            q = pixels[s]
            b_row = b_panel[s]
            rank_one_update(acc, a0[q], a1[q], a2[q], a3[q], a4[q], a5[q], b_row, 0, HALF)
            q += fold  # the second half: its six values loaded after the first half's are used (all twelve
            rank_one_update(acc, a0[q], a1[q], a2[q], a3[q], a4[q], a5[q], b_row[HALF:], HALF, HALF)  # at once ran out of registers)
        if column_bias is None:  # the two halves added, through row views (see `add_tile`)
            for i in range(MR):
                row = out[top + g * MR + i, left:]
                for j in range(HALF):
                    row[j] += acc[i, j] + acc[i, HALF + j]
        else:
            bias = new_tile(acc)  # on the stack, as in `store_tile`
            for j in range(HALF):
                bias[0, j] = column_bias[j]
            for i in range(MR):
                row = out[top + g * MR + i, left:]
                for j in range(HALF):
                    row[j] = acc[i, j] + acc[i, HALF + j] + bias[0, j]


@numba.njit(cache=True)
def pixel_offsets(n_rows, width, pitch):
    """offsets[r*width + x] = r*pitch + x: the valid pixels of n_rows rows of a padded image, as uint64."""
    offsets = np.empty(n_rows * width, dtype=np.uint64)
    for r in range(n_rows):
        for x in range(width):
            offsets[r * width + x] = r * pitch + x
    return offsets


@numba.njit(cache=True, fastmath=True)
def dot_tile(runs, run_pixels, run_dy, image, row_offsets, column, dy_image, first_filter, dy_column, out, top, left):
    """out[top + i, left + f] += sum over a block of output pixels of image tap i (pixel) * dy_rows[f] (pixel),
    for MR = 6 taps and DOT_FILTERS = 4 filters: the filter gradient for layers with few filters.

    `rows_times_tile` spreads 64 filters across a register tile, so with 16 filters 3/4 of its work is
    zeros. This tile runs the 16 vector lanes along the pixels instead: 24 accumulators, one per (tap,
    filter) pair, each adding 16 pixels' products per step, summed across the lanes at the end (measured
    228 GFLOP/s on one Zen 5 core). As in `rows_times_tile`, one loop walks a table of the block's
    16-pixel runs (a loop per row would store and reload the accumulators at every row). A row whose
    width is not a multiple of 16 ends in a run that reaches past it: the caller's dy is zero there
    (see `filter_gradient_few_filters`).

    Args:
        runs: how many 16-pixel runs; run_pixels, run_dy: (>= runs,) uint64, where each starts in the image
            (from `column`) and in dy_image's rows (from `dy_column`). See `dot_offsets`.
        image: 1-D flat padded image; row_offsets: (MR,) int64 tap offsets; column: the block's first pixel.
        dy_image: (K, pixels) float32, dy's planes, flattened; first_filter: the tile's first
            filter (filters past K repeat the last one; the caller ignores their columns of `out`).
        out, top, left: where the (MR, DOT_FILTERS) sums go.
    """
    acc = new_tile(image)  # acc[i, f*LANES + lane]
    zero_tile(acc)
    x0, x1, x2, x3, x4, x5 = tap_rows(image, row_offsets, column)
    last = dy_image.shape[0] - 1
    d0 = dy_image[first_filter, dy_column:]
    d1 = dy_image[min(first_filter + 1, last), dy_column:]
    d2 = dy_image[min(first_filter + 2, last), dy_column:]
    d3 = dy_image[min(first_filter + 3, last), dy_column:]
    for s in range(runs):
        q, dq = run_pixels[s], run_dy[s]
        for lane in range(LANES):
            u = numba.uint64(lane)
            a0, a1, a2, a3, a4, a5 = x0[q + u], x1[q + u], x2[q + u], x3[q + u], x4[q + u], x5[q + u]
            column_update(acc, lane, a0, a1, a2, a3, a4, a5, d0[dq + u])  # filter f's products in columns f*LANES + lane
            column_update(acc, LANES + lane, a0, a1, a2, a3, a4, a5, d1[dq + u])
            column_update(acc, 2 * LANES + lane, a0, a1, a2, a3, a4, a5, d2[dq + u])
            column_update(acc, 3 * LANES + lane, a0, a1, a2, a3, a4, a5, d3[dq + u])
    for i in range(MR):
        row = out[top + i, left:]  # a row view: see `add_tile`
        for f in range(DOT_FILTERS):
            total = 0.0
            for lane in range(LANES):
                total += acc[i, f * LANES + lane]
            row[f] += total


@numba.njit(cache=True)
def dot_offsets(n_rows, width, pitch, dy_pitch):
    """The tables of `dot_tile` for up to n_rows rows of `width` valid pixels, `pitch` apart in the image
    and `dy_pitch` apart in dy, row by row, so that a block of fewer rows uses their first entries: the
    ceil(width / 16) runs of 16 pixels of each row. Returns (run_pixels, run_dy), uint64."""
    runs = (width + LANES - 1) // LANES
    run_pixels = np.empty(n_rows * runs, dtype=np.uint64)
    run_dy = np.empty(n_rows * runs, dtype=np.uint64)
    for r in range(n_rows):
        for v in range(runs):
            run_pixels[r * runs + v] = r * pitch + v * LANES
            run_dy[r * runs + v] = r * dy_pitch + v * LANES
    return run_pixels, run_dy


# ---------------------------------------------------------------------------------------------------
# Operand layout
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True)
def pack_panels(matrix, panels):
    """Cut a (M, L) matrix into panels of `width` rows stored transposed: panels[q, p, i] = matrix[q*width + i, p]
    (zero past row M), so that a micro-kernel reads one step's values from contiguous memory: MR-row
    panels for the left operand of `tile_times_rows`, NR-row ones for the right operand of
    `rows_times_tile` (see `correlate_pixel_tiles`). The panels in parallel; NR-row ones by 16 x 16 register
    transposes (`transpose_block`): a deep layer's filters (512 x 4608) took 2.5 ms by element on one core,
    more than its forward's products on a 7 x 7 map.

    Args:
        matrix: (M, L) float, C-contiguous; panels: (ceil(M / width), L, width) output.
    """
    rows, length = matrix.shape
    width = panels.shape[2]
    whole = length // LANES * LANES if width == NR else 0  # columns done by register transposes ...
    source = matrix.reshape(rows * length)
    for q in prange(panels.shape[0]):
        done = min(width, max(0, rows - q * width) // LANES * LANES) if whole else 0  # ... in these panel rows
        target = panels[q].reshape(length * width)
        for i0 in range(0, done, LANES):
            for p0 in range(0, whole, LANES):
                transpose_block(source, (q * width + i0) * length + p0, length, target, p0 * width + i0, width)
        for p in range(length):  # the rest by element: past the transposed rows, then all rows past `whole`
            first = done if p < whole else 0
            for i in range(first, width):
                panels[q, p, i] = matrix[q * width + i, p] if q * width + i < rows else 0.0


@numba.njit(cache=True, parallel=True)
def pack_flipped_panels(w, panels):
    """`pack_panels` of the input gradient's filter matrix straight from the forward's filters, without the
    flipped copy (`flip_filters`): row c, column k*kh*kw + t of that matrix is w[k, c] flattened at
    kh*kw - 1 - t (both spatial axes flipped). The flipped copy and the packing took 0.8 and 0.6 ms for a
    512 -> 512 layer's filters, more than one 7 x 7 image's products.
    Args: w: (K, C, kh, kw) float32, C-contiguous; panels: (ceil(C / width), K*kh*kw, width) output."""
    filters, channels, kh, kw = w.shape
    taps = kh * kw
    width = panels.shape[2]
    flat = w.reshape(filters * channels * taps)
    for q in prange(panels.shape[0]):
        for k in range(filters):
            for t in range(taps):
                source = k * channels * taps + q * width * taps + taps - 1 - t  # w[k, q*width, flipped tap t]
                row = panels[q, k * taps + t]
                for i in range(width):
                    row[i] = flat[source + i * taps] if q * width + i < channels else 0.0


@numba.njit(cache=True, parallel=True)
def flip_filters(w, flipped):
    """flipped[c, k, i, j] = w[k, c, kh - 1 - i, kw - 1 - j]: the input gradient's filters (observation 2 of the
    module docstring), in parallel (NumPy's copy of the flipped, transposed view took 1.8 ms for 512 x 512 x 3 x 3).
    Args: w: (K, C, kh, kw); flipped: (C, K, kh, kw) output."""
    filters, channels, kh, kw = w.shape
    for c in prange(channels):
        for k in range(filters):
            for i in range(kh):
                for j in range(kw):
                    flipped[c, k, i, j] = w[k, c, kh - 1 - i, kw - 1 - j]


@numba.njit(cache=True, parallel=True)
def transpose(matrix, out):
    """out = matrix^T for a C-contiguous (M, N) float32 matrix, 16 x 16 blocks at a time in registers
    (`transpose_block`), the blocks' rows shared among the workers: NumPy's copy of the transposed view
    took 6.5 ms for a 4608 x 512 filter gradient (a 512 -> 512 layer's), three times its products on a 7 x 7
    map. Args: matrix (M, N); out (N, M) output, C-contiguous."""
    rows, columns = matrix.shape
    source, target = matrix.reshape(rows * columns), out.reshape(rows * columns)
    whole_rows, whole_columns = rows // LANES * LANES, columns // LANES * LANES
    for block in prange((rows + LANES - 1) // LANES):
        r0 = block * LANES
        if r0 < whole_rows:
            for c0 in range(0, whole_columns, LANES):
                transpose_block(source, r0 * columns + c0, columns, target, c0 * rows + r0, rows)
            for r in range(r0, r0 + LANES):
                for c in range(whole_columns, columns):
                    out[c, r] = matrix[r, c]
        else:
            for r in range(r0, rows):
                for c in range(columns):
                    out[c, r] = matrix[r, c]


@numba.njit(cache=True)
def fold_panel(matrix, half_length, panel):
    """panel[0, s, j] = matrix[j, s] and panel[0, s, HALF + j] = matrix[j, half_length + s] for s < half_length, j < M
    (zero elsewhere): a (M <= HALF, L) matrix as one NR-wide panel with its two halves side by side, the right
    operand of `rows_times_folded_tile`. Args: panel: (1, half_length, NR) output, half_length >= L / 2."""
    rows, length = matrix.shape
    panel[...] = 0.0
    for s in range(half_length):
        for j in range(rows):
            panel[0, s, j] = matrix[j, s]
            if half_length + s < length:
                panel[0, s, HALF + j] = matrix[j, half_length + s]


@numba.njit(cache=True)
def tap_offsets(channels, kh, kw, padded_h, padded_w, count):
    """offsets[(c*kh + i)*kw + j] = c*Hp*Wp + i*Wp + j: where row (c, i, j) of the column matrix starts
    in a flat padded image (observation 1 of the module docstring) whose planes have Hp = padded_h rows
    of Wp = padded_w: the kernels pass a slab's rows (`fill_slab`) as padded_h. Entries past C*kh*kw are 0.
    Returns: (count,) int64, count >= C*kh*kw."""
    offsets = np.zeros(count, dtype=np.int64)
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                offsets[(c * kh + i) * kw + j] = c * padded_h * padded_w + i * padded_w + j
    return offsets


@numba.njit(cache=True)
def row_blocks(out_h, padded_w):
    """Split an image's output rows into equal blocks of at most ROW_BLOCK full-width columns.
    Returns (rows per block, blocks per image)."""
    blocks = (out_h + max(1, ROW_BLOCK // padded_w) - 1) // max(1, ROW_BLOCK // padded_w)
    return (out_h + blocks - 1) // blocks, blocks


# ---------------------------------------------------------------------------------------------------
# The forward product (also the input gradient)
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def use_segments(out_h, out_w, padded_w, one_pass=False):
    """Whether `correlate` should tile an image's output rows as 16-pixel runs rather than full-width rows.

    Full-width tiles also compute the kw - 1 padding columns of every row, and the last tile of a block is
    partly empty; runs waste only what a row leaves of its last run (none when W' is a multiple of 16).
    `tile_times_segments` does the same work about 12 % slower (measured on Zen 5: 235 against 267
    GFLOP/s per core), so runs are chosen when they need at most 0.88 of the tiles: for a 16-pixel-wide
    map, 4 tiles per block of 16 rows instead of 5 (the two padding columns are 1/8 of every row there).
    """
    rows, _ = row_blocks(out_h, padded_w)
    full_width_tiles = (rows * padded_w + NR - 1) // NR
    run_tiles = (rows * ((out_w + SEGMENT - 1) // SEGMENT) + 3) // 4
    return run_tiles * 100 <= full_width_tiles * (100 if one_pass else 88)


@numba.njit(cache=True, inline="always")
def item_rows(item, items_per_image, rows_per_item, out_h):
    """Work item -> (image, its block's first output row, rows in the block): items run through the
    blocks of image 0, then image 1, ...; the last block of an image may be shorter."""
    first_row = (item % items_per_image) * rows_per_item
    return item // items_per_image, first_row, min(rows_per_item, out_h - first_row)


@numba.njit(inline="always")
def copy_row(source, target, buffer):
    """target[:len(source)] = source, a vector (LANES values) at a time through the stack tile `buffer`
    (`new_tile`): all the loads, then all the stores, which the compiler can do as one vector each without
    proving that the two arrays do not overlap. Measured on the bench_nn.py convolutions' slab copies:
    a slice assignment per row was 10-15 % slower, a plain element loop 5-8 % (16- and 32-wide rows never
    reached the compiler's vector loop), this copy without the buffer up to 20 % on the RGB layers.
    Args: source (W,) and target (>= W,), 1-D float32 views; buffer: a `new_tile`."""
    width = source.shape[0]
    whole = width // LANES * LANES
    for start in range(0, whole, LANES):
        for t in range(LANES):
            buffer[0, t] = source[start + t]
        for t in range(LANES):
            target[start + t] = buffer[0, t]
    for t in range(whole, width):
        target[t] = source[t]


@numba.njit(cache=True)
def fill_slab(x, first_row, pad_h, pad_w, slab_h, slab, pitch):
    """slab[c*slab_h*pitch + r*pitch + col] = the zero-padded image x (C, H, W) at padded row first_row + r and
    padded column col, for r < slab_h: the rows one block of outputs reads, with their zero border,
    in the flat layout of observation 1 (module docstring). Rows are `pitch` >= W + 2*pad_w apart, zero
    past the image's right border; entries after the C planes are zeroed too."""
    channels, height, width = x.shape
    buffer = new_tile(slab)
    for c in range(channels):
        for r in range(slab_h):
            row = slab[(c * slab_h + r) * pitch :]
            source = first_row + r - pad_h
            if source < 0 or source >= height:
                for t in range(pitch):
                    row[t] = 0.0
            else:
                for t in range(pad_w):
                    row[t] = 0.0
                copy_row(x[c, source], row[pad_w:], buffer)
                for t in range(pad_w + width, pitch):
                    row[t] = 0.0
    for t in range(channels * slab_h * pitch, slab.shape[0]):
        slab[t] = 0.0


@numba.njit(cache=True, parallel=True)
def correlate(x, pad_h, pad_w, panels, bias, kh, kw, y, workers):
    """y[n, k, oy, ox] = bias[k] + sum_{c, i, j} w[k, c, i, j] * xpad[n, c, oy + i, ox + j] (stride 1), with xpad
    x zero-padded by pad_h rows and pad_w columns on each side.

    Work items are (image, block of whole output rows), shared among the workers. Each copies the rows
    its block reads into a zero-padded slab (`fill_slab`, small enough for the L2 cache: no padded copy
    of the whole batch is written to memory and read back) and computes its block as MR x NR tiles,
    either over full-width rows (`tile_times_rows`, observation 1 of the module docstring) or, for
    narrow maps, over four 16-pixel runs per tile (`tile_times_segments`; see `use_segments`). With one
    pass over the reduction, run tiles go straight into y (`tile_times_segments_store`; partial ones
    through a scratch tile, `store_runs`); otherwise the tiles add up in a scratch block
    with `pitch` columns per output row, whose W' valid columns are then copied out with the bias.

    Args:
        x: (N, C, H, W) float32; pad_h, pad_w: the zero border. panels: `pack_panels` of the (K, C*kh*kw)
            filter matrix. bias: (K,) float32; kh, kw: kernel size.
        y: (N, K, H + 2*pad_h - kh + 1, W + 2*pad_w - kw + 1) float32 output.
        workers: how many parallel workers share the items (`numba.get_num_threads()`); each has its slab
            and scratch block, allocated once (per item, they would be fresh allocations every time).
    """
    n_images, filters, out_h, out_w = y.shape
    n_panels, length, _ = panels.shape
    channels = length // (kh * kw)
    padded_w = x.shape[3] + 2 * pad_w
    passes = (length + REDUCTION_BLOCK - 1) // REDUCTION_BLOCK
    pass_length = (length + passes - 1) // passes  # equal passes: no short last one
    rows_per_item, items_per_image = row_blocks(out_h, padded_w)
    if 0 < n_images * items_per_image < 4 * workers:  # few items (one large image): as many per worker
        wanted = ((n_images * items_per_image + workers - 1) // workers * workers + n_images - 1) // n_images
        rows_per_item = (out_h + wanted - 1) // wanted
        items_per_image = (out_h + rows_per_item - 1) // rows_per_item
    slab_h = rows_per_item + kh - 1  # padded rows a block of output rows reads
    offsets = tap_offsets(channels, kh, kw, slab_h, padded_w, length)
    segmented = use_segments(out_h, out_w, padded_w, passes == 1)
    runs_per_row = (out_w + SEGMENT - 1) // SEGMENT
    pitch = runs_per_row * SEGMENT if segmented else padded_w  # scratch columns per output row
    most_tiles = (rows_per_item * runs_per_row + 3) // 4 if segmented else (rows_per_item * padded_w + NR - 1) // NR
    blocks = np.empty((workers, n_panels * MR, most_tiles * NR), dtype=y.dtype)
    slabs = np.empty((workers, channels * slab_h * padded_w + NR + kw), dtype=y.dtype)  # + what tiles read past the end
    stages = np.empty((workers, MR, NR), dtype=y.dtype)
    padded_bias = np.zeros(n_panels * MR, dtype=y.dtype)
    padded_bias[:filters] = bias
    n_items = n_images * items_per_image
    per_worker = (n_items + workers - 1) // workers
    for worker in prange(workers):
        for item in range(worker * per_worker, min(n_items, (worker + 1) * per_worker)):
            n, first_row, n_rows = item_rows(item, items_per_image, rows_per_item, out_h)
            image = slabs[worker]
            fill_slab(x[n], first_row, pad_h, pad_w, slab_h, image, padded_w)
            if segmented:
                tiles_across = (n_rows * runs_per_row + 3) // 4
                starts = np.zeros(tiles_across * 4, dtype=np.int64)  # runs past the block read row 0
                out_starts = np.zeros(tiles_across * 4, dtype=np.int64)  # where each run goes in y[n, k]
                out_lengths = np.zeros(tiles_across * 4, dtype=np.int64)  # and its valid pixels (0: no run)
                for run in range(n_rows * runs_per_row):
                    row, col = run // runs_per_row, (run % runs_per_row) * SEGMENT
                    starts[run] = row * padded_w + col
                    out_starts[run] = (first_row + row) * out_w + col
                    out_lengths[run] = min(SEGMENT, out_w - col)
            else:
                tiles_across = (n_rows * padded_w + NR - 1) // NR
                starts = out_starts = out_lengths = np.empty(0, dtype=np.int64)
            if segmented and passes == 1:  # each tile straight into y, with the bias
                output = y[n].reshape(filters, out_h * out_w)
                # tiles of 64 consecutive pixels and MR filters go straight into y; the others (a block's last
                # tile, the last filters, any tile when W' is not a multiple of SEGMENT) through a scratch tile
                plain_tiles = n_rows * out_w // NR if out_w % SEGMENT == 0 else 0  # 64 consecutive pixels each
                for q in range(n_panels):
                    rows = min(MR, filters - q * MR)
                    for t in range(tiles_across):
                        if rows == MR and t < plain_tiles:
                            tile_times_segments_store(length, panels[q], image, offsets, starts[4 * t : 4 * t + 4], output,
                                                      q * MR, first_row * out_w + t * NR, bias)
                        else:  # a partial tile: into the worker's scratch tile, its valid runs then copied out
                            tile_times_segments_store(length, panels[q], image, offsets, starts[4 * t : 4 * t + 4], stages[worker],
                                                      0, 0, padded_bias[q * MR :])
                            store_runs(stages[worker], output, rows, q * MR, out_starts[4 * t : 4 * t + 4], out_lengths[4 * t : 4 * t + 4])
            else:  # tiles added up in a scratch block over the passes, then its valid columns copied out
                block = blocks[worker]  # (K rounded up, n_rows * pitch rounded up)
                block[...] = 0.0
                for start in range(0, length, pass_length):
                    steps = min(pass_length, length - start)
                    for q in range(n_panels):
                        for t in range(tiles_across):
                            if segmented:
                                tile_times_segments(steps, panels[q, start:], image, offsets[start:], starts[4 * t : 4 * t + 4], block, q * MR, t * NR)
                            else:
                                tile_times_rows(steps, panels[q, start:], image, offsets[start:], t * NR, block, q * MR, t * NR)
                for k in range(filters):
                    for r in range(n_rows):
                        for ox in range(out_w):
                            y[n, k, first_row + r, ox] = block[k, r * pitch + ox] + bias[k]


@numba.njit(cache=True)
def use_pixel_tiles(out_h, out_w, padded_w, filters):
    """Whether `correlate_pixel_tiles` should compute this correlation rather than `correlate`: it wastes
    less of its tiles. `correlate` tiles MR filters x 64 pixels of a row block, so a small map leaves most
    of a tile empty (a 4 x 4 map fills 16 of its 64 columns; measured 4x slower than PyTorch there);
    `correlate_pixel_tiles` tiles 6 pixels x 64 filters, whatever the map's shape. Both tiles cost the
    same, so the count of tiles per image decides, with 15 % for the transposed store of the latter; a
    folded pixel tile (32 filters or fewer) covers two steps of the reduction at once and counts half
    (256x32x8x8 -> 32 unpadded: forward 1.02 -> 0.57 ms with the folded tiles)."""
    rows, blocks = row_blocks(out_h, padded_w)
    runs = (out_w + SEGMENT - 1) // SEGMENT
    if use_segments(out_h, out_w, padded_w, True):
        tiles = blocks * ((rows * runs + 3) // 4)
    else:
        tiles = blocks * ((rows * padded_w + NR - 1) // NR)
    row_tiles = (filters + MR - 1) // MR * tiles
    pixel_tiles = (filters + NR - 1) // NR * ((out_h * out_w + MR - 1) // MR)
    if filters <= HALF:  # folded (`correlate_pixel_tiles`): each tile's steps cover two of the reduction's
        pixel_tiles = (pixel_tiles + 1) // 2
    return pixel_tiles * 115 < row_tiles * 100


@numba.njit(cache=True)
def store_transposed(block, pixels, bias, out, first_pixel, plane):
    """out[k*plane + first_pixel + s] = block[s, k] + bias[k] for s < pixels and k < len(bias): a pixel-tile block
    (pixels, filters rounded up) stored into y's planes, 16 x 16 blocks at a time (`transpose_block`) after
    the bias is added along the block's rows. Args: block (>= pixels, >= K) float32; out: y[n] flattened."""
    filters, width = bias.shape[0], block.shape[1]
    for s in range(pixels):
        row = block[s]
        for k in range(filters):
            row[k] += bias[k]
    source = block.reshape(block.shape[0] * width)
    whole_pixels, whole_filters = pixels // LANES * LANES, filters // LANES * LANES
    for k0 in range(0, whole_filters, LANES):
        for s0 in range(0, whole_pixels, LANES):
            transpose_block(source, s0 * width + k0, width, out, k0 * plane + first_pixel + s0, plane)
        for k in range(k0, k0 + LANES):
            for s in range(whole_pixels, pixels):
                out[k * plane + first_pixel + s] = block[s, k]
    for k in range(whole_filters, filters):
        for s in range(pixels):
            out[k * plane + first_pixel + s] = block[s, k]


@numba.njit(cache=True, parallel=True)
def correlate_pixel_tiles(x, pad_h, pad_w, filter_panels, bias, kh, kw, y, workers):
    """`correlate` with the roles of pixels and filters swapped: each tile is MR = 6 output pixels x NR = 64
    filters, y^T (pixels, K) = cols^T (pixels, C kh kw) @ W^T (C kh kw, K), for small maps.

    `rows_times_tile` computes it: its "rows" are 6 pixels of the zero-padded slab (`fill_slab`) and its
    reduction table holds the taps' offsets in the slab (image[pixel + tap], observation 1 of the module
    docstring), its right operand the filters packed 64 to a panel. The pixels of a work item (a block
    of whole rows, usually a whole small image) are numbered across its rows, so only the last tile of
    an item is partly empty. The tiles add up in a scratch block (pixels, filters) over passes of
    PIXEL_TILE_PASS reduction steps, which is then stored transposed into y with the bias.

    With HALF = 32 filters or fewer, the filters' panel is folded (`fold_panel`): a tile's first 32 columns sum
    the first half of the channels, the other 32 the second half (`rows_times_folded_tile`).

    Args:
        x, pad_h, pad_w, bias, kh, kw, y, workers: as in `correlate`.
        filter_panels: `pack_panels` of the (K, C*kh*kw) filter matrix into (ceil(K / NR), C*kh*kw, NR), or
            for K <= HALF `fold_panel`'s (1, ceil(C / 2)*kh*kw, NR).
    """
    n_images, filters, out_h, out_w = y.shape
    channels = x.shape[1]
    length = channels * kh * kw
    n_panels, steps_in_all, _ = filter_panels.shape
    folded = steps_in_all < length  # (see `fold_panel`): channels c and c + ceil(C / 2) side by side in a tile
    padded_w = x.shape[3] + 2 * pad_w
    passes = (steps_in_all + PIXEL_TILE_PASS - 1) // PIXEL_TILE_PASS
    pass_length = (steps_in_all + passes - 1) // passes
    rows_per_item = max(1, min(out_h, PIXEL_TILE_SCRATCH // (n_panels * NR) // out_w))
    items_per_image = (out_h + rows_per_item - 1) // rows_per_item
    slab_h = rows_per_item + kh - 1
    # without a zero border (padding 0: a 1x1 layer, an unpadded one) the kernel reads x in place, each
    # plane H rows apart; a copy of it would cost about as much as a 1x1 layer's products (measured).
    # Folded with an odd number of channels, the second half reads one plane past x: a zero plane of the slab.
    odd = folded and channels % 2 == 1
    in_place = pad_h == 0 and pad_w == 0 and not odd
    plane = (x.shape[2] if in_place else slab_h) * padded_w
    fold = numba.uint64((channels + 1) // 2 * plane)  # the second half's first tap from the first's
    taps = tap_offsets(channels, kh, kw, x.shape[2] if in_place else slab_h, padded_w, length).astype(np.uint64)
    groups = (rows_per_item * out_w + MR - 1) // MR
    positions = np.zeros(groups * MR, dtype=np.int64)  # pixel s of a block: where its window starts in the slab
    for s in range(rows_per_item * out_w):
        positions[s] = s // out_w * padded_w + s % out_w
    n_items = n_images * items_per_image
    # fewer items than workers (one small image): a unit of work per (item, group of filter panels), so that
    # every worker has some (units write apart in y: the split changes no result). Not more groups than that:
    # each unit copies its item's slab again (measured: a unit per panel made 512 -> 512 on one 14 x 14 map 1.3x slower)
    panel_groups = min(n_panels, (workers + n_items - 1) // n_items)
    per_unit = (n_panels + panel_groups - 1) // panel_groups
    scratch = np.empty((workers, groups * MR, per_unit * NR), dtype=y.dtype)
    slabs = np.empty((workers, 0 if in_place else (channels + odd) * slab_h * padded_w), dtype=y.dtype)
    last_group = np.zeros((workers, MR), dtype=np.int64)
    units = n_items * panel_groups
    per_worker = (units + workers - 1) // workers
    for worker in prange(workers):
        block, edge = scratch[worker], last_group[worker]
        for unit in range(worker * per_worker, min(units, (worker + 1) * per_worker)):
            item, first_panel = unit // panel_groups, unit % panel_groups * per_unit
            n, first_row, n_rows = item_rows(item, items_per_image, rows_per_item, out_h)
            if in_place:
                image, column = x[n].reshape(x.shape[1] * x.shape[2] * x.shape[3]), first_row * padded_w
            else:
                image, column = slabs[worker], 0
                fill_slab(x[n], first_row, pad_h, pad_w, slab_h, image, padded_w)
            pixels = n_rows * out_w
            item_groups = (pixels + MR - 1) // MR
            for i in range(MR):  # the last group's rows past `pixels` repeat the block's first pixel (not stored)
                s = (item_groups - 1) * MR + i
                edge[i] = positions[s] if s < pixels else 0
            block[...] = 0.0
            for start in range(0, steps_in_all, pass_length):
                steps = min(pass_length, steps_in_all - start)
                for q in range(first_panel, min(n_panels, first_panel + per_unit)):
                    for g in range(item_groups):
                        rows = edge if g == item_groups - 1 else positions[g * MR : (g + 1) * MR]
                        if folded:
                            rows_times_folded_tile(steps, fold, taps[start:], image, rows, column, filter_panels[0, start:], block, g * MR, 0)
                        else:
                            rows_times_tile(steps, taps[start:], image, rows, column, filter_panels[q, start:], block, g * MR, (q - first_panel) * NR)
            first_filter = first_panel * NR
            store_transposed(block, pixels, bias[first_filter : min(filters, first_filter + per_unit * NR)],
                             y[n].reshape(filters * out_h * out_w)[first_filter * out_h * out_w :], first_row * out_w, out_h * out_w)


@numba.njit(cache=True, parallel=True)
def input_gradient_few_channels(dy, panels, kh, kw, padding, dx, workers):
    """dx for layers with few input channels (stride 1): the columns' gradient W^T @ dy[n] by register
    tiles, then col2im (`scratchdet.kernels.cpu.nn.col2im`) adds each entry onto the pixel it came from.

    `correlate` would need dy copied with a zero border, and 6-row tiles of which an RGB input fills 3;
    here the tile rows are the C*kh*kw = 27 taps and dy is read in place, NR pixels per tile. The
    images are shared among the threads (col2im of one image adds across its row blocks).

    Args:
        dy: (N, K, H', W') float32; panels: `pack_panels` of the (C*kh*kw, K) matrix W^T.
        kh, kw, padding: as in the forward. dx: (N, C, H, W) float32 output.
        workers: parallel workers sharing the images, each with its scratch allocated once (see `correlate`).
    """
    n_images, filters, out_h, out_w = dy.shape
    _, channels, height, width = dx.shape
    n_panels = panels.shape[0]
    pixels = out_h * out_w
    tiles = (pixels + NR - 1) // NR
    length = channels * kh * kw
    row_offsets = np.arange(filters) * pixels  # row k of dy[n] as a flat (K*H'*W') array
    # each worker's scratch: the columns' gradient (C*kh*kw rounded up, pixels rounded up) and the padded
    # image it is added onto
    all_cols = np.empty((workers, n_panels * MR, tiles * NR), dtype=dy.dtype)
    all_dxpad = np.empty((workers, 1, channels, height + 2 * padding, width + 2 * padding), dtype=dx.dtype)
    all_last = np.zeros((workers, filters * NR), dtype=dy.dtype)  # the last, partial tile's pixels (the rest zero)
    last_offsets = np.arange(filters) * NR
    per_worker = (n_images + workers - 1) // workers
    for worker in prange(workers):
        last = all_last[worker]
        for n in range(worker * per_worker, min(n_images, (worker + 1) * per_worker)):
            flat_dy = dy[n].reshape(filters * pixels)
            for k in range(filters):
                for p in range((tiles - 1) * NR, pixels):
                    last[k * NR + p - (tiles - 1) * NR] = flat_dy[k * pixels + p]
            cols = all_cols[worker]
            cols[...] = 0.0
            for q in range(n_panels):
                for t in range(tiles - 1):
                    tile_times_rows(filters, panels[q], flat_dy, row_offsets, t * NR, cols, q * MR, t * NR)
                tile_times_rows(filters, panels[q], last, last_offsets, 0, cols, q * MR, (tiles - 1) * NR)
            dxpad = all_dxpad[worker]
            col2im(cols[:length, :pixels], kh, kw, 1, dxpad)
            dx[n] = dxpad[0, :, padding : padding + height, padding : padding + width]


# ---------------------------------------------------------------------------------------------------
# The filter and bias gradients
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, fastmath={"reassoc"})
def block_sum(rows):
    """The sum of a (rows, W') block of dy in float64 (a bias gradient's share). `reassoc` lets the
    compiler split it across vector lanes: added strictly in order, each addition waits for the one
    before, and this sum took longer than the filter gradient's products on RGB-input layers."""
    total = 0.0
    for r in range(rows.shape[0]):
        for x in range(rows.shape[1]):
            total += rows[r, x]
    return total


@numba.njit(cache=True)
def pack_dy_panels(dy_image, first_pixel, n_pixels, first_filter, n_filters, panels, first_column=0):
    """panels[q, s, first_column + j] = dy_image[first_filter + q*NR + j, first_pixel + s] for s < n_pixels and
    q*NR + j < n_filters: dy's rows of a block laid out as the right operand of `rows_times_tile`, 16 x 16
    blocks at a time (`transpose_block`; an element loop took 1 ms of the 5.5 of the 64x64x16x16 -> 128
    filter gradient). first_column = HALF puts a second block beside the first (`rows_times_folded_tile`).

    Args:
        dy_image: (K, H'*W') float32, one image's dy planes; panels: (>= ceil(n_filters / NR), >= n_pixels, NR).
    """
    plane = dy_image.shape[1]
    source = dy_image.reshape(dy_image.shape[0] * plane)
    pitch = panels.shape[1]
    target = panels.reshape(panels.shape[0] * pitch * NR)
    whole_pixels = n_pixels // LANES * LANES
    whole_filters = n_filters // LANES * LANES
    for k0 in range(0, whole_filters, LANES):
        base = k0 // NR * pitch * NR + k0 % NR + first_column  # panels[k0 // NR, 0, k0 % NR + first_column]
        for p0 in range(0, whole_pixels, LANES):
            transpose_block(source, (first_filter + k0) * plane + first_pixel + p0, plane, target, base + p0 * NR, NR)
        for s in range(whole_pixels, n_pixels):
            for f in range(LANES):
                target[base + s * NR + f] = source[(first_filter + k0 + f) * plane + first_pixel + s]
    for k in range(whole_filters, n_filters):
        for s in range(n_pixels):
            panels[k // NR, s, k % NR + first_column] = dy_image[first_filter + k, first_pixel + s]


@numba.njit(cache=True, parallel=True)
def filter_gradient(x, pad_h, pad_w, dy, kh, kw, dw_t, db):
    """dw_t[(c, i, j), k] = sum_{n, oy, ox} dy[n, k, oy, ox] * xpad[n, c, oy + i, ox + j] and
    db[k] = sum_{n, oy, ox} dy[n, k, oy, ox] (stride 1).

    The sum over (image, block of rows) items is split into FILTER_GRAD_CHUNKS fixed chunks whose partial
    sums are added in order at the end (`add_chunks`): the split depends only on the shapes, so the
    result is the same on any number of threads. Each item copies the image rows it reads into a
    zero-padded slab (`fill_slab`) and lays its dy rows out as (pixels, NR) panels of 64 filters
    (`pack_dy_panels`; zero past the last filter); each 6-tap panel of the slab is then read in place once per filter panel, in
    a row (`rows_times_tile`). With HALF = 32 filters or fewer, a panel holds the block's top half of dy
    rows in its first 32 columns and its bottom half beside them (`rows_times_folded_tile`). With at least FILTER_GRAD_CHUNKS items a unit of work is a chunk with all
    its filter panels (the 6 image rows then come from the L1 cache the second time: measured 7 %
    faster); with fewer (one large image), a unit is a (chunk, filter panel) pair, so that the workers
    still have enough units.

    Args:
        x: (N, C, H, W) float32; pad_h, pad_w: its zero border, as in `correlate`.
        dy: (N, K, H + 2*pad_h - kh + 1, W + 2*pad_w - kw + 1) float32.
        dw_t: (C*kh*kw, K) float32 output, overwritten. db: (K,) float64 output, overwritten.
    """
    n_images, filters, out_h, out_w = dy.shape
    length = dw_t.shape[0]
    channels = length // (kh * kw)
    n_panels = (length + MR - 1) // MR
    padded_w = x.shape[3] + 2 * pad_w
    filter_panels = (filters + NR - 1) // NR
    rows_per_item, items_per_image, slab_h = pixel_blocks(out_h, out_w, FILTER_GRAD_PIXELS, kh)
    n_items = n_images * items_per_image
    if n_items >= FILTER_GRAD_CHUNKS:  # a unit of work per chunk, all the filter panels in it
        n_chunks, groups = FILTER_GRAD_CHUNKS, 1
    else:  # few items (one large image): a unit per (chunk, filter panel), fewer chunks to add up
        n_chunks, groups = max(1, min(n_items, FILTER_GRAD_CHUNKS // filter_panels)), filter_panels
    per_group = (filter_panels + groups - 1) // groups
    pixels = pixel_offsets(rows_per_item, out_w, padded_w)
    # HALF filters or fewer: each block's top and bottom halves side by side in one tile (`rows_times_folded_tile`;
    # the slab one row taller for a bottom half one row short, whose pixels dy then zeroes)
    folded = filters <= HALF
    slab_h += folded
    in_place = pad_h == 0 and pad_w == 0 and not folded  # no zero border: x read in place, as in `correlate_pixel_tiles`
    offsets = tap_offsets(channels, kh, kw, x.shape[2] if in_place else slab_h, padded_w, n_panels * MR)
    partial = np.zeros((n_chunks, n_panels * MR, filter_panels * NR), dtype=dw_t.dtype)
    partial_db = np.zeros((n_chunks, filter_panels * NR))
    for unit in prange(n_chunks * groups):
        chunk, group = unit // groups, unit % groups
        first_panel, last_panel = group * per_group, min(filter_panels, (group + 1) * per_group)
        dy_panels = np.zeros((per_group, rows_per_item * out_w, NR), dtype=dw_t.dtype)  # (panel, pixels, NR filters)
        slab = np.empty(0 if in_place else channels * slab_h * padded_w, dtype=dw_t.dtype)
        for item in range(chunk * n_items // n_chunks, (chunk + 1) * n_items // n_chunks):  # sizes differ by <= 1
            n, first_row, n_rows = item_rows(item, items_per_image, rows_per_item, out_h)
            if in_place:
                image, column = x[n].reshape(x.shape[1] * x.shape[2] * x.shape[3]), first_row * padded_w
            else:
                image, column = slab, 0
                fill_slab(x[n], first_row, pad_h, pad_w, slab_h, slab, padded_w)
            first_filter, end_filter = first_panel * NR, min(filters, last_panel * NR)
            for k in range(first_filter, end_filter):
                partial_db[chunk, k] += block_sum(dy[n, k, first_row : first_row + n_rows])
            dy_image = dy[n].reshape(filters, out_h * out_w)
            if folded:
                top = (n_rows + 1) // 2  # rows; the bottom half's pixel s is the top half's s + top*padded_w in the slab
                pack_dy_panels(dy_image, first_row * out_w, top * out_w, 0, filters, dy_panels)
                pack_dy_panels(dy_image, (first_row + top) * out_w, (n_rows - top) * out_w, 0, filters, dy_panels, HALF)
                dy_panels[0, (n_rows - top) * out_w : top * out_w, HALF:] = 0.0
                for p in range(n_panels):
                    rows_times_folded_tile(top * out_w, numba.uint64(top * padded_w), pixels, image, offsets[p * MR : (p + 1) * MR], column,
                                           dy_panels[0], partial[chunk], p * MR, 0)
                continue
            pack_dy_panels(dy_image, first_row * out_w, n_rows * out_w, first_filter, end_filter - first_filter, dy_panels)
            for p in range(n_panels):  # a panel's 6 image rows stay in the L1 cache across the filter panels
                for q in range(last_panel - first_panel):
                    rows_times_tile(n_rows * out_w, pixels, image, offsets[p * MR : (p + 1) * MR], column, dy_panels[q], partial[chunk],
                                    p * MR, (first_panel + q) * NR)
    add_chunks(partial, partial_db, dw_t, db)


@numba.njit(cache=True)
def pixel_blocks(out_h, out_w, block_pixels, kh):
    """The work items of a filter gradient: blocks of whole output rows of about `block_pixels` pixels.
    Returns (rows per block, blocks per image, slab rows)."""
    rows = min(out_h, max(1, block_pixels // out_w))
    return rows, (out_h + rows - 1) // rows, rows + kh - 1


@numba.njit(cache=True)
def add_chunks(partial, partial_db, dw_t, db):
    """dw_t = sum over chunks of partial[chunk] (its first rows and columns), db likewise, chunk by chunk
    in order: the filter gradients' fixed split, added up the same way on any number of threads."""
    length, filters = dw_t.shape
    dw_t[...] = 0
    db[...] = 0
    for chunk in range(partial.shape[0]):
        for row in range(length):
            for k in range(filters):
                dw_t[row, k] += partial[chunk, row, k]
        for k in range(filters):
            db[k] += partial_db[chunk, k]


def few_filters(filters, out_h, out_w, length):
    """Whether `filter_gradient_few_filters` costs less than `filter_gradient` for this many filters, output
    size and reduction length (C*kh*kw taps). The latter rounds the filters up to 64s (263 GFLOP/s per
    core, measured), or to HALF = 32 for at most 32 filters (the pixels folded into both halves of its
    tile, `rows_times_folded_tile`, counted at 235), and lays dy out as panels first, worth about
    TILE_PACKING more taps; the former rounds them up to 4s (228 GFLOP/s on long blocks) and each row's
    pixels up to whole 16-pixel runs, and each of its tiles ends in 24 sums across the vector lanes, which
    cost about as much as 48 runs (measured: 14 x 14 maps, 48 filters, 14 runs a tile, ran at 89 GFLOP/s,
    and 2.7x slower than the 64-filter tiles). Measured, dot tiles / folded tiles: 16x32x56x56 -> 32, 5x5,
    10.1 / 5.8 ms; 64x3x64x64 -> 32 2.2 / 2.8; 256x3x32x32 -> 16 1.61 / 1.69; but 8x16x45x61 -> 24 0.67 /
    0.58, where this picks the dot tiles."""
    rows = min(out_h, max(1, DOT_PIXELS // out_w))  # per tile
    runs = rows * -(-out_w // LANES)
    dot_cost = -(-filters // DOT_FILTERS) * DOT_FILTERS * (runs + 48) * LANES / (rows * out_w) / 228
    tile_cost = HALF / 235 if filters <= HALF else -(-filters // NR) * NR / 263
    return dot_cost < tile_cost * (length + TILE_PACKING) / length


@numba.njit(cache=True, parallel=True)
def filter_gradient_few_filters(x, pad_h, pad_w, dy, kh, kw, dw_t, db):
    """`filter_gradient` computed by `dot_tile`s (6 taps x 4 filters, vector lanes along the pixels), for
    layers with few filters (see `few_filters`). The sum over (image, block of rows) items is split into
    FILTER_GRAD_CHUNKS fixed chunks, added in order at the end (same result on any number of threads).

    Each row is covered by whole 16-pixel runs. When W' is a multiple of 16, dy is read in place;
    otherwise each item copies its dy rows into a block whose rows are zero past W' (the last run's extra
    lanes then add nothing), and the slab's rows are wide enough (`pitch`) that those lanes read its zero
    border. Arguments as in `filter_gradient`.
    """
    n_images, filters, out_h, out_w = dy.shape
    length = dw_t.shape[0]
    channels = length // (kh * kw)
    n_panels = (length + MR - 1) // MR
    groups = (filters + DOT_FILTERS - 1) // DOT_FILTERS
    dy_pitch = (out_w + LANES - 1) // LANES * LANES
    in_place = dy_pitch == out_w
    pitch = max(x.shape[3] + 2 * pad_w, dy_pitch + kw - 1)  # slab row pitch: a run's taps stay in its row
    rows_per_item, items_per_image, slab_h = pixel_blocks(out_h, out_w, DOT_PIXELS, kh)
    offsets = tap_offsets(channels, kh, kw, slab_h, pitch, n_panels * MR)
    n_items = n_images * items_per_image
    n_chunks = max(1, min(n_items, FILTER_GRAD_CHUNKS))
    partial = np.zeros((n_chunks, n_panels * MR, groups * DOT_FILTERS), dtype=dw_t.dtype)
    partial_db = np.zeros((n_chunks, filters))
    runs = dy_pitch // LANES
    run_pixels, run_dy = dot_offsets(rows_per_item, out_w, pitch, dy_pitch)
    for chunk in prange(n_chunks):
        slab = np.empty(channels * slab_h * pitch, dtype=dw_t.dtype)
        dy_block = np.zeros((0 if in_place else filters, rows_per_item * dy_pitch), dtype=dw_t.dtype)  # zero past W'
        buffer = new_tile(slab)
        for item in range(chunk * n_items // n_chunks, (chunk + 1) * n_items // n_chunks):  # sizes differ by <= 1
            n, first_row, n_rows = item_rows(item, items_per_image, rows_per_item, out_h)
            fill_slab(x[n], first_row, pad_h, pad_w, slab_h, slab, pitch)
            for k in range(filters):
                partial_db[chunk, k] += block_sum(dy[n, k, first_row : first_row + n_rows])
            if in_place:
                dy_image, dy_column = dy[n].reshape(filters, out_h * out_w), first_row * out_w
            else:
                for k in range(filters):
                    for r in range(n_rows):
                        copy_row(dy[n, k, first_row + r], dy_block[k, r * dy_pitch :], buffer)
                dy_image, dy_column = dy_block, 0
            for g in range(groups):  # a group's 4 filters' dy rows stay in the L1 cache across the tap panels
                for p in range(n_panels):
                    dot_tile(n_rows * runs, run_pixels, run_dy, slab, offsets[p * MR : (p + 1) * MR], 0, dy_image,
                             g * DOT_FILTERS, dy_column, partial[chunk], p * MR, g * DOT_FILTERS)
    add_chunks(partial, partial_db, dw_t, db)
