"""Winograd's F(2 x 2, 3 x 3) convolution (kernels/cpu/winograd.py) against the float64 im2col route."""

import numba
import numpy as np
import pytest

from scratchdet.kernels.cpu import conv_gemm, winograd
from scratchdet.nn import functional as F

# Shapes pick the kernel's edges: odd output heights and widths (tiles past y's border), padding 0 .. 2,
# channels not a multiple of the 16-lane vectors, filters not a multiple of a 64-filter panel, several
# small images per work item with a partial last item, bands of tile rows with a partial last band,
# rows wider than a work item (one tile row per item), a 1 x 1 image.
CASES = [
    ((2, 5, 7, 9), 7, 1),
    ((3, 16, 16, 16), 13, 1),
    ((1, 8, 1, 1), 3, 1),
    ((2, 4, 5, 6), 9, 0),
    ((2, 3, 11, 4), 2, 2),
    ((70, 8, 4, 4), 12, 1),  # 4 tiles per image, 16 images per item: 5 items, the last with 6
    ((2, 20, 27, 19), 70, 1),  # 14 x 10 tiles: bands of 6 tile rows, the last of 2
    ((1, 17, 9, 150), 130, 1),  # 75 tiles a row, more than an item: an item per tile row; 3 filter panels
    ((1, 33, 12, 13), 65, 0),
    ((2, 33, 6, 10), 32, 1),  # 32 filters, folded products, an odd number of channels (the second half one short)
]


