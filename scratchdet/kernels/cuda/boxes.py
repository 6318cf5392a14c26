"""CUDA twins of `scratchdet.boxes`: the IoU matrix, R-CNN box encode / decode and greedy NMS.

The per-box arithmetic is `scratchdet.kernels.shared.boxes` compiled as device functions, in float64
as on the CPU, so both backends keep and suppress exactly the same boxes. NMS is the bitmask
algorithm of Faster R-CNN's GPU NMS (Ren et al. 2015; py-faster-rcnn's `nms_kernel.cu`):

1. sort the boxes by descending score (here a rank sort: each box counts the boxes ahead of it),
2. one thread per (box i, block of 64 later boxes j) writes a 64-bit word whose bit j is set when
   IoU(i, j) > threshold,
3. a single block walks the boxes in score order, keeping a box unless a kept box set its bit,
   and ORs each kept box's words into the running "removed" mask.

Only the number of kept boxes comes back to the host (to size the result).
"""

import math

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import THREADS, blocks_for, empty, launch_1d, require_device, scratch
from scratchdet.kernels.shared import boxes as shared

iou_pair = cuda.jit(device=True)(shared.iou_pair)
encode_box = cuda.jit(device=True)(shared.encode_box)
decode_box = cuda.jit(device=True)(shared.decode_box)

# boxes per mask word: bit b of word (i, w) is box 64 w + b
WORD = 64
# 2-D launches of the IoU matrix: 16 x 16 threads
TILE = 16


def _check_boxes(name, boxes):
    require_device(name, boxes)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidArgumentError(f"{name} must have shape (N, 4) xyxy, got {boxes.shape}")
    if boxes.dtype.kind != "f":
        raise InvalidArgumentError(f"{name} must be a float device array, got {boxes.dtype}")
    return boxes


def _result_dtype(*arrays):
    """float32 when every input is float32, float64 otherwise (as `scratchdet.boxes`)."""
    return np.float32 if all(a.dtype == np.float32 for a in arrays) else np.float64


# ---------------------------------------------------------------------------------------------------
# IoU matrix
# ---------------------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def iou_matrix_kernel(boxes1, boxes2, out):
    """out[i, j] = IoU(boxes1[i], boxes2[j]) in float64; one thread per pair (x: j, y: i)."""
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    i = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    if i < boxes1.shape[0] and j < boxes2.shape[0]:
        out[i, j] = iou_pair(
            numba.float64(boxes1[i, 0]), numba.float64(boxes1[i, 1]), numba.float64(boxes1[i, 2]), numba.float64(boxes1[i, 3]),
            numba.float64(boxes2[j, 0]), numba.float64(boxes2[j, 1]), numba.float64(boxes2[j, 2]), numba.float64(boxes2[j, 3]),
        )


def iou(boxes1, boxes2):
    """CUDA twin of `scratchdet.boxes.iou`: (N, 4) and (M, 4) device arrays -> (N, M) device array."""
    _check_boxes("boxes1", boxes1)
    _check_boxes("boxes2", boxes2)
    n, m = boxes1.shape[0], boxes2.shape[0]
    out = empty((n, m), _result_dtype(boxes1, boxes2))
    if n and m:
        grid = (math.ceil(m / TILE), math.ceil(n / TILE))
        iou_matrix_kernel[grid, (TILE, TILE)](boxes1, boxes2, out)
    return out


# ---------------------------------------------------------------------------------------------------
# R-CNN box parametrisation
# ---------------------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def encode_kernel(proposals, gt, wx, wy, ww, wh, out):
    """out[i] = the regression target (tx, ty, tw, th) moving proposals[i] onto gt[i]."""
    i = cuda.grid(1)
    if i < proposals.shape[0]:
        tx, ty, tw, th = encode_box(
            numba.float64(proposals[i, 0]), numba.float64(proposals[i, 1]),
            numba.float64(proposals[i, 2]), numba.float64(proposals[i, 3]),
            numba.float64(gt[i, 0]), numba.float64(gt[i, 1]), numba.float64(gt[i, 2]), numba.float64(gt[i, 3]),
            wx, wy, ww, wh,
        )
        out[i, 0] = tx
        out[i, 1] = ty
        out[i, 2] = tw
        out[i, 3] = th


