"""Selective Search region proposals (Uijlings, van de Sande, Gevers and Smeulders, IJCV 2013).

Start from a Felzenszwalb-Huttenlocher over-segmentation, then repeatedly merge the two most similar
adjacent regions until one region covers the image (sec. 3.1, Algorithm 1). Every region created on
the way is a proposal. Similarity combines colour, texture, size and fill (sec. 3.2). Diversity comes
from running several strategies -- colour spaces x k values x similarity combinations -- and
interleaving their hierarchies with the paper's ``position x random`` ranking (sec. 3.3).

Reading order: `Strategy` and `MODES`; `region_statistics` (histograms, boxes, adjacency of the
starting regions); `hierarchical_grouping` (the greedy merging, with a heap over neighbour pairs);
`selective_search` (strategies, ranking, de-duplication).
"""

import concurrent.futures
import contextlib
import dataclasses
import math
import numbers
import os

import numba
import numpy as np

from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import proposals as kernels
from scratchdet.kernels.shared.proposals import COLOUR_SPACE_CODES
from scratchdet.proposals.felzenszwalb import segment_graph

_jit = numba.njit(cache=True, nogil=True)

COLOUR_BINS = 25  # per channel (sec. 3.2, colour similarity)
TEXTURE_BINS = 10  # per orientation and channel (sec. 3.2, texture similarity)
TEXTURE_SIGMA = 1.0  # Gaussian derivatives with sigma = 1
SEGMENTATION_SIGMA = 0.8  # Felzenszwalb smoothing, as in the authors' code


@dataclasses.dataclass(frozen=True)
class Strategy:
    """One grouping strategy: a colour space, Felzenszwalb's k, and a similarity combination.

    `similarity` names the summed terms: C colour, T texture, S size, F fill (``"CTSF"``, ``"TSF"``,
    ``"F"``, ``"S"``). The starting regions use ``min_size = k`` as in the authors' code.
    """

    colour_space: str
    k: float
    similarity: str

    def __post_init__(self):
        if not isinstance(self.colour_space, str) or self.colour_space not in COLOUR_SPACE_CODES:
            raise InvalidArgumentError(
                f"colour_space must be one of {sorted(COLOUR_SPACE_CODES)}, got {self.colour_space!r}"
            )
        if not isinstance(self.similarity, str) or not self.similarity or set(self.similarity) - set("CTSF"):
            raise InvalidArgumentError(f"similarity must be letters from 'CTSF', got {self.similarity!r}")
        if isinstance(self.k, bool) or not isinstance(self.k, numbers.Real) or not 0 < self.k < math.inf:
            raise InvalidArgumentError(f"k must be a finite number > 0, got {self.k!r}")


def _strategies(colour_spaces, ks, similarities):
    return tuple(Strategy(c, float(k), s) for c in colour_spaces for k in ks for s in similarities)


# The paper's strategy sets (sec. 5.2 and Table 5): "single", "Selective Search Fast" and "Quality".
MODES = {
    "single": _strategies(("hsv",), (100,), ("CTSF",)),
    "fast": _strategies(("hsv", "lab"), (50, 100), ("CTSF", "TSF")),
    "quality": _strategies(("hsv", "lab", "rgi", "h", "i"), (50, 100, 150, 300), ("CTSF", "TSF", "F", "S")),
}


@dataclasses.dataclass(frozen=True)
class Hierarchy:
    """The merge tree that one strategy builds, for teaching and plotting.

    Regions ``0..R-1`` are the starting segments; merge ``m`` joins regions ``merges[m]`` into the new
    region ``R + m`` (the convention of scipy's linkage matrices).

    Attributes:
        strategy: the `Strategy` that built it.
        labels: (H, W) int32 starting segmentation, values 0..R-1.
        merges: (R-1, 2) int32 the two regions joined at each step, in order.
        boxes: (2R-1, 4) float32 xyxy box of every region, starting regions first, then merge order.
        levels: (2R-1,) int32 depth in the tree: 0 for starting regions, 1 + max(children) after.
    """

    strategy: Strategy
    labels: np.ndarray
    merges: np.ndarray
    boxes: np.ndarray
    levels: np.ndarray


