"""The implicit-GEMM products of a convolution, launched directly with each shape of tile the autotuner
may pick, against the CPU convolution (`scratchdet.nn.functional`)."""

import numpy as np
import pytest

from scratchdet.kernels.cuda import conv_gemm
from scratchdet.kernels.cuda.common import empty
from scratchdet.nn import functional as F

TILES = [
    (16, 16, 1, 4),  # the default for few filters
    (16, 16, 4, 8),  # 64 x 128 outputs, 4 B rows staged per thread
    (16, 16, 8, 8),  # the largest: 128 x 128 outputs (tried for 128 filters)
    (4, 64, 1, 4),  # flat block for few rows (an RGB input gradient)
    (32, 8, 1, 4),  # narrow block for few columns (a first layer's 27 filter taps)
]


@pytest.mark.parametrize("tile", TILES, ids=lambda t: "x".join(map(str, t)))
def test_each_tile_computes_the_three_products_of_a_strided_padded_convolution(rng, gpu, host, tile):
    n, c, h, w, k, ks, stride, padding = 2, 3, 6, 5, 5, 3, 2, 1
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    y = F.conv2d_forward(x, weight, bias, stride=stride, padding=padding)
    out_h, out_w = y.shape[2:]
    rows, plane = c * ks * ks, out_h * out_w
    dy = rng.standard_normal(y.shape).astype(np.float32)
    dx, dw, _ = F.conv2d_backward(dy, x, weight, stride=stride, padding=padding)
    geometry = (ks, ks, stride, padding, out_w)

    # forward: Y[n] (K, H'W') = W (K, C*kh*kw) @ cols[n] + b
    y_gpu = empty(y.shape, np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.FORWARD, gpu(weight), gpu(x), y_gpu, k, plane, rows, (0, rows), (k * plane, plane),
        geometry, bias=gpu(bias), tile=tile,
    )
    np.testing.assert_allclose(host(y_gpu), y, rtol=1e-5, atol=1e-5, err_msg=f"forward, tile {tile}")

    # filter gradient: dW_n (K, C*kh*kw) = dY[n] @ cols[n]^T, one per image
    dw_per_image = empty((n, k * rows), np.float32)
    conv_gemm.conv_gemm_launch(
        conv_gemm.FILTER_GRAD, gpu(dy), gpu(x), dw_per_image, k, rows, plane, (k * plane, plane), (k * rows, rows),
        geometry, tile=tile,
    )
    np.testing.assert_allclose(host(dw_per_image).sum(axis=0).reshape(dw.shape), dw, rtol=1e-5, atol=1e-5,
                               err_msg=f"filter gradient, tile {tile}")

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
