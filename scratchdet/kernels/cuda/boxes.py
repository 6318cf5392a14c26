"""CUDA twins of `scratchdet.boxes`: the IoU matrix, R-CNN box encode / decode and greedy NMS.

The per-box arithmetic is `scratchdet.kernels.shared.boxes` compiled as device functions, in float64
as on the CPU, so both backends keep and suppress exactly the same boxes. NMS is the bitmask
algorithm of Faster R-CNN's GPU NMS (Ren et al. 2015; py-faster-rcnn's `nms_kernel.cu`), in three
kernels:

1. sort the boxes by descending score and gather them in that order (a rank sort: each box counts
   the boxes that come before it, equal scores by index),
2. one thread per (box i, block of 64 later boxes j), for the blocks on or above the diagonal only,
   writes a 64-bit word whose bit j is set when IoU(i, j) > threshold,
3. a single block walks the boxes in score order, 64 (one word) per step: one warp keeps each
   box that no kept box suppresses, jumping from one remaining candidate to the next, while the
   other threads stage the next word and OR the words of the previous word's kept boxes into the
   running "removed" mask (one barrier per word).

Only the number of kept boxes comes back to the host (to size the result). Per-class NMS
(`batched_nms`) runs the same kernels on boxes sorted by label, then by score, with each box's mask
row ending where its label's boxes end, and puts the kept boxes back in score order.
"""

import math
import numbers

import numba
import numpy as np
from numba import cuda

from scratchdet.backend import is_cuda_array, simulated
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cuda.common import blocks_for, empty, fill, launch_1d, on_device, require_device, scratch
from scratchdet.kernels.cuda.launch import jit
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


@jit(cache=True)
def iou_matrix_kernel(boxes1, boxes2, out):
    """out[i, j] = IoU(boxes1[i], boxes2[j]) in float64; one thread per pair (x: j, y: i)."""
    j = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
    i = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y
    if i < boxes1.shape[0] and j < boxes2.shape[0]:
        out[i, j] = iou_pair(
            numba.float64(boxes1[i, 0]), numba.float64(boxes1[i, 1]), numba.float64(boxes1[i, 2]), numba.float64(boxes1[i, 3]),
            numba.float64(boxes2[j, 0]), numba.float64(boxes2[j, 1]), numba.float64(boxes2[j, 2]), numba.float64(boxes2[j, 3]),
        )


@on_device
def iou(boxes1, boxes2):
    """CUDA twin of `scratchdet.boxes.iou`: (N, 4) and (M, 4) xyxy float device arrays -> (N, M)
    device array (float32 when both inputs are float32, float64 otherwise)."""
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


@jit(cache=True)
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


@jit(cache=True)
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


