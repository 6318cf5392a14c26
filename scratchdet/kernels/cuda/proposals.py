"""CUDA twins of the per-pixel stages of region proposals (`scratchdet.kernels.cpu.proposals`).

Colour-space conversion, separable Gaussian smoothing and derivatives, the grid graph's edge weights,
the per-pixel colour and texture bins of Selective Search, and the per-region histograms built from
them with atomic adds. The scalar logic (colour conversions, the reflecting border, the edge weight,
the steerable derivative, the histogram bin) is `scratchdet.kernels.shared.proposals` compiled as
device functions, so GPU and CPU agree on every convention. The graph algorithms that follow
(union-find, hierarchical grouping) are sequential and stay on the CPU.

Every function takes and returns Numba device arrays; one thread handles one pixel.
"""

import math

import numpy as np
from numba import cuda

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu.proposals import EDGE_OFFSETS, N_ORIENTATIONS, gaussian_derivative_kernel, gaussian_kernel
from scratchdet.kernels.cuda.common import empty, require_device
from scratchdet.kernels.cuda.launch import jit
from scratchdet.kernels.shared import proposals as shared

rgb_to_hsv = cuda.jit(device=True)(shared.rgb_to_hsv)
linear_rgb_to_lab = cuda.jit(device=True)(shared.linear_rgb_to_lab)
rgb_to_rgi = cuda.jit(device=True)(shared.rgb_to_rgi)
rgb_to_intensity = cuda.jit(device=True)(shared.rgb_to_intensity)
reflect_index = cuda.jit(device=True)(shared.reflect_index)
edge_weight = cuda.jit(device=True)(shared.edge_weight)
oriented_derivative = cuda.jit(device=True)(shared.oriented_derivative)
histogram_bin = cuda.jit(device=True)(shared.histogram_bin)

# 2-D launches over pixels: 16 x 16 threads, x along columns, y along rows
TILE = 16


def _grid(height, width):
    return (math.ceil(width / TILE), math.ceil(height / TILE)), (TILE, TILE)


def _check(name, a, ndim, dtype):
    require_device(name, a)
    if a.ndim != ndim or a.dtype != np.dtype(dtype):
        raise InvalidArgumentError(f"{name} must be a {ndim}-D {np.dtype(dtype).name} device array, got {a.ndim}-D {a.dtype}")
    return a


# ---------------------------------------------------------------------------------------------------
# colour spaces
# ---------------------------------------------------------------------------------------------------


@jit
def convert_colour_kernel(rgb, space, linear, out):
    """out[i, j, :] = rgb[i, j] in colour space `space` (codes of the shared module), 0..255 scale.

    `linear` is the (256,) float64 table of `srgb_to_linear`, used by Lab.
    """
    j, i = cuda.grid(2)
    if i >= rgb.shape[0] or j >= rgb.shape[1]:
        return
    r = float(rgb[i, j, 0])
    g = float(rgb[i, j, 1])
    b = float(rgb[i, j, 2])
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
    if out.shape[2] == 3:
        out[i, j, 1] = c1
        out[i, j, 2] = c2


def convert_colour(rgb, space):
    """CUDA twin of the CPU `convert_colour`: (H, W, 3) uint8 -> (H, W, C) float32 device array."""
    _check("rgb", rgb, 3, np.uint8)
    if rgb.shape[2] != 3:
        raise InvalidArgumentError(f"rgb must be an (H, W, 3) device array, got shape {rgb.shape}")
    channels = 1 if space in (shared.INTENSITY, shared.HUE) else 3
    linear = cuda.to_device(np.array([shared.srgb_to_linear(float(v)) for v in range(256)]))
    out = cuda.device_array((rgb.shape[0], rgb.shape[1], channels), dtype=np.float32)
    convert_colour_kernel[_grid(rgb.shape[0], rgb.shape[1])](rgb, space, linear, out)
    return out


# ---------------------------------------------------------------------------------------------------
# Gaussian smoothing and derivatives
# ---------------------------------------------------------------------------------------------------


