"""3 x 3 convolutions (stride 1, float32) by Winograd's minimal filtering F(2 x 2, 3 x 3).

Lavin and Gray 2016, "Fast algorithms for convolutional neural networks", section 4.1 (after Winograd
1980): a 2 x 2 block of outputs of a 3 x 3 correlation of one channel, computed directly, takes 36
multiplications; computed as

    Y (2, 2) = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise: 16 multiplications)

from the 4 x 4 input tile d it reads and the 3 x 3 filter g, it takes 16, and the transforms are only
additions (and halvings, done once per filter). Summed over the channels, the 16 elementwise products
become 16 independent matrix products, one per position xi of the 4 x 4 tile:

    M[xi] (K, tiles) = U[xi] (K, C) @ V[xi] (C, tiles),   U = G g G^T per (k, c),   V = B^T d B per (c, tile)

2.25x fewer multiply-adds than the direct product, computed by the same register-tiled micro-kernel
(`conv_gemm.tile_times_rows`): the 6 x 64 tile runs over 64 output tiles at a time. The transforms are
additions over whole rows, which the compiler turns into vector code.

A work item is a block of output tiles (`TILES_PER_ITEM`, one micro-kernel tile wide): a few whole
images when they are small, else a band of tile rows of one image. Its rows of x go into a zero-padded
slab (`conv_gemm.fill_slab`), are transformed into V, multiplied into M, and M is transformed back into y.
The intermediate sums are rounded differently from the direct product's (measured: relative error about
1e-6 in float32, as the direct route's); the input gradient, a correlation too (see conv_gemm's module
docstring, observation 2), runs through the same code.
"""


import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from scratchdet.kernels.cpu.conv_gemm import LANES, MR, NR, rows_times_tile, store_transposed, transpose_block

TILES_PER_ITEM = 64  # output tiles (2 x 2 pixels each) per work item: one micro-kernel tile (NR columns) of M
TAPS = 16  # positions xi of the 4 x 4 input tile: the number of matrix products
MIN_CHANNELS = 64  # `use_winograd`: at least this many input channels (the products' reduction) ...
MIN_FILTERS = 64  # ... and filters (a tile's 64 columns)
B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # the input transform, V = B^T d B
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))  # the output transform, Y = A^T M A


def _combine(builder, coefficients, values):
    """sum_q coefficients[q] * values[q] for coefficients in {-1, 0, 1}, as LLVM vector additions."""
    terms = [(c, v) for c, v in zip(coefficients, values) if c]
    terms.sort(key=lambda term: -term[0])  # start from a +1 term (every row of B^T and A^T has one)
    total = terms[0][1]
    for c, value in terms[1:]:
        total = builder.fadd(total, value) if c > 0 else builder.fsub(total, value)
    return total