@on_device
def encode(proposals, gt, weights=(1.0, 1.0, 1.0, 1.0)):
    """CUDA twin of `scratchdet.boxes.encode`: (N, 4) xyxy float device arrays proposals and gt ->
    (N, 4) deltas device array (float32 when both inputs are float32, float64 otherwise).

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


@on_device
def decode(proposals, deltas, weights=(1.0, 1.0, 1.0, 1.0), clamp=math.log(1000.0 / 16)):
    """CUDA twin of `scratchdet.boxes.decode`: (N, 4) xyxy float proposals and (N, 4) integer or float
    deltas, device arrays -> (N, 4) xyxy boxes device array (float32 when both inputs are float32,
    float64 otherwise). Device deltas are not checked for finiteness (that needs a host copy)."""
    _check_boxes("proposals", proposals)
    require_device("deltas", deltas)
    if deltas.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"deltas must hold integers or floats, got dtype {deltas.dtype}")
    if deltas.shape != proposals.shape:
        raise InvalidArgumentError(f"deltas must have shape {proposals.shape} like proposals, got shape {deltas.shape}")
    if isinstance(clamp, bool) or not isinstance(clamp, numbers.Real) or math.isnan(clamp):
        raise InvalidArgumentError(f"clamp must be a number, got {clamp!r}")
    out = empty(proposals.shape, _result_dtype(proposals, deltas))
    if proposals.shape[0]:
        decode_kernel[launch_1d(proposals.shape[0])](proposals, deltas, *_weights(weights), float(clamp), out)
    return out


# ---------------------------------------------------------------------------------------------------
# Non-maximum suppression, the bitmask algorithm
# ---------------------------------------------------------------------------------------------------

# rank sort: a block ranks SORT_BOXES boxes (one per lane of a warp) with up to SORT_PARTS warps,
# a warp per SORT_CHUNK scores of the input
SORT_BOXES = 32
SORT_PARTS = 8
SORT_CHUNK = 128
# the scan's block: warp 0 runs the greedy pass, warps 1-2 stage the next word, the rest are OR threads
WARP = 32
SCAN_HELPERS = 3 * WARP
SCAN_MAX_THREADS = 512
# kept rows an OR thread loads at once (independent loads in flight)
OR_LOADS = 8
# The scan is a single block, so occupancy means nothing to it: launch bounds (at most 512 threads,
# one block per multiprocessor) let the compiler spend registers on loads in flight. Without them
# ptxas saves registers (40 instead of 64 for sm_90) by issuing the 8 loads of an OR batch in three
# rounds (2, 5, then 1), each waiting for the one before. The simulator takes no launch bounds.
SCAN_OPTIONS = {} if simulated() else {"launch_bounds": (SCAN_MAX_THREADS, 1)}


@jit(cache=True)
def rank_sort_kernel(scores, boxes, order, sorted_boxes):
    """Sort by descending score and gather: order[rank(i)] = i, sorted_boxes[rank(i)] = boxes[i].

        rank(i) = #{j < i : s_j >= s_i} + #{j > i : s_j > s_i},

    the position of box i in a stable descending argsort (equal scores in index order), as on the
    CPU. The scores are compared in their own float dtype: the CPU compares them as float64, and
    float32 -> float64 is exact, so the order is the same.

    Block b ranks boxes i = 32 b + lane, one per lane, with P warps (blockDim = 32 P, P <= 8): warp p
    counts, for its 32 boxes, the scores of the p-th of P slices of the input, read straight from
    global memory (all lanes read the same score: one broadcast load, cached in L1), and a rank is
    the sum of the P counts. O(N^2) comparisons, like the suppression mask, over ceil(N / 32) blocks.

    Args:
        scores: (N,) finite keys: float32 or float64 scores, or integer labels (per-class NMS).
        boxes: (N, 4) xyxy, float32 or float64.
        order: (N,) int64 output, the box index of each rank.
        sorted_boxes: (N, 4) float64 output, the boxes by rank.
    """
    partial = cuda.shared.array((SORT_PARTS, SORT_BOXES), numba.int64)
    n = scores.shape[0]
    lane = cuda.threadIdx.x % SORT_BOXES
    part = cuda.threadIdx.x // SORT_BOXES
    parts = cuda.blockDim.x // SORT_BOXES
    i = cuda.blockIdx.x * SORT_BOXES + lane
    mine = scores[min(i, n - 1)]
    # 1. count over this warp's slice [k, end) of the scores, split at box i. (`while` loops and an
    #    unsigned index: with `range` and a signed index, whose negative-index check Numba keeps,
    #    the sm_90 loop takes 23 instead of 11 instructions per comparison, 4 instead of 16 loads
    #    in flight)
    size = (n + parts - 1) // parts
    k = part * size
    end = min(k + size, n)
    split = min(max(i, k), end)  # scores[k] for k < split: the boxes before box i
    rank = 0
    while k < split:
        if scores[numba.uint32(k)] >= mine:  # a better or equal score before box i
            rank += 1
        k += 1
    while k < end:
        if scores[numba.uint32(k)] > mine:  # a better score after box i
            rank += 1
        k += 1
    # 2. add up the partial counts; warp 0 writes each box at its rank
    partial[part, lane] = rank
    cuda.syncthreads()
    if part == 0 and i < n:
        for p in range(1, parts):
            rank += partial[p, lane]
        order[rank] = i
        for c in range(4):
            sorted_boxes[rank, c] = boxes[i, c]


def sort_threads(n):
    """Threads of the rank sort's blocks: a warp per 128 scores, up to 8 warps."""
    return SORT_BOXES * min(SORT_PARTS, math.ceil(n / SORT_CHUNK))


