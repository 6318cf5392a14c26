"""The implicit-GEMM products of a convolution, launched directly with each shape of tile the autotuner
may pick, against the CPU convolution (`scratchdet.nn.functional`); the offset tables they read B
through, against im2col and the adjoint's definition; and which thread owns which output of a tile."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda import conv_gemm
from scratchdet.kernels.cuda.common import empty
from scratchdet.nn import functional as F

TILES = [
    (16, 16, 1, 4),  # the default for few filters
    (16, 16, 4, 8),  # 64 x 128 outputs, 4 B rows staged per thread
    (16, 16, 8, 8),  # the largest: 128 x 128 outputs (tried for 128 filters)
    (4, 64, 1, 4),  # flat block for few rows (few filters, or the input gradient of 5-8 channels)
    (32, 8, 1, 4),  # narrow block for few columns (a first layer's 27 filter taps)
]


@pytest.mark.parametrize("tile", TILES, ids=lambda t: "x".join(map(str, t)))
def test_each_tile_computes_the_three_products_of_a_strided_padded_convolution(rng, gpu, host, tile):
    # two images for the default tile (each image's offsets into a, src and c); one for the others, as
    # the simulator runs each block's 256 threads in Python
    n = 2 if tile == TILES[0] else 1
    c, h, w, k, ks, stride, padding = 2, 6, 5, 3, 3, 2, 1
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    y = F.conv2d_forward(x, weight, bias, stride=stride, padding=padding)
    out_h, out_w = y.shape[2:]
    rows, plane = c * ks * ks, out_h * out_w
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, db = F.conv2d_backward(dy, x, weight, stride=stride, padding=padding)
    geometry = (ks, ks, stride, padding, out_w)

    # forward: Y[n] (K, H'W') = W (K, C*kh*kw) @ cols[n] + b
    y_gpu = empty(y.shape, np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.FORWARD, gpu(weight), gpu(x), y_gpu, k, plane, rows, (0, rows), (k * plane, plane),
        geometry, bias=gpu(bias), tile=tile,
    )
    np.testing.assert_allclose(host(y_gpu), y, rtol=1e-5, atol=1e-5, err_msg=f"forward, tile {tile}")

    # filter gradient: dW_n (K, C*kh*kw) = dY[n] @ cols[n]^T, one per image, then the K bias terms
    grads_per_image = empty((n, k * rows + k), np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.FILTER_GRAD, gpu(dy), gpu(x), grads_per_image, k, rows, plane, (k * plane, plane),
        (k * rows + k, rows), geometry, tile=tile,
    )
    grads = host(grads_per_image).sum(axis=0)
    np.testing.assert_allclose(grads[: k * rows].reshape(dw.shape), dw, rtol=1e-5, atol=1e-5,
                               err_msg=f"filter gradient, tile {tile}")
    np.testing.assert_allclose(grads[k * rows :], db, rtol=1e-5, atol=1e-5, err_msg=f"bias gradient, tile {tile}")

    # input gradient: dX[n] (C, HW) = W~ (C, K*kh*kw) @ dcols[n], W~[c, (k, i, j)] = W[k, c, i, j]
    w_swapped = np.ascontiguousarray(weight.transpose(1, 0, 2, 3))
    dx_gpu = empty(x.shape, np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.INPUT_GRAD, gpu(w_swapped), gpu(dy), dx_gpu, c, h * w, k * ks * ks, (0, k * ks * ks), (c * h * w, h * w),
        (ks, ks, stride, padding, w), tile=tile,
    )
    np.testing.assert_allclose(host(dx_gpu), dx, rtol=1e-5, atol=1e-5, err_msg=f"input gradient, tile {tile}")


@pytest.mark.parametrize(
    ("m", "n", "extra"), [(3, 4096, (4, 64, 1, 4)), (32, 27, (32, 8, 1, 4)), (128, 4096, (16, 16, 8, 8)), (64, 4096, None)]
)
def test_small_products_add_a_flat_or_narrow_block_to_the_candidates(m, n, extra):
    candidates = conv_gemm.tile_candidates(m, n)
    assert conv_gemm.default_tile(m, n) in candidates
    if extra is None:
        assert all(tile[:2] == (16, 16) for tile in candidates), candidates
    else:
        assert extra in candidates, candidates


def _materialise(host, product, src, geometry, k, n):
    """The virtual B of one image (src[0]) built from `offset_tables` as the kernel reads it."""
    rows, cols = (host(t).astype(np.int64) for t in conv_gemm.offset_tables(product, src.shape, geometry, k, n))
    stride, src_h, src_w = geometry[2], src.shape[2], src.shape[3]
    yy = rows[1][:, None] + cols[1][None, :]
    xx = rows[2][:, None] + cols[2][None, :]
    image = src[0].ravel()
    if product == conv_gemm.INPUT_GRAD and stride > 1:
        ok = (yy >= 0) & (xx >= 0) & (yy % stride == 0) & (xx % stride == 0)
        yy, xx = yy // stride, xx // stride
        ok &= (yy < src_h) & (xx < src_w)
        where = rows[0][:, None] + yy * src_w + xx
    else:
        ok = (yy >= 0) & (yy < src_h) & (xx >= 0) & (xx < src_w)
        where = rows[0][:, None] + cols[0][None, :]
    return np.where(ok, image[np.where(ok, where, 0)], 0)


@pytest.mark.parametrize(
    ("c", "h", "w", "kh", "kw", "stride", "padding"),
    [(3, 6, 5, 3, 3, 1, 1), (2, 7, 9, 3, 2, 2, 1), (4, 5, 5, 1, 1, 1, 0), (1, 8, 6, 5, 3, 3, 2), (2, 4, 4, 2, 2, 2, 0)],
)
def test_offset_tables_describe_the_column_matrices(rng, host, c, h, w, kh, kw, stride, padding):
    """The tables' outer sum gives im2col's matrix (forward), its transpose (filter gradient) and the
    adjoint's dcols, written out here from its definition (input gradient), padding and strides included."""
    from scratchdet.kernels.cpu.nn import im2col

    x = rng.standard_normal((1, c, h, w))
    out_h = 1 + (h + 2 * padding - kh) // stride
    out_w = 1 + (w + 2 * padding - kw) // stride
    rows, plane = c * kh * kw, out_h * out_w
    cols = np.empty((rows, plane))
    im2col(np.pad(x, ((0, 0), (0, 0), (padding, padding), (padding, padding))), kh, kw, stride, cols)
    geometry = (kh, kw, stride, padding, out_w)
    np.testing.assert_array_equal(_materialise(host, conv_gemm.FORWARD, x, geometry, rows, plane), cols)
    np.testing.assert_array_equal(_materialise(host, conv_gemm.FILTER_GRAD, x, geometry, plane, rows), cols.T)

    filters = 3
    dy = rng.standard_normal((1, filters, out_h, out_w))
    dcols = np.zeros((filters * kh * kw, h * w))
    for f in range(filters):
        for i in range(kh):
            for j in range(kw):
                for oy in range(out_h):
                    for ox in range(out_w):
                        y, x_ = oy * stride - padding + i, ox * stride - padding + j
                        if 0 <= y < h and 0 <= x_ < w:
                            dcols[(f * kh + i) * kw + j, y * w + x_] = dy[0, f, oy, ox]
    adjoint = _materialise(host, conv_gemm.INPUT_GRAD, dy, (kh, kw, stride, padding, w), filters * kh * kw, h * w)
    np.testing.assert_array_equal(adjoint, dcols)


