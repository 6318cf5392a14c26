"""Boxes: the one box convention of scratchdet, IoU, the R-CNN box parametrisation and NMS.

The convention, used everywhere in scratchdet: a set of N boxes is an `(N, 4)` float array of
corners `(x1, y1, x2, y2)` ("xyxy") in continuous pixel coordinates. Pixel `(row i, col j)` covers
`[j, j+1) x [i, i+1)`, so a whole H x W image is the box `(0, 0, W, H)` and a box's area is
`(x2 - x1) * (y2 - y1)`, with no `+1` (the Pascal VOC devkit's inclusive convention exists only as an
evaluation option). Other formats ("xywh" as in COCO files, "cxcywh") appear only at the edges,
through `convert`.

Read next to: Girshick et al. 2014 (R-CNN), appendix C, for `encode` / `decode`, and its section 2.2
for greedy non-maximum suppression per class; Girshick 2015 (Fast R-CNN) for the per-class use of all
three.
"""

import math
import numbers

import numpy as np

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import boxes as _cpu

FORMATS = ("xyxy", "xywh", "cxcywh")

# decode's default bound on the log-size change: a box grows at most 1000 / 16 = 62.5 times
# (torchvision's `_utils.BoxCoder`: "prevent sending too large values into exp").
DEFAULT_DECODE_CLAMP = math.log(1000.0 / 16)

__all__ = [
    "FORMATS",
    "DEFAULT_DECODE_CLAMP",
    "convert",
    "area",
    "iou",
    "clip",
    "remove_small",
    "encode",
    "decode",
    "nms",
    "batched_nms",
]


def _cuda():
    """The CUDA kernels with the same names and signatures (imported only when a device array comes)."""
    from scratchdet.kernels.cuda import boxes

    return boxes


# ----------------------------------------------------------------------------------------------
# validation: every public function checks its arrays here, so the kernels can trust them
# ----------------------------------------------------------------------------------------------


def _as_real_array(name, x):
    """`x` as a NumPy array of integers or floats, or an InvalidArgumentError naming `name`."""
    if is_cuda_array(x):
        raise InvalidArgumentError(
            f"{name} is a CUDA device array, but this function runs on the CPU only: "
            "pass a NumPy array (scratchdet.backend.to_host)"
        )
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidArgumentError(f"{name} must be an array of numbers, got {type(x).__name__}: {exc}") from None
    if arr.dtype.kind not in "iuf":
        raise InvalidArgumentError(f"{name} must hold integers or floats, got dtype {arr.dtype}")
    return arr


def _float_dtype(*arrays):
    """float32 when every array is float32 (of either byte order), float64 otherwise (integers become
    float64)."""
    return np.dtype(np.float32) if all(a.dtype.type is np.float32 for a in arrays) else np.dtype(np.float64)


def _check_boxes(name, boxes, fmt="xyxy", positive=False):
    """Validate an (N, 4) array of boxes in format `fmt`.

    A size-0 1-D array (e.g. `np.array([])`) is accepted as `(0, 4)`. Boxes must be finite and not
    inverted (x1 <= x2, y1 <= y2; or w, h >= 0); with `positive`, width and height must be > 0. Their
    width, height and twice the area must be finite in float64 too (coordinates up to about 1e150):
    the union of two boxes' areas must not overflow, or IoU would be inf / inf.

    Returns:
        the boxes as a NumPy array of their own (integer or float) dtype, shape (N, 4).
    """
    arr = _as_real_array(name, boxes)
    if arr.ndim == 1 and arr.size == 0:
        arr = arr.reshape(0, 4)
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise InvalidArgumentError(f"{name} must have shape (N, 4), got shape {arr.shape}")
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        i = int(np.flatnonzero(~finite)[0])
        raise InvalidArgumentError(f"{name}[{i}] = {arr[i].tolist()} is not finite; boxes must be finite numbers")
    coords = arr.astype(np.float64, copy=False)  # differences of unsigned integers would wrap around
    with np.errstate(over="ignore", invalid="ignore"):
        if fmt == "xyxy":
            w = coords[:, 2] - coords[:, 0]
            h = coords[:, 3] - coords[:, 1]
        else:  # xywh, cxcywh
            w = coords[:, 2]
            h = coords[:, 3]
        too_large = ~np.isfinite(2.0 * w * h) | ~np.isfinite(np.abs(coords).sum(axis=1))
    if too_large.any():
        i = int(np.flatnonzero(too_large)[0])
        raise InvalidArgumentError(
            f"{name}[{i}] = {arr[i].tolist()} is too large: its sizes or twice its area overflow float64 "
            "(keep coordinates below about 1e150)"
        )
    bad = (w <= 0) | (h <= 0) if positive else (w < 0) | (h < 0)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        sizes = "positive" if positive else "non-negative"
        fmt_text = "xyxy boxes (x1, y1, x2, y2)" if fmt == "xyxy" else f"{fmt} boxes"
        hint = "; are these xywh boxes? Convert them with convert(boxes, 'xywh', 'xyxy')" if fmt == "xyxy" else ""
        raise InvalidArgumentError(
            f"{name}[{i}] = {arr[i].tolist()} has width {w[i]} and height {h[i]}; expected {fmt_text} "
            f"with {sizes} width and height{hint}"
        )
    return arr