@cuda.jit(device=True)
def upper_triangle_block(k):
    """(row block y, column block x) of the k-th block of the upper triangle y <= x, the blocks numbered
    column by column: k = x (x + 1) / 2 + y."""
    x = int((math.sqrt(8.0 * k + 1.0) - 1.0) * 0.5)
    # the square root may round x one off near a triangular number: settle it in integers
    while x * (x + 1) // 2 > k:
        x -= 1
    while (x + 1) * (x + 2) // 2 <= k:
        x += 1
    return k - x * (x + 1) // 2, x


@jit(cache=True)
def nms_mask_kernel(sorted_boxes, iou_threshold, group_end, grouped, mask):
    """mask[i, w] bit b = IoU(box i, box 64 w + b) > threshold, for 64 w + b > i (boxes in score order).

    With `grouped` (per-class NMS, boxes sorted by label first) only the boxes j < group_end[i] of box
    i's own label can be suppressed by it; `group_end` is not read otherwise.

    One block of 64 threads per word block (row block y <= column block x) of the upper triangle,
    W (W + 1) / 2 blocks: a box is only ever suppressed by a better one, so the blocks below the
    diagonal are never launched. The 64 column boxes are staged in shared memory, then thread t
    compares row box 64 y + t against them. Words below the diagonal are left unwritten (never read).
    """
    row_block, col_block = upper_triangle_block(cuda.blockIdx.x)
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
    limit = group_end[i] if grouped else n  # the boxes box i may suppress end here
    col_count = min(WORD, limit - col_block * WORD)
    first = t + 1 if row_block == col_block else 0
    x1, y1, x2, y2 = sorted_boxes[i, 0], sorted_boxes[i, 1], sorted_boxes[i, 2], sorted_boxes[i, 3]
    bits = numba.uint64(0)
    for b in range(first, col_count):
        bx1, by1, bx2, by2 = col_boxes[b, 0], col_boxes[b, 1], col_boxes[b, 2], col_boxes[b, 3]
        # boxes that do not overlap have IoU 0, never above a threshold >= 0: only overlapping pairs
        # pay for iou_pair's float64 division (most of its ~100 instructions), and the bits are the same
        if min(x2, bx2) > max(x1, bx1) and min(y2, by2) > max(y1, by1):
            if iou_pair(x1, y1, x2, y2, bx1, by1, bx2, by2) > iou_threshold:
                bits |= numba.uint64(1) << numba.uint64(b)
    mask[i, col_block] = bits


@cuda.jit(device=True)
def stage_word(mask, order, w, b, diagonal, next_word, box_index):
    """Copy box 64 w + b's mask words for word w and word w + 1, and its box index, to shared memory."""
    n, words = mask.shape
    i = w * WORD + b
    if w < words and i < n:
        diagonal[b] = mask[i, w]
        next_word[b] = mask[i, w + 1] if w + 1 < words else numba.uint64(0)
        box_index[b] = order[i]


