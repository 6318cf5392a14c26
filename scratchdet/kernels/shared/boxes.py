"""One-box and one-pair box arithmetic, shared by the CPU and CUDA box kernels.

The box convention is the one `scratchdet.boxes` declares: `(x1, y1, x2, y2)` in continuous pixel
coordinates, area `(x2 - x1) * (y2 - y1)`, no `+1`. The box parametrisation is the one of R-CNN
(Girshick et al. 2014, appendix C) as used by Fast R-CNN (Girshick 2015, section 2.3).

Each function is self-contained (it calls no other Python function) so that it compiles both as a
`numba.njit` function and as a `numba.cuda.jit(device=True)` device function.
"""

import math


def iou_pair(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2):
    """Intersection over union of two xyxy boxes a and b (Jaccard index).

    IoU(a, b) = area(a & b) / area(a | b) = inter / (area(a) + area(b) - inter).

    Written without early returns (`max` and one conditional expression are selects, not jumps),
    so that the compiler can vectorise a loop over many pairs; a pair without overlap simply has
    inter = 0 and so IoU 0.

    Returns:
        float in [0, 1]. Two boxes that do not overlap have IoU 0; so do two boxes whose union has
        no area (both degenerate), where the ratio would be 0 / 0.
    """
    # 1. the intersection is the box between the larger top-left and the smaller bottom-right
    #    corner, empty (zero width or height) when they do not overlap
    inter_w = max(min(ax2, bx2) - max(ax1, bx1), 0.0)
    inter_h = max(min(ay2, by2) - max(ay1, by1), 0.0)
    inter = inter_w * inter_h
    # 2. the union counts the intersection once
    union = (ax2 - ax1) * (ay2 - ay1) + (bx2 - bx1) * (by2 - by1) - inter
    return inter / union if union > 0.0 else 0.0


def encode_box(px1, py1, px2, py2, gx1, gy1, gx2, gy2, wx, wy, ww, wh):
    """Regression target t that moves proposal P onto ground-truth box G (R-CNN, appendix C).

    With P and G as centre (x, y), width w and height h:

        tx = wx * (Gx - Px) / Pw        ty = wy * (Gy - Py) / Ph
        tw = ww * log(Gw / Pw)          th = wh * log(Gh / Ph)

    The weights (wx, wy, ww, wh) rescale the targets (Fast R-CNN implementations use (10, 10, 5, 5)
    so that the targets have roughly unit variance); (1, 1, 1, 1) gives the paper's equations.
    Both boxes must have positive width and height.

    Returns:
        tuple (tx, ty, tw, th) of floats.
    """
    # 1. corners -> centre and size
    pw = px2 - px1
    ph = py2 - py1
    pcx = px1 + 0.5 * pw
    pcy = py1 + 0.5 * ph
    gw = gx2 - gx1
    gh = gy2 - gy1
    gcx = gx1 + 0.5 * gw
    gcy = gy1 + 0.5 * gh
    # 2. scale-invariant translation of the centre, log-space change of the size
    tx = wx * (gcx - pcx) / pw
    ty = wy * (gcy - pcy) / ph
    tw = ww * math.log(gw / pw)
    th = wh * math.log(gh / ph)
    return tx, ty, tw, th


def decode_box(px1, py1, px2, py2, tx, ty, tw, th, wx, wy, ww, wh, clamp):
    """Apply regression deltas t to proposal P (the inverse of `encode_box`; R-CNN, appendix C).

        Gx = Px + Pw * tx / wx          Gy = Py + Ph * ty / wy
        Gw = Pw * exp(min(tw / ww, clamp))   Gh = Ph * exp(min(th / wh, clamp))

    `clamp` bounds the log-size change before `exp` (torchvision: "prevent sending too large values
    into exp"); the default log(1000 / 16) lets a box grow at most 62.5 times.

    Returns:
        tuple (x1, y1, x2, y2) of floats.
    """
    # 1. corners -> centre and size
    pw = px2 - px1
    ph = py2 - py1
    pcx = px1 + 0.5 * pw
    pcy = py1 + 0.5 * ph
    # 2. undo the weights; clamp the log-size change
    dx = tx / wx
    dy = ty / wy
    dw = min(tw / ww, clamp)
    dh = min(th / wh, clamp)
    # 3. move the centre, scale the size
    cx = pcx + dx * pw
    cy = pcy + dy * ph
    w = pw * math.exp(dw)
    h = ph * math.exp(dh)
    # 4. centre and size -> corners
    return cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h