def _check_vector(name, x, n, kinds="iuf"):
    """Validate a (n,) array of finite numbers whose dtype kind is in `kinds`."""
    arr = _as_real_array(name, x)
    if arr.size == 0 and arr.dtype.kind not in kinds:
        arr = arr.astype(np.int64)  # an empty list: np.asarray([]) is float64
    if arr.dtype.kind not in kinds:
        raise InvalidArgumentError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1 or arr.shape[0] != n:
        raise InvalidArgumentError(f"{name} must have shape ({n},) to match the boxes, got shape {arr.shape}")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        i = int(np.flatnonzero(~np.isfinite(arr))[0])
        raise InvalidArgumentError(f"{name}[{i}] = {arr[i]} is not finite")
    return arr


def _check_threshold(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 <= float(value) <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_weights(weights):
    try:
        w = np.asarray(weights, dtype=np.float64)
    except (TypeError, ValueError):
        w = None
    if w is None or w.shape != (4,) or not np.isfinite(w).all() or (w <= 0).any():
        raise InvalidArgumentError(f"weights must be four positive numbers (wx, wy, ww, wh), got {weights!r}")
    return w


def _f64(arr):
    """A contiguous float64 copy (or view) for the kernels."""
    return np.ascontiguousarray(arr, dtype=np.float64)


# ----------------------------------------------------------------------------------------------
# formats, area, clipping
# ----------------------------------------------------------------------------------------------


def convert(boxes, src, dst):
    """Convert boxes between formats.

    Formats (all in continuous pixel coordinates):
        "xyxy":   (x1, y1, x2, y2) corners, scratchdet's convention;
        "xywh":   (x1, y1, w, h), top-left corner and size, as in COCO JSON files;
        "cxcywh": (cx, cy, w, h), centre and size.

    Args:
        boxes: (N, 4) integer or float array in format `src`.
        src, dst: one of `FORMATS`.

    Returns:
        (N, 4) float array in format `dst`: float32 for float32 input, float64 otherwise.
    """
    for arg, fmt in (("src", src), ("dst", dst)):
        if fmt not in FORMATS:
            raise InvalidArgumentError(f"{arg} must be one of {FORMATS}, got {fmt!r}")
    arr = _check_boxes("boxes", boxes, fmt=src)
    b = arr.astype(_float_dtype(arr))
    # 1. src -> xyxy
    if src == "xywh":
        b = np.concatenate([b[:, :2], b[:, :2] + b[:, 2:]], axis=1)
    elif src == "cxcywh":
        b = np.concatenate([b[:, :2] - 0.5 * b[:, 2:], b[:, :2] + 0.5 * b[:, 2:]], axis=1)
    # 2. xyxy -> dst
    if dst == "xywh":
        b = np.concatenate([b[:, :2], b[:, 2:] - b[:, :2]], axis=1)
    elif dst == "cxcywh":
        b = np.concatenate([0.5 * (b[:, :2] + b[:, 2:]), b[:, 2:] - b[:, :2]], axis=1)
    return np.ascontiguousarray(b)  # (N, 4)


def area(boxes):
    """Area `(x2 - x1) * (y2 - y1)` of each xyxy box.

    Args:
        boxes: (N, 4) xyxy boxes, integer or float.

    Returns:
        (N,) float array (float32 for float32 input, float64 otherwise).
    """
    arr = _check_boxes("boxes", boxes)
    b = arr.astype(_float_dtype(arr), copy=False)
    return (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])


