"""Numba CPU kernels behind `scratchdet.boxes`: the IoU matrix, box encode / decode and greedy NMS.

The scalar arithmetic (`iou_pair`, `encode_box`, `decode_box`) is the plain Python of
`scratchdet.kernels.shared.boxes`, compiled here with `numba.njit`; the CUDA kernels compile the very
same functions as device functions. Every kernel takes contiguous float64 arrays that
`scratchdet.boxes` has already validated; set `NUMBA_DISABLE_JIT=1` to step through them as Python.
"""

import numba
import numpy as np

from scratchdet.kernels.shared import boxes as shared

# iou_pair never divides by zero (it returns 0 for an empty union), so NumPy's error model, which
# drops Python's zero-division check, changes no result and lets LLVM vectorise the NMS inner loop
iou_pair = numba.njit(cache=True, error_model="numpy")(shared.iou_pair)
encode_box = numba.njit(cache=True)(shared.encode_box)
decode_box = numba.njit(cache=True)(shared.decode_box)


@numba.njit(cache=True, parallel=True)
def iou_matrix(boxes1, boxes2):
    """IoU of every box in `boxes1` with every box in `boxes2`.

    Args:
        boxes1: (N, 4) float64 xyxy boxes.
        boxes2: (M, 4) float64 xyxy boxes.

    Returns:
        (N, M) float64, `out[i, j] = iou_pair(boxes1[i], boxes2[j])`.
    """
    n = boxes1.shape[0]
    m = boxes2.shape[0]
    out = np.empty((n, m), dtype=np.float64)
    for i in numba.prange(n):  # rows are independent: one per thread
        ax1, ay1, ax2, ay2 = boxes1[i, 0], boxes1[i, 1], boxes1[i, 2], boxes1[i, 3]
        for j in range(m):
            out[i, j] = iou_pair(ax1, ay1, ax2, ay2, boxes2[j, 0], boxes2[j, 1], boxes2[j, 2], boxes2[j, 3])
    return out


@numba.njit(cache=True)
def encode(proposals, gt, weights):
    """R-CNN regression targets of N (proposal, ground truth) pairs.

    Args:
        proposals: (N, 4) float64 xyxy boxes P, positive width and height.
        gt: (N, 4) float64 xyxy boxes G matched to the proposals row by row, positive width and height.
        weights: (4,) float64 (wx, wy, ww, wh).

    Returns:
        (N, 4) float64 deltas (tx, ty, tw, th).
    """
    n = proposals.shape[0]
    out = np.empty((n, 4), dtype=np.float64)
    wx, wy, ww, wh = weights[0], weights[1], weights[2], weights[3]
    for i in range(n):
        tx, ty, tw, th = encode_box(
            proposals[i, 0], proposals[i, 1], proposals[i, 2], proposals[i, 3],
            gt[i, 0], gt[i, 1], gt[i, 2], gt[i, 3],
            wx, wy, ww, wh,
        )
        out[i, 0] = tx
        out[i, 1] = ty
        out[i, 2] = tw
        out[i, 3] = th
    return out


@numba.njit(cache=True)
def decode(proposals, deltas, weights, clamp):
    """Boxes predicted by applying `deltas` to `proposals` (the inverse of `encode`).

    Args:
        proposals: (N, 4) float64 xyxy boxes P.
        deltas: (N, 4) float64 (tx, ty, tw, th).
        weights: (4,) float64 (wx, wy, ww, wh).
        clamp: float, upper bound on tw / ww and th / wh before `exp`.

    Returns:
        (N, 4) float64 xyxy boxes.
    """
    n = proposals.shape[0]
    out = np.empty((n, 4), dtype=np.float64)
    wx, wy, ww, wh = weights[0], weights[1], weights[2], weights[3]
    for i in range(n):
        x1, y1, x2, y2 = decode_box(
            proposals[i, 0], proposals[i, 1], proposals[i, 2], proposals[i, 3],
            deltas[i, 0], deltas[i, 1], deltas[i, 2], deltas[i, 3],
            wx, wy, ww, wh, clamp,
        )
        out[i, 0] = x1
        out[i, 1] = y1
        out[i, 2] = x2
        out[i, 3] = y2
    return out


