"""Numba CPU kernels behind `scratchdet.nn.functional`: im2col / col2im, pooling, RoI pooling,
activations, dropout, the per-sample losses and the optimiser updates.

Every kernel is the plain loop nest the math describes, parallel over independent outputs with
`numba.prange` (each thread owns whole output planes, so no two threads write the same element).
The convolution's helpers (im2col, col2im and the two reorders) are the exception: they run on one
thread, because the matrix products between them run on OpenBLAS's threads, and handing the cores
back and forth between two thread pools at every step (each pool spins a while before it sleeps)
costs more than a parallel copy gains (measured: a prange im2col/col2im made conv forward+backward
1.5-3x slower on the 2-core machine).
The kernels take arrays that `scratchdet.nn.functional` has already validated (C-contiguous, one
floating dtype: float32 or float64) and compile once per dtype. Set `NUMBA_DISABLE_JIT=1` to run them
as ordinary Python and step through them in a debugger.
"""

import numba
import numpy as np
from numba import prange

from scratchdet.kernels.shared import nn as shared

smooth_l1_value = numba.njit(cache=True)(shared.smooth_l1_value)
smooth_l1_grad = numba.njit(cache=True)(shared.smooth_l1_grad)
round_half_away = numba.njit(cache=True)(shared.round_half_away)
roi_bin_start = numba.njit(cache=True)(shared.roi_bin_start)
roi_bin_end = numba.njit(cache=True)(shared.roi_bin_end)
dropout_uniform = numba.njit(cache=True)(shared.dropout_uniform)
relu_passes = numba.njit(cache=True, inline="always")(shared.relu_passes)
# inlined into the pooling loops: called as separate functions they make max pooling 2x slower
window_max = numba.njit(cache=True, inline="always")(shared.window_max)
window_argmax = numba.njit(cache=True, inline="always")(shared.window_argmax)
max_of_four = numba.njit(cache=True, inline="always")(shared.max_of_four)
winner_of_four = numba.njit(cache=True, inline="always")(shared.winner_of_four)
sgd_element = numba.njit(cache=True, inline="always")(shared.sgd_element)
adam_element = numba.njit(cache=True, inline="always")(shared.adam_element)


# ---------------------------------------------------------------------------------------------------
# Convolution as a matrix product: im2col and its adjoint col2im
# ---------------------------------------------------------------------------------------------------

# These four run on one thread on purpose: they sit between OpenBLAS products, and a parallel loop
# there shares the cores with OpenBLAS's spinning workers (`scratchdet.kernels.cpu.blas`). Measured
# with all four as `prange` loops, conv 32x64x32x32 -> 128, 3x3, stride 2 on the 2-core VM: im2col
# 2.7 -> 0.9 ms and col2im 3.1 -> 1.8 ms alone, but the whole forward 11 -> 40 ms and backward
# 18 -> 40 ms.


@numba.njit(cache=True)
def im2col(xpad, kh, kw, stride, cols):
    """Unfold every receptive field of the zero-padded input `xpad` into a column of `cols`.

        cols[(c, i, j), (n, oy, ox)] = xpad[n, c, oy*stride + i, ox*stride + j]

    with row index (c*kh + i)*kw + j and column index (n*H' + oy)*W' + ox. The convolution of all N
    images is then one matrix product, `W (K, C*kh*kw) @ cols (C*kh*kw, N*H'*W')`.

    The caller pads the images first (`xpad` holds the zeros), so every read is inside the array and
    the loops need no bounds tests. The stride-1 case, the common one, is written out on its own: with
    a unit step the compiler turns the innermost loop into vector copies (measured 5-9x faster than
    the general loop, which only then stays as fast as a scalar copy).

    Args:
        xpad: (N, C, Hp, Wp) float input already padded, Hp = H + 2*padding, Wp = W + 2*padding.
        kh, kw: kernel height and width; stride: int.
        cols: (C*kh*kw, N*H'*W') output, same dtype, with H' = 1 + (Hp - kh) // stride and
            W' = 1 + (Wp - kw) // stride.
    """
    n_images, channels, padded_h, padded_w = xpad.shape
    out_h = (padded_h - kh) // stride + 1
    out_w = (padded_w - kw) // stride + 1
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for n in range(n_images):
                    for oy in range(out_h):
                        first = (n * out_h + oy) * out_w
                        if stride == 1:
                            for ox in range(out_w):
                                cols[row, first + ox] = xpad[n, c, oy + i, ox + j]
                        else:
                            for ox in range(out_w):
                                cols[row, first + ox] = xpad[n, c, oy * stride + i, ox * stride + j]