@jit
def correlate_rows_kernel(image, kernel, out):
    """out[i, j, c] = sum_t kernel[t] image[i, reflect(j + t - r), c], float32 in the CPU's tap order."""
    j, i = cuda.grid(2)
    if i >= image.shape[0] or j >= image.shape[1]:
        return
    radius = (kernel.shape[0] - 1) // 2
    for c in range(image.shape[2]):
        acc = np.float32(0.0)
        for t in range(kernel.shape[0]):
            acc += kernel[t] * image[i, reflect_index(j + t - radius, image.shape[1]), c]
        out[i, j, c] = acc


@jit
def correlate_columns_kernel(image, kernel, out):
    """out[i, j, c] = sum_t kernel[t] image[reflect(i + t - r), j, c]."""
    j, i = cuda.grid(2)
    if i >= image.shape[0] or j >= image.shape[1]:
        return
    radius = (kernel.shape[0] - 1) // 2
    for c in range(image.shape[2]):
        acc = np.float32(0.0)
        for t in range(kernel.shape[0]):
            acc += kernel[t] * image[reflect_index(i + t - radius, image.shape[0]), j, c]
        out[i, j, c] = acc


def separable_correlate(image, row_kernel, column_kernel):
    """CUDA twin of the CPU `separable_correlate`: (H, W, C) float32 device array -> the same shape."""
    _check("image", image, 3, np.float32)
    height, width = image.shape[0], image.shape[1]
    rows = cuda.to_device(np.asarray(row_kernel, dtype=np.float32))
    columns = cuda.to_device(np.asarray(column_kernel, dtype=np.float32))
    along_rows = cuda.device_array(image.shape, dtype=np.float32)
    out = cuda.device_array(image.shape, dtype=np.float32)
    correlate_rows_kernel[_grid(height, width)](image, rows, along_rows)
    correlate_columns_kernel[_grid(height, width)](along_rows, columns, out)
    return out


def gaussian_gradients(image, sigma):
    """CUDA twin of the CPU `gaussian_gradients`: (gx, gy), each (H, W, C) float32 device arrays."""
    g = gaussian_kernel(sigma)
    d = gaussian_derivative_kernel(sigma)
    return separable_correlate(image, d, g), separable_correlate(image, g, d)


# ---------------------------------------------------------------------------------------------------
# the grid graph
# ---------------------------------------------------------------------------------------------------


@jit
def grid_weights_kernel(image, offsets, out):
    """out[4 p + d] = colour distance from pixel p to its neighbour in direction d (+inf off the image)."""
    j, i = cuda.grid(2)
    height, width = image.shape[0], image.shape[1]
    if i >= height or j >= width:
        return
    e = 4 * (i * width + j)
    for d in range(4):
        ii = i + offsets[d, 0]
        jj = j + offsets[d, 1]
        if ii < height and jj >= 0 and jj < width:
            out[e + d] = edge_weight(image, i, j, ii, jj)
        else:
            out[e + d] = math.inf


def grid_weights(image):
    """CUDA twin of the CPU `grid_weights`: (H, W, C) float32 -> (4 H W,) float32 device array."""
    _check("image", image, 3, np.float32)
    out = cuda.device_array(4 * image.shape[0] * image.shape[1], dtype=np.float32)
    grid_weights_kernel[_grid(image.shape[0], image.shape[1])](image, cuda.to_device(EDGE_OFFSETS), out)
    return out


# ---------------------------------------------------------------------------------------------------
# histogram bins and per-region histograms
# ---------------------------------------------------------------------------------------------------


@jit
def colour_bins_kernel(image, n_bins, out):
    """out[i, j, c] = the colour bin of image[i, j, c] among n_bins over 0..255."""
    j, i = cuda.grid(2)
    if i >= image.shape[0] or j >= image.shape[1]:
        return
    for c in range(image.shape[2]):
        out[i, j, c] = histogram_bin(image[i, j, c], n_bins / 255.0, n_bins)


def colour_bins(image, n_bins):
    """CUDA twin of the CPU `colour_bins`: (H, W, C) float32 -> (H, W, C) uint8 device array."""
    _check("image", image, 3, np.float32)
    out = cuda.device_array(image.shape, dtype=np.uint8)
    colour_bins_kernel[_grid(image.shape[0], image.shape[1])](image, n_bins, out)
    return out