def clip(boxes, image_shape):
    """Clip xyxy boxes to an image: x to [0, W], y to [0, H].

    In continuous coordinates an H x W image covers [0, W] x [0, H], so a box may end at x2 = W.

    Args:
        boxes: (N, 4) xyxy boxes, integer or float.
        image_shape: (H, W) or (H, W, C), e.g. `image.shape`.

    Returns:
        (N, 4) float array, a new array (float32 for float32 input, float64 otherwise). A box
        entirely outside the image becomes a degenerate box (zero width or height) on its border;
        drop those with `remove_small`.
    """
    arr = _check_boxes("boxes", boxes)
    shape = tuple(image_shape) if isinstance(image_shape, (tuple, list, np.ndarray)) else None
    if shape is None or len(shape) not in (2, 3) or not all(isinstance(s, numbers.Integral) and s > 0 for s in shape[:2]):
        raise InvalidArgumentError(f"image_shape must be (H, W) or (H, W, C) with positive H, W, got {image_shape!r}")
    height, width = int(shape[0]), int(shape[1])
    out = arr.astype(_float_dtype(arr))  # a copy
    np.clip(out[:, 0::2], 0, width, out=out[:, 0::2])
    np.clip(out[:, 1::2], 0, height, out=out[:, 1::2])
    return out


def remove_small(boxes, min_size):
    """Indices of the boxes whose width and height are both at least `min_size`.

    Args:
        boxes: (N, 4) xyxy boxes, integer or float.
        min_size: non-negative number, in pixels.

    Returns:
        (K,) int64 indices into `boxes`, increasing.
    """
    arr = _check_boxes("boxes", boxes).astype(np.float64, copy=False)
    if isinstance(min_size, bool) or not isinstance(min_size, numbers.Real) or not min_size >= 0:
        raise InvalidArgumentError(f"min_size must be a non-negative number, got {min_size!r}")
    w = arr[:, 2] - arr[:, 0]
    h = arr[:, 3] - arr[:, 1]
    return np.flatnonzero((w >= min_size) & (h >= min_size)).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------------------------


def iou(boxes1, boxes2):
    """Intersection over union of every pair of boxes (the Jaccard index).

    IoU(a, b) = area(a & b) / area(a | b). Computed by `scratchdet.kernels.shared.boxes.iou_pair`,
    which gives 0 for boxes that do not overlap and for a pair whose union has no area.

    Args:
        boxes1: (N, 4) xyxy boxes, integer or float.
        boxes2: (M, 4) xyxy boxes, integer or float.

    Returns:
        (N, M) float array in [0, 1] (float32 when both inputs are float32, float64 otherwise).
        A NumPy array for NumPy input, a Numba device array for device-array input.
    """
    if is_cuda_array(boxes1):
        return _cuda().iou(boxes1, boxes2)
    a = _check_boxes("boxes1", boxes1)
    b = _check_boxes("boxes2", boxes2)
    out = np.empty((a.shape[0], b.shape[0]), dtype=_float_dtype(a, b))  # (N, M)
    _cpu.iou_matrix(_f64(a), _f64(b), out)
    return out


# ----------------------------------------------------------------------------------------------
# the R-CNN box parametrisation
# ----------------------------------------------------------------------------------------------