def test_offset_tables_refuse_a_geometry_that_does_not_match_the_product():
    with pytest.raises(InvalidArgumentError, match="B is"):
        conv_gemm.offset_tables(conv_gemm.FORWARD, (1, 3, 6, 6), (3, 3, 1, 1, 6), 27, 35)


@pytest.mark.parametrize(("threads", "per_thread"), [(16, 1), (16, 2), (16, 4), (16, 8), (4, 1), (64, 4), (32, 1)])
def test_each_output_of_a_tile_has_one_owner(threads, per_thread):
    """`gemm.owned`: runs of up to 4 adjacent rows per thread cover the tile's rows once each."""
    from scratchdet.kernels.cuda.gemm import VECTOR, owned

    run = min(per_thread, VECTOR)
    rows = sorted(owned.py_func(i, t, threads, run) for t in range(threads) for i in range(per_thread))
    assert rows == list(range(threads * per_thread))
    # a thread's rows come in runs of `run` adjacent ones, each starting at a multiple of `run`
    for t in range(threads):
        mine = [owned.py_func(i, t, threads, run) for i in range(per_thread)]
        assert all(mine[g] % run == 0 and mine[g : g + run] == list(range(mine[g], mine[g] + run)) for g in range(0, per_thread, run))


@pytest.mark.parametrize("splits", [2, 6])
def test_filter_gradient_sums_cut_into_parts_add_up_to_the_whole(rng, gpu, host, splits):
    """Each image's sum over its 7 x 6 = 42 pixels cut into parts of whole tiles (24 or 8 terms, the
    last part shorter); the parts of all images add up to dW, and their bias terms to db."""
    n, c, h, w, k = 2, 3, 7, 6, 4
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, 3, 3)).astype(np.float32)
    dy = rng.standard_normal((n, k, h, w)).astype(np.float32)
    _, dw, db = F.conv2d_backward(dy, x, weight, stride=1, padding=1)
    rows, plane = c * 9, h * w
    assert -(-plane // conv_gemm.part_length(plane, splits)) == splits
    parts = empty((n * splits, k * rows + k), np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.FILTER_GRAD, gpu(dy), gpu(x), parts, k, rows, plane, (k * plane, plane), (k * rows + k, rows),
        (3, 3, 1, 1, w), splits=splits,
    )
    grads = host(parts).sum(axis=0)
    np.testing.assert_allclose(grads[: k * rows].reshape(dw.shape), dw, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(grads[k * rows :], db, rtol=1e-5, atol=1e-5)


def test_long_sums_of_few_outputs_are_cut_into_parts():
    """An RGB layer's filter gradient on 64 x 64 maps (32 x 27 outputs per image, 4096 terms) is cut into
    8 parts of 512 terms; sums of a 16 x 16 map, or products with many outputs, stay whole; every
    count returned cuts the sum into that many non-empty parts of whole tiles."""
    assert conv_gemm.reduction_splits(256, 32, 27, 4096) == 8
    assert conv_gemm.reduction_splits(256, 128, 576, 256) == 1
    assert conv_gemm.reduction_splits(256, 64, 288, 1024) == 2
    assert conv_gemm.reduction_splits(1, 8, 8, 100) == 1
    for images, m, n, k in [(1, 16, 27, 1000), (3, 5, 9, 2049), (256, 16, 27, 1024), (7, 64, 64, 777)]:
        splits = conv_gemm.reduction_splits(images, m, n, k)
        part = conv_gemm.part_length(k, splits)
        assert part % conv_gemm.BK == 0 and part * (splits - 1) < k <= part * splits


def test_a_sum_that_cannot_be_cut_into_that_many_parts_is_refused(gpu):
    x = gpu(np.zeros((1, 1, 3, 3), np.float32))
    out = empty((4, 9), np.float32)
    # 9 terms are two tiles of 8: at most 2 parts
    with pytest.raises(InvalidArgumentError, match="cannot cut"):
        conv_gemm.conv_gemm_launch(conv_gemm.FILTER_GRAD, x, x, out, 1, 9, 9, (9, 9), (9, 9), (3, 3, 1, 1, 3), splits=4)