@cuda.jit(cache=True)
def decode_kernel(proposals, deltas, wx, wy, ww, wh, clamp, out):
    """out[i] = the box predicted by applying deltas[i] to proposals[i]."""
    i = cuda.grid(1)
    if i < proposals.shape[0]:
        x1, y1, x2, y2 = decode_box(
            numba.float64(proposals[i, 0]), numba.float64(proposals[i, 1]),
            numba.float64(proposals[i, 2]), numba.float64(proposals[i, 3]),
            numba.float64(deltas[i, 0]), numba.float64(deltas[i, 1]),
            numba.float64(deltas[i, 2]), numba.float64(deltas[i, 3]),
            wx, wy, ww, wh, clamp,
        )
        out[i, 0] = x1
        out[i, 1] = y1
        out[i, 2] = x2
        out[i, 3] = y2


def _weights(weights):
    w = tuple(float(v) for v in weights)
    if len(w) != 4 or not all(v > 0 and math.isfinite(v) for v in w):
        raise InvalidArgumentError(f"weights must be 4 positive finite numbers (wx, wy, ww, wh), got {weights!r}")
    return w


def encode(proposals, gt, weights=(1.0, 1.0, 1.0, 1.0)):
    """CUDA twin of `scratchdet.boxes.encode`: (N, 4) proposals and gt -> (N, 4) deltas.

    Device inputs are not checked for positive widths (that needs a host copy); encode them on the
    CPU first if they may be degenerate.
    """
    _check_boxes("proposals", proposals)
    _check_boxes("gt", gt)
    if proposals.shape[0] != gt.shape[0]:
        raise InvalidArgumentError(
            f"proposals and gt must have the same number of rows (one gt per proposal), got {proposals.shape[0]} and {gt.shape[0]}"
        )
    out = empty(proposals.shape, _result_dtype(proposals, gt))
    if proposals.shape[0]:
        encode_kernel[launch_1d(proposals.shape[0])](proposals, gt, *_weights(weights), out)
    return out


def decode(proposals, deltas, weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000.0 / 16)):
    """CUDA twin of `scratchdet.boxes.decode`: (N, 4) proposals and deltas -> (N, 4) boxes."""
    _check_boxes("proposals", proposals)
    require_device("deltas", deltas)
    if deltas.shape != proposals.shape:
        raise InvalidArgumentError(f"deltas must have shape {proposals.shape} like proposals, got shape {deltas.shape}")
    if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or math.isnan(clamp):
        raise InvalidArgumentError(f"clamp must be a number, got {clamp!r}")
    out = empty(proposals.shape, _result_dtype(proposals, deltas))
    if proposals.shape[0]:
        decode_kernel[launch_1d(proposals.shape[0])](proposals, deltas, *_weights(weights), float(clamp), out)
    return out


# ---------------------------------------------------------------------------------------------------
# Non-maximum suppression, the bitmask algorithm
# ---------------------------------------------------------------------------------------------------


@cuda.jit(cache=True)
def rank_sort_kernel(scores, order):
    """order[rank(i)] = i, rank(i) = #{j : s_j > s_i, or s_j == s_i and j < i} (descending, stable).

    One thread per box, comparing against all scores staged tile by tile in shared memory: O(N^2)
    comparisons, like the suppression mask itself, and the same order as a stable argsort on the CPU.
    """
    tile = cuda.shared.array(THREADS, numba.float64)
    n = scores.shape[0]
    i = cuda.grid(1)
    mine = numba.float64(scores[i]) if i < n else 0.0
    rank = 0
    for start in range(0, n, THREADS):
        # 1. stage the next tile of scores
        j = start + cuda.threadIdx.x
        if j < n:
            tile[cuda.threadIdx.x] = scores[j]
        cuda.syncthreads()
        # 2. count the boxes of the tile that come before box i
        if i < n:
            for t in range(min(THREADS, n - start)):
                other = tile[t]
                if other > mine or (other == mine and start + t < i):
                    rank += 1
        cuda.syncthreads()
    if i < n:
        order[rank] = i