@jit(cache=True, **SCAN_OPTIONS)
def nms_scan_kernel(mask, order, removed, keep, n_keep):
    """The greedy pass, in one block: walk the boxes in score order, one word of 64 at a time.

    In step w (one barrier per step) three groups of threads work side by side:

    1. warp 0, the greedy pass over word w: the candidates are the boxes that no kept box of an
       earlier word suppresses; the best candidate is kept and drops the candidates it suppresses
       (its diagonal word), then the best one left, and so on: one iteration per *kept* box, in
       registers and shared memory. Its lanes then write the kept indices in parallel: the kept
       box of bit b goes to keep[count + popc(kept boxes below b)].
    2. warps 1-2 stage word w + 1's diagonal words, next words and box indices in shared memory
       (two halves, by the parity of w), so the greedy pass never waits on global memory.
    3. the other warps, one thread per later word v >= w + 1: OR into removed[v] the words of the
       boxes kept in word w - 1, with up to 8 loads in flight per thread.

    The greedy pass of word w + 1 needs what all the kept boxes before it suppress in word w + 1:
    part 3 of step w brings removed[w + 1] up to word w - 1 (its thread hands it over in shared
    memory), and the greedy pass of word w adds what its own kept boxes suppress there (their next
    words, `carry`). So the loads of part 3 overlap the greedy pass instead of following it.

    Args:
        mask: (N, W) uint64 suppression mask, W = ceil(N / 64); only words at or above the diagonal
            are read.
        order: (N,) int64 box index of each score rank.
        removed: (W,) uint64 scratch: removed[v] bit b = box 64 v + b is suppressed by a kept box
            of the words handled so far, all but the last.
        keep: (N,) int64 output, the first n_keep[0] entries are the kept box indices.
        n_keep: (1,) int64 output.
    """
    n, words = mask.shape
    t = cuda.threadIdx.x
    one = numba.uint64(1)
    # shared state, [parity of the word, bit]: the greedy warp reads one half while warps 1-2 fill the other
    diagonal = cuda.shared.array((2, WORD), numba.uint64)  # mask[64 w + b, w]
    next_word = cuda.shared.array((2, WORD), numba.uint64)  # mask[64 w + b, w + 1]
    box_index = cuda.shared.array((2, WORD), numba.int64)  # order[64 w + b]
    kept_bits = cuda.shared.array(2, numba.uint64)  # the kept boxes of word w
    handed_over = cuda.shared.array(2, numba.uint64)  # removed[w] when the greedy pass of word w starts
    or_threads = cuda.blockDim.x - SCAN_HELPERS
    # 0. clear `removed`, stage word 0
    for v in range(t, words, cuda.blockDim.x):
        removed[v] = 0
    if WARP <= t < SCAN_HELPERS:
        stage_word(mask, order, 0, t - WARP, diagonal[0], next_word[0], box_index[0])
    if t == 0:
        kept_bits[1] = 0
        handed_over[0] = 0
    cuda.syncthreads()
    count = 0  # kept so far (warp 0)
    carry = numba.uint64(0)  # what the kept boxes of word w - 1 suppress in word w (warp 0)
    for w in range(words):
        p = w % 2
        if t < WARP:
            # 1. the greedy pass over word w; every lane runs it (the same shared words: broadcasts)
            n_word = min(WORD, n - w * WORD)
            valid = ~numba.uint64(0) if n_word == WORD else (one << numba.uint64(n_word)) - one
            candidates = ~(handed_over[p] | carry) & valid
            kept = numba.uint64(0)
            carry = numba.uint64(0)
            while candidates != 0:
                best = candidates & ~(candidates - one)  # the best candidate left: nothing suppresses it
                b = cuda.popc(best - one)  # its bit: the number of bits below it
                kept |= best
                carry |= next_word[p, b]
                candidates = (candidates ^ best) & ~diagonal[p, b]
            if t == 0:
                kept_bits[p] = kept
            # the kept indices, in score order: lane t writes the boxes of bits t and t + 32
            for half in range(2):
                b = t + WARP * half
                bit = one << numba.uint64(b)
                if kept & bit:
                    keep[count + cuda.popc(kept & (bit - one))] = box_index[p, b]
            count += cuda.popc(kept)
        elif t < SCAN_HELPERS:
            # 2. stage word w + 1 in the other half
            stage_word(mask, order, w + 1, t - WARP, diagonal[1 - p], next_word[1 - p], box_index[1 - p])
        else:
            # 3. the boxes kept in word w - 1 suppress boxes of words w + 1, w + 2, ...
            previous = kept_bits[1 - p]
            rows = cuda.local.array(OR_LOADS, numba.uint32)
            loaded = cuda.local.array(OR_LOADS, numba.uint64)
            v = w + 1 + t - SCAN_HELPERS
            while v < words:
                acc = removed[v]
                if previous != 0:
                    suppressed = mask[(w - 1) * WORD : w * WORD, v]  # (64,) what word w - 1's boxes suppress in word v
                    bits = previous
                    row = numba.uint32(0)
                    while bits != 0:
                        # a. the next OR_LOADS kept rows; once `bits` runs out the last row repeats,
                        #    which changes nothing (OR is idempotent)
                        for k in range(OR_LOADS):
                            if bits != 0:
                                row = numba.uint32(cuda.popc(bits ^ (bits - one)) - 1)  # the lowest bit left
                                bits &= bits - one
                            rows[k] = row
                        # b. their words: independent loads, all issued before the first is used
                        for k in range(OR_LOADS):
                            loaded[k] = suppressed[rows[k]]
                        for k in range(OR_LOADS):
                            acc |= loaded[k]
                if v == w + 1:
                    handed_over[1 - p] = acc  # the greedy pass of word w + 1 starts from it
                elif previous != 0:
                    removed[v] = acc
                v += or_threads
        cuda.syncthreads()
    if t == 0:
        n_keep[0] = count


