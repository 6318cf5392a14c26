"""The forward / backward functions: shapes, conventions at the edges, dtypes and bad input."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import functional as F


def naive_conv2d(x, w, b, stride, padding):
    """The convolution sum written out directly, to pin what the im2col version computes."""
    n, _, h, wd = x.shape
    k, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding)))
    out_h, out_w = 1 + (h + 2 * padding - kh) // stride, 1 + (wd + 2 * padding - kw) // stride
    y = np.zeros((n, k, out_h, out_w))
    for oy in range(out_h):
        for ox in range(out_w):
            patch = xp[:, :, oy * stride : oy * stride + kh, ox * stride : ox * stride + kw]
            y[:, :, oy, ox] = np.einsum("ncij,kcij->nk", patch, w) + b
    return y


@pytest.mark.parametrize("shape, kernel, stride, padding", [((1, 1, 3, 3), (1, 1, 3, 3), 1, 0), ((2, 3, 5, 8), (4, 3, 3, 3), 2, 1), ((1, 2, 1, 1), (3, 2, 1, 1), 1, 0)],
                         ids=["single-output", "rectangular-stride2", "one-pixel"])
def test_conv2d_forward_is_the_convolution_sum(shape, kernel, stride, padding, rng):
    x, w, b = rng.standard_normal(shape), rng.standard_normal(kernel), rng.standard_normal(kernel[0])
    np.testing.assert_allclose(F.conv2d_forward(x, w, b, stride=stride, padding=padding), naive_conv2d(x, w, b, stride, padding), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kernel, stride", [((3, 3), 1), ((3, 2), 2), ((2, 3), 3)], ids=["3x3-stride1", "3x2-stride2", "2x3-stride3"])
def test_col2im_is_the_adjoint_of_im2col(kernel, stride, rng):
    """<im2col(x), c> = <x, col2im(c)> for every x and c: col2im is exactly the transpose of im2col, which
    is what makes conv2d_backward's input gradient correct (stride 3 leaves input pixels unread)."""
    from scratchdet.kernels.cpu import nn as cpu

    kh, kw = kernel
    xpad = rng.standard_normal((2, 3, 8, 7))
    out_h, out_w = (8 - kh) // stride + 1, (7 - kw) // stride + 1
    cols = np.empty((3 * kh * kw, 2 * out_h * out_w))
    cpu.im2col(xpad, kh, kw, stride, cols)
    c = rng.standard_normal(cols.shape)
    dxpad = np.empty_like(xpad)
    cpu.col2im(c, kh, kw, stride, dxpad)
    np.testing.assert_allclose(np.vdot(cols, c), np.vdot(xpad, dxpad), rtol=1e-12)
    # and im2col reads the pixel the formula names
    n, ch, i, j, oy, ox = 1, 2, kh - 1, kw - 1, out_h - 1, out_w - 1
    assert cols[(ch * kh + i) * kw + j, (n * out_h + oy) * out_w + ox] == xpad[n, ch, oy * stride + i, ox * stride + j]


# float32, stride 1: the register-tiled route (kernels/cpu/conv_gemm.py). Shapes pick its edges: filters
# not a multiple of the 6-row tile, one and two 64-filter panels, fewer than 64 filters (dot-product
# tiles), rows shorter than a tile, rectangular kernels, padding 0 .. kernel - 1, a reduction longer than
# one pass (C*kh*kw > 2048 in the forward, K*kh*kw > 2048 in the input gradient), several row blocks per
# image, a single image, and both ways to the input gradient.
TILED_CASES = [
    ((1, 16, 5, 7), (1, 16, 3, 3), 1),
    ((2, 17, 9, 4), (7, 17, 3, 3), 0),
    ((3, 16, 1, 1), (5, 16, 1, 1), 0),
    ((2, 20, 11, 13), (65, 20, 5, 3), 2),
    ((1, 16, 40, 3), (130, 16, 3, 5), 1),
    ((2, 130, 6, 6), (120, 130, 3, 3), 1),  # filter gradient: 2 images, a unit per (chunk, 64-filter panel)
    ((9, 16, 5, 5), (128, 16, 3, 3), 1),  # 9 images: a unit per chunk, both filter panels in it
    ((1, 168, 16, 16), (7, 168, 7, 7), 3),  # forward reduction 8232 > REDUCTION_BLOCK: two passes of 16-pixel runs
    ((1, 8, 5, 7), (168, 8, 7, 7), 3),  # input gradient reduction 8232: two passes, full-width rows
    ((1, 16, 70, 45), (9, 16, 3, 3), 1),
    ((9, 16, 8, 8), (3, 16, 4, 4), 3),
    ((2, 16, 16, 16), (70, 16, 3, 3), 1),  # a 16-wide map: tiled by 16-pixel runs, 4 rows per tile
    ((2, 16, 5, 32), (13, 16, 3, 3), 1),  # 32-wide: 64-pixel tiles stored whole, then a block's partial last tile and filter
    ((1, 8, 3, 48), (6, 8, 3, 3), 1),  # 48-wide, one whole filter panel: two whole tiles and a 16-pixel one
    ((1, 16, 12, 12), (5, 16, 11, 11), 5),  # 12-wide: runs that end past the row (4 columns computed, dropped)
    ((1, 16, 4, 13), (70, 16, 1, 1), 0),  # 1x1, one pass: 13-pixel runs stored straight into y
    ((3, 3, 9, 21), (32, 3, 3, 3), 1),  # RGB, 32 filters: input gradient by W^T @ dy and col2im
    ((2, 2, 11, 13), (65, 2, 5, 3), 2),  # the same with a rectangular kernel and a partial last pixel tile
    ((2, 3, 7, 5), (16, 3, 3, 3), 1),  # RGB, 16 filters: input gradient by correlation
    ((2, 16, 30, 20), (4, 16, 3, 3), 1),  # 4 filters, 20-wide: filter gradient by dot tiles, dy copied zero-padded to 32
    ((2, 16, 7, 20), (5, 16, 3, 3), 1),  # 5 filters: the filter gradient by folded tiles, a block of 7 rows (4 + 3)
    ((1, 8, 20, 6), (600, 8, 3, 3), 1),  # a small map, many filters: 6-pixel x 64-filter tiles, two items (17 and 3 rows)
    ((2, 40, 5, 6), (70, 40, 1, 1), 0),  # 1x1: 6-pixel tiles reading x in place (no zero border to add)
    ((1, 8, 22, 9), (600, 8, 3, 3), 0),  # the same unpadded, two items (14 and 6 rows), the first ending in a partial tile
    ((9, 6, 7, 7), (70, 6, 3, 3), 0),  # unpadded, 9 images: the filter gradient reads x in place, a unit per chunk
    ((4, 8, 6, 6), (32, 8, 3, 3), 0),  # small map, 32 filters: folded pixel tiles (channels 0-3 beside 4-7), x read in place
    ((4, 7, 6, 6), (20, 7, 3, 3), 0),  # the same with 7 channels: the second half one short, read from a zero plane of the slab
    ((2, 33, 5, 5), (32, 33, 3, 3), 1),  # folded pixel tiles with a zero border, an odd number of channels
    ((1, 16, 4, 4), (130, 16, 3, 3), 1),  # one small image, 3 filter panels: units of (image, panels 0-1) and (image, panel 2)
]