def winograd_forward(x, w, b, padding):
    filters, channels = w.shape[:2]
    if filters <= conv_gemm.HALF:  # folded panels (`winograd.transform_filters`)
        panels = np.empty((winograd.TAPS, 1, (channels + 1) // 2, conv_gemm.NR), np.float32)
    else:
        panels = np.empty((winograd.TAPS, (filters + conv_gemm.NR - 1) // conv_gemm.NR, channels, conv_gemm.NR), np.float32)
    winograd.transform_filters(w, panels)
    n, _, h, width = x.shape
    y = np.empty((n, w.shape[0], h + 2 * padding - 2, width + 2 * padding - 2), np.float32)
    winograd.winograd_correlate(x, padding, padding, panels, b, y, numba.get_num_threads())
    return y


@pytest.mark.parametrize("x_shape, filters, padding", CASES)
def test_winograd_correlation_matches_the_direct_product(x_shape, filters, padding, rng):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((filters, x_shape[1], 3, 3))
    b = rng.standard_normal(filters)
    want = F.conv2d_forward(x, w, b, stride=1, padding=padding)  # float64, im2col
    got = winograd_forward(*(a.astype(np.float32) for a in (x, w, b)), padding)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * np.abs(want).max())


def winograd_filter_gradient(x, dy, padding):
    channels, filters = x.shape[1], dy.shape[1]
    dw_t, db = np.empty((channels * 9, filters), np.float32), np.empty(filters)
    winograd.winograd_filter_gradient(x, padding, padding, dy, dw_t, db, numba.get_num_threads())
    return dw_t.T.reshape(filters, channels, 3, 3), db


# and the filter gradient's two kinds of units: a (chunk, filter panel) pair (one item), a chunk (six items in four
# chunks), with folded products (<= 32 filters) and without; folded with more channels than a 64-wide row and an
# odd number of tiles per item (1, and 117 in two items): the spare step's row of V must lie inside V
@pytest.mark.parametrize("x_shape, filters, padding", CASES + [((9, 6, 4, 4), 130, 1), ((6, 8, 24, 24), 20, 1), ((6, 8, 24, 24), 70, 1),
                                                               ((1, 65, 1, 1), 32, 1), ((2, 128, 10, 76), 32, 2)])
def test_winograd_filter_gradient_matches_the_direct_sums(x_shape, filters, padding, rng):
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal((filters, x_shape[1], 3, 3))
    dy = rng.standard_normal((x_shape[0], filters, x_shape[2] + 2 * padding - 2, x_shape[3] + 2 * padding - 2))
    _, want_dw, want_db = F.conv2d_backward(dy, x, w, stride=1, padding=padding)  # float64, im2col
    dw, db = winograd_filter_gradient(x.astype(np.float32), dy.astype(np.float32), padding)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-5 * np.abs(want_dw).max())
    np.testing.assert_allclose(db, want_db, rtol=1e-6, atol=1e-6 * np.abs(want_db).max())


def test_filter_transform_is_g_times_filter_times_g_transposed(rng):
    """panels[xi, k // 64, c, k % 64] = (G g G^T)[xi], zero for the filters that pad the last panel."""
    w = rng.standard_normal((70, 3, 3, 3)).astype(np.float32)
    panels = np.full((16, 2, 3, 64), np.nan, np.float32)
    winograd.transform_filters(w, panels)
    g = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
    u = np.einsum("ip,kcpq,jq->ijkc", g, w.astype(np.float64), g).reshape(16, 70, 3)
    got = panels.transpose(0, 1, 3, 2).reshape(16, 128, 3)
    np.testing.assert_allclose(got[:, :70], u, rtol=1e-6, atol=1e-6)
    assert not got[:, 70:].any()


def test_layers_with_many_channels_and_filters_take_winograd(rng):
    assert winograd.use_winograd(64, 128, (3, 3), 4096) and winograd.use_winograd(256, 512, (3, 3), 4096) and winograd.use_winograd(32, 64, (3, 3), 4096)
    assert winograd.use_winograd(64, 32, (3, 3), 4096)  # 32 filters: the reduction folded into both halves of a tile
    assert not winograd.use_winograd(32, 32, (3, 3), 4096) and not winograd.use_winograd(64, 24, (3, 3), 4096)  # measured slower
    assert not winograd.use_winograd(16, 64, (3, 3), 4096)  # a 16-step reduction per tile: measured slower
    assert not winograd.use_winograd(64, 64, (5, 5), 4096) and not winograd.use_winograd(64, 64, (3, 1), 4096)
    assert winograd.use_winograd_filter_gradient(64, 128, (3, 3), 4096) and winograd.use_winograd_filter_gradient(256, 256, (3, 3), 4096)
    assert winograd.use_winograd_filter_gradient(32, 32, (3, 3), 4096)  # reducing over all tiles, 32 filters still pay
    assert not winograd.use_winograd_filter_gradient(256, 512, (3, 3), 4096)  # measured slower than the direct sums
    assert not winograd.use_winograd_filter_gradient(16, 24, (3, 3), 4096) and not winograd.use_winograd_filter_gradient(64, 64, (1, 1), 4096)
    # too few tiles to pay for transforming the filters (measured 1.3-3.3x slower): one 14 x 14 map, two 4 x 4 ones
    assert not winograd.use_winograd(512, 512, (3, 3), 49) and not winograd.use_winograd(256, 256, (3, 3), 8)
    assert not winograd.use_winograd_filter_gradient(256, 256, (3, 3), 8)
    # and conv2d_forward sends such a layer there: the same bits as calling it directly
    x = rng.standard_normal((9, 64, 12, 11)).astype(np.float32)  # 9 x 6 x 6 = 324 tiles
    w = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    b = rng.standard_normal(64).astype(np.float32)
    np.testing.assert_array_equal(F.conv2d_forward(x, w, b, stride=1, padding=1), winograd_forward(x, w, b, 1))
    dy = rng.standard_normal((9, 64, 12, 11)).astype(np.float32)
    _, dw, db = F.conv2d_backward(dy, x, w, stride=1, padding=1)
    want_dw, want_db = winograd_filter_gradient(x, dy, 1)
    np.testing.assert_array_equal(dw, want_dw)
    np.testing.assert_array_equal(db, want_db.astype(np.float32))


def test_winograd_gives_the_same_bits_on_any_number_of_threads(rng):
    if numba.config.NUMBA_NUM_THREADS < 2:
        pytest.skip("Numba has one thread here: nothing to compare")
    x = rng.standard_normal((5, 64, 9, 7)).astype(np.float32)
    w = rng.standard_normal((70, 64, 3, 3)).astype(np.float32)
    b = np.zeros(70, np.float32)
    threads = numba.get_num_threads()
    dy = rng.standard_normal((5, 70, 9, 7)).astype(np.float32)
    many = rng.standard_normal((6, 8, 24, 24)).astype(np.float32), rng.standard_normal((6, 20, 24, 24)).astype(np.float32)  # 4 chunks
    try:
        results = []
        for n in (1, 2):
            numba.set_num_threads(n)
            results.append((winograd_forward(x, w, b, 1), *winograd_filter_gradient(x, dy, 1), *winograd_filter_gradient(*many, 1)))
    finally:
        numba.set_num_threads(threads)
    for one, two in zip(*results):
        np.testing.assert_array_equal(one, two)


def test_folded_filter_gradient_clears_the_spare_half_row_of_a_shorter_item(rng):
    """One 702 x 5 map: four items of 71 tile rows x 3 (213 tiles) and a last one of 67 x 3 = 201, the last two
    in one chunk. Folded (8 filters), the short item's odd tile count leaves its last DY row's second half
    without a tile; it must be zeroed, not left holding the previous item's DY (times V's row past the item's
    tiles, which that item wrote)."""
    x = rng.standard_normal((1, 8, 702, 5))
    w = rng.standard_normal((8, 8, 3, 3))
    dy = rng.standard_normal((1, 8, 702, 5))
    _, want_dw, want_db = F.conv2d_backward(dy, x, w, stride=1, padding=1)  # float64, im2col
    dw, db = winograd_filter_gradient(x.astype(np.float32), dy.astype(np.float32), 1)
    np.testing.assert_allclose(dw, want_dw, rtol=1e-4, atol=1e-5 * np.abs(want_dw).max())
    np.testing.assert_allclose(db, want_db, rtol=1e-6, atol=1e-6 * np.abs(want_db).max())
