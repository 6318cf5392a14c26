"""CPU (Numba) kernels of the per-pixel stages of region proposals.

Colour-space conversion, Gaussian smoothing, the 8-connected grid graph of Felzenszwalb and
Huttenlocher (2004), Gaussian-derivative texture maps and the per-pixel histogram bins of Selective
Search (Uijlings et al. 2013), plus a stable radix argsort for the edge weights. The scalar logic
lives in `scratchdet.kernels.shared.proposals` and is shared with the CUDA kernels in
`scratchdet.kernels.cuda.proposals`. Every kernel is ``nogil`` so that several colour spaces can be
processed by threads at once.
"""

import numba
import numpy as np

from scratchdet.kernels.shared import proposals as shared

_jit = numba.njit(cache=True, nogil=True)

rgb_to_hsv = _jit(shared.rgb_to_hsv)
srgb_to_linear = _jit(shared.srgb_to_linear)
linear_rgb_to_lab = _jit(shared.linear_rgb_to_lab)
rgb_to_rgi = _jit(shared.rgb_to_rgi)
rgb_to_intensity = _jit(shared.rgb_to_intensity)
reflect_index = _jit(shared.reflect_index)
edge_weight = _jit(shared.edge_weight)
oriented_derivative = _jit(shared.oriented_derivative)
histogram_bin = _jit(shared.histogram_bin)

N_ORIENTATIONS = 8


def gaussian_kernel(sigma):
    """The 1-D Gaussian ``g(t) ~ exp(-t^2 / 2 sigma^2)``, t = -r..r with r = int(4 sigma + 0.5), summing to 1.

    The truncation radius is scipy.ndimage's default (``truncate=4``). Returns float64 (2r + 1,);
    ``sigma <= 0`` gives the identity kernel ``[1.0]``.
    """
    if sigma <= 0:
        return np.ones(1)
    radius = int(4.0 * sigma + 0.5)
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    g = np.exp(-0.5 * (t / sigma) ** 2)
    return g / g.sum()


def gaussian_derivative_kernel(sigma):
    """The 1-D first derivative of the Gaussian, as a correlation kernel: float64 (2r + 1,).

    ``d(t) = t / sigma^2 * g(t)``, so that correlating it with the ramp ``f(x) = x`` gives 1.
    """
    g = gaussian_kernel(sigma)
    radius = (g.shape[0] - 1) // 2
    t = np.arange(-radius, radius + 1, dtype=np.float64)
    d = t * g
    return d / np.sum(t * d)


@_jit
def convert_colour(rgb, space):
    """Convert an RGB image to one of Selective Search's colour spaces.

    Args:
        rgb: (H, W, 3) uint8 RGB.
        space: integer code from `scratchdet.kernels.shared.proposals` (RGB, HSV, LAB, RGI, INTENSITY, HUE).

    Returns:
        (H, W, C) float32 on a 0..255 scale, C = 3, or 1 for INTENSITY and HUE.
    """
    height, width = rgb.shape[0], rgb.shape[1]
    channels = 1 if (space == 4 or space == 5) else 3
    out = np.empty((height, width, channels), dtype=np.float32)
    linear = np.empty(256, dtype=np.float64)  # the sRGB gamma of each uint8 value, computed once
    for v in range(256):
        linear[v] = srgb_to_linear(np.float64(v))
    for i in range(height):
        for j in range(width):
            r = np.float64(rgb[i, j, 0])
            g = np.float64(rgb[i, j, 1])
            b = np.float64(rgb[i, j, 2])
            if space == 0:
                c0, c1, c2 = r, g, b
            elif space == 1:
                c0, c1, c2 = rgb_to_hsv(r, g, b)
            elif space == 2:
                c0, c1, c2 = linear_rgb_to_lab(linear[rgb[i, j, 0]], linear[rgb[i, j, 1]], linear[rgb[i, j, 2]])
            elif space == 3:
                c0, c1, c2 = rgb_to_rgi(r, g, b)
            elif space == 4:
                c0, c1, c2 = rgb_to_intensity(r, g, b), 0.0, 0.0
            else:
                c0, c1, c2 = rgb_to_hsv(r, g, b)
            out[i, j, 0] = c0
            if channels == 3:
                out[i, j, 1] = c1
                out[i, j, 2] = c2
    return out