@numba.njit(cache=True)
def col2im(cols, kh, kw, stride, dxpad):
    """The adjoint of `im2col`: add every column entry back onto the padded-input pixel it was read from.

        dxpad[n, c, oy*stride + i, ox*stride + j] += cols[(c, i, j), (n, oy, ox)]

    Overlapping receptive fields add up, which is the chain rule for a pixel that several outputs
    read. The caller crops the border (the gradient of the zero padding, which is discarded).
    Stride 1 is written out on its own for the same reason as in `im2col`.

    Args:
        cols: (C*kh*kw, N*H'*W') float gradient with respect to the columns.
        kh, kw, stride: as in `im2col`.
        dxpad: (N, C, Hp, Wp) output, overwritten: the gradient with respect to the padded input.
    """
    n_images, channels, padded_h, padded_w = dxpad.shape
    out_h = (padded_h - kh) // stride + 1
    out_w = (padded_w - kw) // stride + 1
    dxpad[...] = 0
    for c in range(channels):
        for i in range(kh):
            for j in range(kw):
                row = (c * kh + i) * kw + j
                for n in range(n_images):
                    for oy in range(out_h):
                        first = (n * out_h + oy) * out_w
                        if stride == 1:
                            for ox in range(out_w):
                                dxpad[n, c, oy + i, ox + j] += cols[row, first + ox]
                        else:
                            for ox in range(out_w):
                                dxpad[n, c, oy * stride + i, ox * stride + j] += cols[row, first + ox]


@numba.njit(cache=True)
def knp_to_nkp(src, bias, dst):
    """Reorder a matrix product's (K, N*P) result into NCHW order and add the bias:

        dst[n, k, p] = src[k, n*P + p] + bias[k]

    Args:
        src: (K, N*P) float; bias: (K,) float; dst: (N, K, P) output.
    """
    n_images, filters, size = dst.shape
    for n in range(n_images):
        for k in range(filters):
            for p in range(size):
                dst[n, k, p] = src[k, n * size + p] + bias[k]


@numba.njit(cache=True, fastmath={"reassoc"})
def nkp_to_knp_and_sum(src, dst, sums):
    """The reverse reorder, NCHW gradients into the matrix layout, summing each filter's plane on the way
    (the bias gradient, at no extra pass over the data):

        dst[k, n*P + p] = src[n, k, p];    sums[k] += sum_p src[n, k, p]

    Each plane is summed in float64 before it is added, so float32 inputs lose no precision to long sums.
    `reassoc` lets the compiler split that sum across vector lanes (strictly in order, each addition
    waits for the previous one: measured 7x slower, slower than the copy itself).

    Args:
        src: (N, K, P) float; dst: (K, N*P) output; sums: (K,) float64, added to.
    """
    n_images, filters, size = src.shape
    for n in range(n_images):
        for k in range(filters):
            plane_sum = 0.0  # float64
            for p in range(size):
                dst[k, n * size + p] = src[n, k, p]
                plane_sum += src[n, k, p]
            sums[k] += plane_sum