@cuda.jit(cache=True)
def gather_boxes_kernel(boxes, order, sorted_boxes):
    """sorted_boxes[r] = boxes[order[r]] in float64."""
    r = cuda.grid(1)
    if r < order.shape[0]:
        for k in range(4):
            sorted_boxes[r, k] = boxes[order[r], k]


@cuda.jit(cache=True)
def nms_mask_kernel(sorted_boxes, iou_threshold, mask):
    """mask[i, w] bit b = IoU(box i, box 64 w + b) > threshold, for 64 w + b > i (boxes in score order).

    Block (x: column word w, y: row block) of 64 threads: the 64 column boxes are staged in shared
    memory, then thread t compares row box 64 y + t against them. Blocks below the diagonal have
    nothing to do: a box is only ever suppressed by a better one.
    """
    row_block = cuda.blockIdx.y
    col_block = cuda.blockIdx.x
    if row_block > col_block:
        return
    n = sorted_boxes.shape[0]
    col_boxes = cuda.shared.array((WORD, 4), numba.float64)
    t = cuda.threadIdx.x
    # 1. stage the column block's boxes
    j = col_block * WORD + t
    if j < n:
        for k in range(4):
            col_boxes[t, k] = sorted_boxes[j, k]
    cuda.syncthreads()
    # 2. one row box per thread against the 64 column boxes
    i = row_block * WORD + t
    if i >= n:
        return
    col_count = min(WORD, n - col_block * WORD)
    first = t + 1 if row_block == col_block else 0
    x1, y1, x2, y2 = sorted_boxes[i, 0], sorted_boxes[i, 1], sorted_boxes[i, 2], sorted_boxes[i, 3]
    bits = numba.uint64(0)
    for b in range(first, col_count):
        if iou_pair(x1, y1, x2, y2, col_boxes[b, 0], col_boxes[b, 1], col_boxes[b, 2], col_boxes[b, 3]) > iou_threshold:
            bits |= numba.uint64(1) << numba.uint64(b)
    mask[i, col_block] = bits


@cuda.jit(cache=True)
def nms_scan_kernel(mask, order, removed, keep, n_keep):
    """The greedy pass, in one block: walk the boxes in score order, 64 at a time.

    For word (block) w: 1. stage the 64 boxes' own words of the mask; 2. thread 0 keeps each box whose
    bit is not yet in `removed`, ORing its word into the block's running mask; 3. every thread ORs
    the kept boxes' later words into `removed`.

    Args:
        mask: (N, W) uint64 suppression mask, W = ceil(N / 64).
        order: (N,) int64 box index of each score rank.
        removed: (W,) uint64 scratch.
        keep: (N,) int64 output, the first n_keep[0] entries are the kept box indices.
        n_keep: (1,) int64 output.
    """
    n, words = mask.shape
    t = cuda.threadIdx.x
    diagonal = cuda.shared.array(WORD, numba.uint64)
    kept_bits = cuda.shared.array(1, numba.uint64)
    count = cuda.shared.array(1, numba.int64)
    for w in range(t, words, cuda.blockDim.x):
        removed[w] = 0
    if t == 0:
        count[0] = 0
    cuda.syncthreads()
    for w in range(words):
        # 1. the words of this block's boxes that cover the block itself
        i = w * WORD + t
        if t < WORD and i < n:
            diagonal[t] = mask[i, w]
        cuda.syncthreads()
        # 2. the sequential part: keep or drop each of the 64 boxes in order
        if t == 0:
            current = removed[w]
            kept = numba.uint64(0)
            for b in range(min(WORD, n - w * WORD)):
                bit = numba.uint64(1) << numba.uint64(b)
                if (current & bit) == 0:
                    kept |= bit
                    keep[count[0]] = order[w * WORD + b]
                    count[0] += 1
                    current |= diagonal[b]
            kept_bits[0] = kept
        cuda.syncthreads()
        # 3. the parallel part: the kept boxes suppress boxes of later blocks
        kept = kept_bits[0]
        if kept != 0:
            for later in range(w + 1 + t, words, cuda.blockDim.x):
                acc = removed[later]
                for b in range(WORD):
                    if (kept >> numba.uint64(b)) & numba.uint64(1):
                        acc |= mask[w * WORD + b, later]
                removed[later] = acc
        cuda.syncthreads()
    if t == 0:
        n_keep[0] = count[0]