def encode(proposals, gt, weights=(1.0, 1.0, 1.0, 1.0)):
    """Regression targets that move each proposal onto its matched ground-truth box.

    R-CNN (Girshick et al. 2014), appendix C, eqs. 6-9, with P the proposal and G its ground truth
    as centre (x, y), width w and height h:

        tx = wx * (Gx - Px) / Pw    ty = wy * (Gy - Py) / Ph    tw = ww * log(Gw / Pw)    th = wh * log(Gh / Ph)

    Args:
        proposals: (N, 4) integer or float xyxy boxes P with positive width and height.
        gt: (N, 4) integer or float xyxy boxes G, row i matched to proposal i, positive width and height.
        weights: (wx, wy, ww, wh), positive; (1, 1, 1, 1) is the paper, Fast R-CNN
            implementations often use (10, 10, 5, 5).

    Returns:
        (N, 4) float deltas (tx, ty, tw, th) (float32 when both inputs are float32, float64 otherwise).
    """
    if is_cuda_array(proposals):
        return _cuda().encode(proposals, gt, weights)
    p = _check_boxes("proposals", proposals, positive=True)
    g = _check_boxes("gt", gt, positive=True)
    if p.shape[0] != g.shape[0]:
        raise InvalidArgumentError(
            f"proposals and gt must have the same number of rows (one gt per proposal), got {p.shape[0]} and {g.shape[0]}"
        )
    w = _check_weights(weights)
    out = _cpu.encode(_f64(p), _f64(g), w)  # (N, 4) float64
    return out.astype(_float_dtype(p, g), copy=False)


def decode(proposals, deltas, weights=(1.0, 1.0, 1.0, 1.0), clamp=DEFAULT_DECODE_CLAMP):
    """Apply regression deltas to proposals: the inverse of `encode` (R-CNN, appendix C, eqs. 1-4).

        Gx = Px + Pw * tx / wx    Gy = Py + Ph * ty / wy
        Gw = Pw * exp(min(tw / ww, clamp))    Gh = Ph * exp(min(th / wh, clamp))

    The clamp keeps `exp` finite for wild predictions (torchvision: "prevent sending too large values
    into exp"); only growth is bounded, as in torchvision.

    For class-specific deltas (Fast R-CNN, shape (N, 4 * C)), decode
    `np.repeat(proposals, C, axis=0)` with `deltas.reshape(N * C, 4)`.

    Args:
        proposals: (N, 4) integer or float xyxy boxes P.
        deltas: (N, 4) integer or float finite deltas (tx, ty, tw, th).
        weights: (wx, wy, ww, wh), the weights `encode` used.
        clamp: upper bound on the log-size change (default log(1000 / 16)); `math.inf` disables it.

    Returns:
        (N, 4) float xyxy boxes (float32 when both inputs are float32, float64 otherwise).
    """
    if is_cuda_array(proposals):
        return _cuda().decode(proposals, deltas, weights, clamp)
    p = _check_boxes("proposals", proposals)
    d = _as_real_array("deltas", deltas)
    if d.ndim == 1 and d.size == 0:
        d = d.reshape(0, 4)
    if d.shape != p.shape:
        raise InvalidArgumentError(f"deltas must have shape {p.shape} like proposals, got shape {d.shape}")
    if not np.isfinite(d).all():
        i = int(np.flatnonzero(~np.isfinite(d).all(axis=1))[0])
        raise InvalidArgumentError(f"deltas[{i}] = {d[i].tolist()} is not finite")
    w = _check_weights(weights)
    if isinstance(clamp, bool) or not isinstance(clamp, numbers.Real) or math.isnan(clamp):
        raise InvalidArgumentError(f"clamp must be a number, got {clamp!r}")
    out = _cpu.decode(_f64(p), _f64(d), w, float(clamp))  # (N, 4) float64
    return out.astype(_float_dtype(p, d), copy=False)


# ----------------------------------------------------------------------------------------------
# non-maximum suppression
# ----------------------------------------------------------------------------------------------


def _descending_keys(scores):
    """(N,) keys whose ascending order is the descending order of `scores`, exactly: -s in float64 for
    float scores, ~s (= -s - 1, which cannot overflow) for signed integers and max - s for unsigned
    ones (integers above 2**53 are not all float64 numbers: distinct scores would tie)."""
    if scores.dtype.kind == "i":
        return ~scores
    if scores.dtype.kind == "u":
        return np.iinfo(scores.dtype).max - scores
    return -scores.astype(np.float64)


def _device_ready_scores(scores, boxes):
    """Scores for the CUDA NMS: a device array as it is (its values are not read back to be checked:
    they must be finite), host scores checked as the CPU's, integers made float64 in the same order,
    ties and all (integers beyond 2**53, which float64 cannot all hold, by their ranks)."""
    if is_cuda_array(scores):
        return scores
    s = _check_vector("scores", scores, boxes.shape[0])
    if s.dtype.kind in "iu" and s.size and max(-int(s.min()), int(s.max())) > 2**53:
        return np.unique(s, return_inverse=True)[1].astype(np.float64)
    return s if s.dtype.kind == "f" else s.astype(np.float64)