# ---------------------------------------------------------------------------------------------------
# A strided convolution as a stride-1 one on the input's phases (space-to-depth)
# ---------------------------------------------------------------------------------------------------
# With stride s, output (oy, ox) reads xpad[s*oy + i, s*ox + j]. Writing i = s*u + a, j = s*v + b
# (0 <= a, b < s), that is phase (a, b) of xpad, X_ab[r, q] = xpad[s*r + a, s*q + b], read at
# (oy + u, ox + v): a stride-1 correlation of X_ab with the sub-filter W_ab[u, v] = w[s*u + a, s*v + b].
# Stacking the s*s phases as channels turns the layer into one stride-1, unpadded convolution of
# (N, s*s*C, ceil(Hp/s), ceil(Wp/s)) images with (K, s*s*C, ceil(kh/s), ceil(kw/s)) filters (taps past
# the kernel are 0), which the register-tiled kernels run (`scratchdet.nn.functional`).


@numba.njit(cache=True, parallel=True)
def space_to_depth(x, padding, stride, out):
    """out[n, (a*s + b)*C + c, r, q] = xpad[n, c, s*r + a, s*q + b], xpad = x zero-padded by `padding`
    (0 past its border too).

    Args:
        x: (N, C, H, W) float; padding: int >= 0; stride: s >= 1.
        out: (N, s*s*C, Hs, Ws) output, same dtype, Hs >= ceil((H + 2*padding) / s) (Ws likewise).
    """
    n_images, channels, height, width = x.shape
    depth, phase_h, phase_w = out.shape[1], out.shape[2], out.shape[3]
    for nd in prange(n_images * depth):
        n = nd // depth
        d = nd % depth
        a = d // channels // stride
        b = d // channels % stride
        c = d % channels
        for r in range(phase_h):
            y = stride * r + a - padding
            for q in range(phase_w):
                x_ = stride * q + b - padding
                out[n, d, r, q] = x[n, c, y, x_] if 0 <= y < height and 0 <= x_ < width else 0


@numba.njit(cache=True, parallel=True)
def depth_to_space(dphases, padding, stride, dx):
    """The adjoint of `space_to_depth`, which reads each pixel of x once (the padding's gradient is
    dropped): dx[n, c, y, x] = dphases[n, (a*s + b)*C + c, r, q] with s*r + a = y + padding,
    s*q + b = x + padding.

    A row y of dx interleaves s phase rows (one per b): each is copied into every s-th pixel, from the
    first x of its phase, without a division per pixel.

    Args:
        dphases: (N, s*s*C, Hs, Ws) float; padding, stride: as `space_to_depth`.
        dx: (N, C, H, W) output, overwritten.
    """
    n_images, channels, height, width = dx.shape
    for nc in prange(n_images * channels):
        n = nc // channels
        c = nc % channels
        for y in range(height):
            r = (y + padding) // stride
            a = (y + padding) % stride
            for b in range(stride):
                d = (a * stride + b) * channels + c
                x_ = (b - padding) % stride  # the first x with (x + padding) % stride == b
                q = (x_ + padding) // stride
                while x_ < width:
                    dx[n, c, y, x_] = dphases[n, d, r, q]
                    x_ += stride
                    q += 1


# ---------------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True)
def maxpool2d_forward(x, kernel_size, stride, y):
    """y[n, c, oy, ox] = max of the kernel_size x kernel_size window at (oy*stride, ox*stride).

    Args:
        x: (N, C, H, W) float input.
        y: (N, C, H', W') output with H' = 1 + (H - kernel_size) // stride (same for W').
    """
    n_images, channels, out_h, out_w = y.shape
    for nc in prange(n_images * channels):
        n = nc // channels
        c = nc % channels
        for oy in range(out_h):
            for ox in range(out_w):
                y[n, c, oy, ox] = window_max(x, n, c, oy * stride, oy * stride + kernel_size, ox * stride, ox * stride + kernel_size)


