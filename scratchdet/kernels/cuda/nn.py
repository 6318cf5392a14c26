"""CUDA twins of `scratchdet.nn.functional` and `scratchdet.nn.losses`: same names, same arguments,
Numba device arrays in and out.

Convolution is an implicit GEMM (`scratchdet.kernels.cuda.conv_gemm`: the tiled GEMM of
`scratchdet.kernels.cuda.gemm` reading im2col's columns straight from the image), one product per
image; every other layer is one thread per output element, written as
the loop body of the CPU kernel in `scratchdet.kernels.cpu.nn`. The scalar rules that must agree
bit for bit between the two backends (smooth L1, RoI rounding and bins, the dropout hash) are the
functions of `scratchdet.kernels.shared.nn`, compiled here as device functions. Nothing in this
module copies an activation or a parameter to the host; a loss returns its value as a Python float
(one 8-byte copy per loss), like its CPU twin.
"""

import functools
import math

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import is_cuda_array, simulated
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda import reduce
from scratchdet.kernels.cuda.common import (
    THREADS,
    blocks_for,
    empty,
    flat,
    launch_1d,
    on_device,
    part,
    require_device,
    scratch,
    shaped,
    zeros,
)
from scratchdet.kernels.cuda.conv_gemm import FILTER_GRAD, FORWARD, INPUT_GRAD, conv_gemm_launch, reduction_splits
from scratchdet.kernels.cuda.gemm import BIAS_COL, BIAS_GRAD, gemm_launch, launch_autotuned
from scratchdet.kernels.cuda.launch import jit
from scratchdet.kernels.cuda.reduce import block_sum
from scratchdet.kernels.shared import nn as shared

smooth_l1_value = cuda.jit(device=True)(shared.smooth_l1_value)
smooth_l1_grad = cuda.jit(device=True)(shared.smooth_l1_grad)
round_half_away = cuda.jit(device=True)(shared.round_half_away)
roi_bin_start = cuda.jit(device=True)(shared.roi_bin_start)
roi_bin_end = cuda.jit(device=True)(shared.roi_bin_end)
dropout_uniform = cuda.jit(device=True)(shared.dropout_uniform)
relu_passes = cuda.jit(device=True, inline="always")(shared.relu_passes)
window_max = cuda.jit(device=True)(shared.window_max)
window_argmax = cuda.jit(device=True)(shared.window_argmax)
max_of_four = cuda.jit(device=True)(shared.max_of_four)
winner_of_four = cuda.jit(device=True)(shared.winner_of_four)

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))


def _check(name, a, ndim=None, dtype=None):
    require_device(name, a)
    if a.dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise InvalidArgumentError(f"{name} has dtype {a.dtype} but the input is {dtype}: use one dtype")
    if ndim is not None and a.ndim != ndim:
        raise InvalidArgumentError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    if not a.is_c_contiguous():
        raise InvalidArgumentError(f"{name} must be C-contiguous")
    return a


def _output_size(size, kernel_size, stride, padding):
    return 1 + (size + 2 * padding - kernel_size) // stride


# ---------------------------------------------------------------------------------------------------
# Convolution: implicit GEMMs (scratchdet.kernels.cuda.conv_gemm), no column matrix in memory
# ---------------------------------------------------------------------------------------------------