@jit
def texture_max_kernel(gx, gy, upper):
    """upper[c, o] = max over pixels of the rectified derivative in orientation o (atomic max)."""
    j, i = cuda.grid(2)
    if i >= gx.shape[0] or j >= gx.shape[1]:
        return
    for c in range(gx.shape[2]):
        for o in range(upper.shape[1]):
            cuda.atomic.max(upper, (c, o), oriented_derivative(gx[i, j, c], gy[i, j, c], o))


@jit
def texture_bins_kernel(gx, gy, scale, n_bins, out):
    """out[i, j, c, o] = bin of the rectified derivative, with scale[c, o] = n_bins / its maximum."""
    j, i = cuda.grid(2)
    if i >= gx.shape[0] or j >= gx.shape[1]:
        return
    for c in range(gx.shape[2]):
        for o in range(out.shape[3]):
            d = oriented_derivative(gx[i, j, c], gy[i, j, c], o)
            out[i, j, c, o] = histogram_bin(d, scale[c, o], n_bins)


@jit
def texture_scale_kernel(upper, n_bins, scale):
    """scale[c, o] = n_bins / upper[c, o], or 0 for an orientation with no response at all."""
    c, o = cuda.grid(2)
    if c < upper.shape[0] and o < upper.shape[1]:
        scale[c, o] = n_bins / upper[c, o] if upper[c, o] > 0.0 else 0.0


def texture_bins(gx, gy, n_bins):
    """CUDA twin of the CPU `texture_bins`: (H, W, C) float32 gx, gy -> (H, W, C, 8) uint8."""
    _check("gx", gx, 3, np.float32)
    _check("gy", gy, 3, np.float32)
    height, width, channels = gx.shape
    upper = cuda.to_device(np.zeros((channels, N_ORIENTATIONS), dtype=np.float32))
    texture_max_kernel[_grid(height, width)](gx, gy, upper)
    scale = cuda.device_array((channels, N_ORIENTATIONS), dtype=np.float64)
    texture_scale_kernel[(1, 1), (channels, N_ORIENTATIONS)](upper, n_bins, scale)
    out = cuda.device_array((height, width, channels, N_ORIENTATIONS), dtype=np.uint8)
    texture_bins_kernel[_grid(height, width)](gx, gy, scale, n_bins, out)
    return out


@jit
def region_histograms_kernel(labels, colour_bin, texture_bin, n_colour_bins, n_texture_bins, sizes, colour, texture, bad):
    """Add each pixel to its region's size, colour and texture counts (atomic adds). A pixel whose
    region id or bins lie outside the histograms is counted in bad[0] and left out (the counts are
    indexed by them, and an index outside would write past the arrays)."""
    j, i = cuda.grid(2)
    if i >= labels.shape[0] or j >= labels.shape[1]:
        return
    r = labels[i, j]
    n_orient = texture_bin.shape[3]
    outside = r < 0 or r >= sizes.shape[0]
    for c in range(colour_bin.shape[2]):
        outside = outside or colour_bin[i, j, c] >= n_colour_bins
        for o in range(n_orient):
            outside = outside or texture_bin[i, j, c, o] >= n_texture_bins
    if outside:
        cuda.atomic.add(bad, 0, 1)
        return
    cuda.atomic.add(sizes, r, 1.0)
    for c in range(colour_bin.shape[2]):
        cuda.atomic.add(colour, (r, c * n_colour_bins + colour_bin[i, j, c]), 1)
        for o in range(n_orient):
            cuda.atomic.add(texture, (r, (c * n_orient + o) * n_texture_bins + texture_bin[i, j, c, o]), 1)


@jit
def normalise_rows_kernel(counts, sizes, per_pixel, out):
    """out[r, :] = counts[r, :] / (sizes[r] * per_pixel): each row then sums to 1 (L1 normalisation);
    a region without pixels keeps a zero row."""
    r, k = cuda.grid(2)
    if r < counts.shape[0] and k < counts.shape[1]:
        out[r, k] = counts[r, k] / (sizes[r] * per_pixel) if sizes[r] > 0 else 0.0