# ---------------------------------------------------------------------------------------------
# Starting regions: sizes, boxes, histograms and adjacency
# ---------------------------------------------------------------------------------------------


@_jit
def region_statistics(labels, n_regions, colour_bin, texture_bin, n_colour_bins, n_texture_bins):
    """Sizes, boxes, L1-normalised histograms and neighbour pairs of the starting regions.

    Args:
        labels: (H, W) int32 region ids 0..R-1.
        n_regions: R.
        colour_bin: (H, W, C) uint8 colour bin of each pixel and channel.
        texture_bin: (H, W, C, 8) uint8 texture bin of each pixel, channel and orientation.
        n_colour_bins, n_texture_bins: bins per channel (25) and per channel-orientation (10).

    Returns:
        sizes: (R,) float64 pixel counts.
        boxes: (R, 4) int32 xyxy, exclusive right/bottom (a pixel covers [j, j+1) x [i, i+1)).
        colour: (R, C * n_colour_bins) float32, each row sums to 1 (sec. 3.2).
        texture: (R, C * 8 * n_texture_bins) float32, each row sums to 1.
        pairs: (P, 2) int32 adjacent regions (8-connectivity), ``pairs[:, 0] < pairs[:, 1]``, unique.
    """
    height, width, channels = colour_bin.shape
    n_orient = texture_bin.shape[3]
    sizes = np.zeros(n_regions, dtype=np.float64)
    boxes = np.empty((n_regions, 4), dtype=np.int32)
    boxes[:, 0] = width
    boxes[:, 1] = height
    boxes[:, 2] = 0
    boxes[:, 3] = 0
    # (counted in int64: a float32 count stops growing at 2**24 pixels, which a region of a large photo passes)
    colour_counts = np.zeros((n_regions, channels * n_colour_bins), dtype=np.int64)
    texture_counts = np.zeros((n_regions, channels * n_orient * n_texture_bins), dtype=np.int64)
    # 1. one pass over the pixels: counts, boxes and histogram counts
    for i in range(height):
        for j in range(width):
            r = labels[i, j]
            sizes[r] += 1.0
            boxes[r, 0] = min(boxes[r, 0], j)
            boxes[r, 1] = min(boxes[r, 1], i)
            boxes[r, 2] = max(boxes[r, 2], j + 1)
            boxes[r, 3] = max(boxes[r, 3], i + 1)
            for c in range(channels):
                colour_counts[r, c * n_colour_bins + colour_bin[i, j, c]] += 1
                for o in range(n_orient):
                    texture_counts[r, (c * n_orient + o) * n_texture_bins + texture_bin[i, j, c, o]] += 1
    # 2. L1-normalise every histogram (a region without pixels keeps zero rows)
    colour = np.zeros(colour_counts.shape, dtype=np.float32)
    texture = np.zeros(texture_counts.shape, dtype=np.float32)
    for r in range(n_regions):
        if sizes[r] == 0:
            continue
        for k in range(colour.shape[1]):
            colour[r, k] = colour_counts[r, k] / (sizes[r] * channels)
        for k in range(texture.shape[1]):
            texture[r, k] = texture_counts[r, k] / (sizes[r] * channels * n_orient)
    # 3. neighbour pairs along the right, down, down-right and down-left grid edges
    keys = np.empty(4 * height * width, dtype=np.int64)
    n_keys = 0
    last = np.full(n_regions, -1, dtype=np.int32)  # skips the run of repeats along a boundary
    for i in range(height):
        for j in range(width):
            a = labels[i, j]
            for di, dj in ((0, 1), (1, 0), (1, 1), (1, -1)):
                ii = i + di
                jj = j + dj
                if ii >= height or jj < 0 or jj >= width:
                    continue
                b = labels[ii, jj]
                if a == b:
                    continue
                lo, hi = min(a, b), max(a, b)
                if last[lo] == hi:
                    continue
                last[lo] = hi
                keys[n_keys] = np.int64(lo) * n_regions + hi
                n_keys += 1
    unique = np.unique(keys[:n_keys])
    pairs = np.empty((unique.shape[0], 2), dtype=np.int32)
    for p in range(unique.shape[0]):
        pairs[p, 0] = unique[p] // n_regions
        pairs[p, 1] = unique[p] % n_regions
    return sizes, boxes, colour, texture, pairs