def _score_order(scores):
    """Indices sorting `scores` descending; equal scores keep their index order.

    NumPy's default sort is several times faster than its stable sort and differs from it only in
    the order of equal scores, so sort with it and then put each run of equal scores in index order.
    """
    keys = _descending_keys(scores)  # (N,)
    order = np.argsort(keys).astype(np.int64, copy=False)
    _cpu.order_ties_by_index(keys[order], order)
    return order


def nms(boxes, scores, iou_threshold):
    """Greedy non-maximum suppression (R-CNN, Girshick et al. 2014, section 2.2).

    R-CNN "rejects a region if it has an intersection-over-union (IoU) overlap with a higher scoring
    selected region larger than a learned threshold": visit the boxes from the highest score down and
    keep a box unless its IoU with a box kept before it is greater than `iou_threshold`. A box whose IoU with a kept box equals the threshold exactly is
    kept (as in torchvision and OpenCV). Equal scores are visited in index order.

    Args:
        boxes: (N, 4) xyxy boxes, integer or float.
        scores: (N,) finite scores, integer or float.
        iou_threshold: number in [0, 1]; 1 keeps every box, 0 keeps only boxes that overlap no kept box.

    Returns:
        (K,) int64 indices into `boxes` of the kept boxes, by descending score. A NumPy array for
        NumPy input, a Numba device array for device-array input.
    """
    if is_cuda_array(boxes):
        return _cuda().nms(boxes, _device_ready_scores(scores, boxes), _check_threshold("iou_threshold", iou_threshold))
    b = _check_boxes("boxes", boxes)
    s = _check_vector("scores", scores, b.shape[0])
    t = _check_threshold("iou_threshold", iou_threshold)
    # 1. sort once by descending score
    order = _score_order(s)
    # 2. greedy suppression over a single group
    group_starts = np.array([0, b.shape[0]], dtype=np.int64)
    return _cpu.greedy_nms(_f64(b), order, group_starts, t)


def batched_nms(boxes, scores, labels, iou_threshold):
    """Per-class greedy NMS: boxes with different labels never suppress each other.

    Rather than the coordinate-offset trick (shift each class's boxes by `label * (max_coord + 1)`
    and run one NMS), which changes the floating-point coordinates and so can move a box across the
    IoU threshold, the boxes are grouped by label and each group runs the same greedy loop as `nms`,
    with exactly `nms`'s arithmetic. Grouping also avoids comparing boxes of different classes.

    Args:
        boxes: (N, 4) xyxy boxes, integer or float.
        scores: (N,) finite scores, integer or float.
        labels: (N,) integer class labels.
        iou_threshold: number in [0, 1].

    Returns:
        (K,) int64 indices into `boxes` of the kept boxes, by descending score over all classes
        (equal scores in index order). A NumPy array for NumPy input, a Numba device array for
        device-array boxes (`scratchdet.kernels.cuda.boxes.batched_nms`: the same grouping, no offsets).
    """
    if is_cuda_array(boxes):
        scores = _device_ready_scores(scores, boxes)
        return _cuda().batched_nms(boxes, scores, labels, _check_threshold("iou_threshold", iou_threshold))
    b = _check_boxes("boxes", boxes)
    n = b.shape[0]
    s = _check_vector("scores", scores, n)
    lab = _check_vector("labels", labels, n, kinds="iu")
    t = _check_threshold("iou_threshold", iou_threshold)
    # 1. sort by label, then by descending score within a label (lexsort is stable: ties by index)
    order = np.lexsort((_descending_keys(s), lab)).astype(np.int64)
    # 2. one group per label: where the sorted labels change
    sorted_labels = lab[order]
    changes = np.flatnonzero(sorted_labels[1:] != sorted_labels[:-1]) + 1
    group_starts = np.concatenate([[0], changes, [n]]).astype(np.int64)
    # 3. greedy suppression within each group
    keep = _cpu.greedy_nms(_f64(b), order, group_starts, t)
    # 4. merge the groups' survivors by descending score, ties by index
    keep.sort()
    return keep[_score_order(s[keep])]
