"""The operations of a conv net as forward / backward function pairs (cs231n `layers.py` style).

Each pair sits side by side: `<op>_forward` computes the output, `<op>_backward` takes the gradient of
the loss with respect to that output (`dy`) and returns the gradients with respect to the inputs.
The layers of `scratchdet.nn` only call these functions, so reading this file is reading the math.

Arrays are float32 or float64 (every argument of one call in the same dtype), C-contiguous, activations
in NCHW order. A NumPy array runs the Numba CPU kernels of `scratchdet.kernels.cpu.nn`; a Numba CUDA
device array runs the kernels of the same name in `scratchdet.kernels.cuda.nn` (and
`scratchdet.kernels.cuda.optim` for the optimiser updates), which mirror this API exactly.
"""

import math
import numbers

import numba
import numpy as np

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import blas, conv_gemm, winograd
from scratchdet.kernels.cpu import nn as cpu

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
ONE_DEVICE = "put the model and its inputs on one device (model.to(device), scratchdet.backend.to_device(x, device))"


def _cuda():
    """The CUDA twin of this module (imported on first use: it needs numba.cuda)."""
    from scratchdet.kernels.cuda import nn

    return nn


def _cuda_optim():
    from scratchdet.kernels.cuda import optim

    return optim


# ---------------------------------------------------------------------------------------------------
# argument checks (CPU side; they name the argument and what was expected)
# ---------------------------------------------------------------------------------------------------


def _check_float(name, a, ndim=None, dtype=None):
    if is_cuda_array(a):  # the input decided on the CPU: this argument alone is on the GPU
        raise InvalidArgumentError(f"{name} is a CUDA device array but the input is a NumPy array: {ONE_DEVICE}")
    if not isinstance(a, np.ndarray):
        raise InvalidArgumentError(f"{name} must be a NumPy array or a CUDA device array, got {type(a).__name__}")
    if a.dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"{name} must be float32 or float64, got {a.dtype}")
    if dtype is not None and a.dtype != dtype:
        raise InvalidArgumentError(f"{name} has dtype {a.dtype} but the input is {dtype}: use one dtype")
    if ndim is not None and a.ndim != ndim:
        raise InvalidArgumentError(f"{name} must have {ndim} dimensions, got shape {a.shape}")
    return _contiguous(a, name=name)


def _contiguous(a, dtype=None, name="array"):
    """`a` as a C-contiguous array (of `dtype` if given), copied only where needed; unlike
    `np.ascontiguousarray`, a 0-d array stays 0-d. An InvalidArgumentError naming `name` where `a`
    does not convert (e.g. strings to a float dtype)."""
    try:
        a = np.asarray(a, dtype=dtype)
    except (TypeError, ValueError) as error:
        raise InvalidArgumentError(f"{name} must hold numbers ({error})") from None
    return a if a.flags.c_contiguous else np.ascontiguousarray(a)


def _check_positive_int(name, value, minimum=1):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidArgumentError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def check_probability(p):
    """A dropout probability as a float in [0, 1) (1 would drop every unit and divide by zero)."""
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, numbers.Real) or not 0.0 <= p < 1.0:
        raise InvalidArgumentError(f"dropout probability p must be a number in [0, 1), got {p!r}")
    return float(p)


def conv2d_output_size(size, kernel_size, stride=1, padding=0):
    """Output length of a convolution along one axis: 1 + (size + 2*padding - kernel_size) // stride."""
    return 1 + (size + 2 * padding - kernel_size) // stride


# ---------------------------------------------------------------------------------------------------
# convolution
# ---------------------------------------------------------------------------------------------------


# im2col works on a group of images at a time, so that its buffer stays near this size however large
# the batch (the whole batch's columns are C*kh*kw times the input: 75 MB for 64 x 32 x 32 x 32, 3 x 3).
# A group's columns are written by im2col and read at once by the matrix product, so they should stay
# in cache between the two: with the vectorised im2col, 4 MB groups are 10-40% faster over the whole
# forward + backward than 16 MB ones on this machine (32 MB L3 cache), and 2 MB ones no faster still.
COLUMN_BUFFER_BYTES = 4 * 2**20