def nms(boxes, scores, iou_threshold):
    """CUDA twin of `scratchdet.boxes.nms`: greedy NMS with the bitmask algorithm.

    A box whose IoU with a kept box equals the threshold is kept; equal scores are visited in index
    order; IoU is computed in float64 as on the CPU, so both backends keep the same boxes.

    Args:
        boxes: (N, 4) xyxy device array; scores: (N,) finite scores (device array).
        iou_threshold: number in [0, 1].

    Returns:
        (K,) int64 device array of the kept boxes' indices, by descending score.
    """
    _check_boxes("boxes", boxes)
    n = boxes.shape[0]
    if not is_cuda_array(scores):
        scores = cuda.to_device(np.ascontiguousarray(scores))
    if scores.shape != (n,):
        raise InvalidArgumentError(f"scores must have shape ({n},), got {scores.shape}")
    threshold = float(iou_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    if n == 0:
        return empty((0,), np.int64)
    words = math.ceil(n / WORD)
    # work buffers are reused across calls (common.scratch): no allocation per NMS but the result
    # 1. sort by descending score
    order = scratch("nms_order", (n,), np.int64)
    rank_sort_kernel[blocks_for(n), THREADS](scores, order)
    sorted_boxes = scratch("nms_sorted_boxes", (n, 4), np.float64)
    gather_boxes_kernel[launch_1d(n)](boxes, order, sorted_boxes)
    # 2. the suppression mask, upper triangle only
    mask = scratch("nms_mask", (n, words), np.uint64)
    nms_mask_kernel[(words, words), WORD](sorted_boxes, threshold, mask)
    # 3. the greedy scan, then one 8-byte copy to size the result
    removed = scratch("nms_removed", (words,), np.uint64)
    keep = empty((n,), np.int64)
    n_keep = scratch("nms_count", (1,), np.int64)
    nms_scan_kernel[1, min(THREADS, max(WORD, 32 * math.ceil(words / 32)))](mask, order, removed, keep, n_keep)
    return keep[: int(n_keep.copy_to_host()[0])]


def compile_signatures():
    """``(name, kernel, argument types)`` of the box kernels for float32 and float64 boxes."""
    from numba import float32, float64, int64, uint64

    out = [
        ("nms_mask", nms_mask_kernel, (float64[:, ::1], float64, uint64[:, ::1])),
        ("nms_scan", nms_scan_kernel, (uint64[:, ::1], int64[::1], uint64[::1], int64[::1], int64[::1])),
    ]
    for ft in (float32, float64):
        b = ft[:, ::1]
        out += [
            (f"iou_matrix_{ft}", iou_matrix_kernel, (b, b, b)),
            (f"encode_{ft}", encode_kernel, (b, b) + (float64,) * 4 + (b,)),
            (f"decode_{ft}", decode_kernel, (b, b) + (float64,) * 5 + (b,)),
            (f"rank_sort_{ft}", rank_sort_kernel, (ft[::1], int64[::1])),
            (f"gather_boxes_{ft}", gather_boxes_kernel, (b, int64[::1], float64[:, ::1])),
        ]
    return out
