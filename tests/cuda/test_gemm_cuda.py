"""The tiled shared-memory GEMM against NumPy's matrix product."""

import numpy as np
import pytest

from scratchdet.kernels.cuda import gemm


@pytest.mark.parametrize(
    ("m", "n", "k", "transpose_a", "transpose_b"),
    [
        (1, 1, 1, False, False),  # a single element: one thread of one block does work
        (5, 7, 3, False, False),  # 16 x 64 tile (tm=1), k shorter than one staged tile
        (17, 33, 20, True, False),  # 32-row tile (tm=2), k spans three staged tiles, A transposed
        (40, 9, 11, False, True),  # 64-row tile (tm=4), B transposed
        (3, 520, 2, False, False),  # wide output: 8 columns per thread (tn=8), 5 column blocks
    ],
)
def test_matmul_matches_numpy_on_sizes_that_do_not_fill_a_tile(rng, gpu, close, m, n, k, transpose_a, transpose_b):
    a = rng.standard_normal((k, m) if transpose_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if transpose_b else (k, n)).astype(np.float32)
    expected = (a.T if transpose_a else a) @ (b.T if transpose_b else b)
    ours = gemm.matmul(gpu(a), gpu(b), transpose_a=transpose_a, transpose_b=transpose_b)
    close(ours, expected, rtol=1e-5, atol=1e-5, what=f"matmul {m}x{k} @ {k}x{n}")


def test_matmul_float64(rng, gpu, close):
    a = rng.standard_normal((6, 9))
    b = rng.standard_normal((9, 5))
    close(gemm.matmul(gpu(a), gpu(b)), a @ b, rtol=1e-12, atol=1e-12, what="float64 matmul")


@pytest.mark.parametrize("bias_mode", [gemm.BIAS_ROW, gemm.BIAS_COL])
def test_batched_strided_product_with_bias(rng, gpu, host, bias_mode):
    """C[z] = A @ B[z] + bias for three batches, A shared (batch stride 0), as convolution uses it."""
    batches, m, n, k = 3, 4, 6, 5
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((batches, k, n)).astype(np.float32)
    bias = rng.standard_normal(m if bias_mode == gemm.BIAS_ROW else n).astype(np.float32)
    c = gpu(np.zeros((batches, m, n), np.float32))
    gemm.gemm_launch(
        gpu(a), gpu(b), c, m, n, k, (0, k, 1), (k * n, n, 1), (m * n, n, 1),
        batches=batches, bias=gpu(bias), bias_mode=bias_mode,
    )
    expected = a @ b + (bias[:, None] if bias_mode == gemm.BIAS_ROW else bias[None, :])
    np.testing.assert_allclose(host(c), expected, rtol=1e-5, atol=1e-5)


def test_matmul_rejects_mismatched_inner_dimensions(rng, gpu):
    from scratchdet.errors import InvalidArgumentError

    with pytest.raises(InvalidArgumentError, match="inner dimensions"):
        gemm.matmul(gpu(np.zeros((2, 3), np.float32)), gpu(np.zeros((4, 2), np.float32)))


@pytest.mark.parametrize(("m", "n", "tile"), [(16, 100, (1, 4)), (17, 512, (2, 8)), (33, 10, (4, 4)), (500, 4000, (4, 8))])
def test_tile_shape_fits_rows_and_widens_for_long_rows(m, n, tile):
    assert gemm.tile_shape(m, n) == tile


def test_autotuning_picks_a_candidate_tile_and_computes_the_same_product(rng, gpu, close, monkeypatch):
    monkeypatch.setattr(gemm, "AUTOTUNE", True)
    monkeypatch.setattr(gemm, "_chosen_tiles", {})
    a = rng.standard_normal((5, 3)).astype(np.float32)
    b = rng.standard_normal((3, 9)).astype(np.float32)
    close(gemm.matmul(gpu(a), gpu(b)), a @ b, atol=1e-6)
    (tile,) = gemm.chosen_tiles().values()
    assert tile in gemm.tile_candidates(5, 9)


@pytest.mark.parametrize("tile", [(1, 4), (2, 8), (4, 4), (8, 4), (8, 8)], ids=lambda t: f"{t[0]}x{t[1]}")
def test_every_tile_shape_autotuning_may_pick_computes_the_product(rng, gpu, close, tile):
    """Each tile, launched directly, on a 20 x 70 product (k = 21: three staged tiles, the last partial)."""
    m, n, k = 20, 70, 21
    a = rng.standard_normal((m, k)).astype(np.float32)
    b = rng.standard_normal((k, n)).astype(np.float32)
    c = gpu(np.zeros((m, n), np.float32))
    gemm._launch(tile, gpu(a).reshape(m * k), gpu(b).reshape(k * n), c.reshape(m * n), c.reshape(m * n)[:1],
                 m, n, k, (0, k, 1), (0, n, 1), (0, n, 1), 1, gemm.BIAS_NONE)
    close(c, a @ b, rtol=1e-5, atol=1e-4, what=f"tile {tile}")