@numba.njit(cache=True)
def order_ties_by_index(sorted_keys, order):
    """Sort, in place, each run of `order` whose `sorted_keys` are equal, so that ties come by index.

    Args:
        sorted_keys: (N,) float64, non-decreasing (the sort keys, already in sorted order).
        order: (N,) int64 indices that sorted the keys; rearranged within runs of equal keys.
    """
    n = order.shape[0]
    run_start = 0
    for i in range(1, n + 1):
        if i == n or sorted_keys[i] != sorted_keys[run_start]:
            if i - run_start > 1:
                order[run_start:i] = np.sort(order[run_start:i])
            run_start = i


# kept boxes compared per block in `greedy_nms` (16 was fastest of 8, 16, 32, 64 on 10k boxes)
NMS_BLOCK = 16


@numba.njit(cache=True)
def greedy_nms(boxes, order, group_starts, iou_threshold):
    """Greedy non-maximum suppression, run independently within each group of `order`.

    Within a group, boxes are visited in the order given (best score first). A box is kept unless
    its IoU with a box already kept in the same group is *greater* than `iou_threshold`.

    Rather than letting each kept box scan and strike out all later boxes (py-faster-rcnn's
    `py_cpu_nms`), each candidate is compared with the boxes kept so far, whose corners sit in
    compact arrays. The comparison runs in blocks of `NMS_BLOCK` kept boxes: inside a block there is
    no early exit, so the compiler turns the block into SIMD instructions; after each block, a hit
    ends the search. A suppressed box thus costs a block or a few, and the work is O(N * K) for N
    boxes of which K are kept, at about twice the speed of a box-by-box early exit.

    Args:
        boxes: (N, 4) float64 xyxy boxes.
        order: (N,) int64 box indices; within each group sorted by descending score.
        group_starts: (G + 1,) int64; group g is `order[group_starts[g]:group_starts[g + 1]]`.
            Plain NMS has one group, `[0, N]`; per-class NMS has one group per class.
        iou_threshold: float in [0, 1].

    Returns:
        (K,) int64 indices of the kept boxes, group by group, each group in its given order.
    """
    n = order.shape[0]
    keep = np.empty(n, dtype=np.int64)
    # the kept boxes' corners, stored contiguously so the inner loop streams through memory
    kx1 = np.empty(n, dtype=np.float64)
    ky1 = np.empty(n, dtype=np.float64)
    kx2 = np.empty(n, dtype=np.float64)
    ky2 = np.empty(n, dtype=np.float64)
    n_keep = 0
    for g in range(group_starts.shape[0] - 1):
        first_kept = n_keep  # boxes kept in earlier groups never suppress this group's boxes
        for r in range(group_starts[g], group_starts[g + 1]):
            # 1. the next box in score order
            b = order[r]
            x1, y1, x2, y2 = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
            # 2. suppressed if it overlaps a kept box by more than the threshold
            suppressed = False
            for block_start in range(first_kept, n_keep, NMS_BLOCK):
                hit = False
                for k in range(block_start, min(block_start + NMS_BLOCK, n_keep)):
                    hit |= iou_pair(kx1[k], ky1[k], kx2[k], ky2[k], x1, y1, x2, y2) > iou_threshold
                if hit:
                    suppressed = True
                    break
            # 3. otherwise keep it
            if not suppressed:
                keep[n_keep] = b
                kx1[n_keep] = x1
                ky1[n_keep] = y1
                kx2[n_keep] = x2
                ky2[n_keep] = y2
                n_keep += 1
    return keep[:n_keep]