@pytest.mark.parametrize("x_shape, w_shape, padding", TILED_CASES)
def test_register_tiled_conv2d_matches_the_im2col_route(x_shape, w_shape, padding, rng):
    """The tiled float32 kernels give the float64 im2col route's output and all three gradients."""
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    x32, w32, b32 = (a.astype(np.float32) for a in (x, w, b))
    assert F._register_tiled(x32, w32, 1, padding) and not F._register_tiled(x, w, 1, padding)
    y = F.conv2d_forward(x32, w32, b32, stride=1, padding=padding)
    dy = rng.standard_normal(y.shape)
    grads = F.conv2d_backward(dy.astype(np.float32), x32, w32, stride=1, padding=padding)
    expected = (F.conv2d_forward(x, w, b, stride=1, padding=padding), *F.conv2d_backward(dy, x, w, stride=1, padding=padding))
    for name, got, want in zip(("y", "dx", "dw", "db"), (y, *grads), expected):
        assert got.dtype == np.float32 and got.shape == want.shape, name
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * np.abs(want).max(), err_msg=name)


@pytest.mark.parametrize("rows, length, width", [(70, 37, 64), (130, 48, 64), (13, 5, 64), (29, 40, 6)])
def test_filter_panels_hold_the_matrix_transposed(rows, length, width, rng):
    """pack_panels: panels[q, p, i] = matrix[q*width + i, p], zero past the last row (64-wide panels partly by
    16 x 16 register transposes: rows and columns past whole blocks by element); transpose; flip_filters and
    pack_flipped_panels."""
    from scratchdet.kernels.cpu import conv_gemm

    matrix = rng.standard_normal((rows, length)).astype(np.float32)
    panels = np.full((-(-rows // width), length, width), np.nan, np.float32)
    conv_gemm.pack_panels(matrix, panels)
    padded = np.zeros((panels.shape[0] * width, length), np.float32)
    padded[:rows] = matrix
    np.testing.assert_array_equal(panels, padded.reshape(-1, width, length).transpose(0, 2, 1))
    out = np.empty((length, rows), np.float32)  # and transpose, by 16 x 16 blocks and the rest by element
    conv_gemm.transpose(matrix, out)
    np.testing.assert_array_equal(out, matrix.T)
    w = rng.standard_normal((5, 3, 3, 2)).astype(np.float32)
    flipped = np.empty((3, 5, 3, 2), np.float32)
    conv_gemm.flip_filters(w, flipped)
    np.testing.assert_array_equal(flipped, w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3))
    w = rng.standard_normal((7, rows, 3, 2)).astype(np.float32)  # the flipped copy's panels, packed from w itself
    direct = np.full((-(-rows // width), 7 * 6, width), np.nan, np.float32)
    conv_gemm.pack_flipped_panels(w, direct)
    via_copy = np.empty_like(direct)
    conv_gemm.pack_panels(np.ascontiguousarray(w[:, :, ::-1, ::-1].transpose(1, 0, 2, 3)).reshape(rows, 42), via_copy)
    np.testing.assert_array_equal(direct, via_copy)


def test_register_tiled_conv2d_picks_pixel_tiles_for_small_maps_only():
    """6-pixel x 64-filter tiles where 64-pixel tiles would be mostly empty, and not elsewhere."""
    from scratchdet.kernels.cpu import conv_gemm

    assert conv_gemm.use_pixel_tiles(4, 4, 6, 128)  # 16 of 64 columns of a row tile
    assert conv_gemm.use_pixel_tiles(8, 8, 10, 128) and conv_gemm.use_pixel_tiles(13, 13, 15, 192)
    assert not conv_gemm.use_pixel_tiles(16, 16, 18, 128)  # 4 full tiles of runs per image: row tiles
    assert not conv_gemm.use_pixel_tiles(32, 32, 34, 64) and not conv_gemm.use_pixel_tiles(600, 1000, 1002, 64)
    assert not conv_gemm.use_pixel_tiles(8, 8, 10, 3)  # 3 filters would fill 3 of a pixel tile's 64 columns
    assert conv_gemm.use_pixel_tiles(6, 6, 8, 32)  # 32 filters: folded pixel tiles, each step two of the reduction's


def test_register_tiled_conv2d_picks_runs_for_narrow_maps_only():
    """Full-width rows compute kw - 1 padding columns per row; narrow maps take 16-pixel runs instead."""
    from scratchdet.kernels.cpu import conv_gemm

    assert conv_gemm.use_segments(16, 16, 18)  # 16 x 16, 3 x 3: runs need 4 tiles per 16 rows, full rows 5
    assert conv_gemm.use_segments(12, 12, 22)  # 12 x 12 output of an 11 x 11 kernel
    assert conv_gemm.use_segments(4, 13, 13, one_pass=True)  # a 1x1 layer on 4 x 13: one run per row
    assert not conv_gemm.use_segments(32, 32, 34)  # 8 of 9 tiles: not worth the slower kernel ...
    assert conv_gemm.use_segments(32, 32, 34, one_pass=True)  # ... unless the runs go straight into y
    assert not conv_gemm.use_segments(38, 50, 52, one_pass=True)  # runs would waste 14 of every 64 columns


@pytest.mark.parametrize("filters", [4, 20, 128], ids=["dot-tiles", "folded-tiles", "64-filter-panels"])
def test_register_tiled_conv2d_is_the_same_on_any_number_of_threads(rng, filters):
    """Every split is by shape, not by thread (the filter gradient's chunks above all), so 1 and 2
    threads give the same bits, for every filter-gradient kernel."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to compare")
    from scratchdet.kernels.cpu import conv_gemm

    x = rng.standard_normal((9, 16, 9, 40)).astype(np.float32)
    w = rng.standard_normal((filters, 16, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((9, filters, 9, 40)).astype(np.float32)
    assert conv_gemm.few_filters(filters, 9, 40, 16 * 9) == (filters == 4)
    threads = numba.get_num_threads()
    results = []
    try:
        for n in (1, 2):
            numba.set_num_threads(n)
            results.append(F.conv2d_backward(dy, x, w, stride=1, padding=1))
    finally:
        numba.set_num_threads(threads)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_pixel_tiles_split_one_image_by_filter_panels_with_the_same_bits(rng):
    """One small image, more workers than items: correlate_pixel_tiles gives each worker a group of filter
    panels; the outputs are the same bits as computed by one worker."""
    import numba

    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to compare")
    x = rng.standard_normal((1, 16, 4, 4)).astype(np.float32)
    w = rng.standard_normal((130, 16, 3, 3)).astype(np.float32)
    b = rng.standard_normal(130).astype(np.float32)
    threads = numba.get_num_threads()
    try:
        results = []
        for n in (1, 2):
            numba.set_num_threads(n)
            results.append(F.conv2d_forward(x, w, b, stride=1, padding=1))
    finally:
        numba.set_num_threads(threads)
    np.testing.assert_array_equal(*results)


def test_register_tiled_route_is_only_taken_where_it_applies():
    x = np.zeros((1, 16, 8, 8), np.float32)
    w = np.zeros((4, 16, 3, 3), np.float32)
    assert F._register_tiled(x, w, 1, 1)
    assert not F._register_tiled(x, w, 2, 1)  # stride 2: im2col
    assert not F._register_tiled(x, w, 1, 3)  # padding >= kernel: the input gradient's padding would be negative
    assert not F._register_tiled(x.astype(np.float64), w.astype(np.float64), 1, 1)
    assert F._register_tiled(x[:, :3], w[:, :3], 1, 1)  # an RGB input too
    # and within it, the input gradient by scatter for RGB layers with >= 32 filters, by correlation otherwise
    assert F._input_gradient_by_scatter((64, 3, 64, 64), 32, (3, 3))
    assert not F._input_gradient_by_scatter((64, 3, 64, 64), 16, (3, 3))  # too few filters to sum over
    assert not F._input_gradient_by_scatter((64, 16, 64, 64), 64, (3, 3))  # channels fill a tile
    assert not F._input_gradient_by_scatter((1, 3, 600, 1000), 64, (3, 3))  # one big image: 65 MB of columns
    # the filter gradient by dot-product tiles where 64-filter panels would be mostly empty
    from scratchdet.kernels.cpu import conv_gemm

    assert conv_gemm.few_filters(8, 50, 50, 144) and conv_gemm.few_filters(4, 32, 32, 144)
    assert not conv_gemm.few_filters(64, 32, 32, 144) and not conv_gemm.few_filters(96, 32, 32, 144)  # measured: 64-filter tiles faster
    assert not conv_gemm.few_filters(32, 56, 56, 800)  # measured: folded 32-filter tiles 1.75x faster (5x5, 32 channels)
    assert conv_gemm.few_filters(32, 64, 64, 27)  # but with 3 channels, dy's panels cost more than they save (1.25x)
    assert not conv_gemm.few_filters(48, 14, 14, 144) and not conv_gemm.few_filters(40, 7, 7, 144)


@pytest.mark.parametrize("x_shape, w_shape", [((2, 3, 5, 5), (0, 3, 3, 3)), ((2, 0, 5, 5), (4, 0, 3, 3))], ids=["no-filters", "no-channels"])
def test_conv2d_without_filters_or_channels_is_the_same_in_float32_and_float64(x_shape, w_shape, rng):
    """An empty product: no output planes, or outputs that are the bias alone (float32 at stride 1 once
    crashed in the register-tiled kernels, with a reshape or a division by zero)."""
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(w_shape[0])
    y = F.conv2d_forward(x, w, b, stride=1, padding=1)
    grads = F.conv2d_backward(np.ones_like(y), x, w, stride=1, padding=1)
    y32 = F.conv2d_forward(*(a.astype(np.float32) for a in (x, w, b)), stride=1, padding=1)
    grads32 = F.conv2d_backward(np.ones_like(y32), x.astype(np.float32), w.astype(np.float32), stride=1, padding=1)
    np.testing.assert_allclose(y, np.broadcast_to(b[:, None, None], y.shape))
    np.testing.assert_allclose(y32, y, rtol=1e-6)
    for ours, want in zip(grads32, grads):
        assert ours.shape == want.shape and ours.dtype == np.float32
        np.testing.assert_allclose(ours, want, rtol=1e-6)


@pytest.mark.parametrize("image", [(0, 4), (4, 0), (0, 0)], ids=["no-rows", "no-columns", "no-pixels"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_conv2d_of_an_empty_image_with_padding_sees_zeros(image, dtype, rng):
    """An image with no rows (or columns) still has outputs when padded: the bias alone, so dw = 0 and
    db sums dy (float32's backward once divided by zero splitting dx's zero rows into blocks)."""
    x = np.zeros((2, 3, *image), dtype)
    w, b = rng.standard_normal((4, 3, 3, 3)).astype(dtype), rng.standard_normal(4).astype(dtype)
    y = F.conv2d_forward(x, w, b, stride=1, padding=2)
    assert y.shape == (2, 4, image[0] + 2, image[1] + 2) and y.dtype == dtype
    np.testing.assert_array_equal(y, np.broadcast_to(b[:, None, None], y.shape))
    dy = rng.standard_normal(y.shape).astype(dtype)
    dx, dw, db = F.conv2d_backward(dy, x, w, stride=1, padding=2)
    assert dx.shape == x.shape and {a.dtype for a in (dx, dw, db)} == {np.dtype(dtype)}
    np.testing.assert_array_equal(dw, np.zeros_like(w))
    np.testing.assert_allclose(db, dy.sum(axis=(0, 2, 3)), rtol=1e-5)


def test_conv2d_output_size_formula():
    assert F.conv2d_output_size(32, 3, stride=1, padding=1) == 32
    assert F.conv2d_output_size(7, 3, stride=2, padding=0) == 3
    assert F.conv2d_output_size(224, 11, stride=4, padding=2) == 55  # AlexNet's conv1


def test_conv2d_keeps_float32(rng):
    x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    y = F.conv2d_forward(x, w, np.zeros(3, np.float32), stride=1, padding=1)
    dx, dw, db = F.conv2d_backward(np.ones_like(y), x, w, stride=1, padding=1)
    assert {a.dtype for a in (y, dx, dw, db)} == {np.dtype(np.float32)}


@pytest.mark.parametrize(
    "x_shape, w_shape, b_shape, kwargs, match",
    [
        ((1, 2, 4, 4), (3, 3, 3, 3), (3,), {}, "input channels"),
        ((1, 2, 4, 4), (3, 2, 3, 3), (4,), {}, "b must have shape"),
        ((1, 2, 2, 2), (3, 2, 3, 3), (3,), {}, "smaller than the kernel"),
        ((1, 2, 4, 4), (3, 2, 3, 3), (3,), {"stride": 0}, "stride"),
        ((1, 2, 4, 4), (3, 2, 3, 3), (3,), {"padding": -1}, "padding"),
        ((2, 4, 4), (3, 2, 3, 3), (3,), {}, "4 dimensions"),
        ((1, 2, 4, 4), (3, 2, 0, 3), (3,), {}, "kernel height"),
        ((1, 2, 4, 4), (3, 2, 3, 0), (3,), {}, "kernel width"),
    ],
    ids=[
        "channel-mismatch", "bias-shape", "kernel-larger-than-image", "stride-zero", "negative-padding", "3d-input",
        "zero-height-kernel", "zero-width-kernel",
    ],
)
def test_conv2d_rejects_bad_arguments(x_shape, w_shape, b_shape, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        F.conv2d_forward(np.zeros(x_shape), np.zeros(w_shape), np.zeros(b_shape), **kwargs)


def test_conv2d_rejects_mixed_dtypes_and_integer_input():
    with pytest.raises(InvalidArgumentError, match="one dtype"):
        F.conv2d_forward(np.zeros((1, 1, 3, 3), np.float32), np.zeros((1, 1, 3, 3)), np.zeros(1))
    with pytest.raises(InvalidArgumentError, match="float32 or float64"):
        F.conv2d_forward(np.zeros((1, 1, 3, 3), np.int64), np.zeros((1, 1, 3, 3)), np.zeros(1))


def test_conv2d_backward_rejects_misshapen_gradient():
    with pytest.raises(InvalidArgumentError, match="dy must have shape"):
        F.conv2d_backward(np.zeros((1, 1, 2, 2)), np.zeros((1, 1, 3, 3)), np.zeros((1, 1, 3, 3)), stride=1, padding=1)


def test_strided_float32_convolutions_run_on_the_input_phases_with_the_im2col_results(rng, monkeypatch):
    """float32 strided layers with few channels run as stride-1 convolutions of the input's phases
    (`F._by_phases`); float64 takes im2col. Strides 2 and 3, kernels from the stride up, any padding
    below the kernel, sizes whose last rows no output reads."""
    from scratchdet.kernels.cpu import nn as cpu

    calls = []
    original = cpu.space_to_depth
    monkeypatch.setattr(cpu, "space_to_depth", lambda *args: calls.append(1) or original(*args))
    for _ in range(25):
        stride = int(rng.integers(2, 4))
        size = int(rng.integers(stride, 8))
        padding = int(rng.integers(0, size))
        n, c, k = (int(v) for v in rng.integers(1, [3, 6, 9]))
        h, w = (int(v) for v in rng.integers(max(size - 2 * padding, 1), 14, 2))
        x, weight, bias = rng.standard_normal((n, c, h, w)), rng.standard_normal((k, c, size, size)), rng.standard_normal(k)
        y = F.conv2d_forward(x, weight, bias, stride, padding)
        y32 = F.conv2d_forward(*(a.astype(np.float32) for a in (x, weight, bias)), stride, padding)
        np.testing.assert_allclose(y32, y, rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(y.shape)
        expected = F.conv2d_backward(dy, x, weight, stride, padding)
        ours = F.conv2d_backward(*(a.astype(np.float32) for a in (dy, x, weight)), stride, padding)
        for name, a, e in zip(("dx", "dw", "db"), ours, expected):
            assert a.dtype == np.float32, name
            np.testing.assert_allclose(a, e, rtol=1e-4, atol=1e-3, err_msg=name)
        dx, dw, _ = F.conv2d_backward(*(a.astype(np.float32) for a in (dy, x, weight)), stride, padding, input_grad=False)
        assert dx is None
        np.testing.assert_array_equal(dw, ours[1])
    assert len(calls) == 25 * 3  # forward, backward, backward without dx: the phases route each time


def test_maxpool_ties_send_the_gradient_to_the_first_maximum():
    x = np.array([[[[1.0, 1.0], [1.0, 1.0]]]])
    dx = F.maxpool2d_backward(np.array([[[[5.0]]]]), x, 2, 2)
    np.testing.assert_array_equal(dx, [[[[5.0, 0.0], [0.0, 0.0]]]])


# windows of 2 x 2, stride 2: a NaN after the maximum, two NaNs, +inf with -inf (no NaN), and plain numbers
NAN_WINDOWS = np.array([[[[1.0, np.nan, np.nan, 0.0, np.inf, 1.0, 3.0, 1.0],
                          [0.0, 2.0, 5.0, np.nan, -np.inf, 2.0, 1.0, 3.0]]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_propagates_nan_as_pytorch_does(dtype):
    """A NaN in a window wins (the last NaN receives the gradient), as in PyTorch, so that a NaN
    activation reaches the loss; a window with +inf and -inf but no NaN still gives +inf."""
    x = NAN_WINDOWS.astype(dtype)
    y = F.maxpool2d_forward(x, 2, 2)
    np.testing.assert_array_equal(y.ravel(), [np.nan, np.nan, np.inf, 3.0])
    dx = F.maxpool2d_backward(np.ones_like(y), x, 2, 2)
    expected = np.zeros_like(x)
    expected[0, 0, 0, 1] = expected[0, 0, 1, 3] = expected[0, 0, 0, 4] = expected[0, 0, 0, 6] = 1.0
    np.testing.assert_array_equal(dx, expected)
    torch = pytest.importorskip("torch")
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.max_pool2d(xt, 2, 2)
    yt.backward(torch.ones_like(yt))
    np.testing.assert_array_equal(y, yt.detach().numpy())
    np.testing.assert_array_equal(dx, xt.grad.numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_maxpool_2x2_stride_2_takes_a_path_of_its_own_with_the_general_results(rng, dtype):
    """2 x 2 windows at stride 2 run `maxpool2x2_forward` / `_backward`; the general kernels, called
    directly, give the same bits: ties, NaNs, infinities, odd sizes whose last row or column no window
    reads, NaN gradients."""
    from scratchdet.kernels.cpu import nn as cpu

    for _ in range(40):
        shape = (int(rng.integers(1, 3)), int(rng.integers(1, 4)), int(rng.integers(2, 8)), int(rng.integers(2, 8)))
        x = rng.integers(-2, 3, shape).astype(dtype)  # many ties
        draw = rng.random(shape)
        x[draw < 0.06], x[(draw >= 0.06) & (draw < 0.1)], x[(draw >= 0.1) & (draw < 0.14)] = np.nan, np.inf, -np.inf
        y = F.maxpool2d_forward(x, 2, 2)
        general = np.empty_like(y)
        cpu.maxpool2d_forward(x, 2, 2, general)
        np.testing.assert_array_equal(y, general)
        dy = rng.standard_normal(y.shape).astype(dtype)
        dy[rng.random(dy.shape) < 0.05] = np.nan
        general = np.empty_like(x)
        cpu.maxpool2d_backward(dy, x, 2, 2, general)
        np.testing.assert_array_equal(F.maxpool2d_backward(dy, x, 2, 2), general)


def test_maxpool_overlapping_windows_add_their_gradients():
    x = np.array([[[[0.0, 9.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]]])
    dx = F.maxpool2d_backward(np.ones((1, 1, 2, 2)), x, 2, stride=1)
    assert dx[0, 0, 0, 1] == 2.0 and dx.sum() == 4.0  # the 9 wins both top windows


def test_maxpool_rejects_window_larger_than_input():
    with pytest.raises(InvalidArgumentError, match="smaller than the pooling window"):
        F.maxpool2d_forward(np.zeros((1, 1, 2, 2)), 3)


def test_relu_gradient_is_zero_at_zero():
    x = np.array([-1.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.relu_forward(x), [0.0, 0.0, 2.0])
    np.testing.assert_array_equal(F.relu_backward(np.ones(3), x), [0.0, 0.0, 1.0])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_relu_keeps_nan_and_infinities_as_pytorch(dtype):
    # a NaN activation must reach the loss (and pass its gradient), not turn into 0
    x = np.array([np.nan, -np.inf, np.inf, -0.0, 3.0], dtype)
    np.testing.assert_array_equal(F.relu_forward(x), np.array([np.nan, 0, np.inf, 0, 3], dtype))
    np.testing.assert_array_equal(F.relu_backward(np.full(5, 7, dtype), x), np.array([7, 0, 7, 0, 7], dtype))


def test_linear_uses_pytorch_weight_layout(rng):
    x, w, b = rng.standard_normal((2, 3)), rng.standard_normal((4, 3)), rng.standard_normal(4)
    np.testing.assert_allclose(F.linear_forward(x, w, b), x @ w.T + b)
    with pytest.raises(InvalidArgumentError, match="D_out"):
        F.linear_forward(x, w.T, b)


def test_flatten_round_trip(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    y = F.flatten_forward(x)
    assert y.shape == (2, 60)
    np.testing.assert_array_equal(F.flatten_backward(y, x.shape), x)
    with pytest.raises(InvalidArgumentError, match="not the flattened gradient"):
        F.flatten_backward(y[:, :59], x.shape)
    with pytest.raises(InvalidArgumentError, match="not the flattened gradient"):
        F.flatten_backward(y.reshape(4, 30), x.shape)  # the right size, but another batch
    with pytest.raises(InvalidArgumentError, match="an \\(N, ...\\) array"):
        F.flatten_forward([[1.0, 2.0]])


@pytest.mark.parametrize("shape", [(), (1,), (2, 3)])
def test_elementwise_layers_keep_the_shape_even_0_d(shape):
    # np.ascontiguousarray turns a 0-d array into shape (1,)
    x = np.full(shape, -1.5)
    assert F.relu_forward(x).shape == shape and F.relu_backward(x, x).shape == shape
    assert [a.shape for a in F.dropout_forward(x, 0.5, 0)] == [shape, shape]


@pytest.mark.parametrize("case", ["float32-tiled", "float32-winograd", "float32-strided", "float64", "float32-im2col"])
def test_conv2d_forward_without_bias_is_a_zero_bias(rng, case):
    channels, filters, stride, dtype = {
        "float32-tiled": (3, 4, 1, np.float32), "float32-winograd": (32, 48, 1, np.float32),
        "float32-strided": (3, 4, 2, np.float32), "float64": (3, 4, 1, np.float64), "float32-im2col": (130, 4, 2, np.float32),
    }[case]
    x = rng.standard_normal((2, channels, 9, 10)).astype(dtype)
    w = rng.standard_normal((filters, channels, 3, 3)).astype(dtype)
    np.testing.assert_array_equal(
        F.conv2d_forward(x, w, None, stride, 1), F.conv2d_forward(x, w, np.zeros(filters, dtype), stride, 1)
    )


def test_optimiser_updates_refuse_read_only_state_and_non_numbers():
    param, grad, state = np.ones(3), np.ones(3), np.zeros(3)
    frozen = np.zeros(3)
    frozen.setflags(write=False)
    with pytest.raises(InvalidArgumentError, match="velocity is read-only"):
        F.sgd_update(param, grad, frozen, lr=0.1, momentum=0.9, weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="param is read-only"):
        F.adam_update(frozen, grad, state, state.copy(), step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="lr must be a finite number, got 'a'"):
        F.sgd_update(param, grad, state, lr="a", momentum=0.9, weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="eps must be a finite number"):
        F.adam_update(param, grad, state, state.copy(), step=1, lr=0.1, beta1=0.9, beta2=0.99, eps=float("nan"), weight_decay=0.0)
    with pytest.raises(InvalidArgumentError, match="adam step must be an integer >= 1, got 2.5"):
        F.adam_update(param, grad, state, state.copy(), step=2.5, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8, weight_decay=0.0)
    frozen_grad = np.ones(3)
    frozen_grad.setflags(write=False)  # a read-only gradient is only read
    F.sgd_update(param, frozen_grad, state, lr=0.1, momentum=0.9, weight_decay=0.0)
    np.testing.assert_allclose(param, 0.9)


def test_updating_a_list_of_parameters_is_updating_each(rng):
    """The list updates (one launch per dozen parameters on a GPU) give the single updates' numbers,
    bit for bit, on the CPU; lists of different lengths are refused."""
    shapes = [(3,), (2, 4), (0,), (5, 1, 2)]
    params = [rng.standard_normal(shape) for shape in shapes]
    grads = [rng.standard_normal(shape) for shape in shapes]
    states = {name: [np.zeros(shape) for shape in shapes] for name in ("velocity", "m", "v")}
    expected = [p.copy() for p in params]
    expected_states = {name: [a.copy() for a in arrays] for name, arrays in states.items()}
    F.sgd_update_many(params, grads, states["velocity"], lr=0.1, momentum=0.9, weight_decay=0.01)
    F.adam_update_many(params, grads, states["m"], states["v"], step=2, lr=0.1, beta1=0.9, beta2=0.99, eps=1e-8,
                       weight_decay=0.01)
    for i, grad in enumerate(grads):
        F.sgd_update(expected[i], grad, expected_states["velocity"][i], lr=0.1, momentum=0.9, weight_decay=0.01)
        F.adam_update(expected[i], grad, expected_states["m"][i], expected_states["v"][i], step=2, lr=0.1, beta1=0.9,
                      beta2=0.99, eps=1e-8, weight_decay=0.01)
    for got, want in zip(params + sum(states.values(), []), expected + sum(expected_states.values(), [])):
        np.testing.assert_array_equal(got, want)
    with pytest.raises(InvalidArgumentError, match="one gradient and state per parameter"):
        F.sgd_update_many(params, grads[:2], states["velocity"], lr=0.1, momentum=0.9, weight_decay=0.01)


def test_dropout_same_seed_same_mask_and_inverted_scaling():
    x = np.ones((200, 50))
    y1, mask1 = F.dropout_forward(x, 0.3, seed=11)
    y2, mask2 = F.dropout_forward(x, 0.3, seed=11)
    _, mask3 = F.dropout_forward(x, 0.3, seed=12)
    np.testing.assert_array_equal(mask1, mask2)
    assert not np.array_equal(mask1, mask3)
    assert set(np.unique(mask1)) == {0.0, 1 / 0.7}
    assert abs((mask1 == 0).mean() - 0.3) < 0.02  # 10,000 draws: about 0.3 dropped
    assert abs(y1.mean() - 1.0) < 0.03  # inverted dropout keeps the expectation
    np.testing.assert_array_equal(F.dropout_backward(np.full_like(x, 2.0), mask1), 2.0 * mask1)


def test_dropout_mask_is_the_same_in_float32_and_float64():
    _, m64 = F.dropout_forward(np.ones(1000), 0.5, seed=3)
    _, m32 = F.dropout_forward(np.ones(1000, np.float32), 0.5, seed=3)
    np.testing.assert_array_equal(m64 > 0, m32 > 0)


def test_dropout_masks_of_neighbouring_seeds_are_unrelated():
    """Training draws a fresh seed per step: masks of seeds s and s + 1 must not be shifted copies of
    each other (as they were when the seed was only added to the index, times 0x9E3779B), and a unit
    2**32 further on must not repeat the first one's number."""
    from scratchdet.kernels.shared.nn import dropout_uniform

    n, shift = 2000, 0x9E3779B
    for seed in (0, 7, 2**30):
        this = np.array([dropout_uniform(seed, i) for i in range(n)])
        shifted = np.array([dropout_uniform(seed, i + shift) for i in range(n)])
        following = np.array([dropout_uniform(seed + 1, i) for i in range(n)])
        wrapped = np.array([dropout_uniform(seed, i + 2**32) for i in range(n)])
        assert not np.array_equal(following, shifted)
        assert not np.array_equal(wrapped, this)
        for other in (following, wrapped):  # independent uniforms agree on which side of 1/2 about half the time
            assert abs(((this < 0.5) == (other < 0.5)).mean() - 0.5) < 0.05
        assert abs(this.mean() - 0.5) < 0.03 and 0.0 <= this.min() and this.max() < 1.0


@pytest.mark.parametrize("p", [-0.1, 1.0, "0.5", None, float("nan")])
def test_dropout_rejects_probability_outside_zero_one(p):
    with pytest.raises(InvalidArgumentError, match="probability"):
        F.dropout_forward(np.ones(3), p, seed=0)


@pytest.mark.parametrize("seed", [-1, 2**31, 1.5, "x", None])
def test_dropout_rejects_seed_that_is_not_an_integer_in_range(seed):
    with pytest.raises(InvalidArgumentError, match="seed"):
        F.dropout_forward(np.ones(3), 0.5, seed)


def test_roi_pool_single_cell_roi_repeats_that_cell():
    features = np.arange(2 * 1 * 4 * 4, dtype=np.float64).reshape(2, 1, 4, 4)
    out = F.roi_pool_forward(features, np.array([[1, 2, 1, 2, 1]]), (2, 2), 1.0)
    np.testing.assert_array_equal(out, np.full((1, 1, 2, 2), features[1, 0, 1, 2]))


def test_roi_pool_rounds_halves_away_from_zero():
    """x1 = 2 at scale 1/4 is cell 0.5: C's round gives 1 (NumPy's round-half-even would give 0)."""
    features = np.zeros((1, 1, 1, 4))
    features[0, 0, 0, 0] = 100.0
    out = F.roi_pool_forward(features, np.array([[0, 2, 0, 12, 0]]), (1, 1), 0.25)
    assert out[0, 0, 0, 0] == 0.0  # cell 0 is left out


def test_roi_pool_outside_the_map_gives_zero_and_no_gradient(rng):
    features = rng.standard_normal((1, 2, 5, 5))
    rois = np.array([[0, 100, 100, 120, 120]])
    np.testing.assert_array_equal(F.roi_pool_forward(features, rois, 2, 1.0), 0.0)
    np.testing.assert_array_equal(F.roi_pool_backward(np.ones((1, 2, 2, 2)), features, rois, 2, 1.0), 0.0)


def test_roi_pool_overlapping_rois_add_gradients_on_shared_argmax():
    features = np.zeros((1, 1, 4, 4))
    features[0, 0, 1, 1] = 5.0
    rois = np.array([[0, 0, 0, 3, 3], [0, 1, 1, 2, 2]], dtype=np.float64)
    dfeatures = F.roi_pool_backward(np.ones((2, 1, 1, 1)), features, rois, 1, 1.0)
    assert dfeatures[0, 0, 1, 1] == 2.0 and dfeatures.sum() == 2.0


@pytest.mark.parametrize("where", [(0, 0), (1, 1)], ids=["first-cell", "later-cell"])
def test_roi_pool_lets_a_nan_win_its_bin_wherever_it_is(where):
    """As max pooling (and PyTorch's max pooling): a NaN feature reaches the pooled output and takes the
    bin's gradient, whether or not it is the bin's first cell (where a running `>` would keep it)."""
    features = np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)
    features[0, 0, where[0], where[1]] = np.nan
    rois = np.array([[0, 0, 0, 3, 3]], dtype=np.float32)  # 2 x 2 bins of 2 x 2 cells
    out = F.roi_pool_forward(features, rois, 2, 1.0)
    assert np.isnan(out[0, 0, 0, 0]) and out[0, 0].ravel()[1:].tolist() == [7.0, 13.0, 15.0]
    dfeatures = F.roi_pool_backward(np.ones_like(out), features, rois, 2, 1.0)
    assert dfeatures[0, 0, where[0], where[1]] == 1.0 and dfeatures.sum() == 4.0


@pytest.mark.parametrize(
    "rois, match",
    [(np.zeros((2, 4)), r"\(R, 5\)"), (np.array([[2, 0, 0, 1, 1]]), "batch indices"), (np.array([[0.5, 0, 0, 1, 1]]), "batch indices"),
     (np.array([[0, np.nan, 0, 1, 1]]), "finite"), (np.array([[0, 0, 0, 1e300, 3]]), "2\\*\\*53")],
    ids=["four-columns", "batch-index-out-of-range", "fractional-batch-index", "nan-corner", "corner-beyond-int64"],
)
def test_roi_pool_rejects_bad_rois(rois, match):
    with pytest.raises(InvalidArgumentError, match=match):
        F.roi_pool_forward(np.zeros((2, 1, 4, 4)), rois, 2, 1.0)


def test_roi_pool_names_rois_that_are_not_numbers():
    with pytest.raises(InvalidArgumentError, match="rois must hold numbers"):  # was numpy's ValueError
        F.roi_pool_forward(np.zeros((1, 1, 4, 4)), [["first", 0, 0, 1, 1]], 2, 1.0)


@pytest.mark.parametrize("spatial_scale", [True, 0.0, -0.5, float("inf"), float("nan"), "0.5", None])
def test_roi_pool_rejects_a_scale_that_is_not_a_positive_finite_number(spatial_scale):
    from scratchdet.nn.layers import RoIPool

    rois = np.array([[0, 0, 0, 1, 1]])
    with pytest.raises(InvalidArgumentError, match="spatial_scale"):
        F.roi_pool_forward(np.zeros((1, 1, 4, 4)), rois, 2, spatial_scale)
    with pytest.raises(InvalidArgumentError, match="spatial_scale"):
        RoIPool(2, spatial_scale)


def test_roi_pool_with_no_rois_gives_empty_output():
    out = F.roi_pool_forward(np.zeros((1, 3, 4, 4)), np.zeros((0, 5)), (2, 3), 1.0)
    assert out.shape == (0, 3, 2, 3)


def test_linear_forward_without_a_bias_is_the_product(rng):
    # b=None, as conv2d_forward and the CUDA twin take it (the CPU once added None)
    x, w = rng.standard_normal((3, 4)), rng.standard_normal((2, 4))
    np.testing.assert_allclose(F.linear_forward(x, w, None), x @ w.T, rtol=1e-12)