def scan_threads(words):
    """Threads of the scan's block: the 3 helper warps, and an OR thread per later word (512 at most)."""
    or_threads = WARP * math.ceil(max(words - 1, 1) / WARP)
    return min(SCAN_MAX_THREADS, SCAN_HELPERS + or_threads)


def _device_scores(scores, n):
    """(n,) float scores on the device: a float device array as it is, a host array copied (integers as
    float64: `scratchdet.boxes` passes integers beyond 2**53 as their ranks, which keep their order)."""
    if not is_cuda_array(scores):
        scores = np.asarray(scores)
        if scores.dtype.kind != "f":
            scores = scores.astype(np.float64)
        scores = cuda.to_device(np.ascontiguousarray(scores))
    if scores.shape != (n,):
        raise InvalidArgumentError(f"scores must have shape ({n},), got {scores.shape}")
    if np.dtype(scores.dtype).kind != "f":
        raise InvalidArgumentError(f"scores must be a float device array, got {scores.dtype}")
    return scores


def _nms_inputs(boxes, scores, iou_threshold):
    """(N, scores on the device, threshold as a float), each checked."""
    _check_boxes("boxes", boxes)
    n = boxes.shape[0]
    scores = _device_scores(scores, n)
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise InvalidArgumentError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    threshold = float(iou_threshold)
    if not 0.0 <= threshold <= 1.0:
        raise InvalidArgumentError(f"iou_threshold must be in [0, 1], got {iou_threshold!r}")
    return n, scores, threshold


@on_device
def nms(boxes, scores, iou_threshold):
    """CUDA twin of `scratchdet.boxes.nms`: greedy NMS with the bitmask algorithm.

    A box whose IoU with a kept box equals the threshold is kept; equal scores are visited in index
    order; IoU is computed in float64 as on the CPU, so both backends keep the same boxes.

    Args:
        boxes: (N, 4) xyxy float device array.
        scores: (N,) finite scores: a float device array (not read back to check it), or a host array
            (copied to the device).
        iou_threshold: number in [0, 1].

    Returns:
        (K,) int64 device array of the kept boxes' indices, by descending score.
    """
    n, scores, threshold = _nms_inputs(boxes, scores, iou_threshold)
    if n == 0:
        return empty((0,), np.int64)
    # work buffers are reused across calls (common.scratch): no allocation per NMS but the result
    # 1. sort by descending score, gathering the boxes in that order
    order = scratch("nms_order", (n,), np.int64)
    sorted_boxes = scratch("nms_sorted_boxes", (n, 4), np.float64)
    rank_sort_kernel[blocks_for(n, SORT_BOXES), sort_threads(n)](scores, boxes, order, sorted_boxes)
    # 2. the suppression mask, 3. the greedy scan, then one 8-byte copy to size the result
    keep = empty((n,), np.int64)
    n_keep = _suppress(sorted_boxes, order, threshold, None, keep)
    return keep[: int(n_keep.copy_to_host()[0])]