# ---------------------------------------------------------------------------------------------
# Hierarchical grouping
# ---------------------------------------------------------------------------------------------


@_jit
def similarity(i, j, size, box, colour, texture, image_area, w_colour, w_texture, w_size, w_fill):
    """s(r_i, r_j) = a1 s_colour + a2 s_texture + a3 s_size + a4 s_fill   (Uijlings et al. 2013, eq. 6).

    s_colour, s_texture: histogram intersection ``sum_k min(c_i^k, c_j^k)``          (eq. 1, 2)
    s_size = 1 - (size(r_i) + size(r_j)) / size(im)                                   (eq. 4)
    s_fill = 1 - (size(BB_ij) - size(r_i) - size(r_j)) / size(im)                     (eq. 5)
    """
    s = 0.0
    if w_colour != 0.0:
        acc = 0.0
        for k in range(colour.shape[1]):
            acc += min(colour[i, k], colour[j, k])
        s += w_colour * acc
    if w_texture != 0.0:
        acc = 0.0
        for k in range(texture.shape[1]):
            acc += min(texture[i, k], texture[j, k])
        s += w_texture * acc
    if w_size != 0.0:
        s += w_size * (1.0 - (size[i] + size[j]) / image_area)
    if w_fill != 0.0:
        bb_w = max(box[i, 2], box[j, 2]) - min(box[i, 0], box[j, 0])
        bb_h = max(box[i, 3], box[j, 3]) - min(box[i, 1], box[j, 1])
        s += w_fill * (1.0 - (bb_w * bb_h - size[i] - size[j]) / image_area)
    return s


@_jit
def _heap_push(heap_s, heap_i, heap_j, n, s, i, j):
    """Insert (s, i, j) into a binary max-heap of n entries on s; returns n + 1 (capacity checked by caller)."""
    pos = n
    while pos > 0:
        parent = (pos - 1) // 2
        if heap_s[parent] >= s:
            break
        heap_s[pos], heap_i[pos], heap_j[pos] = heap_s[parent], heap_i[parent], heap_j[parent]
        pos = parent
    heap_s[pos], heap_i[pos], heap_j[pos] = s, i, j
    return n + 1


@_jit
def _heap_pop(heap_s, heap_i, heap_j, n):
    """Remove the top of a max-heap of n entries; returns (s, i, j) of the removed entry."""
    top_s, top_i, top_j = heap_s[0], heap_i[0], heap_j[0]
    n -= 1
    s, i, j = heap_s[n], heap_i[n], heap_j[n]
    pos = 0
    while True:
        child = 2 * pos + 1
        if child >= n:
            break
        if child + 1 < n and heap_s[child + 1] > heap_s[child]:
            child += 1
        if heap_s[child] <= s:
            break
        heap_s[pos], heap_i[pos], heap_j[pos] = heap_s[child], heap_i[child], heap_j[child]
        pos = child
    if n > 0:
        heap_s[pos], heap_i[pos], heap_j[pos] = s, i, j
    return top_s, top_i, top_j


@_jit
def _grow(array, n_needed):
    """`array` copied into one at least twice as long when `n_needed` exceeds its length."""
    if n_needed <= array.shape[0]:
        return array
    bigger = np.empty(max(n_needed, 2 * array.shape[0]), dtype=array.dtype)
    bigger[: array.shape[0]] = array
    return bigger


@_jit
def _resolve(alias, x):
    """The live region that region `x` has been merged into (x itself while it lives)."""
    while alias[x] != x:
        alias[x] = alias[alias[x]]
        x = alias[x]
    return x