@numba.njit(cache=True, parallel=True)
def maxpool2d_backward(dy, x, kernel_size, stride, dx):
    """Route each output gradient to the input that won its window (the first maximum in scan order,
    as PyTorch does on ties); windows that overlap (stride < kernel_size) add up.

    Args:
        dy: (N, C, H', W') gradient of the output; x: (N, C, H, W) the forward input.
        dx: (N, C, H, W) output, overwritten.
    """
    n_images, channels, out_h, out_w = dy.shape
    height, width = x.shape[2], x.shape[3]
    for nc in prange(n_images * channels):
        n = nc // channels
        c = nc % channels
        for y in range(height):
            for x_ in range(width):
                dx[n, c, y, x_] = 0
        for oy in range(out_h):
            for ox in range(out_w):
                # 1. find the window's argmax again (first maximum wins)
                best_y, best_x = window_argmax(x, n, c, oy * stride, oy * stride + kernel_size, ox * stride, ox * stride + kernel_size)
                # 2. only the winner receives the gradient
                dx[n, c, best_y, best_x] += dy[n, c, oy, ox]


# The common 2 x 2 window at stride 2 (every pooling layer of VGG and of the nets here): the windows
# tile the map, so each output reads its own two half-rows, and the backward writes every element of
# dx once (the winner dy, the other three 0) instead of zeroing dx and then adding. Same results as
# the general kernels above: `shared.max_of_four` and `shared.winner_of_four`, which the CUDA kernels
# use for these windows too, are `window_max` and `window_argmax` unrolled. Measured on the 2-core
# VM, 64 x 32 x 32 x 32 float32, against the general kernels: forward 0.87-0.98 -> 0.07-0.08 ms,
# backward 1.50 -> 1.30 ms. The backward indexes x and dx directly: walking row views of them, as
# the forward does, took 2.6 ms there (each view updates a shared reference count in the loop).


@numba.njit(cache=True, parallel=True)
def maxpool2x2_forward(x, y):
    """`maxpool2d_forward` with kernel_size = stride = 2. x: (N, C, H, W); y: (N, C, H // 2, W // 2)."""
    n_images, channels, out_h, out_w = y.shape
    for nc in prange(n_images * channels):
        n = nc // channels
        c = nc % channels
        for oy in range(out_h):
            top = x[n, c, 2 * oy]
            bottom = x[n, c, 2 * oy + 1]
            out = y[n, c, oy]
            for ox in range(out_w):
                out[ox] = max_of_four(top[2 * ox], top[2 * ox + 1], bottom[2 * ox], bottom[2 * ox + 1])


@numba.njit(cache=True, parallel=True)
def maxpool2x2_backward(dy, x, dx):
    """`maxpool2d_backward` with kernel_size = stride = 2: each window's dy goes to its winner, the
    first maximum in row-major order (the last NaN if it holds one). dy: (N, C, H // 2, W // 2);
    x, dx: (N, C, H, W), dx overwritten (0 in a last odd row or column, which no window reads)."""
    n_images, channels, out_h, out_w = dy.shape
    height, width = x.shape[2], x.shape[3]
    for nc in prange(n_images * channels):
        n = nc // channels
        c = nc % channels
        for oy in range(out_h):
            y0 = 2 * oy
            for ox in range(out_w):
                x0 = 2 * ox
                winner = winner_of_four(x[n, c, y0, x0], x[n, c, y0, x0 + 1], x[n, c, y0 + 1, x0], x[n, c, y0 + 1, x0 + 1])
                grad = dy[n, c, oy, ox]
                dx[n, c, y0, x0] = grad if winner == 0 else 0
                dx[n, c, y0, x0 + 1] = grad if winner == 1 else 0
                dx[n, c, y0 + 1, x0] = grad if winner == 2 else 0
                dx[n, c, y0 + 1, x0 + 1] = grad if winner == 3 else 0
            if width % 2:
                dx[n, c, 2 * oy, width - 1] = 0
                dx[n, c, 2 * oy + 1, width - 1] = 0
        if height % 2:
            for j in range(width):
                dx[n, c, height - 1, j] = 0