def _suppress(sorted_boxes, order, threshold, group_end, keep):
    """The suppression mask (upper triangle only; within label runs when `group_end` is given) and the
    greedy scan of boxes in their sorted order: writes the kept boxes' indices to keep[:count] and
    returns the (1,) device array holding the count."""
    n = sorted_boxes.shape[0]
    words = math.ceil(n / WORD)
    grouped = group_end is not None
    if not grouped:
        group_end = scratch("nms_no_groups", (1,), np.int64)  # not read
    mask = scratch("nms_mask", (n, words), np.uint64)
    nms_mask_kernel[words * (words + 1) // 2, WORD](sorted_boxes, threshold, group_end, grouped, mask)
    removed = scratch("nms_removed", (words,), np.uint64)
    n_keep = scratch("nms_count", (1,), np.int64)
    nms_scan_kernel[1, scan_threads(words)](mask, order, removed, keep, n_keep)
    return n_keep


# ---------------------------------------------------------------------------------------------------
# Per-class NMS: the same three kernels on boxes sorted by label, then by score
# ---------------------------------------------------------------------------------------------------

# the block that puts the kept boxes back in score order
COMPACT_THREADS = 256


@jit(cache=True)
def gather_kernel(values, order, out):
    """out[r] = values[order[r]]."""
    r = cuda.grid(1)
    if r < out.shape[0]:
        out[r] = values[order[r]]


@jit(cache=True)
def compose_kernel(first, second, keys, order, sorted_keys):
    """order[r] = first[second[r]], sorted_keys[r] = keys[second[r]]: two sorts applied one after the other."""
    r = cuda.grid(1)
    if r < order.shape[0]:
        order[r] = first[second[r]]
        sorted_keys[r] = keys[second[r]]


@jit(cache=True)
def group_end_kernel(sorted_keys, group_end):
    """group_end[r] = the first rank after r whose key differs from rank r's (equal keys are one run: the
    end of r's label group), by binary search."""
    r = cuda.grid(1)
    n = sorted_keys.shape[0]
    if r < n:
        key = sorted_keys[r]
        lo = r + 1
        hi = n
        while lo < hi:  # the first rank in [r + 1, n) whose key is not r's
            mid = (lo + hi) // 2
            if sorted_keys[mid] == key:
                lo = mid + 1
            else:
                hi = mid
        group_end[r] = lo


@jit(cache=True)
def kept_flags_kernel(keep, n_keep, flags):
    """flags[keep[t]] = 1 for the n_keep[0] kept boxes (flags cleared before)."""
    t = cuda.grid(1)
    if t < n_keep[0]:
        flags[keep[t]] = 1


@jit(cache=True)
def compact_kernel(order, flags, out):
    """out = the boxes order[r] with flags set, in rank order r (one block).

    Thread t takes a run of consecutive ranks: it counts its flagged boxes, thread 0 turns the counts
    into each run's first output position (a prefix sum, in thread order), and each thread writes its
    boxes from there.
    """
    counts = cuda.shared.array(COMPACT_THREADS, numba.int64)
    t = cuda.threadIdx.x
    n = order.shape[0]
    run = (n + COMPACT_THREADS - 1) // COMPACT_THREADS
    lo = min(t * run, n)
    hi = min(lo + run, n)
    count = 0
    for r in range(lo, hi):
        count += flags[order[r]]
    counts[t] = count
    cuda.syncthreads()
    if t == 0:
        total = 0
        for u in range(COMPACT_THREADS):
            count = counts[u]
            counts[u] = total
            total += count
    cuda.syncthreads()
    position = counts[t]
    for r in range(lo, hi):
        i = order[r]
        if flags[i]:
            out[position] = i
            position += 1


def _device_labels(labels, n):
    """(n,) integer labels on the device: a device array as it is, a host array copied."""
    if not is_cuda_array(labels):
        labels = np.asarray(labels)
        if labels.dtype.kind not in "iu":
            raise InvalidArgumentError(f"labels must hold integers, got dtype {labels.dtype}")
        labels = cuda.to_device(np.ascontiguousarray(labels))
    if labels.shape != (n,):
        raise InvalidArgumentError(f"labels must have shape ({n},), got {labels.shape}")
    if np.dtype(labels.dtype).kind not in "iu":
        raise InvalidArgumentError(f"labels must be an integer device array, got {labels.dtype}")
    return labels


@on_device
def batched_nms(boxes, scores, labels, iou_threshold):
    """CUDA twin of `scratchdet.boxes.batched_nms`: per-class greedy NMS (boxes with different labels never
    suppress each other), with exactly the CPU's arithmetic and order.

    No coordinate offsets: the boxes are sorted by label, then by descending score (two stable rank
    sorts, by score and then by label; the labels come out descending, and their order does not
    matter), so each label's boxes are one run of ranks in the CPU's order. The suppression mask lets
    a box suppress only later boxes of its run (`group_end_kernel`), and the greedy scan is `nms`'s.
    The kept boxes are then put back in descending score order over all labels, equal scores in
    index order (`compact_kernel` walks the score order of the first sort).

    Args:
        boxes: (N, 4) xyxy float device array.
        scores: (N,) finite scores: a float device array (not read back to check it), or a host array
            (copied to the device).
        labels: (N,) integer class labels: a device array, or a host array (copied).
        iou_threshold: number in [0, 1].

    Returns:
        (K,) int64 device array of the kept boxes' indices, by descending score.
    """
    n, scores, threshold = _nms_inputs(boxes, scores, iou_threshold)
    labels = _device_labels(labels, n)
    if n == 0:
        return empty((0,), np.int64)
    blocks, threads = blocks_for(n, SORT_BOXES), sort_threads(n)
    # 1. by score (ties by index), then stably by label: the label runs, each by descending score
    by_score = scratch("nms_order", (n,), np.int64)
    boxes_by_score = scratch("nms_boxes_by_score", (n, 4), np.float64)
    rank_sort_kernel[blocks, threads](scores, boxes, by_score, boxes_by_score)
    keys = scratch("nms_label_keys", (n,), labels.dtype)  # the labels in score order
    gather_kernel[launch_1d(n)](labels, by_score, keys)
    by_label = scratch("nms_label_order", (n,), np.int64)
    sorted_boxes = scratch("nms_sorted_boxes", (n, 4), np.float64)
    rank_sort_kernel[blocks, threads](keys, boxes_by_score, by_label, sorted_boxes)
    order = scratch("nms_grouped_order", (n,), np.int64)
    sorted_keys = scratch("nms_sorted_keys", (n,), labels.dtype)
    compose_kernel[launch_1d(n)](by_score, by_label, keys, order, sorted_keys)
    group_end = scratch("nms_group_end", (n,), np.int64)
    group_end_kernel[launch_1d(n)](sorted_keys, group_end)
    # 2. the suppression mask within each label run, 3. the greedy scan
    kept_by_label = scratch("nms_kept_by_label", (n,), np.int64)
    n_keep = _suppress(sorted_boxes, order, threshold, group_end, kept_by_label)
    # 4. the kept boxes in score order over all labels
    flags = fill(scratch("nms_kept_flags", (n,), np.int64), 0)
    kept_flags_kernel[launch_1d(n)](kept_by_label, n_keep, flags)
    keep = empty((n,), np.int64)
    compact_kernel[1, COMPACT_THREADS](by_score, flags, keep)
    return keep[: int(n_keep.copy_to_host()[0])]


def compile_signatures():
    """``(name, kernel, argument types)`` of the box kernels for float32 and float64 boxes and scores."""
    from numba import float32, float64, int64, uint64

    out = [
        ("nms_mask", nms_mask_kernel, (float64[:, ::1], float64, int64[::1], numba.boolean, uint64[:, ::1])),
        ("gather", gather_kernel, (int64[::1], int64[::1], int64[::1])),
        ("compose", compose_kernel, (int64[::1],) * 5),
        ("group_end", group_end_kernel, (int64[::1], int64[::1])),
        ("kept_flags", kept_flags_kernel, (int64[::1],) * 3),
        ("compact", compact_kernel, (int64[::1],) * 3),
        ("rank_sort_int64_keys", rank_sort_kernel, (int64[::1], float64[:, ::1], int64[::1], float64[:, ::1])),
        ("nms_scan", nms_scan_kernel, (uint64[:, ::1], int64[::1], uint64[::1], int64[::1], int64[::1])),
    ]
    for ft in (float32, float64):
        b = ft[:, ::1]
        out += [
            (f"iou_matrix_{ft}", iou_matrix_kernel, (b, b, b)),
            (f"encode_{ft}", encode_kernel, (b, b) + (float64,) * 4 + (b,)),
            (f"decode_{ft}", decode_kernel, (b, b) + (float64,) * 5 + (b,)),
        ]
        for st in (float32, float64):
            out.append((f"rank_sort_{st}_scores_{ft}_boxes", rank_sort_kernel, (st[::1], b, int64[::1], float64[:, ::1])))
    return out