@_jit
def hierarchical_grouping(sizes, boxes, colour, texture, pairs, image_area, w_colour, w_texture, w_size, w_fill):
    """Greedy hierarchical grouping of Selective Search (Uijlings et al. 2013, Algorithm 1).

    A max-heap holds the similarity of every pair of adjacent live regions; entries that name a
    region merged since are skipped when popped (lazy deletion). Each merge creates a region whose
    size, box and histograms come from its two parts -- ``C_t = (size_i C_i + size_j C_j) /
    (size_i + size_j)`` (eq. 3) -- and whose neighbours are the union of theirs.

    Args:
        sizes: (R,) float64, boxes: (R, 4) int32 xyxy, colour: (R, Dc) float32, texture: (R, Dt)
            float32, pairs: (P, 2) int32 -- from `region_statistics`.
        image_area: H * W.
        w_colour, w_texture, w_size, w_fill: the weights a1..a4 (0 or 1 in the paper).

    Returns:
        merges: (M, 2) int32, merge m creates region R + m (M = R - 1 on a connected image).
        all_boxes: (R + M, 4) int32 xyxy of every region in creation order.
    """
    n_start = sizes.shape[0]
    n_total = 2 * n_start - 1
    # 1. room for every region that will exist; histograms only for the terms in use
    size = np.zeros(n_total, dtype=np.float64)
    size[:n_start] = sizes
    box = np.zeros((n_total, 4), dtype=np.int32)
    box[:n_start] = boxes
    colour_all = np.zeros((n_total if w_colour != 0.0 else 0, colour.shape[1]), dtype=np.float32)
    if w_colour != 0.0:
        colour_all[:n_start] = colour
    texture_all = np.zeros((n_total if w_texture != 0.0 else 0, texture.shape[1]), dtype=np.float32)
    if w_texture != 0.0:
        texture_all[:n_start] = texture
    alias = np.arange(n_total).astype(np.int32)
    stamp = np.full(n_total, -1, dtype=np.int32)

    # 2. neighbour lists of the starting regions (compressed rows in one growing pool)
    degree = np.zeros(n_start, dtype=np.int64)
    for p in range(pairs.shape[0]):
        degree[pairs[p, 0]] += 1
        degree[pairs[p, 1]] += 1
    nbr_start = np.zeros(n_total, dtype=np.int64)
    nbr_count = np.zeros(n_total, dtype=np.int64)
    for r in range(1, n_start):
        nbr_start[r] = nbr_start[r - 1] + degree[r - 1]
    pool = np.empty(max(16, 4 * pairs.shape[0]), dtype=np.int32)
    for p in range(pairs.shape[0]):
        a, b = pairs[p, 0], pairs[p, 1]
        pool[nbr_start[a] + nbr_count[a]] = b
        nbr_count[a] += 1
        pool[nbr_start[b] + nbr_count[b]] = a
        nbr_count[b] += 1
    pool_len = 2 * pairs.shape[0]

    # 3. the initial similarities of all adjacent pairs
    capacity = max(16, 4 * pairs.shape[0])
    heap_s = np.empty(capacity, dtype=np.float64)
    heap_i = np.empty(capacity, dtype=np.int32)
    heap_j = np.empty(capacity, dtype=np.int32)
    n_heap = 0
    for p in range(pairs.shape[0]):
        a, b = pairs[p, 0], pairs[p, 1]
        s = similarity(a, b, size, box, colour_all, texture_all, image_area, w_colour, w_texture, w_size, w_fill)
        n_heap = _heap_push(heap_s, heap_i, heap_j, n_heap, s, a, b)

    merges = np.empty((max(n_start - 1, 0), 2), dtype=np.int32)
    n_merges = 0
    while n_heap > 0:
        # 4. the most similar pair of live regions
        s, i, j = _heap_pop(heap_s, heap_i, heap_j, n_heap)
        n_heap -= 1
        if alias[i] != i or alias[j] != j:
            continue  # one of them was merged since this entry was pushed
        # 5. merge r_i and r_j into r_t: size, box and histograms from the parts (eq. 3)
        t = n_start + n_merges
        merges[n_merges, 0] = i
        merges[n_merges, 1] = j
        n_merges += 1
        size[t] = size[i] + size[j]
        box[t, 0] = min(box[i, 0], box[j, 0])
        box[t, 1] = min(box[i, 1], box[j, 1])
        box[t, 2] = max(box[i, 2], box[j, 2])
        box[t, 3] = max(box[i, 3], box[j, 3])
        fi = size[i] / size[t]
        fj = size[j] / size[t]
        for k in range(colour_all.shape[1] if w_colour != 0.0 else 0):
            colour_all[t, k] = fi * colour_all[i, k] + fj * colour_all[j, k]
        for k in range(texture_all.shape[1] if w_texture != 0.0 else 0):
            texture_all[t, k] = fi * texture_all[i, k] + fj * texture_all[j, k]
        alias[i] = t
        alias[j] = t
        # 6. r_t's neighbours: the live regions that r_i's and r_j's old neighbours now belong to
        nbr_start[t] = pool_len
        for src in (i, j):
            for q in range(nbr_start[src], nbr_start[src] + nbr_count[src]):
                r = _resolve(alias, pool[q])
                if r != t and stamp[r] != t:
                    stamp[r] = t
                    pool = _grow(pool, pool_len + 1)
                    pool[pool_len] = r
                    pool_len += 1
        nbr_count[t] = pool_len - nbr_start[t]
        # 7. the similarities between r_t and its neighbours
        if n_heap + nbr_count[t] > heap_s.shape[0]:
            heap_s = _grow(heap_s, n_heap + nbr_count[t])
            heap_i = _grow(heap_i, n_heap + nbr_count[t])
            heap_j = _grow(heap_j, n_heap + nbr_count[t])
        for q in range(nbr_start[t], nbr_start[t] + nbr_count[t]):
            r = pool[q]
            s = similarity(t, r, size, box, colour_all, texture_all, image_area, w_colour, w_texture, w_size, w_fill)
            n_heap = _heap_push(heap_s, heap_i, heap_j, n_heap, s, t, r)
    return merges[:n_merges], box[: n_start + n_merges]


