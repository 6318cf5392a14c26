"""3 x 3 convolutions (stride 1, float32) by Winograd's minimal filtering: F(2 x 2, 3 x 3) and its transpose.

Lavin and Gray 2016, "Fast algorithms for convolutional neural networks", section 4 (after Winograd
1980): a 2 x 2 block of outputs of a 3 x 3 correlation of one channel, computed directly, takes 36
multiplications; computed as

    Y (2, 2) = A^T [ (G g G^T) * (B^T d B) ] A        (* elementwise: 16 multiplications)

from the 4 x 4 input tile d it reads and the 3 x 3 filter g, it takes 16; the transforms are additions
(and halvings, done once per filter). Summed over the channels, the 16 elementwise products become 16
independent matrix products, one per position xi of the 4 x 4 tile:

    M[xi] (tiles, K) = V[xi] (tiles, C) @ U[xi]^T (C, K),   U = G g G^T per (k, c),   V = B^T d B per (tile, c)

2.25x fewer multiply-adds than the direct product, computed by conv_gemm's register tile
(`conv_gemm.rows_times_tile`: 6 output tiles x 64 filters, reducing over the channels). The input
gradient is a correlation too (conv_gemm's module docstring, observation 2) and runs through the same
code; the filter gradient uses the transposed algorithm, F(3 x 3, 2 x 2) (`winograd_filter_gradient`).

Layout. A work item is a block of output tiles: a few whole images when they are small, else a band of
tile rows of one image. Its rows of x are copied channels last (`fill_channels_last`, by 16 x 16
register transposes), so that a tile's transform runs along the channels, 16 at a time: the two
transforms are written as vector code directly (`_sandwich`, LLVM IR through llvmlite, as
`conv_gemm.transpose_block`), since loops over the lanes left the compiler unable to prove the 16
inputs and 16 outputs apart (3-6x slower, measured). M's blocks are then turned back into 2 x 2 pixels
(`untransform_tile`) and stored into y by the transposed store of the pixel tiles (`conv_gemm.store_transposed`).

Which layers: `use_winograd` and `use_winograd_filter_gradient`, from measurements (their docstrings);
few channels (a short reduction per tile) or few filters (a part-empty 64-filter tile) stay with the
direct products. The intermediate sums are rounded differently from the direct product's: measured
relative errors of 1e-7 to 6e-7 of the largest output against float64, as for the direct route.
"""


import llvmlite.ir as llvm_ir
import numba
import numpy as np
from numba import prange, types
from numba.extending import intrinsic

from scratchdet.kernels.cpu.conv_gemm import HALF, LANES, MR, NR, block_sum, rows_times_folded_tile, rows_times_tile, store_transposed, transpose_block

TAPS = 16  # positions xi of the 4 x 4 input tile: the number of matrix products
B_T = ((1, 0, -1, 0), (0, 1, 1, 0), (0, -1, 1, 0), (0, 1, 0, -1))  # the input transform, V = B^T d B
A_T = ((1, 1, 1, 0), (0, 1, -1, -1))  # the output transform, Y = A^T M A

TILES_PER_ITEM = 64  # output tiles (2 x 2 pixels each) per work item of the correlation: 11 register tiles of 6
GRADIENT_ITEM_BYTES = 2 << 20  # the filter gradient's transformed tiles per work item (V and a panel's A dy A^T) ...
GRADIENT_TILES = (64, 256)  # ... in tiles, at least and at most: each register tile sums over them
GRADIENT_CHUNKS = 4  # the filter gradient is summed in this many fixed parts (see conv_gemm.FILTER_GRAD_CHUNKS) ...
GRADIENT_PARTIALS_BYTES = 32 << 20  # ... or fewer, where there are fewer items or their partial sums would take more than this