def _sandwich(matrix):
    """An intrinsic sandwich(source, s_start, s_row, s_col, target, t_start, t_row, t_col) that computes
    Z = L D L^T, L = `matrix` (n x 4) of -1, 0, 1, for 16 lanes at once (LANES channels or filters): D[p][q] is
    the vector source[s_start + p*s_row + q*s_col :][:16], Z[i][j] goes to target[t_start + i*t_row + j*t_col :].
    Written as vector code directly: as Numba loops over the lanes, the compiler either proved no two of
    the 16 inputs and n*n outputs apart (one lane at a time) or gave each its own loop (measured 3-6x slower
    than this). Both arrays 1-D float32; no bounds are checked. Under NUMBA_DISABLE_JIT, plain NumPy."""
    size = len(matrix)
    if numba.config.DISABLE_JIT:
        left = np.array(matrix, dtype=np.float64)

        def sandwich(source, s_start, s_row, s_col, target, t_start, t_row, t_col):
            d = np.array([[source[s_start + p * s_row + q * s_col :][:LANES] for q in range(4)] for p in range(4)])
            z = np.einsum("ip,pql,jq->ijl", left, d, left)
            for i in range(size):
                for j in range(size):
                    target[t_start + i * t_row + j * t_col :][:LANES] = z[i, j]

        return sandwich

    @intrinsic
    def sandwich(typingctx, source, s_start, s_row, s_col, target, t_start, t_row, t_col):
        def codegen(context, builder, signature, args):
            vector = llvm_ir.VectorType(llvm_ir.FloatType(), LANES)
            index = llvm_ir.IntType(64)
            source_data = context.make_array(signature.args[0])(context, builder, args[0]).data
            target_data = context.make_array(signature.args[4])(context, builder, args[4]).data
            start, row, col, out_start, out_row, out_col = (
                context.cast(builder, args[i], signature.args[i], types.int64) for i in (1, 2, 3, 5, 6, 7))

            def at(data, first, step_i, i, step_j, j):
                offset = builder.add(first, builder.add(builder.mul(step_i, llvm_ir.Constant(index, i)), builder.mul(step_j, llvm_ir.Constant(index, j))))
                return builder.bitcast(builder.gep(data, [offset]), vector.as_pointer())

            d = [[builder.load(at(source_data, start, row, p, col, q), align=4) for q in range(4)] for p in range(4)]
            rows = [[_combine(builder, matrix[i], [d[p][q] for p in range(4)]) for q in range(4)] for i in range(size)]  # L D
            for i in range(size):
                for j in range(size):
                    builder.store(_combine(builder, matrix[j], rows[i]), at(target_data, out_start, out_row, i, out_col, j), align=4)
            return context.get_dummy_value()

        return types.void(source, s_start, s_row, s_col, target, t_start, t_row, t_col), codegen

    return sandwich


transform_tile = _sandwich(B_T)  # 4 x 4 inputs -> the 16 entries of B^T d B
untransform_tile = _sandwich(A_T)  # the 16 entries of M -> 2 x 2 outputs, A^T M A


def use_winograd(channels, filters, kernel_size):
    """Whether a stride-1 float32 correlation should go through `winograd_correlate` rather than conv_gemm's
    direct products: 3 x 3 filters, and enough channels and filters that its short products (a reduction
    over the C channels only, 64 filters a tile) and its transforms do not eat the 2.25x fewer
    multiply-adds. Measured against the direct route (2 cores, forward): 64 -> 128 channels on 16 x 16
    maps 0.66x its time, 256 -> 512 on 38 x 63 0.63x, 128 -> 100 on 7 x 7 0.75x; but 32 -> 64 on 32 x 32
    about the same, and 32 -> 32 on 56 x 56 1.2x."""
    return tuple(kernel_size) == (3, 3) and channels >= MIN_CHANNELS and filters >= MIN_FILTERS


@numba.njit(cache=True, parallel=True)
def transform_filters(w, panels):
    """U = G g G^T for every filter g = w[k, c] (3, 3), with

        G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]],

    written as `conv_gemm.pack_panels` of each U[xi] (K, C) into NR-row panels: panels[xi, k // NR, c, k % NR]
    = U[4i + j] at (i, j) (zero for k >= K), the layout `winograd_correlate` reads.

    Args: w: (K, C, 3, 3) float32; panels: (16, ceil(K / NR), C, NR) float32 output."""
    filters, channels = w.shape[0], w.shape[1]
    n_panels = panels.shape[1]
    for q in prange(n_panels):
        for c in range(channels):
            for kk in range(NR):
                k = q * NR + kk
                if k >= filters:
                    for xi in range(TAPS):
                        panels[xi, q, c, kk] = 0.0
                    continue
                g = w[k, c]
                for i in range(4):  # row i of G g, then its product with G^T
                    if i == 0:
                        r0, r1, r2 = g[0, 0], g[0, 1], g[0, 2]
                    elif i == 3:
                        r0, r1, r2 = g[2, 0], g[2, 1], g[2, 2]
                    else:
                        sign = 1.0 if i == 1 else -1.0
                        r0 = 0.5 * (g[0, 0] + sign * g[1, 0] + g[2, 0])
                        r1 = 0.5 * (g[0, 1] + sign * g[1, 1] + g[2, 1])
                        r2 = 0.5 * (g[0, 2] + sign * g[1, 2] + g[2, 2])
                    panels[4 * i, q, c, kk] = r0
                    panels[4 * i + 1, q, c, kk] = 0.5 * (r0 + r1 + r2)
                    panels[4 * i + 2, q, c, kk] = 0.5 * (r0 - r1 + r2)
                    panels[4 * i + 3, q, c, kk] = r2


