"""Numba CPU kernels behind `scratchdet.boxes`: the IoU matrix, box encode / decode and greedy NMS.

The scalar arithmetic (`iou_pair`, `encode_box`, `decode_box`) is the plain Python of
`scratchdet.kernels.shared.boxes`, compiled here with `numba.njit`; the CUDA kernels compile the very
same functions as device functions. Every kernel takes contiguous float64 arrays that
`scratchdet.boxes` has already validated; set `NUMBA_DISABLE_JIT=1` to step through them as Python.
"""

import math

import numba
import numpy as np

from scratchdet.kernels.shared import boxes as shared

iou_pair = numba.njit(cache=True)(shared.iou_pair)
encode_box = numba.njit(cache=True)(shared.encode_box)
decode_box = numba.njit(cache=True)(shared.decode_box)


# NumPy's error model drops Python's zero-division check, which would stop the compiler from
# vectorising the loop; iou_pair never divides by zero anyway
@numba.njit(cache=True, parallel=True, error_model="numpy")
def iou_matrix(boxes1, boxes2, out):
    """IoU of every box in `boxes1` with every box in `boxes2`, written into `out`.

    Args:
        boxes1: (N, 4) float64 xyxy boxes.
        boxes2: (M, 4) float64 xyxy boxes.
        out: (N, M) float32 or float64 array, filled with `iou_pair(boxes1[i], boxes2[j])`
            (computed in float64, then stored).
    """
    n = boxes1.shape[0]
    m = boxes2.shape[0]
    for i in numba.prange(n):  # rows are independent: one per thread
        ax1, ay1, ax2, ay2 = boxes1[i, 0], boxes1[i, 1], boxes1[i, 2], boxes1[i, 3]
        for j in range(m):
            out[i, j] = iou_pair(ax1, ay1, ax2, ay2, boxes2[j, 0], boxes2[j, 1], boxes2[j, 2], boxes2[j, 3])


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
        sorted_keys: (N,) float64 or integer, non-decreasing (the sort keys, already in sorted order).
        order: (N,) int64 indices that sorted the keys; rearranged within runs of equal keys.
    """
    n = order.shape[0]
    run_start = 0
    for i in range(1, n + 1):
        if i == n or sorted_keys[i] != sorted_keys[run_start]:
            if i - run_start > 1:
                order[run_start:i] = np.sort(order[run_start:i])
            run_start = i


@numba.njit(cache=True)
def greedy_nms(boxes, order, group_starts, iou_threshold):
    """Greedy non-maximum suppression, run independently within each group of `order`.

    Within a group, boxes are visited in the order given (best score first). A box is kept unless
    its IoU with a box already kept in the same group is *greater* than `iou_threshold` (t).

    Only kept boxes near the candidate need checking, and "near" has an exact bound. Let a be the
    candidate (width wa, height ha) and b a kept box with IoU(a, b) > t > 0, and let iw, ih be the
    width and height of their intersection. Since the union is at least area(a) = wa * ha,
    iw * ih > t * wa * ha, and as ih <= ha, iw > t * wa; likewise iw > t * wb, so wb < wa / t. The
    overlap of two intervals is at most (wa + wb) / 2 - |cxa - cxb|, which together gives

        |cxa - cxb| < (1 - t) / t * wa        and in y        |cya - cyb| < (1 - t) / t * ha.

    So the kept boxes are filed in a uniform grid by their centres, and a candidate looks only at
    the cells within that reach of its own centre, its own cell first (the likeliest place of the
    box that suppresses it). The kept set is exactly that of the plain greedy loop (the reach is
    widened a little against rounding); below t = 0.01 every cell is searched. On 10,000
    clustered boxes this checks a few dozen kept boxes per candidate instead of thousands.

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
    if n == 0:
        return keep
    # the kept boxes' corners, their grid cell, and the next kept box filed in the same cell
    kx1 = np.empty(n, dtype=np.float64)
    ky1 = np.empty(n, dtype=np.float64)
    kx2 = np.empty(n, dtype=np.float64)
    ky2 = np.empty(n, dtype=np.float64)
    kcell = np.empty(n, dtype=np.int64)
    next_in_cell = np.empty(n, dtype=np.int64)

    # 1. a grid over the box centres, with cells about as large as a typical search reach and
    #    about 4 cells per box at most (so that empty cells cost little)
    cx = 0.5 * (boxes[:, 0] + boxes[:, 2])  # (N,)
    cy = 0.5 * (boxes[:, 1] + boxes[:, 3])  # (N,)
    # spanning all but the outermost 0.5 % of the centres on each side: one box far from the rest would
    # otherwise stretch the cells over all the others (every box in one cell: quadratic time); the
    # boxes beyond fall in the border cells, as every search clamps to them (`_cell_of`)
    x0, x_end = _inner_range(cx, n // 200)
    y0, y_end = _inner_range(cy, n // 200)
    span_x, span_y = x_end - x0, y_end - y0
    search_all = iou_threshold < 0.01  # the reach would exceed 99 box sizes: the grid cannot help
    # the reach of a slightly lower threshold, since rounding may put a computed IoU a few ulps
    # above the exact one
    t_low = iou_threshold * (1.0 - 1e-9)
    reach = 0.0 if search_all else (1.0 - t_low) / t_low
    mean_size = np.mean(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]))
    cell = max(mean_size * (4.0 if search_all else min(reach, 4.0)), 1e-12)
    max_side = 2.0 * math.sqrt(n) + 1.0
    nx = int(min(span_x / cell, max_side)) + 1
    ny = int(min(span_y / cell, max_side)) + 1
    cell_w = max(span_x / nx, 1e-12)
    cell_h = max(span_y / ny, 1e-12)
    head = np.full(nx * ny, -1, dtype=np.int64)  # first kept box filed in each cell, -1: none

    n_keep = 0
    for g in range(group_starts.shape[0] - 1):
        first_kept = n_keep
        for r in range(group_starts[g], group_starts[g + 1]):
            # 2. the next box in score order, and its own cell
            b = order[r]
            x1, y1, x2, y2 = boxes[b, 0], boxes[b, 1], boxes[b, 2], boxes[b, 3]
            own = _cell_of(cy[b], y0, cell_h, ny) * nx + _cell_of(cx[b], x0, cell_w, nx)
            # 3. the cells within reach of its centre
            if search_all:
                col0, col1, row0, row1 = 0, nx - 1, 0, ny - 1
            else:
                # (plus a trillionth of the centre's magnitude, the rounding error of the centres)
                rx = reach * (x2 - x1) + 1e-12 * abs(cx[b])
                ry = reach * (y2 - y1) + 1e-12 * abs(cy[b])
                col0 = _cell_of(cx[b] - rx, x0, cell_w, nx)
                col1 = _cell_of(cx[b] + rx, x0, cell_w, nx)
                row0 = _cell_of(cy[b] - ry, y0, cell_h, ny)
                row1 = _cell_of(cy[b] + ry, y0, cell_h, ny)
            # 4. suppressed if a kept box filed there overlaps it by more than the threshold
            suppressed = _overlaps_kept(head[own], next_in_cell, kx1, ky1, kx2, ky2, x1, y1, x2, y2, iou_threshold)
            for c_row in range(row0, row1 + 1):
                if suppressed:
                    break
                for c_col in range(col0, col1 + 1):
                    c = c_row * nx + c_col
                    if c != own and _overlaps_kept(
                        head[c], next_in_cell, kx1, ky1, kx2, ky2, x1, y1, x2, y2, iou_threshold
                    ):
                        suppressed = True
                        break
            # 5. otherwise keep it, and file it in its cell
            if not suppressed:
                keep[n_keep] = b
                kx1[n_keep] = x1
                ky1[n_keep] = y1
                kx2[n_keep] = x2
                ky2[n_keep] = y2
                kcell[n_keep] = own
                next_in_cell[n_keep] = head[own]
                head[own] = n_keep
                n_keep += 1
        # 6. empty the grid for the next group (boxes of other groups never suppress each other)
        for k in range(first_kept, n_keep):
            head[kcell[k]] = -1
    return keep[:n_keep]


