"""Graph-based image segmentation (Felzenszwalb and Huttenlocher, IJCV 2004).

Pixels are the vertices of an 8-connected grid graph whose edges weigh the colour distance between
neighbours. Kruskal's algorithm visits the edges from light to heavy and joins two components when
the edge is no heavier than either component's internal difference plus ``k / |C|`` (the paper's
predicate, eq. 4-5). The result is "neither too coarse nor too fine" (Theorems 1 and 2): every
segment is connected, and two adjacent segments are separated by an edge heavier than MInt.

These segments are the starting regions of Selective Search (`selective_search.py`).
"""

import math
import numbers

import numba
import numpy as np

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import proposals as kernels

_jit = numba.njit(cache=True, nogil=True)

# The largest pixel magnitude accepted, on the 0..255 scale: the colour distances are float32, and
# their squared differences overflow to +inf (an edge "off the image") from about 1e19.
MAX_PIXEL_MAGNITUDE = 1e15

# The widest smoothing accepted: its kernel has 8 million taps (64 MB), and far wider ones cannot be
# allocated. Any image is flat long before this.
MAX_SIGMA = 1e6


@_jit
def find_root(parent, x):
    """The root of `x`'s tree in the union-find forest, halving the path on the way up.

    parent: (V,) int32 parent of each vertex (a root is its own parent), updated in place; x: a vertex
    index. Returns the root's index."""
    while parent[x] != x:
        parent[x] = parent[parent[x]]
        x = parent[x]
    return x


@_jit
def join_roots(parent, size, ra, rb):
    """Hang the smaller of two root trees under the larger; returns the new root.

    parent, size: (V,) int32 parent and tree size of each vertex, updated in place; ra, rb: two
    distinct roots."""
    if size[ra] < size[rb]:
        ra, rb = rb, ra
    parent[rb] = ra
    size[ra] += size[rb]
    return ra


@_jit
def segment_graph(height, width, order, sorted_weights, k, min_size):
    """Felzenszwalb-Huttenlocher segmentation of the grid graph, edges visited from light to heavy.

    Args:
        height, width: image size; the vertices are the pixels ``p = i * width + j``.
        order: (E,) int32 grid-edge indices (see `kernels.grid_weights`) sorted by weight.
        sorted_weights: (E,) float32 their weights, non-decreasing; +inf marks edges off the image.
        k: the scale of the threshold function ``tau(C) = k / |C|`` (eq. 5).
        min_size: components smaller than this are merged into a neighbour afterwards (sec. 4.1);
            0 or 1 keeps the raw result of Algorithm 1.

    Returns:
        (height * width,) int32 labels 0..n_segments-1, numbered in raster order of first appearance.
    """
    n_vertices = height * width
    parent = np.arange(n_vertices).astype(np.int32)
    size = np.ones(n_vertices, dtype=np.int32)
    internal = np.zeros(n_vertices, dtype=np.float64)  # Int(C): heaviest edge of C's spanning tree
    rejected = np.empty(order.shape[0], dtype=np.int32)  # edges between components, in order
    n_rejected = 0
    # 1. visit edges from light to heavy (Algorithm 1, steps 1-3); +inf marks the end
    for e in range(order.shape[0]):
        if sorted_weights[e] == np.inf:
            break
        a, b = kernels.edge_ends(order[e], width)
        ra = find_root(parent, a)
        rb = find_root(parent, b)
        if ra == rb:
            continue
        # 2. merge when w <= MInt(C1, C2) = min(Int(C1) + k/|C1|, Int(C2) + k/|C2|)   (eq. 4)
        m_int = min(internal[ra] + k / size[ra], internal[rb] + k / size[rb])
        if sorted_weights[e] <= m_int:
            root = join_roots(parent, size, ra, rb)
            internal[root] = sorted_weights[e]  # edges arrive in order: the new heaviest tree edge
        else:
            rejected[n_rejected] = order[e]
            n_rejected += 1
    # 3. merge components smaller than min_size across the lightest edges first (sec. 4.1); an
    #    edge inside a component stays inside, so only the rejected edges can join two of them
    if min_size > 1:
        for e in range(n_rejected):
            a, b = kernels.edge_ends(rejected[e], width)
            ra = find_root(parent, a)
            rb = find_root(parent, b)
            if ra != rb and (size[ra] < min_size or size[rb] < min_size):
                join_roots(parent, size, ra, rb)
    # 4. number the segments in raster order
    labels = np.empty(n_vertices, dtype=np.int32)
    label_of_root = np.full(n_vertices, -1, dtype=np.int32)
    n_segments = 0
    for p in range(n_vertices):
        root = find_root(parent, p)
        if label_of_root[root] < 0:
            label_of_root[root] = n_segments
            n_segments += 1
        labels[p] = label_of_root[root]
    return labels