MIN_CHANNELS = 32  # `use_winograd`, `use_winograd_filter_gradient`: at least this many input channels (the products' reduction) ...
MIN_FILTERS = 48  # ... and filters for the correlation (a tile is 64 filters wide) ...
MIN_FOLDED_CHANNELS = 64  # ... or, for a layer with exactly HALF = 32 filters (folded products), this many channels ...
MIN_GRADIENT_FILTERS = 32  # ... and for the filter gradient (whose tiles reduce over all the tiles of the batch) ...
MAX_GRADIENT_PAIRS = 256 * 256  # ... where at most this many (channel, filter) pairs ...
MIN_TILES = 256  # ... and in both, at least this many output tiles in the batch (to pay for transforming the filters)


def _combine(builder, coefficients, values):
    """sum_q coefficients[q] * values[q] for coefficients in {-1, 0, 1}, as LLVM vector additions."""
    terms = [(c, v) for c, v in zip(coefficients, values) if c]
    terms.sort(key=lambda term: -term[0])  # start from a +1 term where there is one
    total = terms[0][1] if terms[0][0] > 0 else builder.fneg(terms[0][1])
    for c, value in terms[1:]:
        total = builder.fadd(total, value) if c > 0 else builder.fsub(total, value)
    return total


def _sandwich(matrix):
    """An intrinsic sandwich(source, s_start, s_row, s_col, target, t_start, t_row, t_col) that computes
    Z = L D L^T, L = `matrix` (n x m) of -1, 0, 1, for 16 lanes at once (LANES channels or filters): D[p][q]
    (p, q < m) is the vector source[s_start + p*s_row + q*s_col :][:16], Z[i][j] (i, j < n) goes to
    target[t_start + i*t_row + j*t_col :].
    Written as vector code directly: as Numba loops over the lanes, the compiler either proved no two of
    the 16 inputs and n*n outputs apart (one lane at a time) or gave each its own loop (measured 3-6x slower
    than this). Both arrays 1-D float32; no bounds are checked. Under NUMBA_DISABLE_JIT, plain NumPy."""
    size, inner = len(matrix), len(matrix[0])
    if numba.config.DISABLE_JIT:
        left = np.array(matrix, dtype=np.float64)

        def sandwich(source, s_start, s_row, s_col, target, t_start, t_row, t_col):
            d = np.array([[source[s_start + p * s_row + q * s_col :][:LANES] for q in range(inner)] for p in range(inner)])
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

            d = [[builder.load(at(source_data, start, row, p, col, q), align=4) for q in range(inner)] for p in range(inner)]
            rows = [[_combine(builder, matrix[i], [d[p][q] for p in range(inner)]) for q in range(inner)] for i in range(size)]  # L D
            for i in range(size):
                for j in range(size):
                    builder.store(_combine(builder, matrix[j], rows[i]), at(target_data, out_start, out_row, i, out_col, j), align=4)
            return context.get_dummy_value()

        return types.void(source, s_start, s_row, s_col, target, t_start, t_row, t_col), codegen

    return sandwich


transform_tile = _sandwich(B_T)  # 4 x 4 inputs -> the 16 entries of B^T d B
untransform_tile = _sandwich(A_T)  # the 16 entries of M -> 2 x 2 outputs, A^T M A
transform_gradient_tile = _sandwich(tuple(zip(*A_T)))  # 2 x 2 output gradients g -> the 16 entries of A g A^T


def use_winograd(channels, filters, kernel_size, tiles):
    """Whether a stride-1 float32 correlation (a forward or an input gradient) should go through
    `winograd_correlate` rather than conv_gemm's direct products: 3 x 3 filters, and enough channels and
    filters that its short products (a reduction over the C channels alone, 64 filters a tile) and its
    transforms do not eat the 2.25x fewer multiply-adds. Measured against the direct route (2 cores,
    channels -> filters of the correlation): 64 -> 128 on 16 x 16 maps 0.6x its time, 256 -> 512 on
    38 x 63 0.6x, 32 -> 64 on 32 x 32 0.75x, 48 -> 48 on 16 x 16 0.9x; 32 filters by folded products
    (`conv_gemm.rows_times_folded_tile`): 64 -> 32 on 28 x 28 0.82x, 128 -> 32 on 14 x 14 0.7x, but 32 -> 32
    on 56 x 56 1.08x and on 16 x 16 1.2x (on 8 x 8 maps 0.6x), 64 -> 24 on 28 x 28 1.4x; 16 -> 16 2.5x.
    And at least MIN_TILES output tiles (2 x 2 pixels) in the batch (`tiles`): the transformed filters
    are 16/9 of the filters' size (16 MB for 512 -> 512) and take as long to write however few tiles
    use them (measured 512 -> 512 on one 14 x 14 map, 49 tiles: 1.3x the direct route's time; one 3 x 3
    map 1.8x; 256 -> 256 on two 4 x 4 maps 3.3x)."""
    if tuple(kernel_size) != (3, 3) or tiles < MIN_TILES:
        return False
    return (channels >= MIN_CHANNELS and filters >= MIN_FILTERS) or (channels >= MIN_FOLDED_CHANNELS and filters == HALF)


