"""`scratchdet.kernels.cpu.blas.matmul`: small products cut into bands BLAS runs on one thread, the
same numbers as one product."""

import numpy as np
import pytest

from scratchdet.kernels.cpu import blas


@pytest.mark.parametrize(
    "m, k, n, pieces",
    [
        (64, 2048, 10, 6),  # a classifier's last layer: bands of 12 rows
        (10, 64, 2048, 5),  # its filter gradient dy^T @ x: bands of 2 rows
        (1000, 1024, 1, 4),  # one column: bands of 256 rows
        (8, 16, 16, 1),  # within one band already: one call
        (2, 1024, 512, 1),  # a row alone is above the band size: one call
        (4096, 1024, 8, 1),  # more than MAX_PIECES bands: one call
        (0, 5, 3, 1), (5, 0, 3, 1), (5, 3, 0, 1),  # empty products
    ],
)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matmul_matches_numpy_in_the_expected_number_of_calls(rng, monkeypatch, m, k, n, pieces, dtype):
    a = rng.standard_normal((m, k)).astype(dtype)
    b = rng.standard_normal((n, k)).astype(dtype).T  # a transposed view, as the linear layer passes w.T
    expected = a @ b
    calls = []
    original = np.matmul
    monkeypatch.setattr(blas.np, "matmul", lambda *args, **kwargs: calls.append(1) or original(*args, **kwargs))
    out = blas.matmul(a, b)
    monkeypatch.undo()
    assert len(calls) == pieces and out.shape == (m, n) and out.dtype == dtype
    np.testing.assert_allclose(out, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-4 if dtype == np.float32 else 1e-10)


def test_matmul_writes_into_out_views(rng):
    a = rng.standard_normal((64, 2048)).astype(np.float32)
    b = rng.standard_normal((2048, 10)).astype(np.float32)
    buffer = np.full((70, 10), np.nan, np.float32)
    out = blas.matmul(a, b, out=buffer[3:67])
    assert np.shares_memory(out, buffer)
    np.testing.assert_allclose(buffer[3:67], a @ b, rtol=1e-5, atol=1e-4)
    assert np.isnan(buffer[:3]).all() and np.isnan(buffer[67:]).all()


def test_matmul_of_stacked_matrices_is_numpys(rng):
    a, b = rng.standard_normal((3, 4, 5)), rng.standard_normal((3, 5, 2))
    np.testing.assert_array_equal(blas.matmul(a, b), np.matmul(a, b))