@jit(cache=True)
def swap_filter_axes_kernel(w, w_swapped):
    """w_swapped[c, k, i, j] = w[k, c, i, j]: the A operand W~ (C, K*kh*kw) of the input gradient."""
    filters, channels, kh, kw = w.shape
    e = cuda.grid(1)
    if e >= w.size:
        return
    k = e // (channels * kh * kw)
    c = (e // (kh * kw)) % channels
    i = (e // kw) % kh
    j = e % kw
    w_swapped[c, k, i, j] = w[k, c, i, j]


# The input gradient of a layer with at most this many channels (an RGB input) runs
# `few_channels_input_grad_kernel` rather than the implicit GEMM, whose 3-row products leave most of a
# tile idle (2.06 of the 3.6 ms backward of 256x3x64x64 -> 32 on an H200, benchmarks/GPU_RESULTS.md,
# run 2). Its first version, a thread per pixel with float64 sums and a division per tap and filter,
# took 4.06 ms; this one 0.29 ms of GPU time with 4 rows per thread (run 3).
FEW_CHANNELS = 4
# How many rows of one column of dx a thread of that kernel may keep: the autotuner's candidates.
FEW_CHANNELS_ROWS = (1, 2, 4, 8)


@functools.lru_cache(maxsize=None)
def few_channels_input_grad_kernel(channels, rows, dtype, unit_stride):
    """The input gradient of a convolution with few input channels, gathered per input pixel.

        dx[n, c, y, x] = sum over k, i, j of w[k, c, i, j] * dy[n, k, oy, ox]
                         for oy*stride + i - padding = y and ox*stride + j - padding = x

    (the adjoint of the convolution's sum). Each thread owns `rows` vertically adjacent pixels of one
    column of one image, all `channels` (<= FEW_CHANNELS) channels of each, summed in registers (the
    counts are compile-time constants, so the loops over them unroll). The taps (i, j) are the outer
    loops: which output pixel each of the thread's pixels reads through a tap (a division by the stride,
    none when `unit_stride`) is worked out once per tap, and the loop over the K filters inside only
    adds a plane's stride: one load of dy per pixel and one of w per channel (the same address in every
    thread of a warp), then rows x channels multiply-adds. The threads of a warp take neighbouring
    columns, so their loads of dy are one contiguous run.

    Args (of the kernel): dy (N*K*H'*W',), w (K*C*kh*kw,), dx (N*C*H*W,) flat device arrays; then
    N, K, H, W, H', W', kh, kw, stride, padding. One thread per (image, group of rows, column).
    """
    ntype = numba.float32 if np.dtype(dtype) == np.float32 else numba.float64
    zero = np.dtype(dtype).type(0)
    uint64 = numba.uint64

    @jit
    def kernel(dy, w, dx, n_images, filters, height, width, out_h, out_w, kh, kw, stride, padding):
        groups = (height + rows - 1) // rows
        e = cuda.grid(1)
        if e >= n_images * groups * width:
            return
        x = e % width
        y0 = (e // width) % groups * rows
        n = e // (width * groups)
        taps = kh * kw
        out_plane = out_h * out_w
        acc = cuda.local.array((rows, channels), ntype)
        at = cuda.local.array(rows, numba.int64)  # where pixel r reads dy through the tap; -1: nowhere
        weights = cuda.local.array(channels, ntype)
        for r in range(rows):
            for c in range(channels):
                acc[r, c] = zero
        for i in range(kh):
            for j in range(kw):
                ox = x + padding - j
                if not unit_stride:
                    if ox < 0 or ox % stride != 0:
                        continue
                    ox //= stride
                if ox < 0 or ox >= out_w:
                    continue
                reads = False
                for r in range(rows):
                    oy = y0 + r + padding - i
                    at[r] = -1
                    if y0 + r < height and oy >= 0:
                        if unit_stride or oy % stride == 0:
                            if not unit_stride:
                                oy //= stride
                            if oy < out_h:
                                at[r] = n * filters * out_plane + oy * out_w + ox
                                reads = True
                if not reads:
                    continue
                tap = i * kw + j
                for k in range(filters):
                    for c in range(channels):
                        weights[c] = w[uint64((k * channels + c) * taps + tap)]
                    for r in range(rows):
                        if at[r] >= 0:
                            g = dy[uint64(at[r] + k * out_plane)]
                            for c in range(channels):
                                acc[r, c] += weights[c] * g
        for r in range(rows):
            if y0 + r < height:
                for c in range(channels):
                    dx[uint64(((n * channels + c) * height + y0 + r) * width + x)] = acc[r, c]

    return kernel


def input_grad_few_channels(dy, w, stride, padding, dx, rows=None):
    """dx (N, C, H, W) = the input gradient of a convolution with C <= FEW_CHANNELS input channels
    (`few_channels_input_grad_kernel`), for dy (N, K, H', W') and w (K, C, kh, kw) device arrays of one
    dtype; returns dx. `rows`: pixels per thread (one of FEW_CHANNELS_ROWS); by default the autotuned
    count for this shape (1 in the simulator)."""
    n_images, channels, height, width = dx.shape
    filters, _, kh, kw = w.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    if dx.size == 0:
        return dx
    unit_stride = stride == 1
    args = (flat(dy), flat(w), flat(dx), n_images, filters, height, width, out_h, out_w, kh, kw, stride, padding)

    def launch(count):
        kernel = few_channels_input_grad_kernel(channels, count, np.dtype(dx.dtype), unit_stride)
        kernel[launch_1d(n_images * -(-height // count) * width)](*args)

    if rows is not None:
        launch(rows)
    else:
        key = ("few_channels_input_grad", dy.shape, w.shape, dx.shape, stride, padding, np.dtype(dx.dtype).str)
        # without autotuning: 4 rows, the fastest on both RGB layers of run 3 (benchmarks/GPU_RESULTS.md)
        launch_autotuned(key, 1 if simulated() else 4, FEW_CHANNELS_ROWS, launch)
    return dx


def _check_conv(x, w, b, stride, padding):
    _check("x", x, ndim=4)
    _check("w", w, ndim=4, dtype=x.dtype)
    if b is not None:
        _check("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise InvalidArgumentError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    if w.shape[1] != x.shape[1]:
        raise InvalidArgumentError(f"w has {w.shape[1]} input channels but x has {x.shape[1]} (x {x.shape}, w {w.shape})")
    stride, padding = int(stride), int(padding)
    if stride < 1 or padding < 0:
        raise InvalidArgumentError(f"stride must be >= 1 and padding >= 0, got {stride} and {padding}")
    if x.shape[0] > 65535:  # one grid z index per image
        raise InvalidArgumentError(f"at most 65535 images per call, got x {x.shape}")
    for axis, name in ((2, "height"), (3, "width")):
        if w.shape[axis] < 1:
            raise InvalidArgumentError(f"the kernel {name} must be >= 1, got w of shape {w.shape}")
        if x.shape[axis] + 2 * padding < w.shape[axis]:
            raise InvalidArgumentError(
                f"the padded input {name} {x.shape[axis]} + 2*{padding} is smaller than the kernel {name} {w.shape[axis]}"
            )
    return stride, padding


@on_device
def conv2d_forward(x, w, b, stride=1, padding=0):
    """CUDA twin of `scratchdet.nn.functional.conv2d_forward`: y[n] = W (K, C*kh*kw) @ cols[n] + b.

    Args:
        x: (N, C, H, W) device array; w: (K, C, kh, kw); b: (K,) or None (no bias); same float dtype.

    Returns:
        (N, K, H', W') device array, H' = 1 + (H + 2*padding - kh) // stride (W' likewise).
    """
    stride, padding = _check_conv(x, w, b, stride, padding)
    n_images, channels, height, width = x.shape
    filters, _, kh, kw = w.shape
    out_h = _output_size(height, kh, stride, padding)
    out_w = _output_size(width, kw, stride, padding)
    rows, plane = channels * kh * kw, out_h * out_w
    y = empty((n_images, filters, out_h, out_w), x.dtype)
    # one implicit product per image: Y[n] (K, H'W') = W (K, C*kh*kw) @ cols[n] (C*kh*kw, H'W') + b,
    # the columns read straight from x and the result written in NCHW order
    conv_gemm_launch(
        FORWARD, w, x, y, filters, plane, rows, a_strides=(0, rows), c_strides=(filters * plane, plane),
        geometry=(kh, kw, stride, padding, out_w), bias=b,
    )
    return y


def _split_grads(grads, w_shape):
    """(dw shaped `w_shape`, db) as views of one flat array holding dW's elements and then db's; dw
    keeps its flat view (`flat`), which the optimiser reads."""
    n_weights = math.prod(w_shape)
    return shaped(part(grads, 0, (n_weights,)), w_shape), part(grads, n_weights, (grads.size - n_weights,))


@on_device
def conv2d_backward(dy, x, w, stride=1, padding=0, *, input_grad=True):
    """CUDA twin of `scratchdet.nn.functional.conv2d_backward`.

        db = sum over n, pixels of dY;   dW = sum_n dY[n] @ cols[n]^T;   dX[n] = W~ @ dcols[n]

    as implicit GEMMs (`scratchdet.kernels.cuda.conv_gemm`): cols[n] is read from x, dcols[n] (the
    adjoint of im2col applied to dY) from dY, W~[c, (k, i, j)] = W[k, c, i, j]; for at most
    FEW_CHANNELS input channels, dX by `input_grad_few_channels` instead. db comes out of dW's
    product (a column of ones appended to cols[n]^T, `gemm.BIAS_GRAD`), and both are summed
    over the images in a fixed order (one product per image, or per part of an image's pixels
    (`conv_gemm.reduction_splits`), then a column sum), so they are the same on every run.

    Returns:
        (dx (N, C, H, W), dw (K, C, kh, kw), db (K,)) device arrays, freshly allocated (dw and db
        share one allocation, without overlapping); dx is None when `input_grad` is False (nothing is
        computed or allocated for it).
    """
    stride, padding = _check_conv(x, w, None, stride, padding)
    n_images, channels, height, width = x.shape
    filters, _, kh, kw = w.shape
    out_h = _output_size(height, kh, stride, padding)
    out_w = _output_size(width, kw, stride, padding)
    _check("dy", dy, ndim=4, dtype=x.dtype)
    if dy.shape != (n_images, filters, out_h, out_w):
        raise InvalidArgumentError(f"dy must have shape {(n_images, filters, out_h, out_w)}, got {dy.shape}")
    rows, plane = channels * kh * kw, out_h * out_w
    n_grads = filters * (rows + 1)  # dW's elements, then db's
    if n_images == 0:  # no images: zero gradients for the filters and biases
        return (empty(x.shape, x.dtype) if input_grad else None), *_split_grads(zeros((n_grads,), x.dtype), w.shape)
    geometry = (kh, kw, stride, padding, out_w)
    # 1. filters and biases: [dW_n | db_n] = dY[n] (K, H'W') @ [cols[n]^T | 1] (H'W', C*kh*kw + 1) per
    #    image (in `splits` parts of its pixels when there are few filters and many pixels), each
    #    image's K*C*kh*kw filter terms followed by its K bias terms, then summed over n (and the parts)
    splits = reduction_splits(n_images, filters, rows + 1, plane)
    per_image = scratch("dw_per_image", (n_images * splits, n_grads), x.dtype)  # (N*S, K*C*kh*kw + K)
    conv_gemm_launch(
        FILTER_GRAD, dy, x, per_image, filters, rows, plane, a_strides=(filters * plane, plane),
        c_strides=(n_grads, rows), geometry=geometry, splits=splits,
    )
    grads = reduce.sum_axis0(per_image, out=empty((n_grads,), x.dtype))
    dw, db = _split_grads(grads, w.shape)
    if not input_grad:
        return None, dw, db
    # 3. input: dX[n] (C, HW) = W~ (C, K*kh*kw) @ dcols[n] (K*kh*kw, HW), dcols read from dY
    dx = empty(x.shape, x.dtype)
    if channels <= FEW_CHANNELS:
        return input_grad_few_channels(dy, w, stride, padding, dx), dw, db
    w_swapped = scratch("w_swapped", (channels, filters, kh, kw), x.dtype)
    swap_filter_axes_kernel[launch_1d(w.size)](w, w_swapped)
    conv_gemm_launch(
        INPUT_GRAD, w_swapped, dy, dx, channels, height * width, filters * kh * kw,
        a_strides=(0, filters * kh * kw), c_strides=(channels * height * width, height * width),
        geometry=(kh, kw, stride, padding, width),
    )
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------------


@jit(cache=True)
def maxpool2d_forward_kernel(x, kernel_size, stride, y):
    """y[n, c, oy, ox] = max of the window at (oy*stride, ox*stride); one thread per output."""
    n_images, channels, out_h, out_w = y.shape
    e = cuda.grid(1)
    if e >= y.size:
        return
    n = e // (channels * out_h * out_w)
    c = (e // (out_h * out_w)) % channels
    oy = (e // out_w) % out_h
    ox = e % out_w
    y0 = oy * stride
    x0 = ox * stride
    if kernel_size == 2 and stride == 2:  # the common window, unrolled
        y[n, c, oy, ox] = max_of_four(x[n, c, y0, x0], x[n, c, y0, x0 + 1], x[n, c, y0 + 1, x0], x[n, c, y0 + 1, x0 + 1])
    else:
        y[n, c, oy, ox] = window_max(x, n, c, y0, y0 + kernel_size, x0, x0 + kernel_size)


@jit(cache=True)
def maxpool2d_backward_kernel(dy, x, kernel_size, stride, dx):
    """dx[n, c, y, x] = sum of dy over the windows whose (first) maximum is (y, x).

    One thread per input pixel, gathering from the windows that contain it in (oy, ox) order, as
    the CPU kernel adds them: no atomics, the same sum on every run.
    """
    n_images, channels, height, width = x.shape
    out_h, out_w = dy.shape[2], dy.shape[3]
    e = cuda.grid(1)
    if e >= x.size:
        return
    n = e // (channels * height * width)
    c = (e // (height * width)) % channels
    y = (e // width) % height
    xx = e % width
    if kernel_size == 2 and stride == 2:  # the common window, unrolled: (y, xx) lies in one window or none
        oy = y // 2
        ox = xx // 2
        if oy < out_h and ox < out_w:
            y0 = 2 * oy
            x0 = 2 * ox
            winner = winner_of_four(x[n, c, y0, x0], x[n, c, y0, x0 + 1], x[n, c, y0 + 1, x0], x[n, c, y0 + 1, x0 + 1])
            dx[n, c, y, xx] = dy[n, c, oy, ox] if winner == 2 * (y - y0) + xx - x0 else 0
        else:
            dx[n, c, y, xx] = 0
        return
    # windows oy with oy*stride <= y < oy*stride + kernel_size
    oy_lo = max(0, (y - kernel_size + stride) // stride)
    oy_hi = min(out_h - 1, y // stride)
    ox_lo = max(0, (xx - kernel_size + stride) // stride)
    ox_hi = min(out_w - 1, xx // stride)
    total = numba.float64(0.0)
    for oy in range(oy_lo, oy_hi + 1):
        for ox in range(ox_lo, ox_hi + 1):
            best_y, best_x = window_argmax(x, n, c, oy * stride, oy * stride + kernel_size, ox * stride, ox * stride + kernel_size)
            if best_y == y and best_x == xx:
                total += dy[n, c, oy, ox]
    dx[n, c, y, xx] = total


def _check_pool(x, kernel_size, stride):
    _check("x", x, ndim=4)
    kernel_size = int(kernel_size)
    stride = kernel_size if stride is None else int(stride)
    if kernel_size < 1 or stride < 1:
        raise InvalidArgumentError(f"kernel_size and stride must be >= 1, got {kernel_size} and {stride}")
    if x.shape[2] < kernel_size or x.shape[3] < kernel_size:
        raise InvalidArgumentError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the pooling window {kernel_size}")
    return kernel_size, stride


@on_device
def maxpool2d_forward(x, kernel_size, stride=None):
    """CUDA twin of `scratchdet.nn.functional.maxpool2d_forward`. x: (N, C, H, W) float32 or float64
    device array -> (N, C, H', W') device array, x's dtype."""
    kernel_size, stride = _check_pool(x, kernel_size, stride)
    n_images, channels, height, width = x.shape
    out_h = _output_size(height, kernel_size, stride, 0)
    out_w = _output_size(width, kernel_size, stride, 0)
    y = empty((n_images, channels, out_h, out_w), x.dtype)
    maxpool2d_forward_kernel[launch_1d(y.size)](x, kernel_size, stride, y)
    return y


@on_device
def maxpool2d_backward(dy, x, kernel_size, stride=None):
    """CUDA twin of `scratchdet.nn.functional.maxpool2d_backward`. dy: (N, C, H', W'), x: (N, C, H, W),
    float32 or float64 device arrays of one dtype. Returns dx (N, C, H, W), x's dtype."""
    kernel_size, stride = _check_pool(x, kernel_size, stride)
    n_images, channels, height, width = x.shape
    expected = (n_images, channels, _output_size(height, kernel_size, stride, 0), _output_size(width, kernel_size, stride, 0))
    _check("dy", dy, ndim=4, dtype=x.dtype)
    if dy.shape != expected:
        raise InvalidArgumentError(f"dy must have shape {expected}, got {dy.shape}")
    dx = empty(x.shape, x.dtype)
    maxpool2d_backward_kernel[launch_1d(dx.size)](dy, x, kernel_size, stride, dx)
    return dx


# ---------------------------------------------------------------------------------------------------
# Element-wise layers: ReLU and dropout (flat arrays, one thread per element)
# ---------------------------------------------------------------------------------------------------


@jit(cache=True)
def relu_forward_kernel(x, y):
    """y = max(x, 0) (NaN stays NaN)."""
    k = cuda.grid(1)
    if k < x.size:
        y[k] = x[k] if relu_passes(x[k]) else 0


@jit(cache=True)
def relu_backward_kernel(dy, x, dx):
    """dx = dy where x > 0 or x is NaN, else 0."""
    k = cuda.grid(1)
    if k < x.size:
        dx[k] = dy[k] if relu_passes(x[k]) else 0


@jit(cache=True)
def dropout_forward_kernel(x, p, seed, y, mask):
    """Inverted dropout: mask[k] = 1 / (1 - p) if unit k is kept (hash of (seed, k) >= p), else 0."""
    k = cuda.grid(1)
    if k < x.size:
        scale = 1.0 / (1.0 - p)
        keep = dropout_uniform(seed, k) >= p
        mask[k] = scale if keep else 0.0
        y[k] = x[k] * mask[k]


@jit(cache=True)
def multiply_kernel(a, b, out):
    """out = a * b."""
    k = cuda.grid(1)
    if k < a.size:
        out[k] = a[k] * b[k]


@jit(cache=True)
def add_kernel(a, b, out):
    """out = a + b."""
    k = cuda.grid(1)
    if k < a.size:
        out[k] = a[k] + b[k]


@jit(cache=True)
def divide_kernel(a, divisor, out):
    """out = a / divisor."""
    k = cuda.grid(1)
    if k < a.size:
        out[k] = a[k] / divisor


def _same(name, a, like):
    _check(name, a, dtype=like.dtype)
    if a.shape != like.shape:
        raise InvalidArgumentError(f"{name} must have shape {like.shape}, got {a.shape}")
    return a


def _elementwise(kernel, first, second, names, reference):
    """out[k] = f(first[k], second[k]) by `kernel(first, second, out)` on flat arrays, one thread per
    element. Both inputs are checked (float, C-contiguous), the other against `names[reference]`'s
    shape and dtype (`names`: the two inputs' names in errors); out is new, like them."""
    inputs = (first, second)
    _check(names[reference], inputs[reference])
    _same(names[1 - reference], inputs[1 - reference], inputs[reference])
    out = empty(first.shape, first.dtype)
    kernel[launch_1d(first.size)](flat(first), flat(second), flat(out))
    return out


@on_device
def relu_forward(x):
    """CUDA twin of `relu_forward`: y = max(x, 0), any shape; x a float32 or float64 device array,
    y a new one like x."""
    _check("x", x)
    y = empty(x.shape, x.dtype)
    relu_forward_kernel[launch_1d(x.size)](flat(x), flat(y))
    return y


@on_device
def relu_backward(dy, x):
    """CUDA twin of `relu_backward`: dx = dy where x > 0 or x is NaN, else 0. dy, x: device arrays of
    one shape and float dtype; dx like x."""
    return _elementwise(relu_backward_kernel, dy, x, ("dy", "x"), reference=1)


@on_device
def add(a, b):
    """CUDA twin of `add`: a + b for two device arrays of one shape and float dtype; a new array."""
    return _elementwise(add_kernel, a, b, ("a", "b"), reference=0)


@on_device
def dropout_forward(x, p, seed):
    """CUDA twin of `dropout_forward`: the same mask as the CPU for the same seed. x: any shape,
    float32 or float64 device array. Returns (y, mask), device arrays like x."""
    _check("x", x)
    if not 0.0 <= p < 1.0:
        raise InvalidArgumentError(f"dropout probability p must be in [0, 1), got {p!r}")
    if not 0 <= int(seed) < 2**31:
        raise InvalidArgumentError(f"dropout seed must be in [0, 2**31), got {seed!r}")
    y = empty(x.shape, x.dtype)
    mask = empty(x.shape, x.dtype)
    dropout_forward_kernel[launch_1d(x.size)](flat(x), float(p), int(seed), flat(y), flat(mask))
    return y, mask


@on_device
def dropout_backward(dy, mask):
    """CUDA twin of `dropout_backward`: dx = dy * mask. dy, mask: device arrays of one shape and
    float dtype; dx like dy."""
    return _elementwise(multiply_kernel, dy, mask, ("dy", "mask"), reference=1)


# ---------------------------------------------------------------------------------------------------
# Linear layers: GEMMs with PyTorch's weight layout, y = x @ w.T + b
# ---------------------------------------------------------------------------------------------------


def _check_linear(x, w, b):
    _check("x", x, ndim=2)
    _check("w", w, ndim=2, dtype=x.dtype)
    if w.shape[1] != x.shape[1]:
        raise InvalidArgumentError(f"w must have shape (D_out, {x.shape[1]}) to match x {x.shape}, got {w.shape}")
    if b is not None:
        _check("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise InvalidArgumentError(f"b must have shape ({w.shape[0]},), got {b.shape}")


@on_device
def linear_forward(x, w, b):
    """CUDA twin of `linear_forward`: x (N, D_in), w (D_out, D_in), b (D_out,) or None, float32 or
    float64 device arrays of one dtype -> y (N, D_out), same dtype."""
    _check_linear(x, w, b)
    n, d_in = x.shape
    d_out = w.shape[0]
    y = empty((n, d_out), x.dtype)
    # B = w^T: element (k, j) is w[j, k]
    gemm_launch(x, w, y, n, d_out, d_in, (0, d_in, 1), (0, 1, d_in), (0, d_out, 1), bias=b, bias_mode=BIAS_COL)
    return y


@on_device
def linear_backward(dy, x, w, *, input_grad=True):
    """CUDA twin of `linear_backward`: (dx = dy @ w, dw = dy.T @ x, db = sum_n dy[n]). dy (N, D_out),
    x (N, D_in), w (D_out, D_in), device arrays of one float dtype -> dx (N, D_in), dw (D_out, D_in),
    db (D_out,), same dtype, freshly allocated (dw and db share one allocation, without overlapping;
    db comes out of dw's product, `gemm.BIAS_GRAD`); dx is None when `input_grad` is False."""
    _check_linear(x, w, None)
    _check("dy", dy, ndim=2, dtype=x.dtype)
    n, d_in = x.shape
    d_out = w.shape[0]
    if dy.shape != (n, d_out):
        raise InvalidArgumentError(f"dy must have shape {(n, d_out)}, got {dy.shape}")
    dx = None
    if input_grad:
        dx = empty((n, d_in), x.dtype)
        gemm_launch(dy, w, dx, n, d_in, d_out, (0, d_out, 1), (0, d_in, 1), (0, d_in, 1))
    # [dw | db] = dy^T @ [x | 1]: A = dy^T (element (i, k) is dy[k, i]), db after dw's elements
    grads = empty((d_out * (d_in + 1),), x.dtype)
    gemm_launch(dy, x, grads, d_out, d_in, n, (0, 1, d_out), (0, d_in, 1), (0, d_in, 1), bias_mode=BIAS_GRAD)
    dw, db = _split_grads(grads, w.shape)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------------
# RoI max pooling (Fast R-CNN, Girshick 2015, section 2.1) with torchvision's rounding and bins
# ---------------------------------------------------------------------------------------------------


@cuda.jit(device=True)
def roi_bin_argmax(features, rois, r, c, ph, pw, pooled_h, pooled_w, spatial_scale):
    """Flat index y*W + x of the maximum of bin (ph, pw) of RoI r in channel c, or -1 if empty.

    The RoI's cells and bins follow `scratchdet.kernels.shared.nn`, exactly as the CPU kernel.
    """
    height, width = features.shape[2], features.shape[3]
    b = int(rois[r, 0])
    if b < 0 or b >= features.shape[0]:  # a bad batch index pools nothing rather than reading astray
        return -1
    # 1. the RoI's first cell and size on the feature map (corners rounded half away from zero)
    start_x = int(round_half_away(rois[r, 1] * spatial_scale))
    start_y = int(round_half_away(rois[r, 2] * spatial_scale))
    end_x = int(round_half_away(rois[r, 3] * spatial_scale))
    end_y = int(round_half_away(rois[r, 4] * spatial_scale))
    roi_h = max(end_y - start_y + 1, 1)
    roi_w = max(end_x - start_x + 1, 1)
    bin_h = roi_h / pooled_h
    bin_w = roi_w / pooled_w
    # 2. the bin's cells, clipped to the map
    y0 = roi_bin_start(ph, bin_h, start_y, height)
    y1 = roi_bin_end(ph, bin_h, start_y, height)
    x0 = roi_bin_start(pw, bin_w, start_x, width)
    x1 = roi_bin_end(pw, bin_w, start_x, width)
    if y1 <= y0 or x1 <= x0:  # the bin fell off the map
        return -1
    # 3. the first maximum in row-major order (or the last NaN), as the CPU kernel
    best_y, best_x = window_argmax(features, b, c, y0, y1, x0, x1)
    return best_y * width + best_x


@jit(cache=True)
def roi_pool_forward_kernel(features, rois, spatial_scale, out):
    """out[r, c, ph, pw] = max over bin (ph, pw) of RoI r (0 for an empty bin); one thread per output."""
    n_rois, channels, pooled_h, pooled_w = out.shape
    width = features.shape[3]
    e = cuda.grid(1)
    if e >= out.size:
        return
    r = e // (channels * pooled_h * pooled_w)
    c = (e // (pooled_h * pooled_w)) % channels
    ph = (e // pooled_w) % pooled_h
    pw = e % pooled_w
    index = roi_bin_argmax(features, rois, r, c, ph, pw, pooled_h, pooled_w, spatial_scale)
    if index < 0:
        out[r, c, ph, pw] = 0
    else:
        out[r, c, ph, pw] = features[int(rois[r, 0]), c, index // width, index % width]


@jit(cache=True)
def roi_pool_backward_kernel(dout, features, rois, spatial_scale, dfeatures):
    """dfeatures[b, c, argmax] += dout[r, c, ph, pw] for every bin (Fast R-CNN, eq. 4).

    One thread per pooled output; RoIs overlap, so the additions are atomic (as in the Caffe and
    torchvision CUDA kernels): the sum is exact up to float rounding in a varying order.
    """
    n_rois, channels, pooled_h, pooled_w = dout.shape
    width = features.shape[3]
    e = cuda.grid(1)
    if e >= dout.size:
        return
    r = e // (channels * pooled_h * pooled_w)
    c = (e // (pooled_h * pooled_w)) % channels
    ph = (e // pooled_w) % pooled_h
    pw = e % pooled_w
    index = roi_bin_argmax(features, rois, r, c, ph, pw, pooled_h, pooled_w, spatial_scale)
    if index >= 0:
        cuda.atomic.add(dfeatures, (int(rois[r, 0]), c, index // width, index % width), dout[r, c, ph, pw])


def _check_roi_pool(features, rois, output_size, spatial_scale):
    from scratchdet.nn.functional import check_host_rois, check_spatial_scale, pair  # (one definition of the checks)

    _check("features", features, ndim=4)
    spatial_scale = check_spatial_scale(spatial_scale)
    if not is_cuda_array(rois):  # host RoIs (from proposals) are checked as on the CPU, then copied once
        rois = cuda.to_device(check_host_rois(rois, features.shape[0], spatial_scale))
    elif rois.ndim != 2 or rois.shape[1] != 5:
        raise InvalidArgumentError(f"rois must have shape (R, 5) rows (batch_index, x1, y1, x2, y2), got {rois.shape}")
    elif rois.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"rois must hold integers or floats, got dtype {rois.dtype}")
    return rois, pair(output_size, "output_size"), spatial_scale


@on_device
def roi_pool_forward(features, rois, output_size, spatial_scale):
    """CUDA twin of `roi_pool_forward`.

    Args:
        features: (B, C, H, W) float32 or float64 device array.
        rois: (R, 5) float (batch_index, x1, y1, x2, y2), a device array or a NumPy array (checked
            as on the CPU, then copied once, as float64). Device RoIs are not checked (that would
            need a copy to the host): a RoI whose batch index is outside the batch pools zeros and
            passes no gradient back, and every bin stays on the map whatever the coordinates.
        output_size: int or (PH, PW); spatial_scale: feature cells per image pixel.

    Returns:
        (R, C, PH, PW) device array, features' dtype.
    """
    rois, (pooled_h, pooled_w), spatial_scale = _check_roi_pool(features, rois, output_size, spatial_scale)
    out = empty((rois.shape[0], features.shape[1], pooled_h, pooled_w), features.dtype)
    if out.size:
        roi_pool_forward_kernel[launch_1d(out.size)](features, rois, spatial_scale, out)
    return out


@on_device
def roi_pool_backward(dout, features, rois, output_size, spatial_scale):
    """CUDA twin of `roi_pool_backward`. dout: (R, C, PH, PW) device array, features' dtype; the
    other arguments as in `roi_pool_forward`. Returns dfeatures (B, C, H, W), features' dtype."""
    rois, (pooled_h, pooled_w), spatial_scale = _check_roi_pool(features, rois, output_size, spatial_scale)
    _check("dout", dout, ndim=4, dtype=features.dtype)
    expected = (rois.shape[0], features.shape[1], pooled_h, pooled_w)
    if dout.shape != expected:
        raise InvalidArgumentError(f"dout must have shape {expected}, got {dout.shape}")
    dfeatures = zeros(features.shape, features.dtype)
    if dout.size:
        roi_pool_backward_kernel[launch_1d(dout.size)](dout, features, rois, spatial_scale, dfeatures)
    return dfeatures


# ---------------------------------------------------------------------------------------------------
# Losses: a per-sample (or per-element) kernel writes the gradient, a block sums the loss
# ---------------------------------------------------------------------------------------------------


def _labels_on_device(labels, n_samples):
    if is_cuda_array(labels):
        if labels.shape != (n_samples,) or labels.dtype.kind not in "iu":
            raise InvalidArgumentError(f"labels must be ({n_samples},) integers, got shape {labels.shape} dtype {labels.dtype}")
        return labels
    labels = np.asarray(labels)
    if labels.shape != (n_samples,) or labels.dtype.kind not in "iu":
        raise InvalidArgumentError(f"labels must be ({n_samples},) integers, got shape {labels.shape} dtype {labels.dtype}")
    return cuda.to_device(np.ascontiguousarray(labels, dtype=np.int64))


def _read_loss(partials):
    """Sum a loss's per-block partial sums on the GPU and copy the (loss, bad labels) pair back."""
    totals = np.empty(2)
    reduce.sum_rows(partials, np.float64, out=scratch("loss_totals", (2,), np.float64)).copy_to_host(totals)
    return totals[0], int(totals[1])


def _bad_labels(count, n_classes):
    if count:
        raise InvalidArgumentError(f"labels must be in [0, {n_classes}), got {count} outside it")


@jit(cache=True)
def softmax_cross_entropy_kernel(logits, labels, dlogits, partials):
    """Row n: loss_n = log sum_k exp(z_nk - m_n) + m_n - z_n,u and dlogits = (softmax - onehot) / N.

    partials[0, block] sums the block's loss_n; partials[1, block] counts labels outside [0, K).
    """
    scratch = cuda.shared.array(THREADS, numba.float64)
    n_samples, n_classes = logits.shape
    n = cuda.grid(1)
    loss = numba.float64(0.0)
    bad = numba.float64(0.0)
    if n < n_samples:
        u = labels[n]
        if u < 0 or u >= n_classes:
            bad = 1.0
            for k in range(n_classes):
                dlogits[n, k] = 0
        else:
            # 1. subtract the row maximum (exp never overflows)
            m = logits[n, 0]
            for k in range(1, n_classes):
                m = max(m, logits[n, k])
            # 2. log-sum-exp
            s = numba.float64(0.0)
            for k in range(n_classes):
                s += math.exp(logits[n, k] - m)
            log_sum = math.log(s)
            loss = log_sum + (m - logits[n, u])  # (m - z_u) first, as the CPU kernel
            # 3. gradient: softmax minus the one-hot label, averaged over the batch
            for k in range(n_classes):
                dlogits[n, k] = math.exp(logits[n, k] - m - log_sum) / n_samples
            dlogits[n, u] -= 1.0 / n_samples
    loss = block_sum(scratch, loss)
    if cuda.threadIdx.x == 0:
        partials[0, cuda.blockIdx.x] = loss
    bad = block_sum(scratch, bad)
    if cuda.threadIdx.x == 0:
        partials[1, cuda.blockIdx.x] = bad



@on_device
def softmax_cross_entropy(logits, labels):
    """CUDA twin of `scratchdet.nn.losses.softmax_cross_entropy`.

    Args:
        logits: (N, K) device array; labels: (N,) integers (device or NumPy array).

    Returns:
        (loss, dlogits): a float (the mean over samples) and an (N, K) device array.
    """
    _check("logits", logits, ndim=2)
    n_samples, n_classes = logits.shape
    if n_samples == 0:
        raise InvalidArgumentError("softmax_cross_entropy needs at least one sample (the mean of nothing is undefined)")
    labels = _labels_on_device(labels, n_samples)
    dlogits = empty(logits.shape, logits.dtype)
    threads = reduce.reduce_threads(n_samples)
    n_blocks = blocks_for(n_samples, threads)
    partials = scratch("loss_partials", (2, n_blocks), np.float64)  # per-block (loss, bad labels)
    softmax_cross_entropy_kernel[n_blocks, threads](logits, labels, dlogits, partials)
    total, bad = _read_loss(partials)
    _bad_labels(bad, n_classes)
    return float(total / n_samples), dlogits


@jit(cache=True)
def elementwise_loss_kernel(pred, target, use_l2, beta, grad, partials):
    """grad[k] and the block's sum of loss(pred[k] - target[k]): squared error or smooth L1."""
    scratch = cuda.shared.array(THREADS, numba.float64)
    total = numba.float64(0.0)
    for k in range(cuda.grid(1), pred.size, cuda.gridsize(1)):
        d = pred[k] - target[k]
        if use_l2:
            total += d * d
            grad[k] = 2 * d
        else:
            total += smooth_l1_value(d, beta)
            grad[k] = smooth_l1_grad(d, beta)
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        partials[0, cuda.blockIdx.x] = total
        partials[1, cuda.blockIdx.x] = 0.0


def _elementwise_loss(pred, target, use_l2, beta):
    _check("pred", pred)
    _same("target", target, pred)
    grad = empty(pred.shape, pred.dtype)
    threads = reduce.reduce_threads(pred.size)
    n_blocks = min(blocks_for(pred.size, threads), reduce.MAX_REDUCE_BLOCKS)
    partials = scratch("loss_partials", (2, n_blocks), np.float64)  # per-block (loss, bad labels)
    elementwise_loss_kernel[n_blocks, threads](flat(pred), flat(target), use_l2, float(beta), flat(grad), partials)
    total, _ = _read_loss(partials)
    return float(total), grad


@on_device
def l2_loss(pred, target):
    """CUDA twin of `l2_loss`: (sum (pred - target)**2, 2 (pred - target)). pred, target: device
    arrays of one shape and float dtype. Returns (a float, a device array like pred)."""
    return _elementwise_loss(pred, target, True, 0.0)


@on_device
def smooth_l1(pred, target, beta=1.0):
    """CUDA twin of `smooth_l1`: summed smooth L1 (Fast R-CNN, eq. 3) and its gradient. pred, target:
    device arrays of one shape and float dtype. Returns (a float, a device array like pred)."""
    if not beta >= 0:
        raise InvalidArgumentError(f"smooth_l1 beta must be >= 0, got {beta!r}")
    return _elementwise_loss(pred, target, False, beta)


@jit(cache=True)
def foreground_box_loss_kernel(bbox_pred, bbox_targets, labels, use_l2, beta, factor, grad, partials):
    """Row n of the box term of Fast R-CNN's multi-task loss (eq. 1): only foreground rows (u >= 1)
    count, on the 4 coordinates of their class (columns 4u..4u+3, or 0..3 for one agnostic box).

    partials[0, block] sums the block's unnormalised loss; grad is the loss's gradient times `factor`.
    """
    scratch = cuda.shared.array(THREADS, numba.float64)
    n_samples, n_columns = bbox_pred.shape
    n = cuda.grid(1)
    total = numba.float64(0.0)
    bad = numba.float64(0.0)
    if n < n_samples:
        for k in range(n_columns):
            grad[n, k] = 0
        u = labels[n]
        per_class = n_columns > 4
        if u < 0 or (per_class and 4 * u >= n_columns):
            bad = 1.0
        elif u >= 1:  # the Iverson bracket [u >= 1]: background has no box
            first = 4 * u if per_class else 0
            for j in range(4):
                d = bbox_pred[n, first + j] - bbox_targets[n, j]
                if use_l2:
                    total += d * d
                    grad[n, first + j] = 2 * d
                else:
                    total += smooth_l1_value(d, beta)
                    grad[n, first + j] = smooth_l1_grad(d, beta)
                grad[n, first + j] *= factor
    total = block_sum(scratch, total)
    if cuda.threadIdx.x == 0:
        partials[0, cuda.blockIdx.x] = total
    bad = block_sum(scratch, bad)
    if cuda.threadIdx.x == 0:
        partials[1, cuda.blockIdx.x] = bad


@on_device
def box_regression_loss(bbox_pred, bbox_targets, labels, *, loss="smooth_l1", beta=1.0, weight=1.0):
    """CUDA twin of `scratchdet.nn.losses.box_regression_loss`.

    Returns:
        (L_loc, dbbox_pred): the unweighted loss averaged over N as a float, and the gradient of
        weight * L_loc as a device array like bbox_pred.
    """
    _check("bbox_pred", bbox_pred, ndim=2)
    if bbox_pred.shape[1] % 4 or bbox_pred.shape[1] == 0:
        raise InvalidArgumentError(f"bbox_pred must be (N, 4) or (N, 4 * n_classes), got {bbox_pred.shape}")
    if loss not in ("smooth_l1", "l2"):
        raise InvalidArgumentError(f"loss must be one of ('smooth_l1', 'l2'), got {loss!r}")
    if not beta >= 0:
        raise InvalidArgumentError(f"beta must be >= 0, got {beta!r}")
    n_samples = bbox_pred.shape[0]
    if n_samples == 0:
        raise InvalidArgumentError("box_regression_loss needs at least one sample")
    if not is_cuda_array(bbox_targets):
        bbox_targets = cuda.to_device(np.ascontiguousarray(bbox_targets, dtype=bbox_pred.dtype))
    _check("bbox_targets", bbox_targets, ndim=2, dtype=bbox_pred.dtype)
    if bbox_targets.shape != (n_samples, 4):
        raise InvalidArgumentError(f"bbox_targets must be ({n_samples}, 4), got {bbox_targets.shape}")
    labels = _labels_on_device(labels, n_samples)
    grad = empty(bbox_pred.shape, bbox_pred.dtype)
    threads = reduce.reduce_threads(n_samples)
    n_blocks = blocks_for(n_samples, threads)
    partials = scratch("loss_partials", (2, n_blocks), np.float64)  # per-block (loss, bad labels)
    # the gradient is that of weight * L_loc; the factor is rounded to the dtype first, as on the CPU
    factor = bbox_pred.dtype.type(weight / n_samples)
    foreground_box_loss_kernel[n_blocks, threads](
        bbox_pred, bbox_targets, labels, loss == "l2", float(beta), factor, grad, partials
    )
    total, bad = _read_loss(partials)
    _bad_labels(bad, bbox_pred.shape[1] // 4)
    return float(total / n_samples), grad


@on_device
def regression_loss(pred, target, *, loss="l2", beta=1.0):
    """CUDA twin of `scratchdet.nn.losses.regression_loss`: the loss averaged over the N samples.
    pred: (N, D) float32 or float64 device array; target: (N, D), a device array of pred's dtype or a
    host array (copied). Returns (a float, a device array like pred)."""
    _check("pred", pred)
    if pred.ndim < 1 or pred.shape[0] == 0:
        raise InvalidArgumentError(f"pred must be (N, D) with N >= 1, got {pred.shape}")
    if loss not in ("smooth_l1", "l2"):
        raise InvalidArgumentError(f"loss must be one of ('smooth_l1', 'l2'), got {loss!r}")
    if not is_cuda_array(target):
        target = cuda.to_device(np.ascontiguousarray(target, dtype=pred.dtype))
    value, grad = l2_loss(pred, target) if loss == "l2" else smooth_l1(pred, target, beta)
    n_samples = pred.shape[0]
    divide_kernel[launch_1d(grad.size)](flat(grad), n_samples, flat(grad))
    return value / n_samples, grad


def compile_signatures():
    """``(name, kernel, argument types)`` for every kernel of this module, as the functions above
    launch them on float32 networks (what training uses; float64 runs in the simulator tests), for
    `numba.cuda.compile_ptx` (tests/test_cuda_compile.py)."""
    from numba import boolean, float32, float64, int64

    out = []
    for ft in (float32,):
        a1, a2, a3, a4 = ft[::1], ft[:, ::1], ft[:, :, ::1], ft[:, :, :, ::1]
        name = str(ft)
        out += [
            (f"swap_filter_axes_{name}", swap_filter_axes_kernel, (a4, a4)),
            *(
                (f"few_channels_input_grad_{channels}c_{rows}r_{'unit' if unit else 'strided'}_{name}",
                 few_channels_input_grad_kernel(channels, rows, np.dtype(name), unit), (a1, a1, a1) + (int64,) * 10)
                for channels, rows, unit in [(3, r, u) for r in FEW_CHANNELS_ROWS for u in (True, False)] + [(1, 4, True), (4, 8, True)]
            ),
            (f"maxpool2d_forward_{name}", maxpool2d_forward_kernel, (a4, int64, int64, a4)),
            (f"maxpool2d_backward_{name}", maxpool2d_backward_kernel, (a4, a4, int64, int64, a4)),
            (f"relu_forward_{name}", relu_forward_kernel, (a1, a1)),
            (f"relu_backward_{name}", relu_backward_kernel, (a1, a1, a1)),
            (f"dropout_forward_{name}", dropout_forward_kernel, (a1, float64, int64, a1, a1)),
            (f"multiply_{name}", multiply_kernel, (a1, a1, a1)),
            (f"add_{name}", add_kernel, (a1, a1, a1)),
            (f"divide_{name}", divide_kernel, (a1, int64, a1)),
            (f"roi_pool_forward_{name}", roi_pool_forward_kernel, (a4, float64[:, ::1], float64, a4)),
            (f"roi_pool_backward_{name}", roi_pool_backward_kernel, (a4, a4, float64[:, ::1], float64, a4)),
            (f"softmax_cross_entropy_{name}", softmax_cross_entropy_kernel, (a2, int64[::1], a2, float64[:, ::1])),
            (f"elementwise_loss_{name}", elementwise_loss_kernel, (a1, a1, boolean, float64, a1, float64[:, ::1])),
            (
                f"foreground_box_loss_{name}",
                foreground_box_loss_kernel,
                (a2, a2, int64[::1], boolean, float64, ft, a2, float64[:, ::1]),
            ),
        ]
    return out