@_jit
def reflect_table(n, radius):
    """(n + 2 radius,) int64 source index of each padded position: ``table[t] = reflect_index(t - radius, n)``."""
    table = np.empty(n + 2 * radius, dtype=np.int64)
    for t in range(n + 2 * radius):
        table[t] = reflect_index(t - radius, n)
    return table


@_jit
def correlate_columns(image, kernel):
    """Correlate every channel with a 1-D kernel down the columns (axis 0), borders reflected.

    ``out[i, j, c] = sum_t kernel[t] * image[reflect(i + t - r), j, c]``.

    Args:
        image: (H, W, C) float32, C-contiguous.
        kernel: (2r + 1,) float32.

    Returns:
        (H, W, C) float32.
    """
    height, width, channels = image.shape
    radius = (kernel.shape[0] - 1) // 2
    rows = reflect_table(height, radius)
    src = image.reshape(height, width * channels)  # (H, W*C): whole rows are contiguous
    out = np.zeros((height, width * channels), dtype=np.float32)
    for i in range(height):
        for t in range(kernel.shape[0]):
            kt = kernel[t]
            s = rows[i + t]
            for q in range(width * channels):
                out[i, q] += kt * src[s, q]
    return out.reshape(height, width, channels)


@_jit
def correlate_rows(image, kernel):
    """Correlate every channel with a 1-D kernel along the rows (axis 1), borders reflected.

    ``out[i, j, c] = sum_t kernel[t] * image[i, reflect(j + t - r), c]``. Each row is first copied
    into a reflected, padded buffer so that the inner loop runs over contiguous memory.

    Args:
        image: (H, W, C) float32, C-contiguous.
        kernel: (2r + 1,) float32.

    Returns:
        (H, W, C) float32.
    """
    height, width, channels = image.shape
    radius = (kernel.shape[0] - 1) // 2
    cols = reflect_table(width, radius)
    padded = np.empty((width + 2 * radius) * channels, dtype=np.float32)  # one row, reflected
    out = np.zeros((height, width * channels), dtype=np.float32)
    for i in range(height):
        for p in range(width + 2 * radius):
            for c in range(channels):
                padded[p * channels + c] = image[i, cols[p], c]
        for t in range(kernel.shape[0]):
            kt = kernel[t]
            offset = t * channels
            for q in range(width * channels):
                out[i, q] += kt * padded[q + offset]
    return out.reshape(height, width, channels)


def separable_correlate(image, row_kernel, column_kernel):
    """Correlate with `row_kernel` along rows, then `column_kernel` down columns (borders reflect).

    Args:
        image: (H, W, C) float32.
        row_kernel, column_kernel: 1-D arrays of odd length.

    Returns:
        (H, W, C) float32.
    """
    image = np.ascontiguousarray(image, dtype=np.float32)
    along_rows = correlate_rows(image, np.asarray(row_kernel, dtype=np.float32))
    return correlate_columns(along_rows, np.asarray(column_kernel, dtype=np.float32))


# The four grid edges that leave each pixel: right, down, down-right, down-left (row, col offsets).
EDGE_OFFSETS = np.array([[0, 1], [1, 0], [1, 1], [1, -1]], dtype=np.int64)


@_jit
def grid_weights(image):
    """Edge weights of the 8-connected grid graph: Euclidean colour distances between neighbours.

    Edge ``e = 4 * p + d`` joins pixel ``p = i * W + j`` to its neighbour in direction d: right,
    down, down-right, down-left (`EDGE_OFFSETS`), so every 8-neighbour pair appears exactly once
    (Felzenszwalb and Huttenlocher 2004, sec. 4.1). The edge's ends follow from its index, so no
    endpoint arrays are stored. Edges that would leave the image weigh +inf.

    Args:
        image: (H, W, C) float32, usually smoothed.

    Returns:
        (4 * H * W,) float32 weights ``||image[p] - image[q]||``.
    """
    height, width = image.shape[0], image.shape[1]
    w = np.empty(4 * height * width, dtype=np.float32)
    for i in range(height):
        for j in range(width):
            e = 4 * (i * width + j)
            for d in range(4):
                ii = i + EDGE_OFFSETS[d, 0]
                jj = j + EDGE_OFFSETS[d, 1]
                if ii < height and 0 <= jj < width:
                    w[e + d] = edge_weight(image, i, j, ii, jj)
                else:
                    w[e + d] = np.inf
    return w


@_jit
def edge_ends(edge, width):
    """The two pixel indices joined by grid edge ``edge = 4 * p + d`` in an image `width` wide."""
    p = edge >> 2
    d = edge & 3
    return p, p + EDGE_OFFSETS[d, 0] * width + EDGE_OFFSETS[d, 1]