# ---------------------------------------------------------------------------------------------
# Strategies, ranking and the public function
# ---------------------------------------------------------------------------------------------


def _prepare_colour_space(rgb, colour_space):
    """Per-pixel stages for one colour space: sorted grid graph, colour bins and texture bins."""
    image = kernels.convert_colour(rgb, COLOUR_SPACE_CODES[colour_space])  # (H, W, C) float32
    g = kernels.gaussian_kernel(SEGMENTATION_SIGMA)
    order, sorted_weights = kernels.radix_argsort(kernels.grid_weights(kernels.separable_correlate(image, g, g)))
    gx, gy = kernels.gaussian_gradients(image, TEXTURE_SIGMA)
    return {
        "edges": (order, sorted_weights),
        "colour_bin": kernels.colour_bins(image, COLOUR_BINS),
        "texture_bin": kernels.texture_bins(gx, gy, TEXTURE_BINS),
    }


def _group_one_segmentation(prepared, shape, k, strategies, keep_labels=True):
    """Segment with one k, then run every strategy that starts from that segmentation.

    Returns [(strategy, labels, merges, all_boxes)]; labels is None unless `keep_labels` (only the
    hierarchies need them, and on a large image each is an (H, W) int32 array)."""
    height, width = shape
    order, sorted_weights = prepared["edges"]
    min_size = min(int(k), height * width + 1)  # min_size = k, clamped to fit an int64 (same segments)
    labels = segment_graph(height, width, order, sorted_weights, float(k), min_size).reshape(height, width)
    n_regions = int(labels.max()) + 1
    sizes, boxes, colour, texture, pairs = region_statistics(
        labels, n_regions, prepared["colour_bin"], prepared["texture_bin"], COLOUR_BINS, TEXTURE_BINS
    )
    results = []
    for strategy in strategies:
        weights = [1.0 if term in strategy.similarity else 0.0 for term in "CTSF"]
        merges, all_boxes = hierarchical_grouping(
            sizes, boxes, colour, texture, pairs, float(height * width), *weights
        )
        results.append((strategy, labels if keep_labels else None, merges, all_boxes))
    return results


@contextlib.contextmanager
def _cancelling_queued_jobs(pool):
    """On an error or Ctrl-C inside the block, cancel the jobs `pool` has queued but not started: the
    kernels already running finish (they cannot be stopped part-way), not the whole strategy set."""
    try:
        yield pool
    except BaseException:
        pool.shutdown(wait=False, cancel_futures=True)
        raise