@numba.njit(cache=True)
def fill_channels_last(x, first_row, pad_h, pad_w, slab_h, padded_w, slab, depth):
    """slab[(r*padded_w + col)*depth + c] = x (C, H, W) zero-padded by pad_h rows and pad_w columns, at padded row
    first_row + r and column col, for r < slab_h, col < padded_w and c < depth (zero past x's border and
    for c >= C): the rows a work item reads, channels last and rounded up to whole vectors (depth a multiple
    of LANES), so that the transforms run along the channels. 16 x 16 blocks of (channels, columns) are
    transposed in registers (`conv_gemm.transpose_block`), the rest by element."""
    channels, height, width = x.shape
    plane = height * width
    source = x.reshape(channels * plane)
    whole_c, whole_w = channels // LANES * LANES, width // LANES * LANES
    for r in range(slab_h):
        row = slab[r * padded_w * depth : (r + 1) * padded_w * depth]
        y = first_row + r - pad_h
        if y < 0 or y >= height:
            row[:] = 0.0
            continue
        row[: pad_w * depth] = 0.0
        row[(pad_w + width) * depth :] = 0.0
        first = pad_w * depth  # column 0 of x in the row
        for c0 in range(0, whole_c, LANES):
            for w0 in range(0, whole_w, LANES):
                transpose_block(source, c0 * plane + y * width + w0, plane, row, first + w0 * depth + c0, depth)
        for w in range(width):
            pixel = row[first + w * depth : first + (w + 1) * depth]
            for c in range(whole_c if w < whole_w else 0, channels):
                pixel[c] = source[c * plane + y * width + w]
            pixel[channels:] = 0.0