@pytest.mark.parametrize("tile", [(1, 4), (2, 8), (4, 4), (8, 4), (8, 8)], ids=lambda t: f"{t[0]}x{t[1]}")
def test_every_tile_computes_a_weight_gradient_with_its_bias_gradient(rng, gpu, host, tile):
    """Each tile on a linear layer's weight gradient, dW (10 x 13) = dY^T (A transposed) @ X, summing 19
    samples, with the column of ones (BIAS_GRAD): db = the row sums of dY^T follows dW's elements."""
    n, d_in, d_out = 19, 13, 10
    dy = rng.standard_normal((n, d_out)).astype(np.float32)
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    grads = gpu(np.full(d_out * (d_in + 1), np.nan, np.float32))
    gemm._launch(tile, gpu(dy).reshape(n * d_out), gpu(x).reshape(n * d_in), grads, grads[:1], d_out, d_in + 1, n,
                 (0, 1, d_out), (0, d_in, 1), (0, d_in, 1), 1, gemm.BIAS_GRAD)
    out = host(grads)
    np.testing.assert_allclose(out[: d_out * d_in].reshape(d_out, d_in), dy.T @ x, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[d_out * d_in :], dy.sum(axis=0), rtol=1e-5, atol=1e-5)


def test_a_bias_gradient_needs_a_row_major_output_and_no_bias(gpu):
    from scratchdet.errors import InvalidArgumentError

    a, c = gpu(np.zeros(12, np.float32)), gpu(np.zeros(20, np.float32))
    with pytest.raises(InvalidArgumentError, match="row-major"):
        gemm.gemm_launch(a, a, c, 4, 3, 1, (0, 1, 1), (0, 3, 1), (0, 1, 4), bias_mode=gemm.BIAS_GRAD)
    with pytest.raises(InvalidArgumentError, match="no bias"):
        gemm.gemm_launch(a, a, c, 4, 3, 1, (0, 1, 1), (0, 3, 1), (0, 3, 1), bias=a[:4], bias_mode=gemm.BIAS_GRAD)


@pytest.mark.parametrize(
    ("bias_mode", "transpose_a"),
    [(gemm.BIAS_NONE, False), (gemm.BIAS_ROW, True), (gemm.BIAS_COL, False), (gemm.BIAS_GRAD, True)],
)
def test_long_sums_cut_into_parts_give_the_whole_product(rng, gpu, host, monkeypatch, bias_mode, transpose_a):
    """With parts of at least 8 terms (256 in the library), two 4 x 6 products summing 37 terms are
    cut into 3 parts of whole tiles (16, 16 and 5 terms); the parts are added per product, then the bias
    (or, for a bias gradient, each product's row sums of A follow its elements through the parts)."""
    monkeypatch.setattr(gemm, "MIN_PART", 8)
    batches, m, n, k = 2, 4, 6, 37
    assert gemm.reduction_splits(batches, m, n, k, 16, 64) == 3
    a = rng.standard_normal((batches, k, m) if transpose_a else (batches, m, k)).astype(np.float32)
    b = rng.standard_normal((batches, k, n)).astype(np.float32)
    bias = rng.standard_normal(m if bias_mode == gemm.BIAS_ROW else n).astype(np.float32)
    per_product = m * n + (m if bias_mode == gemm.BIAS_GRAD else 0)
    c = gpu(np.zeros((batches, per_product), np.float32))
    a_strides = (k * m, 1, m) if transpose_a else (m * k, k, 1)
    gemm.gemm_launch(
        gpu(a), gpu(b), c, m, n, k, a_strides, (k * n, n, 1), (per_product, n, 1),
        batches=batches, bias=gpu(bias) if bias_mode in (gemm.BIAS_ROW, gemm.BIAS_COL) else None, bias_mode=bias_mode,
    )
    a_rows = a.transpose(0, 2, 1) if transpose_a else a
    expected = a_rows @ b
    if bias_mode == gemm.BIAS_ROW:
        expected += bias[:, None]
    elif bias_mode == gemm.BIAS_COL:
        expected += bias[None, :]
    out = host(c)
    np.testing.assert_allclose(out[:, : m * n].reshape(batches, m, n), expected, rtol=1e-5, atol=1e-5)
    if bias_mode == gemm.BIAS_GRAD:
        np.testing.assert_allclose(out[:, m * n :], a_rows.sum(axis=2), rtol=1e-5, atol=1e-5)


def test_products_with_few_tiles_and_long_sums_are_cut_into_parts():
    """A 256 x 4096 -> 1024 fully connected layer's forward (32 tiles of 64 x 128) is cut into 16 parts of
    256 terms; its weight gradient (1024 x 4096 outputs, 256 terms) is not; every count cuts k into
    that many non-empty parts of whole tiles."""
    assert gemm.reduction_splits(1, 256, 1024, 4096, 64, 128) == 16
    assert gemm.reduction_splits(1, 1024, 4096, 256, 64, 128) == 1
    assert gemm.reduction_splits(1, 256, 10, 2048, 64, 64) == 8
    for batches, m, n, k in [(1, 5, 7, 3), (2, 64, 64, 1000), (1, 16, 16, 100000), (9, 100, 100, 513)]:
        splits = gemm.reduction_splits(batches, m, n, k, 64, 64)
        part = gemm.part_length(k, splits)
        assert part % gemm.BK == 0 and part * (splits - 1) < k <= part * splits


def test_parts_never_overflow_the_grid(monkeypatch):
    """Products times parts stay within the grid's 65535 z blocks, whatever the target of blocks."""
    monkeypatch.setattr(gemm, "TARGET_BLOCKS", 10**9)
    assert gemm.reduction_splits(30000, 4, 4, 4096, 64, 64) == 2
    assert gemm.reduction_splits(65535, 4, 4, 4096, 64, 64) == 1