def _images_per_chunk(n_images, column_bytes_per_image):
    return max(1, min(n_images, COLUMN_BUFFER_BYTES // max(1, column_bytes_per_image)))


def _leading(buffer, rows, columns):
    """The first rows*columns elements of a flat buffer as a C-contiguous (rows, columns) matrix.

    A group smaller than the buffer gets a contiguous matrix too (a column slice `m[:, :columns]`
    would not be), so the kernels compile once and see unit-stride rows."""
    return buffer[: rows * columns].reshape(rows, columns)


def _pad_into(images, padding, xpad_buffer):
    """`images` (n, C, H, W) with a zero border of `padding` pixels, written into the first n planes of
    `xpad_buffer` (N, C, H + 2*padding, W + 2*padding), whose border is zero and is never written
    (`images` itself when padding is 0; the buffer is then None)."""
    if padding == 0:
        return images
    xpad = xpad_buffer[: len(images)]  # (n, C, Hp, Wp)
    xpad[:, :, padding:-padding, padding:-padding] = images
    return xpad


def conv2d_forward(x, w, b, stride=1, padding=0):
    """2-D cross-correlation (what deep learning calls convolution) with zero padding.

        y[n, k, oy, ox] = b[k] + sum_{c, i, j} w[k, c, i, j] * x[n, c, oy*stride + i - padding, ox*stride + j - padding]

    computed as im2col + one matrix product per group of images,
    Y (K, n*H'*W') = W (K, C*kh*kw) @ cols (C*kh*kw, n*H'*W'), then reordered into NCHW with the bias.
    float32 at stride 1 computes the same product by the register-tiled kernels of
    `scratchdet.kernels.cpu.conv_gemm`, which never write the columns out, and 3 x 3 layers with enough
    channels and filters by Winograd's F(2 x 2, 3 x 3) (`scratchdet.kernels.cpu.winograd`; faster: `_register_tiled`);
    float32 at a larger stride, with few channels, as a stride-1 convolution of the input's phases
    (`_by_phases`).

    Non-finite input: the float32 routes through Winograd's transforms and through the phases (whose
    filters are zero where the kernel ends) can carry a NaN or an infinity to outputs whose window
    does not hold it (inf - inf, 0 * inf), and turn an infinite output into NaN; float64 and the
    other routes give exactly what the sum above gives. A NaN or infinity shows in the output either way.

    Args:
        x: (N, C, H, W) float32/float64 input.
        w: (K, C, kh, kw) filters, same dtype.
        b: (K,) biases, same dtype, or None for none.
        stride: int >= 1; padding: int >= 0 (zeros on every side).

    Returns:
        y: (N, K, H', W') with H' = 1 + (H + 2*padding - kh) // stride, W' = 1 + (W + 2*padding - kw) // stride.
    """
    if is_cuda_array(x):
        return _cuda().conv2d_forward(x, w, b, *_stride_padding(stride, padding))
    x, w, b, stride, padding = _check_conv(x, w, b, stride, padding)
    if b is None:  # no bias: every kernel below adds one
        b = np.zeros(w.shape[0], dtype=x.dtype)
    if _register_tiled(x, w, stride, padding):
        return _correlate_tiled(x, w, b, padding, padding)
    if _by_phases(x, w, stride):  # a stride-1 convolution of x's phases, cropped to this one's output
        y = _correlate_tiled(_phases(x, stride, padding), _phase_filters(w, stride), b, 0, 0)
        out_h = conv2d_output_size(x.shape[2], w.shape[2], stride, padding)
        return _cropped(y, out_h, conv2d_output_size(x.shape[3], w.shape[3], stride, padding))
    n_images, channels, height, width = x.shape
    filters, _, kh, kw = w.shape
    out_h = conv2d_output_size(height, kh, stride, padding)
    out_w = conv2d_output_size(width, kw, stride, padding)
    pixels = out_h * out_w
    w_mat = w.reshape(filters, channels * kh * kw)  # (K, C*kh*kw)
    y = np.empty((n_images, filters, pixels), dtype=x.dtype)  # (N, K, H'*W')
    chunk = _images_per_chunk(n_images, channels * kh * kw * pixels * x.itemsize)
    padded_shape = (chunk, channels, height + 2 * padding, width + 2 * padding)
    xpad_buffer = np.zeros(padded_shape, dtype=x.dtype) if padding else None
    cols_buffer = np.empty(channels * kh * kw * chunk * pixels, dtype=x.dtype)  # room for (C*kh*kw, chunk*H'*W')
    y_buffer = np.empty(filters * chunk * pixels, dtype=x.dtype)  # room for (K, chunk*H'*W')
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        cols = _leading(cols_buffer, channels * kh * kw, (stop - start) * pixels)  # (C*kh*kw, n*H'*W')
        y_mat = _leading(y_buffer, filters, (stop - start) * pixels)  # (K, n*H'*W')
        # 1. pad these images, then unfold their receptive fields: one column per output pixel
        xpad = _pad_into(x[start:stop], padding, xpad_buffer)  # (n, C, H + 2*padding, W + 2*padding)
        cpu.im2col(xpad, kh, kw, stride, cols)
        # 2. one matrix product for all of them (OpenBLAS; `blas.matmul` keeps a small one on one thread)
        blas.matmul(w_mat, cols, out=y_mat)  # (K, n*H'*W')
        # 3. reorder into NCHW and add each filter's bias
        cpu.knp_to_nkp(y_mat, b, y[start:stop])
    return y.reshape(n_images, filters, out_h, out_w)


def conv2d_backward(dy, x, w, stride=1, padding=0, *, input_grad=True):
    """Gradients of `conv2d_forward` with respect to its input, filters and biases.

        db[k] = sum_{n, oy, ox} dy[n, k, oy, ox]
        dW^T = cols (C*kh*kw, N*H'*W') @ dY^T (N*H'*W', K)
        dx = col2im(W^T (C*kh*kw, K) @ dY)        (col2im, the adjoint of im2col, sums overlapping fields)

    The columns are recomputed from x a group of images at a time (nothing is kept from the forward),
    and the gradient with respect to the columns is written over them once dW has used them: one
    column buffer of about `COLUMN_BUFFER_BYTES`, freed on return. float32 at stride 1 goes through
    `scratchdet.kernels.cpu.conv_gemm` and `scratchdet.kernels.cpu.winograd` instead (no column buffer;
    `_register_tiled`). Non-finite values in x or dy spread as in `conv2d_forward`; and float32's filter
    gradient at stride 1 sums whole rows of the padded image, the columns past the output's edge weighted
    by zero, so a NaN or infinity in x can also reach taps of dw whose sum does not hold it.

    Args:
        dy: (N, K, H', W') gradient of the loss with respect to y.
        x: (N, C, H, W) the forward input; w: (K, C, kh, kw) the filters; stride, padding: as forward.
        input_grad: False skips dx (a network's first layer, whose input is data, needs none) and
            returns None in its place.

    Returns:
        (dx (N, C, H, W) or None, dw (K, C, kh, kw), db (K,)), in x's dtype.
    """
    if is_cuda_array(dy):
        return _cuda().conv2d_backward(dy, x, w, *_stride_padding(stride, padding), input_grad=input_grad)
    x, w, _, stride, padding = _check_conv(x, w, None, stride, padding)
    n_images, channels, height, width = x.shape
    filters, _, kh, kw = w.shape
    out_h = conv2d_output_size(height, kh, stride, padding)
    out_w = conv2d_output_size(width, kw, stride, padding)
    pixels = out_h * out_w
    dy = _check_float("dy", dy, ndim=4, dtype=x.dtype)
    if dy.shape != (n_images, filters, out_h, out_w):
        raise InvalidArgumentError(f"dy must have shape {(n_images, filters, out_h, out_w)}, got {dy.shape}")
    if _register_tiled(x, w, stride, padding):
        return _conv2d_backward_tiled(dy, x, w, padding, input_grad)
    if _by_phases(x, w, stride):
        return _conv2d_backward_by_phases(dy, x, w, stride, padding, input_grad)
    w_mat = w.reshape(filters, channels * kh * kw)  # (K, C*kh*kw)
    dw_t = np.zeros((channels * kh * kw, filters), dtype=x.dtype)  # (C*kh*kw, K), dW transposed
    db = np.zeros(filters)  # (K,) float64 sums, cast to x's dtype on return
    chunk_dw_t = np.empty_like(dw_t)
    dx = np.empty_like(x) if input_grad else None
    chunk = _images_per_chunk(n_images, channels * kh * kw * pixels * x.itemsize)
    padded_shape = (chunk, channels, height + 2 * padding, width + 2 * padding)
    xpad_buffer = np.zeros(padded_shape, dtype=x.dtype) if padding else None
    dxpad_buffer = np.empty(padded_shape, dtype=x.dtype) if padding and input_grad else None
    cols_buffer = np.empty(channels * kh * kw * chunk * pixels, dtype=x.dtype)  # room for (C*kh*kw, chunk*H'*W')
    dy_buffer = np.empty(filters * chunk * pixels, dtype=x.dtype)  # room for (K, chunk*H'*W')
    for start in range(0, n_images, chunk):
        stop = min(start + chunk, n_images)
        cols = _leading(cols_buffer, channels * kh * kw, (stop - start) * pixels)  # (C*kh*kw, n*H'*W')
        dy_mat = _leading(dy_buffer, filters, (stop - start) * pixels)  # (K, n*H'*W')
        cpu.im2col(_pad_into(x[start:stop], padding, xpad_buffer), kh, kw, stride, cols)
        # 1. dY in the matrix layout; the bias gradient (every output pixel of filter k added b[k]) on the way
        cpu.nkp_to_knp_and_sum(dy[start:stop].reshape(stop - start, filters, pixels), dy_mat, db)  # (K, n*H'*W')
        # 2. filters: dW^T += cols @ dY^T (measured 5-20% faster in OpenBLAS than dW += dY @ cols^T)
        blas.matmul(cols, dy_mat.T, out=chunk_dw_t)  # (C*kh*kw, K)
        dw_t += chunk_dw_t
        if not input_grad:
            continue
        # 3. input: the columns' gradient W^T @ dY overwrites cols (their last use) ...
        blas.matmul(w_mat.T, dy_mat, out=cols)  # (C*kh*kw, n*H'*W')
        # ... col2im adds each column entry back onto the padded pixel it was read from, and the
        # border (the gradient of the zero padding) is dropped
        if padding == 0:  # no border: straight into dx
            cpu.col2im(cols, kh, kw, stride, dx[start:stop])
        else:
            dxpad = dxpad_buffer[: stop - start]  # (n, C, H + 2*padding, W + 2*padding)
            cpu.col2im(cols, kh, kw, stride, dxpad)
            dx[start:stop] = dxpad[:, :, padding : padding + height, padding : padding + width]
    dw = np.ascontiguousarray(dw_t.T).reshape(w.shape)  # (K, C, kh, kw)
    return dx, dw, db.astype(x.dtype)


def _register_tiled(x, w, stride, padding):
    """Whether this convolution goes through the register-tiled kernels of `scratchdet.kernels.cpu.conv_gemm`
    (float32, stride 1, padding smaller than the kernel) rather than im2col + OpenBLAS. Measured faster on
    every bench_nn.py shape, and a net whose layers all run there never hands the cores between Numba's
    and OpenBLAS's threads (each pool spins a while after its work; measured 1.2x slower per layer pair).
    A layer without filters or input channels (an empty product) stays with im2col, which handles it."""
    filters, channels, kh, kw = w.shape
    return x.dtype == np.float32 and stride == 1 and padding < min(kh, kw) and filters > 0 and channels > 0


def _by_phases(x, w, stride):
    """Whether a float32 strided convolution runs as a stride-1 one on the input's stride x stride
    phases (`scratchdet.kernels.cpu.nn.space_to_depth`), by the register-tiled kernels, rather than
    im2col + OpenBLAS: when the kernel spans at least one stride (else whole phases would meet only
    zero taps) and the layer has at most 64 input channels. The phase filters hold
    ceil(kh/s)^2 s^2 / (kh kw) times the multiply-adds (16/9 for 3 x 3 at stride 2), which im2col's large
    products win back with many channels. Measured forward + backward on the 2-core VM, phases vs
    im2col (ms): 8x3x224x224 -> 64, 7x7 stride 2: 21.0 vs 43.9; 16x3x128x128 -> 32, 3x3/2: 3.4 vs 5.0;
    64x32x32x32 -> 64: 12.3 vs 15.7; 32x64x32x32 -> 128: 19.6 vs 22.7; 16x32x33x33 -> 48, 5x5/3: 4.0
    vs 4.9; 1x64x224x224 -> 64: 23.2 vs 34.4; but 2x128x56x56 -> 256: 15.1 vs 15.6, 16x128x16x16 -> 256:
    10.8 vs 10.1, and 256-512 channels 1.3-2.1x slower."""
    filters, channels, kh, kw = w.shape
    return (
        x.dtype == np.float32 and stride > 1 and min(kh, kw) >= stride and 0 < channels <= 64 and filters > 0
    )


def _phases(x, stride, padding):
    """x (N, C, H, W) zero-padded by `padding`, as its stride x stride phases stacked as channels:
    (N, s*s*C, Hs, Ws), Hs = ceil((H + 2*padding) / s) (Ws likewise): every pixel of the padded x once."""
    n_images, channels, height, width = x.shape
    phase_h = -(-(height + 2 * padding) // stride)
    phase_w = -(-(width + 2 * padding) // stride)
    phases = np.empty((n_images, stride * stride * channels, phase_h, phase_w), dtype=x.dtype)
    cpu.space_to_depth(x, padding, stride, phases)
    return phases


def _phase_filters(w, stride):
    """w (K, C, kh, kw) as the phases' filters (K, s*s*C, ceil(kh/s), ceil(kw/s)): channel block a*s + b
    holds w[:, :, a::s, b::s], zero where the kernel ends."""
    filters, channels, kh, kw = w.shape
    phase_w = np.zeros((filters, stride * stride, channels, -(-kh // stride), -(-kw // stride)), dtype=w.dtype)
    for a in range(stride):
        for b in range(stride):
            taps = w[:, :, a::stride, b::stride]
            phase_w[:, a * stride + b, :, : taps.shape[2], : taps.shape[3]] = taps
    return phase_w.reshape(filters, stride * stride * channels, phase_w.shape[3], phase_w.shape[4])


def _cropped(y, height, width):
    """The top-left (height, width) of y's planes (the phases' output may have a row or column more)."""
    if y.shape[2:] == (height, width):
        return y
    return np.ascontiguousarray(y[:, :, :height, :width])


def _conv2d_backward_by_phases(dy, x, w, stride, padding, input_grad):
    """`conv2d_backward` of a strided convolution as the stride-1 one on x's phases (`_by_phases`): dy
    zero-extended to that convolution's output, its gradients, then dw gathered back from the phase
    filters' and dx from the phases' (`cpu.depth_to_space`)."""
    filters, channels = w.shape[:2]
    phases = _phases(x, stride, padding)
    phase_w = _phase_filters(w, stride)
    full = (phases.shape[2] - phase_w.shape[2] + 1, phases.shape[3] - phase_w.shape[3] + 1)
    if dy.shape[2:] != full:
        grown = np.zeros(dy.shape[:2] + full, dtype=dy.dtype)
        grown[:, :, : dy.shape[2], : dy.shape[3]] = dy
        dy = grown
    dw_phases, db = _filter_gradient_tiled(dy, phases, phase_w, 0)
    dw_phases = dw_phases.reshape(filters, stride * stride, channels, phase_w.shape[2], phase_w.shape[3])
    dw = np.empty_like(w)
    for a in range(stride):
        for b in range(stride):
            taps = dw[:, :, a::stride, b::stride]
            taps[...] = dw_phases[:, a * stride + b, :, : taps.shape[2], : taps.shape[3]]
    if not input_grad:
        return None, dw, db
    dx = np.empty_like(x)
    cpu.depth_to_space(_input_gradient_tiled(dy, phases.shape, phase_w, 0), padding, stride, dx)
    return dx, dw, db


def _input_gradient_by_scatter(x_shape, filters, kernel):
    """Whether the input gradient goes through `conv_gemm.input_gradient_few_channels` (W^T @ dy, then
    col2im) rather than a correlation with the flipped filters: when the channels fill less than one
    6-row tile there, there are at least 32 filters for its tiles to sum over, and each worker's column
    gradient of one image (C*kh*kw x H*W) fits the L2 cache (1 MB); the images are shared among the
    workers, so a single image would run on one thread. Measured: C = 3, 64 x 64 images, 32 filters
    15 % faster; 16 filters 25 % slower, C = 8 slower; one 600 x 1000 image (65 MB of columns) 3x slower.
    (The choice depends on the shapes only, never on the thread count, so results do not either.)"""
    n_images, channels, height, width = x_shape
    column_bytes = channels * kernel[0] * kernel[1] * height * width * 4
    return channels < conv_gemm.MR and filters >= 32 and column_bytes <= 2**20 and n_images >= 2


def _panels(matrix, width=conv_gemm.MR):
    """`conv_gemm.pack_panels` of a (M, L) matrix into a new (ceil(M / width), L, width) array."""
    matrix = np.ascontiguousarray(matrix)
    rows, length = matrix.shape
    panels = np.empty(((rows + width - 1) // width, length, width), dtype=matrix.dtype)
    conv_gemm.pack_panels(matrix, panels)
    return panels


def _correlate_tiled(x, w, b, pad_h, pad_w, flipped=False):
    """`conv2d_forward` at stride 1 by the register-tiled kernels: 3 x 3 layers with many channels and filters
    by Winograd's F(2 x 2, 3 x 3) (`winograd.winograd_correlate`, see `winograd.use_winograd`), others by
    `conv_gemm.correlate`, or for small maps `conv_gemm.correlate_pixel_tiles` (`conv_gemm.use_pixel_tiles`).
    flipped: w is a forward's (K, C, kh, kw) filters and the correlation's are their flipped, swapped copy
    (C, K, kh, kw) (the input gradient's: conv_gemm's module docstring, observation 2), packed from w directly
    where the route allows (`conv_gemm.pack_flipped_panels`)."""
    n_images, channels, height, width = x.shape
    filters, kh, kw = w.shape[1 if flipped else 0], w.shape[2], w.shape[3]
    y = np.empty((n_images, filters, height + 2 * pad_h - kh + 1, width + 2 * pad_w - kw + 1), dtype=x.dtype)
    if y.size == 0:  # e.g. dx of an image with no rows (padded, it had outputs): nothing to split into blocks
        return y
    tiles = n_images * ((y.shape[2] + 1) // 2) * ((y.shape[3] + 1) // 2)  # Winograd's 2 x 2 output tiles
    pixel_tiles = conv_gemm.use_pixel_tiles(y.shape[2], y.shape[3], width + 2 * pad_w, filters)
    if flipped and (winograd.use_winograd(channels, filters, (kh, kw), tiles) or (pixel_tiles and filters <= conv_gemm.HALF)):
        w = _flipped(w)  # these routes take the filters themselves
        flipped = False
    if winograd.use_winograd(channels, filters, (kh, kw), tiles):
        if filters <= conv_gemm.HALF:  # the reduction folded in two, side by side in one tile (`transform_filters`)
            panels = np.empty((winograd.TAPS, 1, (channels + 1) // 2, conv_gemm.NR), dtype=x.dtype)
        else:
            panels = np.empty((winograd.TAPS, (filters + conv_gemm.NR - 1) // conv_gemm.NR, channels, conv_gemm.NR), dtype=x.dtype)
        winograd.transform_filters(w, panels)
        winograd.winograd_correlate(x, pad_h, pad_w, panels, b, y, numba.get_num_threads())
    elif pixel_tiles and filters <= conv_gemm.HALF:  # one panel, the channels' two halves side by side (`conv_gemm.fold_panel`)
        panels = np.empty((1, (channels + 1) // 2 * kh * kw, conv_gemm.NR), dtype=x.dtype)
        conv_gemm.fold_panel(w.reshape(filters, channels * kh * kw), panels.shape[1], panels)
        conv_gemm.correlate_pixel_tiles(x, pad_h, pad_w, panels, b, kh, kw, y, numba.get_num_threads())
    elif pixel_tiles:
        conv_gemm.correlate_pixel_tiles(x, pad_h, pad_w, _filter_panels(w, conv_gemm.NR, flipped), b, kh, kw, y, numba.get_num_threads())
    else:
        conv_gemm.correlate(x, pad_h, pad_w, _filter_panels(w, conv_gemm.MR, flipped), b, kh, kw, y, numba.get_num_threads())
    return y


def _flipped(w):
    """The input gradient's filters (C, K, kh, kw) from the forward's (K, C, kh, kw): flipped in space, channel axes swapped."""
    filters, channels, kh, kw = w.shape
    flipped = np.empty((channels, filters, kh, kw), dtype=w.dtype)
    conv_gemm.flip_filters(w, flipped)
    return flipped


def _filter_panels(w, width, flipped):
    """The correlation's filter matrix packed into `width`-row panels (`_panels`), from w itself or, flipped,
    from the forward's filters whose flipped copy it is (`conv_gemm.pack_flipped_panels`)."""
    if not flipped:
        return _panels(w.reshape(w.shape[0], -1), width)
    filters, channels, kh, kw = w.shape
    panels = np.empty(((channels + width - 1) // width, filters * kh * kw, width), dtype=w.dtype)
    conv_gemm.pack_flipped_panels(w, panels)
    return panels


def _conv2d_backward_tiled(dy, x, w, padding, input_grad):
    """`conv2d_backward` at stride 1 by the register-tiled kernels."""
    dw, db = _filter_gradient_tiled(dy, x, w, padding)
    return (_input_gradient_tiled(dy, x.shape, w, padding) if input_grad else None), dw, db


def _input_gradient_tiled(dy, x_shape, w, padding):
    """dx: the correlation of dy, zero-padded by kernel - 1 - padding, with the flipped filters whose channel
    axes are swapped (conv_gemm's module docstring, observation 2); for RGB-like layers W^T @ dy and col2im."""
    filters, channels, kh, kw = w.shape
    if _input_gradient_by_scatter(x_shape, filters, (kh, kw)):
        dx = np.empty(x_shape, dtype=dy.dtype)
        panels = _panels(w.reshape(filters, channels * kh * kw).T)  # of W^T (C*kh*kw, K)
        conv_gemm.input_gradient_few_channels(dy, panels, kh, kw, padding, dx, numba.get_num_threads())
        return dx
    return _correlate_tiled(dy, w, np.zeros(channels, dtype=dy.dtype), kh - 1 - padding, kw - 1 - padding, flipped=True)


def _filter_gradient_tiled(dy, x, w, padding):
    """(dw, db) in one pass over x (zero-padded a block of rows at a time) and dy: by Winograd's F(3 x 3, 2 x 2)
    for 3 x 3 layers with many channels and filters (`winograd.use_winograd_filter_gradient`), else by
    conv_gemm's direct products."""
    filters, channels, kh, kw = w.shape
    dw_t = np.empty((channels * kh * kw, filters), dtype=x.dtype)  # (C*kh*kw, K), dW transposed
    db = np.empty(filters)  # float64 sums
    tiles = dy.shape[0] * ((dy.shape[2] + 1) // 2) * ((dy.shape[3] + 1) // 2)  # Winograd's 2 x 2 output tiles
    if winograd.use_winograd_filter_gradient(channels, filters, (kh, kw), tiles):
        winograd.winograd_filter_gradient(x, padding, padding, dy, dw_t, db, numba.get_num_threads())
    elif conv_gemm.few_filters(filters, dy.shape[2], dy.shape[3], channels * kh * kw):
        conv_gemm.filter_gradient_few_filters(x, padding, padding, dy, kh, kw, dw_t, db)
    else:
        conv_gemm.filter_gradient(x, padding, padding, dy, kh, kw, dw_t, db)
    dw = np.empty((filters, channels * kh * kw), dtype=x.dtype)
    conv_gemm.transpose(dw_t, dw)
    return dw.reshape(w.shape), db.astype(x.dtype)


def _stride_padding(stride, padding):
    """(stride, padding) checked: ints >= 1 and >= 0 (both backends)."""
    return _check_positive_int("stride", stride, 1), _check_positive_int("padding", padding, 0)


def _check_conv(x, w, b, stride, padding):
    x = _check_float("x", x, ndim=4)
    w = _check_float("w", w, ndim=4, dtype=x.dtype)
    stride, padding = _stride_padding(stride, padding)
    if w.shape[1] != x.shape[1]:
        raise InvalidArgumentError(f"w has {w.shape[1]} input channels but x has {x.shape[1]} (x {x.shape}, w {w.shape})")
    if b is not None:
        b = _check_float("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise InvalidArgumentError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    for axis, name in ((2, "height"), (3, "width")):
        if w.shape[axis] < 1:
            raise InvalidArgumentError(f"the kernel {name} must be >= 1, got w of shape {w.shape}")
        if x.shape[axis] + 2 * padding < w.shape[axis]:
            raise InvalidArgumentError(
                f"the padded input {name} {x.shape[axis]} + 2*{padding} is smaller than the kernel {name} {w.shape[axis]}"
            )
    return x, w, b, stride, padding


# ---------------------------------------------------------------------------------------------------
# max pooling
# ---------------------------------------------------------------------------------------------------


def maxpool2d_forward(x, kernel_size, stride=None):
    """Max over kernel_size x kernel_size windows moved by `stride` (no padding, floor mode).

    Args:
        x: (N, C, H, W) float input.
        kernel_size: int window side; stride: int, defaults to kernel_size.

    Returns:
        y: (N, C, H', W') with H' = 1 + (H - kernel_size) // stride, W' likewise.
    """
    if is_cuda_array(x):
        return _cuda().maxpool2d_forward(x, *_pool_window(kernel_size, stride))
    x, kernel_size, stride = _check_pool(x, kernel_size, stride)
    n_images, channels, height, width = x.shape
    out_h = conv2d_output_size(height, kernel_size, stride)
    out_w = conv2d_output_size(width, kernel_size, stride)
    y = np.empty((n_images, channels, out_h, out_w), dtype=x.dtype)
    if kernel_size == stride == 2:
        cpu.maxpool2x2_forward(x, y)
    else:
        cpu.maxpool2d_forward(x, kernel_size, stride, y)
    return y


def maxpool2d_backward(dy, x, kernel_size, stride=None):
    """Gradient of `maxpool2d_forward`: each window's gradient goes to its maximum (the first one in
    row-major order on ties, as PyTorch); overlapping windows add up.

    Args:
        dy: (N, C, H', W') gradient of the output; x: (N, C, H, W) the forward input; both float32
            or float64, one dtype.

    Returns:
        dx: (N, C, H, W), x's dtype.
    """
    if is_cuda_array(dy):
        return _cuda().maxpool2d_backward(dy, x, *_pool_window(kernel_size, stride))
    x, kernel_size, stride = _check_pool(x, kernel_size, stride)
    n_images, channels, height, width = x.shape
    expected = (n_images, channels, conv2d_output_size(height, kernel_size, stride), conv2d_output_size(width, kernel_size, stride))
    dy = _check_float("dy", dy, ndim=4, dtype=x.dtype)
    if dy.shape != expected:
        raise InvalidArgumentError(f"dy must have shape {expected}, got {dy.shape}")
    dx = np.empty_like(x)
    if kernel_size == stride == 2:
        cpu.maxpool2x2_backward(dy, x, dx)
    else:
        cpu.maxpool2d_backward(dy, x, kernel_size, stride, dx)
    return dx


def _pool_window(kernel_size, stride):
    """(kernel_size, stride) checked: ints >= 1, the stride the kernel size when None (both backends)."""
    kernel_size = _check_positive_int("kernel_size", kernel_size)
    return kernel_size, kernel_size if stride is None else _check_positive_int("stride", stride)


def _check_pool(x, kernel_size, stride):
    x = _check_float("x", x, ndim=4)
    kernel_size, stride = _pool_window(kernel_size, stride)
    if x.shape[2] < kernel_size or x.shape[3] < kernel_size:
        raise InvalidArgumentError(f"input {x.shape[2]}x{x.shape[3]} is smaller than the pooling window {kernel_size}")
    return x, kernel_size, stride


# ---------------------------------------------------------------------------------------------------
# ReLU, linear, flatten, dropout
# ---------------------------------------------------------------------------------------------------


def relu_forward(x):
    """y = max(x, 0) element-wise; a NaN stays NaN (as in PyTorch). x: any shape, float. Returns y like x."""
    if is_cuda_array(x):
        return _cuda().relu_forward(x)
    x = _check_float("x", x)
    y = np.empty_like(x)
    cpu.relu_forward(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(dy, x):
    """dx = dy where x > 0 or x is NaN, else 0 (0 at x = 0; both as PyTorch). dy, x: same shape,
    float32 or float64, one dtype. Returns dx like x."""
    if is_cuda_array(dy):
        return _cuda().relu_backward(dy, x)
    x = _check_float("x", x)
    dy = _check_same("dy", dy, x)
    dx = np.empty_like(x)
    cpu.relu_backward(dy.reshape(-1), x.reshape(-1), dx.reshape(-1))
    return dx


def add(a, b):
    """a + b element-wise: the gradient of a tensor that feeds two layers is the sum of the two
    gradients that come back (a fork in the network, e.g. Fast R-CNN's classifier and box regressor
    reading one feature vector). a, b: same shape, float32 or float64, one dtype. Returns a new array."""
    if is_cuda_array(a):
        return _cuda().add(a, b)
    a = _check_float("a", a)
    b = _check_same("b", b, a)
    return a + b


def linear_forward(x, w, b):
    """Fully connected layer, PyTorch's weight layout: y = x @ w.T + b.

    Args:
        x: (N, D_in) float; w: (D_out, D_in); b: (D_out,), same dtype, or None for no bias.

    Returns:
        y: (N, D_out).
    """
    if is_cuda_array(x):
        return _cuda().linear_forward(x, w, b)
    x, w, b = _check_linear(x, w, b)
    y = blas.matmul(x, w.T)  # (N, D_out): one GEMM (on one BLAS thread when small: `blas`)
    if b is not None:
        y += b
    return y


def linear_backward(dy, x, w, *, input_grad=True):
    """Gradients of `linear_forward`: dx = dy @ w, dw = dy.T @ x, db = sum_n dy[n].

    Args:
        dy: (N, D_out); x: (N, D_in) the forward input; w: (D_out, D_in); all float32 or float64,
            one dtype.
        input_grad: False skips dx and returns None in its place.

    Returns:
        (dx (N, D_in) or None, dw (D_out, D_in), db (D_out,)), x's dtype.
    """
    if is_cuda_array(dy):
        return _cuda().linear_backward(dy, x, w, input_grad=input_grad)
    x, w, _ = _check_linear(x, w, None)
    dy = _check_float("dy", dy, ndim=2, dtype=x.dtype)
    if dy.shape != (x.shape[0], w.shape[0]):
        raise InvalidArgumentError(f"dy must have shape {(x.shape[0], w.shape[0])}, got {dy.shape}")
    return (blas.matmul(dy, w) if input_grad else None), blas.matmul(dy.T, x), dy.sum(axis=0)


def _check_linear(x, w, b):
    x = _check_float("x", x, ndim=2)
    w = _check_float("w", w, ndim=2, dtype=x.dtype)
    if w.shape[1] != x.shape[1]:
        raise InvalidArgumentError(f"w must have shape (D_out, {x.shape[1]}) to match x {x.shape}, got {w.shape}")
    if b is not None:
        b = _check_float("b", b, ndim=1, dtype=x.dtype)
        if b.shape[0] != w.shape[0]:
            raise InvalidArgumentError(f"b must have shape ({w.shape[0]},), got {b.shape}")
    return x, w, b


def flatten_forward(x):
    """(N, C, H, W) (or any (N, ...)) -> (N, C*H*W), C order, x's dtype. A reshape: same on every backend.

    The feature count is the product of the trailing sizes, so an empty batch (N = 0) works too."""
    if not (is_cuda_array(x) or isinstance(x, np.ndarray)) or x.ndim < 1:
        raise InvalidArgumentError(f"flatten needs an (N, ...) array, got {type(x).__name__} of shape {getattr(x, 'shape', None)}")
    features = 1
    for size in x.shape[1:]:
        features *= size
    return x.reshape(x.shape[0], features)


def flatten_backward(dy, input_shape):
    """Gradient of `flatten_forward`: dy (N, D), any dtype, reshaped back to `input_shape` (a tuple
    such as (N, C, H, W)); returns dx with that shape and dy's dtype."""
    input_shape = tuple(input_shape)
    if dy.ndim != 2 or math.prod(input_shape) != dy.shape[0] * dy.shape[1] or (input_shape and input_shape[0] != dy.shape[0]):
        raise InvalidArgumentError(f"dy of shape {dy.shape} is not the flattened gradient of an input of shape {input_shape}")
    return dy.reshape(input_shape)


def dropout_forward(x, p, seed):
    """Inverted dropout at training time (Srivastava et al. 2014): zero each unit with probability p
    and scale the survivors by 1 / (1 - p). At evaluation time dropout is the identity (the `Dropout`
    layer then skips this call).

    The mask comes from a counter-based hash of (seed, element index)
    (`scratchdet.kernels.shared.nn.dropout_uniform`): the same seed gives the same mask on the CPU and
    on the GPU.

    Args:
        x: any shape, float. p: drop probability in [0, 1). seed: int in [0, 2**31).

    Returns:
        (y, mask), both like x; mask holds 1 / (1 - p) for kept units and 0 for dropped ones.
    """
    p = check_probability(p)  # (the numbers are checked here for both backends)
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or not 0 <= seed < 2**31:
        raise InvalidArgumentError(f"dropout seed must be an integer in [0, 2**31), got {seed!r}")
    if is_cuda_array(x):
        return _cuda().dropout_forward(x, p, int(seed))
    x = _check_float("x", x)
    y = np.empty_like(x)
    mask = np.empty_like(x)
    cpu.dropout_forward(x.reshape(-1), p, int(seed), y.reshape(-1), mask.reshape(-1))
    return y, mask


def dropout_backward(dy, mask):
    """Gradient of `dropout_forward`: dx = dy * mask. dy, mask: same shape, float32 or float64, one
    dtype. Returns dx like dy."""
    if is_cuda_array(dy):
        return _cuda().dropout_backward(dy, mask)
    mask = _check_float("mask", mask)
    dy = _check_same("dy", dy, mask)
    dx = np.empty_like(dy)
    cpu.multiply(dy.reshape(-1), mask.reshape(-1), dx.reshape(-1))
    return dx


def _check_same(name, a, like):
    a = _check_float(name, a, dtype=like.dtype)
    if a.shape != like.shape:
        raise InvalidArgumentError(f"{name} must have shape {like.shape}, got {a.shape}")
    return a


# ---------------------------------------------------------------------------------------------------
# RoI max pooling
# ---------------------------------------------------------------------------------------------------


def roi_pool_forward(features, rois, output_size, spatial_scale):
    """RoI max pooling (Fast R-CNN, Girshick 2015, section 2.1): each RoI's window on the feature map
    is split into an output_size grid of sub-windows, and each sub-window is max-pooled.

    RoI format (torchvision's `roi_pool`): rows (batch_index, x1, y1, x2, y2) in input-image pixels.
    The bins follow torchvision's (and the original Caffe layer's) rules exactly:
    corners are scaled by `spatial_scale` and rounded half away from zero; the RoI is
    (x2' - x1' + 1) x (y2' - y1' + 1) cells (at least 1); bin (ph, pw) spans rows
    [floor(ph * h / PH), ceil((ph + 1) * h / PH)) from the RoI's first row, clipped to the map;
    an empty bin outputs 0. (Bin sizes are computed in float64 here; torchvision uses the input's
    dtype, which can differ only when a bin edge lands within rounding of an integer.)

    Args:
        features: (B, C, H, W) float feature maps.
        rois: (R, 5) float (same dtype as features or any float), (batch_index, x1, y1, x2, y2).
        output_size: int or (PH, PW).
        spatial_scale: float, feature cells per image pixel (1/16 for VGG16's conv5).

    Returns:
        (R, C, PH, PW) pooled features.
    """
    if is_cuda_array(features):
        return _cuda().roi_pool_forward(features, rois, output_size, spatial_scale)
    features, rois, (pooled_h, pooled_w), spatial_scale = _check_roi_pool(features, rois, output_size, spatial_scale)
    out = np.empty((rois.shape[0], features.shape[1], pooled_h, pooled_w), dtype=features.dtype)
    cpu.roi_pool_forward(features, rois, spatial_scale, out)
    return out


def roi_pool_backward(dout, features, rois, output_size, spatial_scale):
    """Gradient of `roi_pool_forward` with respect to the features (Fast R-CNN, eq. 4): each bin's
    gradient goes to the cell that was its maximum (argmax recomputed from `features`); RoIs that
    share a cell add up. No gradient flows to the RoI coordinates.

    Args:
        dout: (R, C, PH, PW), features' dtype; features, rois, output_size, spatial_scale: as in the
            forward.

    Returns:
        dfeatures: (B, C, H, W), features' dtype.
    """
    if is_cuda_array(dout):
        return _cuda().roi_pool_backward(dout, features, rois, output_size, spatial_scale)
    features, rois, (pooled_h, pooled_w), spatial_scale = _check_roi_pool(features, rois, output_size, spatial_scale)
    dout = _check_float("dout", dout, ndim=4, dtype=features.dtype)
    expected = (rois.shape[0], features.shape[1], pooled_h, pooled_w)
    if dout.shape != expected:
        raise InvalidArgumentError(f"dout must have shape {expected}, got {dout.shape}")
    dfeatures = np.empty_like(features)
    cpu.roi_pool_backward(dout, features, rois, spatial_scale, dfeatures)
    return dfeatures


def pair(value, name):
    """An int or a pair of ints -> (a, b), each >= 1."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise InvalidArgumentError(f"{name} must be an int or a pair of ints, got {value!r}")
        return _check_positive_int(name, value[0]), _check_positive_int(name, value[1])
    value = _check_positive_int(name, value)
    return value, value


def _check_roi_pool(features, rois, output_size, spatial_scale):
    features = _check_float("features", features, ndim=4)
    spatial_scale = check_spatial_scale(spatial_scale)
    rois = check_host_rois(rois, features.shape[0], spatial_scale)
    return features, rois, pair(output_size, "output_size"), spatial_scale


def check_host_rois(rois, batch_size, spatial_scale):
    """NumPy RoIs for RoI pooling, checked (both backends: the CUDA one copies them over after this).

    Args:
        rois: (R, 5) rows (batch_index, x1, y1, x2, y2) of numbers; batch_size: the feature maps'
            N; spatial_scale: a float > 0 (`check_spatial_scale`).

    Returns:
        (R, 5) float64, C-contiguous.
    """
    rois = _contiguous(rois, np.float64, name="rois")  # (an InvalidArgumentError for e.g. strings)
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise InvalidArgumentError(f"rois must have shape (R, 5) rows (batch_index, x1, y1, x2, y2), got {rois.shape}")
    if rois.shape[0] and not np.all(np.isfinite(rois)):
        raise InvalidArgumentError("rois must be finite")
    batch = rois[:, 0]
    if rois.shape[0] and (np.any(batch != np.floor(batch)) or batch.min() < 0 or batch.max() >= batch_size):
        raise InvalidArgumentError(f"rois[:, 0] must be integer batch indices in [0, {batch_size})")
    # the scaled corners are rounded to integers: beyond 2**53 float64 has no fractions left to round,
    # and far beyond it the conversion to int64 overflows
    if rois.shape[0] and np.abs(rois[:, 1:]).max() * spatial_scale >= 2.0**53:
        raise InvalidArgumentError(f"rois' corners times spatial_scale must stay below 2**53 in size, got up to {np.abs(rois[:, 1:]).max():g}")
    return rois


def check_spatial_scale(spatial_scale):
    """A RoI pooling scale (feature-map pixels per image pixel, e.g. 1/16) as a float: a finite number > 0."""
    if isinstance(spatial_scale, (bool, np.bool_)) or not isinstance(spatial_scale, numbers.Real):
        raise InvalidArgumentError(f"spatial_scale must be a number > 0, got {spatial_scale!r}")
    if not 0 < spatial_scale < math.inf:
        raise InvalidArgumentError(f"spatial_scale must be a finite number > 0, got {spatial_scale!r}")
    return float(spatial_scale)


# ---------------------------------------------------------------------------------------------------
# optimiser updates (in place)
# ---------------------------------------------------------------------------------------------------


def sgd_update(param, grad, velocity, *, lr, momentum, weight_decay):
    """One SGD step with momentum and L2 weight decay, in place (PyTorch's `SGD` without dampening):

        g = grad + weight_decay * param;  velocity = momentum * velocity + g;  param -= lr * velocity

    Args:
        param, grad, velocity: float32 or float64 arrays of one shape and dtype, C-contiguous; param and
            velocity are updated. Returns None.
    """
    lr, momentum, weight_decay = _check_numbers(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if is_cuda_array(param):
        return _cuda_optim().sgd_update(param, grad, velocity, lr=lr, momentum=momentum, weight_decay=weight_decay)
    _check_update("param", param, grad, velocity)
    _check_writeable(param=param, velocity=velocity)
    cpu.sgd_update(param.reshape(-1), grad.reshape(-1), velocity.reshape(-1), lr, momentum, weight_decay)


def adam_update(param, grad, m, v, *, step, lr, beta1, beta2, eps, weight_decay):
    """One Adam step (Kingma and Ba 2015, Algorithm 1), in place, with L2 weight decay added to the
    gradient as in PyTorch's `Adam`. `step` counts from 1 (it sets the bias corrections).

    Args:
        param, grad, m, v: float32 or float64 arrays of one shape and dtype, C-contiguous; param,
            m (first moment) and v (second moment) are updated. Returns None.
    """
    step = _check_positive_int("adam step", step)
    lr, beta1, beta2, eps, weight_decay = _check_numbers(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    if is_cuda_array(param):
        return _cuda_optim().adam_update(
            param, grad, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )
    _check_update("param", param, grad, m, v)
    _check_writeable(param=param, m=m, v=v)
    cpu.adam_update(
        param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1),
        step, lr, beta1, beta2, eps, weight_decay,
    )


def sgd_update_many(params, grads, velocities, *, lr, momentum, weight_decay):
    """`sgd_update` of every parameter of a list (a model's): on the GPU in one kernel launch per
    group of parameters (`scratchdet.kernels.cuda.optim.GROUP`), on the CPU one after the other.

    Args:
        params, grads, velocities: equal-length sequences of arrays, all NumPy or all CUDA device
            arrays; params[i], grads[i] and velocities[i] of one shape (any), float32 or float64 and
            C-contiguous, as `sgd_update` takes them (on the GPU all of one dtype). Returns None.
    """
    lr, momentum, weight_decay = _check_numbers(lr=lr, momentum=momentum, weight_decay=weight_decay)
    params, grads, velocities = list(params), list(grads), list(velocities)
    if _on_cuda("sgd_update_many", params, grads, velocities):
        return _cuda_optim().sgd_update_many(params, grads, velocities, lr=lr, momentum=momentum, weight_decay=weight_decay)
    for param, grad, velocity in zip(params, grads, velocities):
        sgd_update(param, grad, velocity, lr=lr, momentum=momentum, weight_decay=weight_decay)


def adam_update_many(params, grads, ms, vs, *, step, lr, beta1, beta2, eps, weight_decay):
    """`adam_update` of every parameter of a list: on the GPU in one kernel launch per group of
    parameters (`scratchdet.kernels.cuda.optim.GROUP`), on the CPU one after the other.

    Args:
        params, grads, ms, vs: equal-length sequences of arrays, all NumPy or all CUDA device arrays;
            params[i], grads[i], ms[i] and vs[i] of one shape (any), float32 or float64 and
            C-contiguous, as `adam_update` takes them (on the GPU all of one dtype). Returns None.
    """
    step = _check_positive_int("adam step", step)
    lr, beta1, beta2, eps, weight_decay = _check_numbers(lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)
    params, grads, ms, vs = list(params), list(grads), list(ms), list(vs)
    if _on_cuda("adam_update_many", params, grads, ms, vs):
        return _cuda_optim().adam_update_many(
            params, grads, ms, vs, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay
        )
    for param, grad, m, v in zip(params, grads, ms, vs):
        adam_update(param, grad, m, v, step=step, lr=lr, beta1=beta1, beta2=beta2, eps=eps, weight_decay=weight_decay)


def _on_cuda(name, *lists):
    """Whether every array of the lists is a CUDA device array (False: every one is on the host); an
    `InvalidArgumentError` for lists of different lengths or arrays on both."""
    if len({len(arrays) for arrays in lists}) > 1:
        raise InvalidArgumentError(f"{name}: one gradient and state per parameter, got lists of {[len(a) for a in lists]}")
    where = {is_cuda_array(a) for arrays in lists for a in arrays}
    if len(where) > 1:
        raise InvalidArgumentError(f"{name}: some arrays are on the GPU and some are not: {ONE_DEVICE}")
    return where == {True}


def _check_numbers(**values):
    """The named hyperparameters as floats: each a finite real number, not a boolean."""
    for name, value in values.items():
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not math.isfinite(value):
            raise InvalidArgumentError(f"{name} must be a finite number, got {value!r}")
    return tuple(float(value) for value in values.values())


def _check_writeable(**arrays):
    """Refuse, by name, a read-only array that an update would write."""
    for name, array in arrays.items():
        if not array.flags.writeable:
            raise InvalidArgumentError(f"{name} is read-only; an optimiser step updates it in place")


def _check_update(name, param, *others):
    if not (isinstance(param, np.ndarray) and param.flags.c_contiguous and param.dtype in FLOAT_DTYPES):
        raise InvalidArgumentError(f"{name} must be a C-contiguous float32/float64 array")
    for other in others:
        if is_cuda_array(other):
            raise InvalidArgumentError(f"{name} is a NumPy array but its gradient or optimiser state is on the GPU: {ONE_DEVICE}")
        if not (isinstance(other, np.ndarray) and other.shape == param.shape and other.dtype == param.dtype and other.flags.c_contiguous):
            raise InvalidArgumentError(
                f"optimiser arrays must match {name} (shape {param.shape}, {param.dtype}, contiguous); got "
                f"{getattr(other, 'shape', None)} {getattr(other, 'dtype', None)}"
            )