def region_histograms(labels, n_regions, colour_bin, texture_bin, n_colour_bins, n_texture_bins):
    """L1-normalised colour and texture histograms of each region, as the CPU `region_statistics`.

    Args:
        labels: (H, W) int32 device array of region ids 0..n_regions-1.
        colour_bin: (H, W, C) uint8; texture_bin: (H, W, C, 8) uint8 device arrays.

    Returns:
        sizes: (R,) float64; colour: (R, C * n_colour_bins) float32; texture: (R, C * 8 * n_texture_bins)
        float32 -- device arrays. A region without pixels has size 0 and zero histograms.
    """
    _check("labels", labels, 2, np.int32)
    _check("colour_bin", colour_bin, 3, np.uint8)
    _check("texture_bin", texture_bin, 4, np.uint8)
    if colour_bin.shape[:2] != labels.shape or texture_bin.shape[:3] != colour_bin.shape:
        raise InvalidArgumentError(
            f"labels (H, W), colour_bin (H, W, C) and texture_bin (H, W, C, 8) must agree, got "
            f"{labels.shape}, {colour_bin.shape} and {texture_bin.shape}"
        )
    height, width, channels = colour_bin.shape
    n_orient = texture_bin.shape[3]
    sizes = cuda.to_device(np.zeros(n_regions, dtype=np.float64))
    # counted in int64 (a float32 count stops growing at 2**24 pixels), then normalised into float32
    colour_counts = cuda.to_device(np.zeros((n_regions, channels * n_colour_bins), dtype=np.int64))
    texture_counts = cuda.to_device(np.zeros((n_regions, channels * n_orient * n_texture_bins), dtype=np.int64))
    bad = cuda.to_device(np.zeros(1, dtype=np.int64))
    region_histograms_kernel[_grid(height, width)](
        labels, colour_bin, texture_bin, n_colour_bins, n_texture_bins, sizes, colour_counts, texture_counts, bad
    )
    n_bad = int(bad.copy_to_host()[0])
    if n_bad:
        raise InvalidArgumentError(
            f"{n_bad} pixels have a region id outside 0..{n_regions - 1} or a bin beyond "
            f"{n_colour_bins} colour / {n_texture_bins} texture bins"
        )
    colour = empty(colour_counts.shape, np.float32)
    texture = empty(texture_counts.shape, np.float32)
    for counts, per_pixel, out in ((colour_counts, channels, colour), (texture_counts, channels * n_orient, texture)):
        grid = (math.ceil(counts.shape[0] / TILE), math.ceil(counts.shape[1] / TILE))
        normalise_rows_kernel[grid, (TILE, TILE)](counts, sizes, float(per_pixel), out)
    return sizes, colour, texture


def compile_signatures():
    """``(name, kernel, argument types)`` of every kernel here, for `numba.cuda.compile_ptx`."""
    from numba import float32, float64, int32, int64, uint8

    f3 = float32[:, :, ::1]
    return [
        ("convert_colour", convert_colour_kernel, (uint8[:, :, ::1], int64, float64[::1], f3)),
        ("correlate_rows", correlate_rows_kernel, (f3, float32[::1], f3)),
        ("correlate_columns", correlate_columns_kernel, (f3, float32[::1], f3)),
        ("grid_weights", grid_weights_kernel, (f3, int64[:, ::1], float32[::1])),
        ("colour_bins", colour_bins_kernel, (f3, int64, uint8[:, :, ::1])),
        ("texture_max", texture_max_kernel, (f3, f3, float32[:, ::1])),
        ("texture_scale", texture_scale_kernel, (float32[:, ::1], int64, float64[:, ::1])),
        ("texture_bins", texture_bins_kernel, (f3, f3, float64[:, ::1], int64, uint8[:, :, :, ::1])),
        ("region_histograms", region_histograms_kernel,
         (int32[:, ::1], uint8[:, :, ::1], uint8[:, :, :, ::1], int64, int64, float64[::1], int64[:, ::1], int64[:, ::1],
          int64[::1])),
        ("normalise_rows", normalise_rows_kernel, (int64[:, ::1], float64[::1], float64, float32[:, ::1])),
    ]