# ---------------------------------------------------------------------------------------------------
# RoI max pooling (Fast R-CNN, Girshick 2015, section 2.1), with torchvision's rounding and bins
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def roi_cells(roi, spatial_scale):
    """The RoI's first feature-map cell and its size in cells, torchvision's (Caffe's) rule.

    Corners are scaled to the feature map and rounded half away from zero; the size counts both end
    cells (end - start + 1) and is at least 1.

    Returns:
        (start_y, start_x, height, width) as ints.
    """
    start_x = int(round_half_away(roi[1] * spatial_scale))
    start_y = int(round_half_away(roi[2] * spatial_scale))
    end_x = int(round_half_away(roi[3] * spatial_scale))
    end_y = int(round_half_away(roi[4] * spatial_scale))
    return start_y, start_x, max(end_y - start_y + 1, 1), max(end_x - start_x + 1, 1)


@numba.njit(cache=True)
def roi_bins(rois, spatial_scale, pooled_h, pooled_w, height, width):
    """The feature-map cells of every bin of every RoI (computed once, shared by all channels).

    Returns:
        (R, PH, PW, 4) int64 rows (y0, y1, x0, x1): bin (ph, pw) of RoI r covers the cells
        [y0, y1) x [x0, x1), clipped to the (height, width) map; empty when y1 <= y0 or x1 <= x0.
    """
    n_rois = rois.shape[0]
    bins = np.empty((n_rois, pooled_h, pooled_w, 4), dtype=np.int64)
    for r in range(n_rois):
        start_y, start_x, roi_h, roi_w = roi_cells(rois[r], spatial_scale)
        bin_h = roi_h / pooled_h  # bin size in cells (a fraction)
        bin_w = roi_w / pooled_w
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                bins[r, ph, pw, 0] = roi_bin_start(ph, bin_h, start_y, height)
                bins[r, ph, pw, 1] = roi_bin_end(ph, bin_h, start_y, height)
                bins[r, ph, pw, 2] = roi_bin_start(pw, bin_w, start_x, width)
                bins[r, ph, pw, 3] = roi_bin_end(pw, bin_w, start_x, width)
    return bins


@numba.njit(cache=True, parallel=True)
def roi_pool_forward(features, rois, spatial_scale, out):
    """out[r, c, ph, pw] = max of features[b, c] over bin (ph, pw) of RoI r (0 for an empty bin; a NaN wins its bin).

    Args:
        features: (B, C, H, W) float feature maps.
        rois: (R, 5) float, rows (batch_index, x1, y1, x2, y2) in input-image pixels.
        spatial_scale: feature cells per image pixel (1/16 for VGG16's conv5).
        out: (R, C, PH, PW) output.
    """
    n_rois, channels, pooled_h, pooled_w = out.shape
    # 1. each RoI's bins on the feature map
    bins = roi_bins(rois, spatial_scale, pooled_h, pooled_w, features.shape[2], features.shape[3])
    # 2. max-pool each bin of each channel
    for rc in prange(n_rois * channels):
        r = rc // channels
        c = rc % channels
        b = int(rois[r, 0])
        for ph in range(pooled_h):
            for pw in range(pooled_w):
                y0, y1, x0, x1 = bins[r, ph, pw, 0], bins[r, ph, pw, 1], bins[r, ph, pw, 2], bins[r, ph, pw, 3]
                if y1 <= y0 or x1 <= x0:  # the bin fell off the map
                    out[r, c, ph, pw] = 0
                    continue
                out[r, c, ph, pw] = window_max(features, b, c, y0, y1, x0, x1)  # a NaN wins, as in max pooling