def _run_strategies(rgb, strategies, n_threads, keep_labels=True):
    """Every strategy's (strategy, labels, merges, boxes), in the order of `strategies`.

    The work runs on `n_threads` threads (the Numba kernels release the GIL): first one job per
    colour space, then one per (colour space, k), each started as soon as its colour space is ready.
    At most `n_threads` colour spaces are prepared ahead, and each one's per-pixel data is dropped as
    soon as its jobs are done (on a 6-megapixel image it is about 350 MB per colour space, and
    "quality" has five). On an error or Ctrl-C the jobs not started yet are cancelled.
    """
    all_spaces = tuple(dict.fromkeys(s.colour_space for s in strategies))
    spaces = iter(all_spaces)
    shape = rgb.shape[:2]
    with concurrent.futures.ThreadPoolExecutor(max_workers=n_threads) as pool, _cancelling_queued_jobs(pool):
        preparing = {}  # future -> colour space, at most n_threads at a time

        def prepare_next_space():
            # 1. per colour space: conversion, smoothing, sorted graph, histogram bins
            space = next(spaces, None)
            if space is not None:
                preparing[pool.submit(_prepare_colour_space, rgb, space)] = space

        for _ in range(min(n_threads, len(all_spaces))):  # n_threads may be far more than the spaces
            prepare_next_space()
        jobs = []
        while preparing:
            finished, _ = concurrent.futures.wait(preparing, return_when=concurrent.futures.FIRST_COMPLETED)
            for done in finished:
                space = preparing.pop(done)
                prepared = done.result()
                # 2. per (colour space, k): segmentation, region statistics, grouping for each similarity
                #    (queued before the next colour space, so that this one's data is freed early)
                for k in dict.fromkeys(s.k for s in strategies if s.colour_space == space):
                    group = [s for s in strategies if (s.colour_space, s.k) == (space, k)]
                    jobs.append(pool.submit(_group_one_segmentation, prepared, shape, k, group, keep_labels))
                del prepared, done  # the jobs hold it while they run
                prepare_next_space()
            del finished
        by_strategy = {}
        for job in jobs:
            for result in job.result():
                by_strategy[result[0]] = result
    return [by_strategy[s] for s in strategies]


def _levels(n_start, merges):
    """Depth of every region in the merge tree: 0 for starting regions, 1 + max(children) after."""
    levels = np.zeros(n_start + merges.shape[0], dtype=np.int32)
    for m, (i, j) in enumerate(merges):
        levels[n_start + m] = 1 + max(levels[i], levels[j])
    return levels


def rank_boxes(box_sets, rng):
    """Interleave the hierarchies of several strategies (Uijlings et al. 2013, sec. 3.3).

    In each hierarchy the region created at position i counted from the top (i = 1 covers the whole
    image) gets the value ``v_i = RND x i``; all regions are sorted by v, and a box seen before is
    dropped (the first occurrence keeps its place).

    The starting regions come first in creation order, in label order (the raster order of their
    first pixels), so they take the positions n down to n - R + 1 with the regions whose first pixel
    is lowest ranked highest. The paper does not say; the authors' code gives every starting region
    one priority instead, so a list cut to the first boxes here keeps somewhat more of the small
    starting boxes from the bottom of the image than from the top.

    Args:
        box_sets: list of (n_s, 4) int32 xyxy, regions in creation order (last = whole image).
        rng: numpy Generator for the RND draws.

    Returns:
        (N, 4) float32 xyxy boxes, best first, without duplicates.
    """
    if not box_sets:
        return np.zeros((0, 4), dtype=np.float32)
    values = []
    for boxes in box_sets:
        position = np.arange(boxes.shape[0], 0, -1, dtype=np.float64)  # i = n..1, top of the hierarchy last
        values.append(rng.random(boxes.shape[0]) * position)
    boxes = np.concatenate(box_sets).astype(np.int64)  # (N, 4)
    order = np.argsort(np.concatenate(values), kind="stable")
    boxes = boxes[order]
    # de-duplicate: keep each box's first occurrence in rank order
    span = int(boxes.max()) + 1
    if span < 2**15:  # one int64 key per box (span^4 < 2^60)
        keys = ((boxes[:, 0] * span + boxes[:, 1]) * span + boxes[:, 2]) * span + boxes[:, 3]
        _, first = np.unique(keys, return_index=True)
    else:
        _, first = np.unique(boxes, axis=0, return_index=True)
    return boxes[np.sort(first)].astype(np.float32)