def use_winograd_filter_gradient(channels, filters, kernel_size, tiles):
    """Whether the filter gradient should go through `winograd_filter_gradient`: 3 x 3 filters, at least
    MIN_TILES output tiles, as many channels as `use_winograd` asks and fewer filters (its tiles reduce
    over every tile of the batch), up to MAX_GRADIENT_PAIRS (channel, filter) pairs, whose 16 partial sums
    per chunk are added to once per work item. Measured against the direct route (2 cores): 0.6-0.7x its
    time on 64 -> 128 channels (16 x 16 maps), 128 -> 256 (56 x 56, 75 x 125), 256 -> 256 (28 x 28), 0.8x
    on 256 -> 256 on 8 x 8 maps and 32 -> 64 on 32 x 32; with 32 filters (folded products) 0.5x on 64 -> 32
    (28 x 28) and 32 -> 32 (56 x 56, 16 x 16); but 1.2x on 256 -> 512 on one 38 x 63 map, 1.25x on 16 -> 24
    (45 x 61)."""
    return (tuple(kernel_size) == (3, 3) and tiles >= MIN_TILES and channels >= MIN_CHANNELS
            and filters >= MIN_GRADIENT_FILTERS and channels * filters <= MAX_GRADIENT_PAIRS)


@numba.njit(inline="always")
def times_g(v0, v1, v2):
    """G @ v for a 3-vector v: G = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]] (in float64)."""
    return 1.0 * v0, 0.5 * (v0 + v1 + v2), 0.5 * (v0 - v1 + v2), 1.0 * v2


@numba.njit(inline="always")
def times_g_transposed(m0, m1, m2, m3):
    """G^T @ m for a 4-vector m (G as in `times_g`)."""
    return m0 + 0.5 * (m1 + m2), 0.5 * (m1 - m2), 0.5 * (m1 + m2) + m3


