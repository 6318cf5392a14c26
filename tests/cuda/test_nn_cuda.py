"""The CUDA layer kernels against their CPU twins in `scratchdet.nn.functional`."""

import numpy as np
import pytest

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import functional as F

# (N, C, H, W, K, kernel, stride, padding)
CONV_CASES = [
    (2, 3, 5, 6, 4, 3, 1, 1),  # odd sizes, "same" padding
    (1, 3, 4, 4, 2, 1, 1, 0),  # 1x1 kernel
    (1, 1, 6, 6, 2, 2, 3, 1),  # stride larger than the kernel: some pixels feed no output
    (1, 1, 9, 8, 2, 5, 1, 2),  # 5x5, padding 2: 72 output pixels span several column tiles
    (1, 5, 8, 7, 3, 3, 2, 1),  # stride 2 with padding, floor of the output size: the input gradient skips odd offsets
    (1, 2, 5, 5, 17, 1, 1, 0),  # 17 filters: two rows of tiles, the second nearly empty
    (1, 2, 4, 5, 2, 1, 1, 2),  # padding wider than the kernel: a border of outputs that see only zeros
    (1, 1, 3, 3, 3, 3, 1, 0),  # one output pixel: the filter gradient walks 1-pixel-wide rows
]


@pytest.mark.parametrize(("n", "c", "h", "w", "k", "ks", "stride", "padding"), CONV_CASES)
def test_conv2d_forward_and_backward_match_cpu(rng, gpu, close, n, c, h, w, k, ks, stride, padding):
    x = rng.standard_normal((n, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    bias = rng.standard_normal(k).astype(np.float32)
    y = F.conv2d_forward(x, weight, bias, stride=stride, padding=padding)
    close(F.conv2d_forward(gpu(x), gpu(weight), gpu(bias), stride=stride, padding=padding), y, atol=1e-5, what="y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    expected = F.conv2d_backward(dy, x, weight, stride=stride, padding=padding)
    ours = F.conv2d_backward(gpu(dy), gpu(x), gpu(weight), stride=stride, padding=padding)
    for name, a, b in zip(("dx", "dw", "db"), ours, expected):
        close(a, b, atol=1e-5, what=name)


# (C, H, W, K, kernel, stride, padding): heights that 2, 4 and 8 rows per thread do not divide
FEW_CHANNEL_CASES = [
    (3, 5, 6, 2, 3, 1, 1),
    (1, 7, 3, 3, 2, 1, 0),  # even kernel, no padding
    (4, 6, 5, 2, 3, 2, 1),  # stride 2: every other row and column of taps
    (2, 7, 7, 1, 4, 3, 2),  # stride 3, 4x4, wide padding
]


@pytest.mark.parametrize("rows", [1, 2, 4, 8])
@pytest.mark.parametrize(("c", "h", "w", "k", "ks", "stride", "padding"), FEW_CHANNEL_CASES)
def test_few_channels_input_gradient_matches_cpu_for_every_rows_per_thread(rng, gpu, close, rows, c, h, w, k, ks, stride, padding):
    from scratchdet.kernels.cuda import nn as cuda_nn

    x = rng.standard_normal((2, c, h, w)).astype(np.float32)
    weight = rng.standard_normal((k, c, ks, ks)).astype(np.float32)
    dy = rng.standard_normal(F.conv2d_forward(x, weight, None, stride=stride, padding=padding).shape).astype(np.float32)
    expected = F.conv2d_backward(dy, x, weight, stride=stride, padding=padding)[0]
    dx = gpu(np.full(x.shape, np.nan, np.float32))  # every pixel must be written
    cuda_nn.input_grad_few_channels(gpu(dy), gpu(weight), stride, padding, dx, rows=rows)
    close(dx, expected, atol=1e-5, what="dx")
    assert rows in cuda_nn.FEW_CHANNELS_ROWS


@pytest.mark.parametrize("channels", [2, 5], ids=["few-channels", "implicit-gemm"])
def test_backward_without_input_grad_computes_the_same_parameter_gradients(rng, gpu, host, channels):
    x, weight = gpu(rng.standard_normal((2, channels, 4, 5)).astype(np.float32)), gpu(rng.standard_normal((3, channels, 3, 3)).astype(np.float32))
    dy = gpu(rng.standard_normal((2, 3, 4, 5)).astype(np.float32))
    _, dw, db = F.conv2d_backward(dy, x, weight, padding=1)
    dx_skipped, dw_alone, db_alone = F.conv2d_backward(dy, x, weight, padding=1, input_grad=False)
    assert dx_skipped is None
    np.testing.assert_array_equal(host(dw_alone), host(dw))
    np.testing.assert_array_equal(host(db_alone), host(db))
    dy, x, w = gpu(np.ones((2, 3), np.float32)), gpu(np.ones((2, 4), np.float32)), gpu(np.ones((3, 4), np.float32))
    dx_skipped, dw, db = F.linear_backward(dy, x, w, input_grad=False)
    assert dx_skipped is None and host(dw).tolist() == [[2.0] * 4] * 3 and host(db).tolist() == [2.0] * 3


def test_conv2d_float64(rng, gpu, close):
    x = rng.standard_normal((1, 2, 4, 5))
    weight = rng.standard_normal((3, 2, 3, 3))
    bias = rng.standard_normal(3)
    close(F.conv2d_forward(gpu(x), gpu(weight), gpu(bias), padding=1), F.conv2d_forward(x, weight, bias, padding=1), rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal((1, 3, 4, 5))
    ours = F.conv2d_backward(gpu(dy), gpu(x), gpu(weight), padding=1)
    for name, a, b in zip(("dx", "dw", "db"), ours, F.conv2d_backward(dy, x, weight, padding=1)):
        close(a, b, rtol=1e-12, atol=1e-12, what=name)


def test_conv2d_results_survive_later_calls_that_reuse_work_buffers(rng, gpu, host):
    """Work buffers (per-image dW, swapped filters) are reused between calls; what a call returned must not be."""
    shapes = {"x": (1, 2, 4, 4), "w": (3, 2, 3, 3), "dy": (1, 3, 4, 4)}
    first = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    second = {name: rng.standard_normal(shape).astype(np.float32) for name, shape in shapes.items()}
    bias = np.zeros(3, np.float32)
    results = []
    for inputs in (first, second):
        x, w, dy = (gpu(inputs[name]) for name in ("x", "w", "dy"))
        results.append((F.conv2d_forward(x, w, gpu(bias), padding=1), *F.conv2d_backward(dy, x, w, padding=1)))
    expected = (F.conv2d_forward(first["x"], first["w"], bias, padding=1), *F.conv2d_backward(first["dy"], first["x"], first["w"], padding=1))
    for name, ours, theirs in zip(("y", "dx", "dw", "db"), results[0], expected):
        np.testing.assert_allclose(host(ours), theirs, rtol=1e-5, atol=1e-5, err_msg=f"first call's {name} after a second call")


def test_conv2d_rejects_mixed_dtypes_and_wrong_dy(rng, gpu):
    x = gpu(np.zeros((1, 2, 4, 4), np.float32))
    with pytest.raises(InvalidArgumentError, match="dtype"):
        F.conv2d_forward(x, gpu(np.zeros((3, 2, 3, 3))), gpu(np.zeros(3)), padding=1)
    with pytest.raises(InvalidArgumentError, match="dy must have shape"):
        F.conv2d_backward(gpu(np.zeros((1, 3, 3, 3), np.float32)), x, gpu(np.zeros((3, 2, 3, 3), np.float32)), padding=1)


@pytest.mark.parametrize(("kernel_size", "stride", "shape"), [(2, 2, (2, 2, 5, 7)), (3, 1, (1, 2, 5, 4)), (3, 2, (1, 1, 7, 6))])
def test_maxpool2d_matches_cpu_including_overlapping_windows(rng, gpu, close, kernel_size, stride, shape):
    x = rng.integers(-2, 3, shape).astype(np.float32)  # many ties: the first maximum wins
    y = F.maxpool2d_forward(x, kernel_size, stride)
    close(F.maxpool2d_forward(gpu(x), kernel_size, stride), y, rtol=0, atol=0, what="y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    close(F.maxpool2d_backward(gpu(dy), gpu(x), kernel_size, stride), F.maxpool2d_backward(dy, x, kernel_size, stride), what="dx")


def test_maxpool2d_backward_sends_a_tied_window_gradient_to_its_first_maximum(gpu, host):
    x = np.zeros((1, 1, 2, 2), np.float32)  # every element ties (as after a ReLU)
    dx = host(F.maxpool2d_backward(gpu(np.ones((1, 1, 1, 1), np.float32)), gpu(x), 2))
    np.testing.assert_array_equal(dx[0, 0], [[1, 0], [0, 0]])


@pytest.mark.filterwarnings("ignore:.*invalid value encountered:RuntimeWarning")  # the simulator's inf - inf, in NumPy
@pytest.mark.parametrize("stride", [2, 1], ids=["unrolled-2x2", "general-overlapping"])
def test_maxpool2d_propagates_nan_as_the_cpu_does(gpu, host, stride):
    # 2 x 2 windows: a NaN after the maximum, two NaNs, +inf with -inf (no NaN), plain numbers
    x = np.array([[[[1, np.nan, np.nan, 0, np.inf, 1, 3, 1], [0, 2, 5, np.nan, -np.inf, 2, 1, 3]]]], np.float32)
    y = F.maxpool2d_forward(x, 2, stride)
    dy = np.ones_like(y)
    np.testing.assert_array_equal(host(F.maxpool2d_forward(gpu(x), 2, stride)), y)
    np.testing.assert_array_equal(host(F.maxpool2d_backward(gpu(dy), gpu(x), 2, stride)), F.maxpool2d_backward(dy, x, 2, stride))


@pytest.mark.parametrize("seed", [True, 3.7, -1, 2**31])
def test_dropout_refuses_on_the_gpu_the_seeds_it_refuses_on_the_cpu(gpu, seed):
    x = np.ones(5, np.float32)
    for to in (np.asarray, gpu):
        with pytest.raises(InvalidArgumentError, match="dropout seed must be an integer"):
            F.dropout_forward(to(x), 0.5, seed)


def test_conv2d_forward_without_bias(rng, gpu, host):
    x = rng.standard_normal((1, 2, 5, 6)).astype(np.float32)
    w = rng.standard_normal((3, 2, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(host(F.conv2d_forward(gpu(x), gpu(w), None, 1, 1)), F.conv2d_forward(x, w, None, 1, 1), rtol=1e-5, atol=1e-5)


def test_relu_forward_and_backward_zero_at_zero_and_nan_kept(rng, gpu, host):
    x = rng.standard_normal((3, 37)).astype(np.float32)
    x[0, :5] = 0
    x[1, :3] = np.nan, np.inf, -np.inf  # NaN passes, as on the CPU
    dy = rng.standard_normal(x.shape).astype(np.float32)
    y, dx = host(F.relu_forward(gpu(x))), host(F.relu_backward(gpu(dy), gpu(x)))
    np.testing.assert_array_equal(y, F.relu_forward(x))
    np.testing.assert_array_equal(dx, F.relu_backward(dy, x))
    assert np.isnan(y[1, 0]) and y[1, 1] == np.inf and y[1, 2] == 0  # NaN and +inf pass, -inf does not
    assert dx[1, 0] == dy[1, 0] and dx[1, 1] == dy[1, 1] and dx[1, 2] == 0


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9])
def test_dropout_draws_the_cpu_mask_for_the_same_seed(rng, gpu, close, p):
    x = rng.standard_normal((4, 45)).astype(np.float32)
    y, mask = F.dropout_forward(x, p, 12345)
    y_gpu, mask_gpu = F.dropout_forward(gpu(x), p, 12345)
    close(mask_gpu, mask, rtol=0, atol=0, what="mask")
    close(y_gpu, y, rtol=0, atol=0, what="y")
    dy = rng.standard_normal(x.shape).astype(np.float32)
    close(F.dropout_backward(gpu(dy), mask_gpu), F.dropout_backward(dy, mask), rtol=0, atol=0, what="dx")


@pytest.mark.parametrize(("n", "d_in", "d_out"), [(1, 1, 1), (5, 7, 3), (19, 33, 10)])
def test_linear_forward_and_backward_match_cpu(rng, gpu, close, n, d_in, d_out):
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    w = rng.standard_normal((d_out, d_in)).astype(np.float32)
    b = rng.standard_normal(d_out).astype(np.float32)
    close(F.linear_forward(gpu(x), gpu(w), gpu(b)), F.linear_forward(x, w, b), atol=1e-5, what="y")
    dy = rng.standard_normal((n, d_out)).astype(np.float32)
    for name, a, e in zip(("dx", "dw", "db"), F.linear_backward(gpu(dy), gpu(x), gpu(w)), F.linear_backward(dy, x, w)):
        close(a, e, atol=1e-5, what=name)


@pytest.mark.parametrize(("n", "d_in"), [(0, 4), (3, 0)])
def test_linear_backward_of_an_empty_batch_or_no_inputs_gives_zero_sums(rng, gpu, close, n, d_in):
    x = rng.standard_normal((n, d_in)).astype(np.float32)
    w = rng.standard_normal((2, d_in)).astype(np.float32)
    dy = rng.standard_normal((n, 2)).astype(np.float32)
    for name, a, e in zip(("dx", "dw", "db"), F.linear_backward(gpu(dy), gpu(x), gpu(w)), F.linear_backward(dy, x, w)):
        close(a, e, atol=1e-6, what=name)


def test_flatten_keeps_the_array_on_the_device(rng, gpu, host):
    x = rng.standard_normal((2, 3, 2, 2)).astype(np.float32)
    flat = F.flatten_forward(gpu(x))
    assert is_cuda_array(flat) and flat.shape == (2, 12)
    np.testing.assert_array_equal(host(F.flatten_backward(flat, x.shape)), x)


ROIS = np.array(
    [
        [0, 0.0, 0.0, 30.0, 30.0],  # covers the map and more: clipped bins
        [1, 4.6, 2.0, 20.0, 33.0],  # rounding of the corners (x1 * 0.25 = 1.15 -> 1)
        [0, 10.0, 10.0, 12.0, 11.0],  # smaller than the grid: bins repeat cells
        [0, 2.0, 2.0, 26.0, 18.0],  # overlaps the first RoI: their gradients add on shared cells
        [1, 40.0, 40.0, 50.0, 50.0],  # entirely off the map: every bin is empty, output 0
    ]
)


@pytest.mark.parametrize("output_size", [(2, 3), 1])
def test_roi_pool_forward_and_backward_match_cpu(rng, gpu, close, output_size):
    features = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    out = F.roi_pool_forward(features, ROIS, output_size, 0.25)
    close(F.roi_pool_forward(gpu(features), gpu(ROIS), output_size, 0.25), out, rtol=0, atol=0, what="pooled")
    dout = rng.standard_normal(out.shape).astype(np.float32)
    expected = F.roi_pool_backward(dout, features, ROIS, output_size, 0.25)
    # host RoIs work too (validated, then copied once)
    close(F.roi_pool_backward(gpu(dout), gpu(features), ROIS, output_size, 0.25), expected, atol=1e-6, what="dfeatures")


def test_roi_pool_nan_wins_its_bin_as_on_the_cpu(rng, gpu, close):
    features = rng.standard_normal((2, 3, 8, 9)).astype(np.float32)
    features[0, 1, 3, 4] = features[1, 2, 0, 0] = features[0, 0, 5, 5] = np.nan
    out = F.roi_pool_forward(features, ROIS, 2, 0.25)
    assert np.isnan(out).any()
    close(F.roi_pool_forward(gpu(features), gpu(ROIS), 2, 0.25), out, rtol=0, atol=0, what="pooled")
    dout = rng.standard_normal(out.shape).astype(np.float32)
    expected = F.roi_pool_backward(dout, features, ROIS, 2, 0.25)
    close(F.roi_pool_backward(gpu(dout), gpu(features), gpu(ROIS), 2, 0.25), expected, atol=1e-6, what="dfeatures")


def test_roi_pool_rejects_a_batch_index_outside_the_batch(gpu, host):
    features = gpu(np.ones((1, 1, 4, 4), np.float32))
    with pytest.raises(InvalidArgumentError, match="batch indices"):
        F.roi_pool_forward(features, np.array([[1, 0, 0, 2, 2]], np.float64), 2, 1.0)
    # device RoIs are not checked: a bad batch index pools zeros and passes no gradient back
    rois = gpu(np.array([[1, 0, 0, 2, 2], [-1, 0, 0, 2, 2], [0, 0, 0, 2, 2]], np.float32))
    assert host(F.roi_pool_forward(features, rois, 2, 1.0)).reshape(3, 4).tolist() == [[0] * 4, [0] * 4, [1] * 4]
    assert host(F.roi_pool_backward(gpu(np.ones((3, 1, 2, 2), np.float32)), features, rois, 2, 1.0)).sum() == 4
    with pytest.raises(InvalidArgumentError, match="integers or floats"):
        F.roi_pool_forward(features, gpu(np.zeros((1, 5), np.bool_)), 2, 1.0)


@pytest.mark.parametrize(
    "rois, scale, match",
    [([[0, 0, 0, 1e300, 3]], 1.0, "2\\*\\*53"), ([[0, np.nan, 0, 1, 1]], 1.0, "finite"), ([[0, 0, 0, 1, 1]], 0.0, "spatial_scale")],
    ids=["corner-beyond-2**53", "nan-corner", "zero-scale"],
)
def test_roi_pool_refuses_on_the_gpu_the_host_rois_it_refuses_on_the_cpu(gpu, rois, scale, match):
    features = np.ones((1, 1, 4, 4), np.float32)
    for to in (np.asarray, gpu):
        with pytest.raises(InvalidArgumentError, match=match):
            F.roi_pool_forward(to(features), np.array(rois, np.float64), 2, scale)


def test_conv2d_of_an_empty_batch(gpu, host):
    x = gpu(np.zeros((0, 2, 5, 5), np.float32))
    w = gpu(np.ones((3, 2, 3, 3), np.float32))
    y = F.conv2d_forward(x, w, gpu(np.zeros(3, np.float32)), padding=1)
    assert y.shape == (0, 3, 5, 5)
    dx, dw, db = F.conv2d_backward(gpu(np.zeros((0, 3, 5, 5), np.float32)), x, w, padding=1)
    assert dx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(host(dw), np.zeros((3, 2, 3, 3), np.float32))
    np.testing.assert_array_equal(host(db), np.zeros(3, np.float32))


@pytest.mark.parametrize(
    "x_shape, w_shape", [((2, 0, 4, 4), (2, 0, 3, 3)), ((1, 2, 5, 5), (0, 2, 3, 3)), ((1, 1, 0, 3), (2, 1, 3, 3))],
    ids=["no-channels", "no-filters", "no-rows"],
)
def test_conv2d_backward_without_channels_filters_or_rows_is_the_cpus(rng, gpu, close, x_shape, w_shape):
    """An empty product: with no channels db still sums dY (it was left unwritten), and no filters once
    divided by zero choosing how to cut the sums."""
    x, w = rng.standard_normal(x_shape).astype(np.float32), rng.standard_normal(w_shape).astype(np.float32)
    y = F.conv2d_forward(x, w, None, padding=2)
    close(F.conv2d_forward(gpu(x), gpu(w), None, padding=2), y, atol=1e-6, what="y")
    dy = rng.standard_normal(y.shape).astype(np.float32)
    ours, theirs = F.conv2d_backward(gpu(dy), gpu(x), gpu(w), padding=2), F.conv2d_backward(dy, x, w, padding=2)
    for name, a, e in zip(("dx", "dw", "db"), ours, theirs):
        close(a, e, atol=1e-5, what=name)


ONES = {shape: np.ones(shape) for shape in ((1, 1, 5, 5), (1, 1, 3, 3), (1, 1, 0, 3), (1, 1, 4, 4))}
ROI = np.array([[0, 0, 0, 3, 3]], np.float64)


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda to: F.conv2d_forward(to(ONES[1, 1, 5, 5]), to(ONES[1, 1, 3, 3]), None, stride=1.5), "stride"),
        (lambda to: F.conv2d_forward(to(ONES[1, 1, 5, 5]), to(ONES[1, 1, 3, 3]), None, padding=True), "padding"),
        (lambda to: F.conv2d_backward(to(ONES[1, 1, 3, 3]), to(ONES[1, 1, 5, 5]), to(ONES[1, 1, 3, 3]), padding=0.9), "padding"),
        (lambda to: F.conv2d_forward(to(ONES[1, 1, 5, 5]), to(ONES[1, 1, 0, 3]), None), "kernel height must be >= 1"),
        (lambda to: F.maxpool2d_forward(to(ONES[1, 1, 4, 4]), 2.5), "kernel_size"),
        (lambda to: F.maxpool2d_forward(to(ONES[1, 1, 4, 4]), 2, stride=True), "stride"),
        (lambda to: F.roi_pool_forward(to(ONES[1, 1, 4, 4]), ROI, 2.5, 1.0), "output_size"),
        (lambda to: F.roi_pool_forward(to(ONES[1, 1, 4, 4]), ROI, True, 1.0), "output_size"),
    ],
    ids=["float-stride", "bool-padding", "float-padding-backward", "empty-kernel", "float-pool", "bool-pool-stride",
         "float-roi-size", "bool-roi-size"],
)  # fmt: skip
def test_layers_refuse_on_the_gpu_the_sizes_they_refuse_on_the_cpu(gpu, call, match):
    """(The CUDA checks once truncated them with int() and went on.)"""
    for to in (np.asarray, gpu):
        with pytest.raises(InvalidArgumentError, match=match):
            call(to)


def test_conv2d_non_square_kernel_at_stride_3(rng, gpu, close):
    """kh != kw walks (c, i, j) with different row and column lengths; stride 3 leaves pixels no output reads."""
    x = rng.standard_normal((1, 3, 4, 7))
    weight = rng.standard_normal((4, 3, 4, 3))
    bias = rng.standard_normal(4)
    close(F.conv2d_forward(gpu(x), gpu(weight), gpu(bias), stride=3, padding=1),
          F.conv2d_forward(x, weight, bias, stride=3, padding=1), rtol=1e-12, atol=1e-12, what="y")
    dy = rng.standard_normal((1, 4, 1, 3))
    ours = F.conv2d_backward(gpu(dy), gpu(x), gpu(weight), stride=3, padding=1)
    for name, a, b in zip(("dx", "dw", "db"), ours, F.conv2d_backward(dy, x, weight, stride=3, padding=1)):
        close(a, b, rtol=1e-12, atol=1e-12, what=name)


def test_conv2d_backward_adds_the_parts_of_a_cut_filter_gradient(rng, gpu, close, monkeypatch):
    """conv2d_backward cuts long filter-gradient sums into parts (`conv_gemm.reduction_splits`) and adds
    them with the images; here parts of at least 8 terms instead of 256, so a tiny layer is cut too."""
    from scratchdet.kernels.cuda import conv_gemm, gemm

    monkeypatch.setattr(gemm, "MIN_PART", 8)
    x = rng.standard_normal((2, 3, 5, 6)).astype(np.float32)
    weight = rng.standard_normal((2, 3, 3, 3)).astype(np.float32)
    assert conv_gemm.reduction_splits(2, 2, 27, 30) == 2
    dy = rng.standard_normal((2, 2, 5, 6)).astype(np.float32)
    expected = F.conv2d_backward(dy, x, weight, stride=1, padding=1)
    ours = F.conv2d_backward(gpu(dy), gpu(x), gpu(weight), stride=1, padding=1)
    for name, a, b in zip(("dx", "dw", "db"), ours, expected):
        close(a, b, atol=1e-5, what=name)