def as_float_image(image, name="image"):
    """An image as (H, W, C) float32 on a 0..255 scale, for the graph weights.

    uint8 images are taken as they are; bool images are 0 or 255 (True is full intensity, as in
    `scratchdet.data.images.as_rgb_uint8` and scikit-image); other integer types are scaled by their
    maximum (uint16: 65535 -> 255); float images are taken to lie in [0, 1], as scikit-image does.

    Args:
        image: (H, W) or (H, W, C) array. Needs at least two pixels.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3 or image.shape[2] < 1:
        raise InvalidArgumentError(f"{name} must be (H, W) or (H, W, C), got shape {image.shape}")
    if image.shape[0] * image.shape[1] < 2:
        raise InvalidArgumentError(
            f"{name} must have at least 2 pixels to segment, got a {image.shape[0]}x{image.shape[1]} image"
        )
    if image.dtype == np.uint8:
        out = image.astype(np.float32)
    elif image.dtype == np.bool_:
        out = image.astype(np.float32) * 255.0
    elif np.issubdtype(image.dtype, np.integer):
        info = np.iinfo(image.dtype)
        out = image.astype(np.float64) * (255.0 / info.max)
    elif np.issubdtype(image.dtype, np.floating):
        out = image.astype(np.float64) * 255.0
    else:
        raise InvalidArgumentError(f"{name} must be a numeric array, got dtype {image.dtype}")
    if not np.all(np.isfinite(out)):
        raise InvalidArgumentError(f"{name} contains NaN or infinite values")
    if np.issubdtype(image.dtype, np.floating) and np.abs(out).max() > MAX_PIXEL_MAGNITUDE:
        raise InvalidArgumentError(
            f"{name} has values up to {np.abs(image).max():g}, too large to segment "
            f"(float images are taken to lie in [0, 1]; at most {MAX_PIXEL_MAGNITUDE / 255.0:g})"
        )
    return np.ascontiguousarray(out, dtype=np.float32)


def grid_graph(image, sigma=0.8):
    """The weighted 8-connected grid graph of an image (Felzenszwalb and Huttenlocher 2004, sec. 4.1).

    Args:
        image: (H, W) or (H, W, C) image (see `as_float_image` for dtypes).
        sigma: standard deviation of the Gaussian smoothing applied first (0 for none).

    Returns:
        a, b: (E,) int64 pixel indices ``row * W + col`` of each edge's ends, E = 4HW - 3H - 3W + 2;
        w: (E,) float32 colour distances on the 0..255 scale between the smoothed pixels.
    """
    pixels = as_float_image(image)
    width = pixels.shape[1]
    weights = kernels.grid_weights(smooth(pixels, sigma))
    edges = np.flatnonzero(np.isfinite(weights))
    a = edges >> 2
    b = a + kernels.EDGE_OFFSETS[edges & 3, 0] * width + kernels.EDGE_OFFSETS[edges & 3, 1]
    return a, b, weights[edges]


def smooth(image, sigma):
    """Gaussian smoothing of every channel: (H, W, C) float32 -> (H, W, C) float32 (borders reflect)."""
    if sigma <= 0:
        return image
    g = kernels.gaussian_kernel(sigma)
    return kernels.separable_correlate(image, g, g)


def _finite_non_negative(name, value):
    """`value` as a float, or an `InvalidArgumentError` naming `name` unless it is a finite number >= 0."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def felzenszwalb(image, scale=100.0, sigma=0.8, min_size=50):
    """Segment an image with the Felzenszwalb-Huttenlocher algorithm (IJCV 2004).

    Args:
        image: (H, W, 3) uint8 RGB, or any (H, W) / (H, W, C) image (see `as_float_image`).
        scale: k of the threshold ``tau(C) = k / |C|`` for colours on the 0..255 scale; larger k,
            larger segments (the same meaning as scikit-image's `scale`).
        sigma: Gaussian smoothing before the graph is built (0 for none, at most `MAX_SIGMA`).
        min_size: integer >= 0; segments smaller than this are merged into a neighbour afterwards.

    Returns:
        (H, W) int32 segment ids 0..n-1, numbered in raster order of first appearance.
    """
    scale = _finite_non_negative("scale", scale)
    sigma = _finite_non_negative("sigma", sigma)
    if sigma > MAX_SIGMA:
        raise InvalidArgumentError(f"sigma must be at most {MAX_SIGMA:g} pixels (a Gaussian wider than any image), got {sigma!r}")
    if (
        isinstance(min_size, bool)
        or not isinstance(min_size, numbers.Real)
        or not (isinstance(min_size, numbers.Integral) or math.isfinite(min_size))  # int(nan) would raise
        or min_size != int(min_size)
        or min_size < 0
    ):
        raise InvalidArgumentError(f"min_size must be an integer >= 0, got {min_size!r}")
    pixels = as_float_image(image)
    height, width = pixels.shape[:2]
    # 1. smooth, 2. weigh the grid graph's edges, 3. sort them by weight
    order, sorted_weights = kernels.radix_argsort(kernels.grid_weights(smooth(pixels, sigma)))
    # 4. Kruskal with the k / |C| threshold, then merge small segments
    # (a min_size above the pixel count means "one segment", like H*W + 1: clamped to fit an int64)
    min_size = min(int(min_size), height * width + 1)
    labels = segment_graph(height, width, order, sorted_weights, float(scale), min_size)
    return labels.reshape(height, width)