@numba.njit(cache=True, parallel=True)
def transform_filters(w, panels):
    """U = G g G^T for every filter g = w[k, c] (3, 3), with G (4, 3) as in `times_g`, written as `conv_gemm.pack_panels` of each U[xi] (K, C) into NR-row panels: panels[xi, k // NR, c, k % NR]
    = U[4i + j] at (i, j) (zero for k >= K), the layout `winograd_correlate` reads; or, for at most HALF
    filters and panels of shape (16, 1, ceil(C / 2), NR), folded for `conv_gemm.rows_times_folded_tile`:
    channel c < ceil(C / 2) in row c, columns 0 .. HALF - 1, channel c >= ceil(C / 2) in row c - ceil(C / 2),
    columns HALF ...

    Args: w: (K, C, 3, 3) float32; panels: float32 output, (16, ceil(K / NR), C, NR) or (16, 1, ceil(C / 2), NR)."""
    filters, channels = w.shape[0], w.shape[1]
    n_panels, rows = panels.shape[1], panels.shape[2]
    folded = rows < channels
    if folded:
        panels[...] = 0.0
    for q in prange(n_panels):
        for c in range(channels):
            row, first = (c % rows, c // rows * HALF) if folded else (c, 0)
            for kk in range(HALF if folded else NR):
                k = q * NR + kk
                column = first + kk
                if k >= filters:
                    for xi in range(TAPS):
                        panels[xi, q, row, column] = 0.0
                    continue
                g = w[k, c]
                a = times_g(g[0, 0], g[1, 0], g[2, 0])  # the three columns of G g
                b = times_g(g[0, 1], g[1, 1], g[2, 1])
                d = times_g(g[0, 2], g[1, 2], g[2, 2])
                for i in range(4):  # row i of (G g) G^T = G times row i of G g
                    u = times_g(a[i], b[i], d[i])
                    for j in range(4):
                        panels[4 * i + j, q, row, column] = u[j]


@numba.njit(cache=True)
def fill_channels_last(x, first_channel, first_row, pad_h, pad_w, slab_h, padded_w, slab, depth):
    """slab[(r*padded_w + col)*depth + c] = x (C, H, W) zero-padded by pad_h rows and pad_w columns, at channel
    first_channel + c, padded row first_row + r and column col, for r < slab_h, col < padded_w and c < depth
    (zero past x's border and its last channel): the rows a work item reads, channels last and rounded up
    to whole vectors (depth a multiple of LANES), so that the transforms run along the channels. 16 x 16
    blocks of (channels, columns) are transposed in registers (`conv_gemm.transpose_block`), the rest by element.
    Args: x: (C, H, W) float32, one image; slab: (>= slab_h*padded_w*depth,) float32 output."""
    _, height, width = x.shape
    plane = height * width
    channels = min(depth, x.shape[0] - first_channel)
    source = x.reshape(x.shape[0] * plane)[first_channel * plane :]
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


@numba.njit(cache=True)
def tile_items(n_images, out_h, out_w, tiles_per_item):
    """How the output tiles (2 x 2 pixels) of a batch split into work items of at most `tiles_per_item` (or one
    tile row): a band of tile rows of one image per item, or several whole small images, as even as whole
    rows and images allow (42, 42, 42 and 2 images would leave one worker half the work of the other).
    Returns (images per item, tile rows per item, items per image, items, most tiles in an item)."""
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_image = tiles_h * tiles_w
    if per_image >= tiles_per_item:
        most_rows = max(1, tiles_per_item // tiles_w)
        items_per_image = (tiles_h + most_rows - 1) // most_rows
        rows_per_item = (tiles_h + items_per_image - 1) // items_per_image
        return 1, rows_per_item, items_per_image, n_images * items_per_image, rows_per_item * tiles_w
    most_images = tiles_per_item // per_image
    n_items = (n_images + most_images - 1) // most_images
    images_per_item = (n_images + n_items - 1) // n_items
    return images_per_item, tiles_h, 1, (n_images + images_per_item - 1) // images_per_item, images_per_item * per_image


@numba.njit(cache=True, inline="always")
def item_span(item, n_images, images_per_item, rows_per_item, items_per_image, tiles_h):
    """Work item -> (first image, last image + 1, first tile row, tile rows) (see `tile_items`)."""
    first_image = item // items_per_image * images_per_item
    first_tile_row = item % items_per_image * rows_per_item
    return first_image, min(n_images, first_image + images_per_item), first_tile_row, min(rows_per_item, tiles_h - first_tile_row)


@numba.njit(cache=True)
def input_tiles(x, pad_h, pad_w, first_tile_row, tile_rows, tiles_w, slab_h, slab, depth, v, v_plane, first_tile):
    """V[xi] (tiles, depth) of an image's tile rows first_tile_row .. + tile_rows: row t = first_tile + r*tiles_w + tx
    of plane xi (v[xi*v_plane + t*depth :]) holds B^T d B at xi for the channels of the tile's 4 x 4 input d.
    x: (C, H, W) one image; slab: scratch for its rows (`fill_channels_last`, padded width 2*tiles_w + 2)."""
    padded_w = 2 * tiles_w + 2
    fill_channels_last(x, 0, 2 * first_tile_row, pad_h, pad_w, slab_h, padded_w, slab, depth)
    for r in range(tile_rows):
        for tx in range(tiles_w):
            corner = (2 * r * padded_w + 2 * tx) * depth
            t = first_tile + r * tiles_w + tx
            for c0 in range(0, depth, LANES):
                transform_tile(slab, corner + c0, padded_w * depth, depth, v, t * depth + c0, 4 * v_plane, v_plane)


@numba.njit(cache=True, parallel=True)
def winograd_correlate(x, pad_h, pad_w, panels, bias, y, workers):
    """y[n, k, oy, ox] = bias[k] + sum_{c, i, j} w[k, c, i, j] * xpad[n, c, oy + i, ox + j] for 3 x 3 filters w,
    xpad x zero-padded by pad_h rows and pad_w columns on each side (the product of `conv_gemm.correlate`).

    Per work item: its rows of x, channels last (`fill_channels_last`); V[xi] (tiles, C) of every output
    tile (`transform_tile`); M[xi] (tiles, K) = V[xi] @ U[xi]^T by register tiles of 6 output tiles x 64
    filters (`conv_gemm.rows_times_tile`, its reduction the C channels); the 2 x 2 outputs of each tile
    into a (pixels, K) block (`untransform_tile`), stored transposed into y with the bias.

    Args:
        x: (N, C, H, W) float32. panels: `transform_filters`' U: (16, ceil(K / NR), C, NR), or for K <= HALF
            folded, (16, 1, ceil(C / 2), NR) (computed by `conv_gemm.rows_times_folded_tile`). bias: (K,) float32.
        y: (N, K, H + 2*pad_h - 2, W + 2*pad_w - 2) float32 output.
        workers: parallel workers sharing the items, each with its scratch allocated once.
    """
    n_images, filters, out_h, out_w = y.shape
    channels = x.shape[1]
    n_panels = panels.shape[1]
    folded = panels.shape[2] < channels  # (see `transform_filters`)
    half = panels.shape[2]
    depth = (channels + LANES - 1) // LANES * LANES  # a tile's channels in the slab and in V, whole vectors
    width = n_panels * NR  # a tile's filters in M and a pixel's in the output block
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_image = tiles_h * tiles_w
    images_per_item, rows_per_item, items_per_image, n_items, tiles = tile_items(n_images, out_h, out_w, TILES_PER_ITEM)
    groups = (tiles + MR - 1) // MR
    slab_h = 2 * rows_per_item + 2  # the slab's rows: the tiles' 4 x 4 windows (`input_tiles`)
    block_w = 2 * tiles_w  # output block pixels per row: whole tiles (compacted to W' when W' is odd)
    # V and M hold 16 planes each, NR values (4 cache lines) more than they use apart, so that their starts
    # do not fall on the same L1 cache set (planes a multiple of 4 KB apart would)
    v_plane, m_plane = groups * MR * depth + NR, groups * MR * width + NR
    steps = np.arange(channels).astype(np.uint64)  # the reduction: channel c of a tile's row of V[xi]
    no_bias = np.zeros(NR, dtype=y.dtype)  # the products are stored, not added (the bias comes with the transposed store)
    slabs = np.empty((workers, slab_h * (2 * tiles_w + 2) * depth), dtype=y.dtype)
    vs = np.zeros((workers, TAPS * v_plane), dtype=y.dtype)  # rows past an item's tiles stay finite
    ms = np.empty((workers, TAPS * m_plane), dtype=y.dtype)
    blocks = np.empty((workers, 2 * rows_per_item * block_w * width), dtype=y.dtype)
    tile_offsets = np.empty((workers, groups * MR), dtype=np.int64)
    per_worker = (n_items + workers - 1) // workers
    for worker in prange(workers):
        slab, v, m, block, offsets = slabs[worker], vs[worker], ms[worker], blocks[worker], tile_offsets[worker]
        for item in range(worker * per_worker, min(n_items, (worker + 1) * per_worker)):
            first_image, last_image, first_tile_row, tile_rows = item_span(item, n_images, images_per_item, rows_per_item, items_per_image, tiles_h)
            item_tiles = (last_image - first_image) * tile_rows * tiles_w
            for t in range(groups * MR):  # where each tile's row of V[xi] starts (the last group's spare rows: tile 0)
                offsets[t] = t * depth if t < item_tiles else 0
            for n in range(first_image, last_image):
                input_tiles(x[n], pad_h, pad_w, first_tile_row, tile_rows, tiles_w, slab_h, slab, depth, v, v_plane, (n - first_image) * per_image)
            for xi in range(TAPS):
                v_xi = v[xi * v_plane : (xi + 1) * v_plane]
                m_xi = m[xi * m_plane : xi * m_plane + groups * MR * width].reshape(groups * MR, width)
                if folded:  # 32 filters or fewer: the channels' two halves side by side in one tile
                    rows_times_folded_tile(half, numba.uint64(half), steps, v_xi, offsets, 0, panels[xi, 0], m_xi, 0, 0, no_bias, (item_tiles + MR - 1) // MR)
                else:
                    for q in range(n_panels):
                        rows_times_tile(channels, steps, v_xi, offsets, 0, panels[xi, q], m_xi, 0, q * NR, no_bias, (item_tiles + MR - 1) // MR)
            for n in range(first_image, last_image):
                for r in range(tile_rows):
                    for tx in range(tiles_w):
                        t = (n - first_image) * per_image + r * tiles_w + tx
                        corner = (2 * r * block_w + 2 * tx) * width
                        for k0 in range(0, (filters + LANES - 1) // LANES * LANES, LANES):
                            untransform_tile(m, t * width + k0, 4 * m_plane, m_plane, block, corner + k0, block_w * width, width)
                pixels = min(out_h - 2 * first_tile_row, 2 * tile_rows) * out_w
                if block_w != out_w:  # odd W': drop each row's last column, moving the rows together
                    for p in range(pixels):
                        source = (p // out_w * block_w + p % out_w) * width
                        block[p * width : (p + 1) * width] = block[source : source + width]
                store_transposed(block[: pixels * width].reshape(pixels, width), pixels, bias,
                                 y[n].reshape(filters * out_h * out_w), 2 * first_tile_row * out_w, out_h * out_w)


@numba.njit(cache=True, parallel=True)
def winograd_filter_gradient(x, pad_h, pad_w, dy, dw_t, db, workers):
    """dW[k, c, i, j] = sum_{n, oy, ox} dy[n, k, oy, ox] * xpad[n, c, oy + i, ox + j] for 3 x 3 filters (stride 1), and
    db[k] = sum of dy[:, k], by F(3 x 3, 2 x 2), the transpose of the forward's algorithm (Lavin and Gray 2016,
    section 4): over the 2 x 2 output tile g = dy[n, k, 2ty : 2ty + 2, 2tx : 2tx + 2] and the 4 x 4 input d it
    read, the 3 x 3 sums are

        sum_{a, b} g[a, b] d[i + a, j + b] = (G^T [ (A g A^T) * (B^T d B) ] G)[i, j]

    with the forward's A, B, G; summed over all tiles, the 16 elementwise products are 16 matrix products
    M[xi] (C, K) = V[xi]^T (C, tiles) @ DY[xi] (tiles, K), each reducing over every tile of the batch
    (long reductions: the micro-kernel's best case), and dW = G^T M G once at the end.

    Work items (about GRADIENT_TILES tiles each) are split into fixed chunks, whose partial sums are added in
    order at the end: the result is the same on any number of threads. A unit of work is a chunk, or with
    fewer chunks than GRADIENT_CHUNKS (one large image, or many channels and filters) a (chunk, 64-filter
    panel) pair, so that every worker has work (each then transforms its items' V: about a tenth of a
    panel's products). Measured with 2 workers, 8 chunks took 1.5x longer than 4 on 128x128x4x4 -> 128
    (their partial sums: 1 MB each). Per item: V as in the
    forward (`input_tiles`); per panel, DY of its filters (`transform_gradient_tile`, dy's tile rows
    channels last) and the products added by `conv_gemm.rows_times_tile` (tiles of 6 channels x 64
    filters) into the chunk's partial sums; with 32 filters or fewer, by `conv_gemm.rows_times_folded_tile`,
    the item's tiles folded in two (the first half's DY in a row's first 32 columns, the second's beside it).

    Args:
        x: (N, C, H, W) float32; pad_h, pad_w: the forward's zero border. dy: (N, K, H', W') float32 with
            H' = H + 2*pad_h - 2, W' = W + 2*pad_w - 2.
        dw_t: (C*9, K) float32 output, dW transposed (row (c*3 + i)*3 + j); db: (K,) float64 output.
        workers: parallel workers sharing the units in order, each with its scratch allocated once (per
            unit, one large image's 16 (chunk, panel) units would take 16 copies).
    """
    n_images, filters, out_h, out_w = dy.shape
    channels = x.shape[1]
    depth = (channels + LANES - 1) // LANES * LANES
    n_panels = (filters + NR - 1) // NR
    tiles_h, tiles_w = (out_h + 1) // 2, (out_w + 1) // 2
    per_image = tiles_h * tiles_w
    # items of GRADIENT_ITEM_BYTES, but at least GRADIENT_CHUNKS of them where that leaves GRADIENT_TILES[0] tiles each
    wanted = GRADIENT_ITEM_BYTES // (TAPS * 4 * (depth + NR))
    wanted = min(max(wanted, GRADIENT_TILES[0]), GRADIENT_TILES[1])
    images_per_item, rows_per_item, items_per_image, n_items, tiles = tile_items(n_images, out_h, out_w, wanted)
    rows6 = (channels + MR - 1) // MR * MR
    n_chunks = max(1, min(GRADIENT_CHUNKS, n_items, GRADIENT_PARTIALS_BYTES // (TAPS * rows6 * n_panels * NR * 4)))
    groups = 1 if n_chunks == GRADIENT_CHUNKS else n_panels  # a unit per chunk, or per (chunk, filter panel)
    panels_per_unit = n_panels // groups
    slab_h = 2 * rows_per_item + 2
    folded = filters <= HALF  # tiles t and t + ceil(tiles / 2) side by side in a row of DY (`conv_gemm.rows_times_folded_tile`)
    # planes apart by more than they use (see the forward); folded, an item with an odd number of tiles ends in a
    # spare step that reads V's row past its last tile (times a zero row of DY): up to row `tiles`, one row more
    # than the items fill (never written, so zero; with more than NR channels it would reach past the plane)
    v_plane, g_plane = (tiles + folded) * depth + NR, tiles * NR + NR
    steps = (np.arange(tiles) * depth).astype(np.uint64)  # the reduction: tile t's row of V[xi]
    channel_rows = np.zeros(rows6, dtype=np.int64)  # channel c's column of V[xi] (the last group's spare rows: channel 0)
    channel_rows[:channels] = np.arange(channels)
    partial = np.zeros((n_chunks, TAPS, rows6, n_panels * NR), dtype=np.float32)
    partial_db = np.zeros((n_chunks, n_panels * NR))
    units = n_chunks * groups
    slabs = np.empty((workers, slab_h * (2 * tiles_w + 2) * depth), dtype=np.float32)
    dy_slabs = np.empty((workers, 2 * rows_per_item * 2 * tiles_w * NR), dtype=np.float32)  # (NR: HALF when folded)
    vs = np.zeros((workers, TAPS * v_plane), dtype=np.float32)  # zeros: a folded product's spare step reads a row past the item's tiles
    gs = np.empty((workers, TAPS * g_plane), dtype=np.float32)
    dy_depth = HALF if folded else NR
    per_worker = (units + workers - 1) // workers
    for worker in prange(workers):
        slab, dy_slab, v, g = slabs[worker], dy_slabs[worker], vs[worker], gs[worker]
        for unit in range(worker * per_worker, min(units, (worker + 1) * per_worker)):
            chunk, first_panel = unit // groups, unit % groups * panels_per_unit
            for item in range(chunk * n_items // n_chunks, (chunk + 1) * n_items // n_chunks):  # sizes differ by <= 1
                first_image, last_image, first_tile_row, tile_rows = item_span(item, n_images, images_per_item, rows_per_item, items_per_image, tiles_h)
                first_row, n_rows = 2 * first_tile_row, min(2 * tile_rows, out_h - 2 * first_tile_row)
                item_tiles = (last_image - first_image) * tile_rows * tiles_w
                fold = (item_tiles + 1) // 2 if folded else item_tiles  # DY's rows
                for n in range(first_image, last_image):
                    input_tiles(x[n], pad_h, pad_w, first_tile_row, tile_rows, tiles_w, slab_h, slab, depth, v, v_plane, (n - first_image) * per_image)
                for q in range(first_panel, first_panel + panels_per_unit):
                    for n in range(first_image, last_image):
                        # the panel's filters of dy's rows, channels last, zero past its border (odd H' or W') and last filter
                        fill_channels_last(dy[n], q * NR, first_row, 0, 0, 2 * tile_rows, 2 * tiles_w, dy_slab, dy_depth)
                        for r in range(tile_rows):
                            for tx in range(tiles_w):
                                corner = (2 * r * 2 * tiles_w + 2 * tx) * dy_depth
                                t = (n - first_image) * per_image + r * tiles_w + tx
                                where = t * NR if t < fold else (t - fold) * NR + HALF  # (t >= fold only when folded)
                                for k0 in range(0, dy_depth, LANES):
                                    transform_gradient_tile(dy_slab, corner + k0, 2 * tiles_w * dy_depth, dy_depth, g, where + k0, 4 * g_plane, g_plane)
                        for k in range(q * NR, min(filters, (q + 1) * NR)):
                            partial_db[chunk, k] += block_sum(dy[n, k, first_row : first_row + n_rows])
                    if folded and item_tiles % 2:  # the last row's second half: no tile
                        for xi in range(TAPS):
                            g[xi * g_plane + (fold - 1) * NR + HALF : xi * g_plane + fold * NR] = 0.0
                    for xi in range(TAPS):
                        v_xi = v[xi * v_plane : (xi + 1) * v_plane]
                        g_panel = g[xi * g_plane : xi * g_plane + tiles * NR].reshape(tiles, NR)
                        if folded:
                            rows_times_folded_tile(fold, numba.uint64(fold * depth), steps, v_xi, channel_rows, 0, g_panel, partial[chunk, xi], 0, 0, None, rows6 // MR)
                        else:
                            rows_times_tile(item_tiles, steps, v_xi, channel_rows, 0, g_panel, partial[chunk, xi], 0, q * NR, None, rows6 // MR)
    untransform_filter_gradient(partial, partial_db, channels, dw_t, db)


@numba.njit(cache=True, parallel=True)
def untransform_filter_gradient(partial, partial_db, channels, dw_t, db):
    """dw_t[(c*3 + i)*3 + j, k] = (G^T M G)[i, j], M[p, q] = sum over chunks of partial[chunk, 4p + q, c, k] (added
    chunk by chunk in order), G as in `times_g`; db likewise.
    Args: partial: (chunks, 16, >= C, >= K) float32; partial_db: (chunks, >= K) float64; dw_t: (C*9, K) float32
    output; db: (K,) float64 output."""
    filters = dw_t.shape[1]
    db[...] = 0.0
    for chunk in range(partial_db.shape[0]):
        for k in range(filters):
            db[k] += partial_db[chunk, k]
    for c in prange(channels):
        m = np.empty(TAPS, dtype=np.float32)
        gm = np.empty((3, 4), dtype=np.float32)  # G^T M
        for k in range(filters):
            for xi in range(TAPS):
                m[xi] = partial[0, xi, c, k]
            for chunk in range(1, partial.shape[0]):
                for xi in range(TAPS):
                    m[xi] += partial[chunk, xi, c, k]
            for q in range(4):  # column q of G^T M
                gm[0, q], gm[1, q], gm[2, q] = times_g_transposed(m[q], m[4 + q], m[8 + q], m[12 + q])
            for i in range(3):  # row i of (G^T M) G = G^T times row i of G^T M
                row = (c * 3 + i) * 3
                dw_t[row, k], dw_t[row + 1, k], dw_t[row + 2, k] = times_g_transposed(gm[i, 0], gm[i, 1], gm[i, 2], gm[i, 3])