@numba.njit(cache=True, parallel=True)
def roi_pool_backward(dout, features, rois, spatial_scale, dfeatures):
    """Add each pooled gradient onto the feature cell that won its bin (Fast R-CNN, eq. 4).

    dL/dx_i = sum over RoIs r and bins j of [i = argmax of bin j of r] * dL/dy_rj, the argmax being the
    first maximum in row-major order on ties, or the bin's last NaN (`shared.window_argmax`).

    Args:
        dout: (R, C, PH, PW) gradient of the pooled output; features, rois, spatial_scale: as forward.
        dfeatures: (B, C, H, W) output, overwritten.
    """
    n_rois, channels, pooled_h, pooled_w = dout.shape
    n_images, height, width = features.shape[0], features.shape[2], features.shape[3]
    bins = roi_bins(rois, spatial_scale, pooled_h, pooled_w, height, width)
    for c in prange(channels):  # a thread owns one channel of every image: RoIs may overlap
        for b in range(n_images):
            for y in range(height):
                for x in range(width):
                    dfeatures[b, c, y, x] = 0
        for r in range(n_rois):
            b = int(rois[r, 0])
            for ph in range(pooled_h):
                for pw in range(pooled_w):
                    y0, y1, x0, x1 = bins[r, ph, pw, 0], bins[r, ph, pw, 1], bins[r, ph, pw, 2], bins[r, ph, pw, 3]
                    if y1 <= y0 or x1 <= x0:
                        continue
                    # 1. find the bin's argmax again
                    best_y, best_x = window_argmax(features, b, c, y0, y1, x0, x1)
                    # 2. only the winner receives the gradient
                    dfeatures[b, c, best_y, best_x] += dout[r, c, ph, pw]


# ---------------------------------------------------------------------------------------------------
# Element-wise layers: ReLU and dropout (flat loops over contiguous arrays)
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True)
def relu_forward(x, y):
    """y = max(x, 0) element-wise (NaN stays NaN); x, y flat (size,) arrays."""
    for k in prange(x.size):
        y[k] = x[k] if relu_passes(x[k]) else 0


@numba.njit(cache=True, parallel=True)
def relu_backward(dy, x, dx):
    """dx = dy where x > 0 or x is NaN, else 0 (the subgradient at 0 is taken as 0, as in PyTorch);
    flat arrays."""
    for k in prange(x.size):
        dx[k] = dy[k] if relu_passes(x[k]) else 0


@numba.njit(cache=True, parallel=True)
def dropout_forward(x, p, seed, y, mask):
    """Inverted dropout (Srivastava et al. 2014): keep unit k with probability 1 - p and scale it by
    1 / (1 - p), so that no rescaling is needed at test time. mask[k] is that factor (0 if dropped).

    Args:
        x, y, mask: flat (size,) arrays of one dtype; p: drop probability in [0, 1); seed: int.
    """
    scale = 1.0 / (1.0 - p)
    for k in prange(x.size):
        keep = dropout_uniform(seed, k) >= p
        mask[k] = scale if keep else 0.0
        y[k] = x[k] * mask[k]


@numba.njit(cache=True, parallel=True)
def multiply(a, b, out):
    """out = a * b element-wise; flat arrays (dropout's backward: dx = dy * mask)."""
    for k in prange(a.size):
        out[k] = a[k] * b[k]


# ---------------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True)
def softmax_cross_entropy(logits, labels, dlogits):
    """Mean over samples of -log softmax(logits[n])[labels[n]], and its gradient.

    Uses log-sum-exp with the row maximum subtracted, so large logits do not overflow:
        loss_n = log(sum_k exp(z_nk - m_n)) + (m_n - z_n,u)
        dL/dz_nk = (softmax(z_n)_k - [k = u_n]) / N
    The difference m_n - z_n,u is taken first: added to m_n, a log-sum of order 1 would vanish in a
    logit of order 1e17 or more (the loss of ties at 3e38 would come out 0 instead of log 2).

    Args:
        logits: (N, K) float; labels: (N,) int64 in [0, K).
        dlogits: (N, K) output, same dtype as logits.

    Returns:
        the mean loss as a float64.
    """
    n_samples, n_classes = logits.shape
    total = 0.0
    for n in range(n_samples):
        # 1. subtract the row maximum (exp never overflows)
        m = logits[n, 0]
        for k in range(1, n_classes):
            m = max(m, logits[n, k])
        # 2. log-sum-exp
        s = 0.0
        for k in range(n_classes):
            s += np.exp(logits[n, k] - m)
        log_sum = np.log(s)
        u = labels[n]
        total += log_sum + (m - logits[n, u])  # (m - z_u) first: see above
        # 3. gradient: softmax minus the one-hot label, averaged over the batch
        for k in range(n_classes):
            dlogits[n, k] = np.exp(logits[n, k] - m - log_sum) / n_samples
        dlogits[n, u] -= 1.0 / n_samples
    return total / n_samples