@numba.njit(cache=True, parallel=True)
def winograd_correlate(x, pad_h, pad_w, panels, bias, y, workers):
    """y[n, k, oy, ox] = bias[k] + sum_{c, i, j} w[k, c, i, j] * xpad[n, c, oy + i, ox + j] for 3 x 3 filters w,
    xpad x zero-padded by pad_h rows and pad_w columns on each side (the product of `conv_gemm.correlate`).

    Per work item: its rows of x, channels last (`fill_channels_last`); V[xi] (tiles, C) of every output
    tile (`transform_tile`); M[xi] (tiles, K) = V[xi] @ U[xi]^T by register tiles of 6 output tiles x 64
    filters (`conv_gemm.rows_times_tile`, its reduction the C channels); the 2 x 2 outputs of each tile
    into a (pixels, K) block (`untransform_tile`), stored transposed into y with the bias.

    Args:
        x: (N, C, H, W) float32. panels: (16, ceil(K / NR), C, NR), `conv_gemm.pack_panels` of each
            U[xi] (K, C) of `transform_filters` into NR-row panels. bias: (K,) float32.
        y: (N, K, H + 2*pad_h - 2, W + 2*pad_w - 2) float32 output.
        workers: parallel workers sharing the items, each with its scratch allocated once.
    """
    n_images, filters, out_h, out_w = y.shape
    channels = x.shape[1]
    n_panels = panels.shape[1]
    depth = (channels + LANES - 1) // LANES * LANES  # a tile's channels in the slab and in V, whole vectors
    width = n_panels * NR  # a tile's filters in M and a pixel's in the output block
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_image = tiles_h * tiles_w
    if per_image >= TILES_PER_ITEM:  # a band of tile rows of one image per item
        images_per_item, rows_per_item = 1, max(1, TILES_PER_ITEM // tiles_w)
        items_per_image = (tiles_h + rows_per_item - 1) // rows_per_item
        n_items = n_images * items_per_image
        tiles = rows_per_item * tiles_w
    else:  # whole images per item
        images_per_item, rows_per_item, items_per_image = TILES_PER_ITEM // per_image, tiles_h, 1
        n_items = (n_images + images_per_item - 1) // images_per_item
        tiles = images_per_item * per_image
    groups = (tiles + MR - 1) // MR
    padded_w = 2 * tiles_w + 2  # slab columns: the tiles' 4 x 4 windows, zero past x's padded width
    slab_h = 2 * rows_per_item + 2
    block_w = 2 * tiles_w  # output block pixels per row: whole tiles (compacted to W' when W' is odd)
    # V and M hold 16 planes each, NR values (4 cache lines) more than they use apart, so that their starts
    # do not fall on the same L1 cache set (planes a multiple of 4 KB apart would)
    v_plane, m_plane = groups * MR * depth + NR, groups * MR * width + NR
    steps = np.arange(channels).astype(np.uint64)  # the reduction: channel c of a tile's row of V[xi]
    no_bias = np.zeros(NR, dtype=y.dtype)  # the products are stored, not added (the bias comes with the transposed store)
    slabs = np.empty((workers, slab_h * padded_w * depth), dtype=y.dtype)
    vs = np.zeros((workers, TAPS * v_plane), dtype=y.dtype)  # rows past an item's tiles stay finite
    ms = np.empty((workers, TAPS * m_plane), dtype=y.dtype)
    blocks = np.empty((workers, 2 * rows_per_item * block_w * width), dtype=y.dtype)
    tile_offsets = np.empty((workers, groups * MR), dtype=np.int64)
    per_worker = (n_items + workers - 1) // workers
    for worker in prange(workers):
        slab, v, m, block, offsets = slabs[worker], vs[worker], ms[worker], blocks[worker], tile_offsets[worker]
        for item in range(worker * per_worker, min(n_items, (worker + 1) * per_worker)):
            first_image = item // items_per_image * images_per_item
            last_image = min(n_images, first_image + images_per_item)
            first_tile_row = item % items_per_image * rows_per_item
            tile_rows = min(rows_per_item, tiles_h - first_tile_row)
            item_tiles = (last_image - first_image) * tile_rows * tiles_w
            for t in range(groups * MR):  # where each tile's row of V[xi] starts (the last group's spare rows: tile 0)
                offsets[t] = t * depth if t < item_tiles else 0
            for n in range(first_image, last_image):
                fill_channels_last(x[n], 2 * first_tile_row, pad_h, pad_w, slab_h, padded_w, slab, depth)
                for r in range(tile_rows):
                    for tx in range(tiles_w):
                        corner = (2 * r * padded_w + 2 * tx) * depth
                        t = (n - first_image) * per_image + r * tiles_w + tx
                        for c0 in range(0, depth, LANES):
                            transform_tile(slab, corner + c0, padded_w * depth, depth, v, t * depth + c0, 4 * v_plane, v_plane)
            for xi in range(TAPS):
                v_xi = v[xi * v_plane : (xi + 1) * v_plane]
                m_xi = m[xi * m_plane : xi * m_plane + groups * MR * width].reshape(groups * MR, width)
                for q in range(n_panels):
                    for g in range((item_tiles + MR - 1) // MR):
                        rows_times_tile(channels, steps, v_xi, offsets[g * MR : (g + 1) * MR], 0, panels[xi, q], m_xi, g * MR, q * NR, no_bias)
            for n in range(first_image, last_image):
                for r in range(tile_rows):
                    for tx in range(tiles_w):
                        t = (n - first_image) * per_image + r * tiles_w + tx
                        corner = (2 * r * block_w + 2 * tx) * width
                        for k0 in range(0, width, LANES):
                            untransform_tile(m, t * width + k0, 4 * m_plane, m_plane, block, corner + k0, block_w * width, width)
                pixels = min(out_h - 2 * first_tile_row, 2 * tile_rows) * out_w
                if block_w != out_w:  # odd W': drop each row's last column, moving the rows together
                    for p in range(pixels):
                        source = (p // out_w * block_w + p % out_w) * width
                        block[p * width : (p + 1) * width] = block[source : source + width]
                store_transposed(block[: pixels * width].reshape(pixels, width), pixels, bias,
                                 y[n].reshape(filters * out_h * out_w), 2 * first_tile_row * out_w, out_h * out_w)
