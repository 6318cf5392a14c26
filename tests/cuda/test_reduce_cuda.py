"""The reduction kernels against NumPy sums."""

import numpy as np
import pytest

from scratchdet.kernels.cuda import reduce


@pytest.mark.parametrize("size", [1, 31, 257, 700])
def test_sum_all_of_sizes_that_do_not_fill_a_block(rng, gpu, host, size):
    a = rng.standard_normal(size).astype(np.float32)
    total = host(reduce.sum_all(gpu(a)))
    assert total.shape == (1,) and total.dtype == np.float64
    np.testing.assert_allclose(total[0], a.astype(np.float64).sum(), rtol=1e-12)


# sum_axis0 splits the rows among groups of threads (1 to 32, one per 32 rows), each keeping four
# sums: groups with no row, with a few (the tail loop), with whole rounds of four and a tail; 40
# columns fill one block of 32 and part of a second
@pytest.mark.parametrize("rows", [1, 3, 9, 33, 70, 300])
def test_sum_rows_and_sum_axis0(rng, gpu, host, rows):
    a = rng.standard_normal((rows, 300)).astype(np.float32)
    # float64 sums rounded once to float32: within a float32 rounding of the exact sums (summed in
    # float32, 300 terms would be further off: a row of 300, and a column of 300 rows)
    exact = a.astype(np.float64)
    few = min(rows, 16)  # the row sums of a few rows are enough: each row is summed alike
    np.testing.assert_allclose(host(reduce.sum_rows(gpu(a[:few]))), exact[:few].sum(axis=1), rtol=1e-6, atol=1e-6)
    columns = a[:, :40]
    np.testing.assert_allclose(host(reduce.sum_axis0(gpu(columns))), columns.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-6)
    out = gpu(np.full(40, np.nan, np.float32))  # written in place when given
    assert reduce.sum_axis0(gpu(columns), out=out) is out
    np.testing.assert_allclose(host(out), columns.astype(np.float64).sum(axis=0), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(("rows", "length"), [(1, 1), (9, 31), (17, 100), (3, reduce.SHORT_ROW + 1)])
def test_sum_rows_short_and_long_rows(rng, gpu, host, rows, length):
    """Rows up to SHORT_ROW long take 32 threads each (8 rows per block, the last block partly idle);
    longer rows a block each."""
    a = rng.standard_normal((rows, length))
    np.testing.assert_allclose(host(reduce.sum_rows(gpu(a))), a.sum(axis=1), rtol=1e-12)


@pytest.mark.parametrize(("n", "threads"), [(1, 32), (32, 32), (33, 64), (200, 256), (10_000, 256)])
def test_reduce_threads_is_a_power_of_two_covering_n(n, threads):
    assert reduce.reduce_threads(n) == threads


@pytest.mark.parametrize(("rows", "groups"), [(1, 1), (32, 1), (33, 2), (256, 8), (300, 16), (2048, 32), (10**6, 32)])
def test_column_sums_give_a_group_of_threads_to_each_32_rows(rows, groups):
    assert reduce.row_groups(rows) == groups