def _is_integer(value):
    """True for a Python or NumPy integer, or a float holding one (2.0); False for bool and text."""
    if isinstance(value, (bool, np.bool_)):
        return False
    if isinstance(value, (int, np.integer)):
        return True
    return isinstance(value, (float, np.floating)) and float(value).is_integer()


def check_rgb_image(image, name="image"):
    """Validate an image for the proposal functions: (H, W, 3) uint8 with at least 2 pixels."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise InvalidArgumentError(
            f"{name} must be an (H, W, 3) uint8 RGB array (see scratchdet.data.images.as_rgb_uint8), "
            f"got shape {image.shape} and dtype {image.dtype}"
        )
    if image.shape[0] * image.shape[1] < 2:
        raise InvalidArgumentError(
            f"{name} must have at least 2 pixels to segment or propose regions in, got a "
            f"{image.shape[0]}x{image.shape[1]} image"
        )
    return np.ascontiguousarray(image)


def selective_search(image, mode="fast", max_boxes=None, seed=0, strategies=None, return_hierarchy=False, n_threads=None):
    """Selective Search object proposals (Uijlings et al., IJCV 2013).

    Args:
        image: (H, W, 3) uint8 RGB.
        mode: "single", "fast" or "quality" -- the paper's strategy sets (see `MODES`).
        max_boxes: keep at most this many boxes (None: all).
        seed: integer seed >= 0 (or numpy Generator) of the ranking's random numbers; the same seed
            gives the same boxes.
        strategies: an explicit `Strategy`, or a sequence of them, instead of `mode`.
        return_hierarchy: also return one `Hierarchy` per strategy.
        n_threads: threads for the strategies (default: the number of CPUs).

    Returns:
        boxes: (N, 4) float32 xyxy in pixels, best first, no duplicates; with `return_hierarchy`,
        the tuple ``(boxes, hierarchies)``.
    """
    rgb = check_rgb_image(image)
    if strategies is None:
        if not isinstance(mode, str) or mode not in MODES:
            raise InvalidArgumentError(f"mode must be one of {sorted(MODES)}, got {mode!r}")
        strategies = MODES[mode]
    if isinstance(strategies, Strategy):
        strategies = (strategies,)
    strategies = tuple(strategies) if isinstance(strategies, (list, tuple)) else ()
    if not strategies or not all(isinstance(s, Strategy) for s in strategies):
        raise InvalidArgumentError("strategies must be a non-empty sequence of Strategy")
    if max_boxes is not None and not (_is_integer(max_boxes) and max_boxes >= 1):
        raise InvalidArgumentError(f"max_boxes must be a positive integer or None, got {max_boxes!r}")
    # an explicit seed: None would draw fresh entropy, and the same call would not give the same boxes
    if not (isinstance(seed, np.random.Generator) or (_is_integer(seed) and seed >= 0)):
        raise InvalidArgumentError(f"seed must be an integer >= 0 or a numpy.random.Generator, got {seed!r}")
    if n_threads is not None and not (_is_integer(n_threads) and n_threads >= 1):
        raise InvalidArgumentError(f"n_threads must be a positive integer or None, got {n_threads!r}")
    n_threads = int(n_threads or os.cpu_count() or 1)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(int(seed))

    results = _run_strategies(rgb, strategies, n_threads, keep_labels=return_hierarchy)
    boxes = rank_boxes([all_boxes for _, _, _, all_boxes in results], rng)
    if max_boxes is not None:
        boxes = boxes[: int(max_boxes)]
    if not return_hierarchy:
        return boxes
    hierarchies = [
        Hierarchy(
            strategy=strategy,
            labels=labels,
            merges=merges,
            boxes=all_boxes.astype(np.float32),
            levels=_levels(all_boxes.shape[0] - merges.shape[0], merges),
        )
        for strategy, labels, merges, all_boxes in results
    ]
    return boxes, hierarchies