@_jit
def radix_argsort(weights):
    """Stable argsort of non-negative float32 weights: an LSD radix sort, three passes of 11 bits.

    The bit pattern of a non-negative IEEE float orders like the float, so sorting the uint32 view
    sorts the weights. Equal weights keep their input order, on every machine.

    Args:
        weights: (E,) float32, all >= 0.

    Returns:
        order: (E,) int32 permutation such that ``weights[order]`` is non-decreasing;
        sorted_weights: (E,) float32, ``weights[order]``.
    """
    n = weights.shape[0]
    keys = weights.view(np.uint32).copy()
    order = np.arange(n).astype(np.int32)
    keys_out = np.empty(n, dtype=np.uint32)
    order_out = np.empty(n, dtype=np.int32)
    for shift in (0, 11, 22):
        # 1. count keys per 11-bit digit
        counts = np.zeros(2049, dtype=np.int64)
        for e in range(n):
            counts[((keys[e] >> shift) & 0x7FF) + 1] += 1
        if counts.max() == n:
            continue  # every key has the same digit here: this pass would not move anything
        # 2. prefix sums give each digit's first slot
        for d in range(2048):
            counts[d + 1] += counts[d]
        # 3. scatter, keeping the order within a digit (this is what makes the sort stable)
        for e in range(n):
            digit = (keys[e] >> shift) & 0x7FF
            slot = counts[digit]
            keys_out[slot] = keys[e]
            order_out[slot] = order[e]
            counts[digit] = slot + 1
        keys, keys_out = keys_out, keys
        order, order_out = order_out, order
    return order, keys.view(np.float32)


@_jit
def colour_bins(image, n_bins):
    """Per-pixel colour-histogram bins: (H, W, C) float32 on 0..255 -> (H, W, C) uint8 in [0, n_bins)."""
    height, width, channels = image.shape
    out = np.empty((height, width, channels), dtype=np.uint8)
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                out[i, j, c] = histogram_bin(image[i, j, c], n_bins / 255.0, n_bins)
    return out


@_jit
def texture_bins(gx, gy, n_bins):
    """Per-pixel texture-histogram bins of Selective Search (Uijlings et al. 2013, sec. 3.2).

    For each channel and each of the 8 orientations, the rectified Gaussian derivative is binned into
    `n_bins` equal bins between 0 and its maximum over the image.

    Args:
        gx, gy: (H, W, C) float32 Gaussian derivatives along columns (x) and rows (y).
        n_bins: bins per orientation and channel (10 in the paper).

    Returns:
        (H, W, C, 8) uint8 bins.
    """
    height, width, channels = gx.shape
    # 1. the largest response of each (channel, orientation) sets the histogram range
    upper = np.zeros((channels, N_ORIENTATIONS), dtype=np.float64)
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                for o in range(N_ORIENTATIONS):
                    upper[c, o] = max(upper[c, o], oriented_derivative(gx[i, j, c], gy[i, j, c], o))
    scale = np.zeros((channels, N_ORIENTATIONS), dtype=np.float64)
    for c in range(channels):
        for o in range(N_ORIENTATIONS):
            if upper[c, o] > 0.0:
                scale[c, o] = n_bins / upper[c, o]
    # 2. bin every response
    out = np.empty((height, width, channels, N_ORIENTATIONS), dtype=np.uint8)
    for i in range(height):
        for j in range(width):
            for c in range(channels):
                for o in range(N_ORIENTATIONS):
                    d = oriented_derivative(gx[i, j, c], gy[i, j, c], o)
                    out[i, j, c, o] = histogram_bin(d, scale[c, o], n_bins)
    return out


def gaussian_gradients(image, sigma):
    """Gaussian derivatives of every channel: (H, W, C) float32 -> (gx, gy), each (H, W, C) float32.

    ``gx`` differentiates along columns (x) and smooths down rows; ``gy`` the other way round.
    """
    g = gaussian_kernel(sigma)
    d = gaussian_derivative_kernel(sigma)
    return separable_correlate(image, d, g), separable_correlate(image, g, d)


__all__ = [
    "colour_bins",
    "convert_colour",
    "gaussian_derivative_kernel",
    "gaussian_gradients",
    "gaussian_kernel",
    "edge_ends",
    "grid_weights",
    "radix_argsort",
    "separable_correlate",
    "texture_bins",
]