@numba.njit(cache=True)
def _inner_range(values, skip):
    """(lowest, highest) of the (N,) `values` once the `skip` lowest and `skip` highest are set aside."""
    return np.partition(values, skip)[skip], np.partition(values, values.shape[0] - 1 - skip)[values.shape[0] - 1 - skip]


@numba.njit(cache=True)
def _cell_of(value, origin, cell_size, n_cells):
    """Index of the grid cell holding coordinate `value`, clamped to [0, n_cells - 1].

    The clamping is done on the float, before converting to int, so that a coordinate far outside
    the grid (even an infinite one) lands on the border cell.
    """
    position = (value - origin) / cell_size  # in cells, from the grid's origin
    if not position >= 1.0:  # also catches NaN
        return 0
    if position >= n_cells - 1:
        return n_cells - 1
    return int(position)  # truncation is floor for positive numbers


@numba.njit(cache=True)
def _overlaps_kept(k, next_in_cell, kx1, ky1, kx2, ky2, x1, y1, x2, y2, iou_threshold):
    """True if some kept box in the cell list starting at `k` has IoU > iou_threshold with the box."""
    while k >= 0:
        if iou_pair(kx1[k], ky1[k], kx2[k], ky2[k], x1, y1, x2, y2) > iou_threshold:
            return True
        k = next_in_cell[k]
    return False