@numba.njit(cache=True)
def l2_loss(pred, target, grad):
    """sum_k (pred[k] - target[k])**2 and its gradient 2 (pred - target); flat arrays."""
    total = 0.0
    for k in range(pred.size):
        d = pred[k] - target[k]
        total += d * d
        grad[k] = 2 * d
    return total


@numba.njit(cache=True)
def smooth_l1_loss(pred, target, beta, grad):
    """sum_k smooth_l1(pred[k] - target[k]) and its gradient; flat arrays."""
    total = 0.0
    for k in range(pred.size):
        d = pred[k] - target[k]
        total += smooth_l1_value(d, beta)
        grad[k] = smooth_l1_grad(d, beta)
    return total


@numba.njit(cache=True)
def foreground_box_loss(bbox_pred, bbox_targets, labels, use_l2, beta, grad):
    """The sum in the box term of Fast R-CNN's multi-task loss (eq. 1) and its gradient.

        sum over n with u_n >= 1 of sum_j loss(t^{u_n}_nj - v_nj)

    where t^u is the 4 predicted coordinates of class u: columns 4u .. 4u+3 of `bbox_pred` when it
    holds one box per class, columns 0..3 when it holds one class-agnostic box.

    Args:
        bbox_pred: (N, 4) or (N, 4 * n_classes) float; bbox_targets: (N, 4) float targets v.
        labels: (N,) int64 classes u (0 = background, counts nothing).
        use_l2: True for squared error, False for smooth L1 with `beta`.
        grad: like bbox_pred, overwritten with the gradient of the sum (zero outside the selected t^u).

    Returns:
        the sum as a float64.
    """
    n_samples = bbox_pred.shape[0]
    per_class = bbox_pred.shape[1] > 4
    total = 0.0
    for n in range(n_samples):
        for k in range(bbox_pred.shape[1]):
            grad[n, k] = 0
        u = labels[n]
        if u < 1:  # the Iverson bracket [u >= 1]: background has no box
            continue
        first = 4 * u if per_class else 0
        for j in range(4):
            d = bbox_pred[n, first + j] - bbox_targets[n, j]
            if use_l2:
                total += d * d
                grad[n, first + j] = 2 * d
            else:
                total += smooth_l1_value(d, beta)
                grad[n, first + j] = smooth_l1_grad(d, beta)
    return total


# ---------------------------------------------------------------------------------------------------
# Optimiser updates (in place, flat arrays)
# ---------------------------------------------------------------------------------------------------


@numba.njit(cache=True, parallel=True)
def sgd_update(param, grad, velocity, lr, momentum, weight_decay):
    """SGD with momentum and L2 weight decay, PyTorch's form (`shared.sgd_element` per element):

        g = grad + weight_decay * param;  velocity = momentum * velocity + g;  param -= lr * velocity
    """
    for k in prange(param.size):
        sgd_element(param, grad, velocity, k, lr, momentum, weight_decay)


@numba.njit(cache=True, parallel=True)
def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    """Adam (Kingma and Ba 2015, Algorithm 1) with L2 weight decay added to the gradient (PyTorch's
    Adam; `shared.adam_element` per element).

        g = grad + weight_decay * param
        m = beta1 * m + (1 - beta1) * g;   v = beta2 * v + (1 - beta2) * g**2
        param -= lr * (m / (1 - beta1**step)) / (sqrt(v / (1 - beta2**step)) + eps)
    """
    correction1 = 1.0 - beta1**step
    correction2 = 1.0 - beta2**step
    for k in prange(param.size):
        adam_element(param, grad, m, v, k, correction1, correction2, lr, beta1, beta2, eps, weight_decay)
