"""The per-pixel stages of Selective Search on either backend: NumPy arrays run the Numba CPU kernels,
Numba CUDA device arrays the CUDA kernels (`scratchdet.kernels.cuda.proposals`).

`selective_search` itself runs on the CPU (union-find and the greedy grouping are sequential); these
functions let a reader run, time and compare the data-parallel stages on a GPU.
"""

import numpy as np

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import proposals as kernels
from scratchdet.kernels.shared.proposals import COLOUR_SPACE_CODES


def _cuda():
    from scratchdet.kernels.cuda import proposals

    return proposals


def _space_code(colour_space):
    if colour_space not in COLOUR_SPACE_CODES:
        raise InvalidArgumentError(f"colour_space must be one of {sorted(COLOUR_SPACE_CODES)}, got {colour_space!r}")
    return COLOUR_SPACE_CODES[colour_space]


def convert_colour(rgb, colour_space):
    """(H, W, 3) uint8 RGB -> (H, W, C) float32 in "rgb", "hsv", "lab", "rgi", "i" or "h", 0..255 scale."""
    if is_cuda_array(rgb):
        return _cuda().convert_colour(rgb, _space_code(colour_space))
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        # the kernel reads three channels and looks uint8 values up in a 256-entry table, unchecked
        raise InvalidArgumentError(f"rgb must be an (H, W, 3) uint8 array, got shape {rgb.shape} and dtype {rgb.dtype}")
    return kernels.convert_colour(np.ascontiguousarray(rgb), _space_code(colour_space))


def smooth(image, sigma):
    """Gaussian smoothing of each channel, borders reflected: (H, W, C) float32 -> (H, W, C) float32."""
    g = kernels.gaussian_kernel(sigma)
    if is_cuda_array(image):
        return _cuda().separable_correlate(image, g, g)
    return kernels.separable_correlate(image, g, g)


def gaussian_gradients(image, sigma):
    """Gaussian derivatives (gx, gy) of each channel: (H, W, C) float32 -> two (H, W, C) float32."""
    if is_cuda_array(image):
        return _cuda().gaussian_gradients(image, sigma)
    return kernels.gaussian_gradients(image, sigma)


def grid_weights(image):
    """Edge weights of the 8-connected grid graph: (H, W, C) float32 -> (4 H W,) float32 (+inf off the image)."""
    if is_cuda_array(image):
        return _cuda().grid_weights(image)
    return kernels.grid_weights(np.ascontiguousarray(image, dtype=np.float32))


def colour_bins(image, n_bins=25):
    """Per-pixel colour bins: (H, W, C) float32 on 0..255 -> (H, W, C) uint8."""
    if is_cuda_array(image):
        return _cuda().colour_bins(image, n_bins)
    return kernels.colour_bins(np.ascontiguousarray(image, dtype=np.float32), n_bins)


def texture_bins(gx, gy, n_bins=10):
    """Per-pixel texture bins in 8 orientations: (H, W, C) float32 gx, gy -> (H, W, C, 8) uint8."""
    if is_cuda_array(gx):
        return _cuda().texture_bins(gx, gy, n_bins)
    return kernels.texture_bins(gx, gy, n_bins)


def region_histograms(labels, n_regions, colour_bin, texture_bin, n_colour_bins=25, n_texture_bins=10):
    """Sizes and L1-normalised colour and texture histograms of the regions of a segmentation.

    Args:
        labels: (H, W) int32 region ids 0..n_regions-1.
        colour_bin: (H, W, C) uint8; texture_bin: (H, W, C, 8) uint8.

    Returns:
        sizes (R,) float64, colour (R, C * n_colour_bins) float32, texture (R, C * 8 * n_texture_bins) float32;
        each row sums to 1, but a region without pixels has size 0 and zero histograms.
    """
    if is_cuda_array(labels):
        return _cuda().region_histograms(labels, n_regions, colour_bin, texture_bin, n_colour_bins, n_texture_bins)
    from scratchdet.proposals.selective_search import region_statistics

    labels, colour_bin, texture_bin = _check_region_inputs(
        labels, n_regions, colour_bin, texture_bin, n_colour_bins, n_texture_bins
    )
    sizes, _, colour, texture, _ = region_statistics(
        labels, int(n_regions), colour_bin, texture_bin, n_colour_bins, n_texture_bins
    )
    return sizes, colour, texture


def _check_region_inputs(labels, n_regions, colour_bin, texture_bin, n_colour_bins, n_texture_bins):
    """The CPU inputs of `region_histograms`, checked: the kernel uses region ids and bins as indices
    into its histograms unchecked, so one out of range would write outside them (and crash)."""
    labels = np.asarray(labels)
    colour_bin = np.asarray(colour_bin)
    texture_bin = np.asarray(texture_bin)
    if labels.ndim != 2 or labels.dtype.kind not in "iu":
        raise InvalidArgumentError(f"labels must be an (H, W) integer array, got {labels.shape} {labels.dtype}")
    if labels.size and (labels.min() < 0 or labels.max() >= n_regions):
        raise InvalidArgumentError(f"labels must be region ids 0..{n_regions - 1}, got {labels.min()}..{labels.max()}")
    if colour_bin.dtype != np.uint8 or colour_bin.ndim != 3 or colour_bin.shape[:2] != labels.shape:
        raise InvalidArgumentError(
            f"colour_bin must be (H, W, C) uint8 with labels' (H, W) {labels.shape}, got {colour_bin.shape} {colour_bin.dtype}"
        )
    if texture_bin.dtype != np.uint8 or texture_bin.ndim != 4 or texture_bin.shape[:3] != colour_bin.shape:
        raise InvalidArgumentError(
            f"texture_bin must be (H, W, C, 8) uint8 with colour_bin's (H, W, C), got {texture_bin.shape} {texture_bin.dtype}"
        )
    for name, bins, n_bins in (("colour_bin", colour_bin, n_colour_bins), ("texture_bin", texture_bin, n_texture_bins)):
        if bins.size and bins.max() >= n_bins:
            raise InvalidArgumentError(f"{name} holds bin {bins.max()}, beyond its {n_bins} bins")
    return np.ascontiguousarray(labels, dtype=np.int32), colour_bin, texture_bin
