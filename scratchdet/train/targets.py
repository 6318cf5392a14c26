"""Training targets for R-CNN and Fast R-CNN: label proposals by IoU, sample a mini-batch of RoIs,
and compute the box-regression targets of the foreground ones.

Read next to: Girshick et al. 2014 (R-CNN), section 2.3 (fine-tuning: positives at IoU >= 0.5, 32
positives and 96 background windows per mini-batch of 128) and appendix C (box regression); Girshick
2015 (Fast R-CNN), section 2.3, "Mini-batch sampling" and "Multi-task loss".

The steps, per training image:

    rois = with_gt_boxes(proposals, gt_boxes)                       # (R + G, 4)
    matches = match_proposals(rois, gt_boxes, gt_labels)            # label every RoI
    keep = sample_rois(matches.labels, batch_size=64, rng=rng)      # 25% foreground, the rest background
    targets = regression_targets(rois, gt_boxes, matches)[keep]     # (B, 4), zero for background
    labels = matches.labels[keep]                                   # (B,), 0 = background

`labels` and `targets` are what `scratchdet.nn.multitask_loss` takes as `labels` and `bbox_targets`.
"""

import numbers
from typing import NamedTuple

import numpy as np

from scratchdet import boxes as B
from scratchdet.errors import InvalidArgumentError
from scratchdet.nn.layers import as_generator, check_size

# Fast R-CNN's box-target weights (wx, wy, ww, wh): encoding with them divides the R-CNN deltas by
# py-faster-rcnn's BBOX_NORMALIZE_STDS (0.1, 0.1, 0.2, 0.2). See `regression_targets`.
FAST_RCNN_WEIGHTS = (10.0, 10.0, 5.0, 5.0)

__all__ = [
    "FAST_RCNN_WEIGHTS",
    "Matches",
    "match_proposals",
    "sample_rois",
    "regression_targets",
    "with_gt_boxes",
]


# ----------------------------------------------------------------------------------------------
# validation
# ----------------------------------------------------------------------------------------------


def _check_unit_number(name, value):
    """`value` as a float, or an InvalidArgumentError naming `name` unless it is a number in [0, 1]."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0.0 <= value <= 1.0:
        raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    return float(value)


def _check_int_vector(name, x, n=None):
    """A 1-D integer array (an empty list becomes int64), of length `n` when given."""
    arr = np.asarray(x)
    if arr.size == 0 and arr.dtype.kind == "f":
        arr = arr.astype(np.int64)  # np.asarray([]) is float64
    if arr.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if arr.ndim != 1 or (n is not None and arr.shape[0] != n):
        expected = f"({n},)" if n is not None else "(N,)"
        raise InvalidArgumentError(f"{name} must have shape {expected}, got shape {arr.shape}")
    return arr.astype(np.int64, copy=False)


# ----------------------------------------------------------------------------------------------
# 1. label each proposal by its best IoU with the ground truth
# ----------------------------------------------------------------------------------------------


class Matches(NamedTuple):
    """Each proposal's ground-truth match, as `match_proposals` computes it.

    Fields (R proposals):
        labels: (R,) int64, the class 1..K of the matched ground truth for a foreground proposal,
            0 for background, -1 for a proposal to ignore (neither foreground nor background).
        gt_index: (R,) int64, index of the ground-truth box with the highest IoU, for every proposal
            (foreground, background or ignored); -1 when the image has no ground truth.
        max_iou: (R,) float64, that highest IoU (0 when the image has no ground truth).
    """

    labels: np.ndarray
    gt_index: np.ndarray
    max_iou: np.ndarray


def match_proposals(proposals, gt_boxes, gt_labels, *, fg_iou=0.5, bg_iou=(0.1, 0.5)):
    """Label proposals foreground, background or ignored by their highest IoU with a ground-truth box.

    Fast R-CNN (Girshick 2015), section 2.3, "Mini-batch sampling": foreground RoIs "have IoU overlap
    with a groundtruth bounding box of at least 0.5"; background RoIs "have a maximum IoU with ground
    truth in the interval [0.1, 0.5)" (the lower bound "appears to act as a heuristic for hard example
    mining"). So, with m the highest IoU of a proposal over the ground-truth boxes:

        foreground  (label of that gt box):  m >= fg_iou
        background  (label 0):               bg_iou[0] <= m < bg_iou[1]
        ignored     (label -1):              otherwise

    R-CNN's fine-tuning (Girshick et al. 2014, section 2.3) is `fg_iou=0.5, bg_iou=(0.0, 0.5)`: every
    proposal below 0.5 is background. A proposal whose IoU ties between several ground-truth boxes is
    matched to the lowest index (`argmax`). Both thresholds compare the exact float64 IoU, whatever
    the boxes' dtype.

    With no ground truth (G = 0) nothing can be foreground; every proposal has m = 0 and gt_index
    -1, so it is background when bg_iou[0] == 0 < bg_iou[1] and ignored otherwise.

    Args:
        proposals: (R, 4) integer or float xyxy boxes.
        gt_boxes: (G, 4) integer or float xyxy ground-truth boxes; G may be 0.
        gt_labels: (G,) integer classes, each >= 1 (0 is the background class).
        fg_iou: number in [0, 1], the lowest IoU of a foreground proposal.
        bg_iou: (low, high), numbers with 0 <= low <= high <= fg_iou: background is low <= m < high.

    Returns:
        Matches(labels (R,) int64, gt_index (R,) int64, max_iou (R,) float64).
    """
    p = B._check_boxes("proposals", proposals)
    g = B._check_boxes("gt_boxes", gt_boxes)
    labels_gt = _check_int_vector("gt_labels", gt_labels, g.shape[0])
    if labels_gt.size and labels_gt.min() < 1:
        i = int(np.argmin(labels_gt))
        raise InvalidArgumentError(
            f"gt_labels[{i}] = {labels_gt[i]}; ground-truth classes must be >= 1 (0 is the background)"
        )
    fg = _check_unit_number("fg_iou", fg_iou)
    if isinstance(bg_iou, (str, bytes)) or not hasattr(bg_iou, "__len__") or len(bg_iou) != 2:
        raise InvalidArgumentError(f"bg_iou must be a pair (low, high), got {bg_iou!r}")
    bg_low = _check_unit_number("bg_iou[0]", bg_iou[0])
    bg_high = _check_unit_number("bg_iou[1]", bg_iou[1])
    if not bg_low <= bg_high <= fg:
        raise InvalidArgumentError(
            f"bg_iou = {tuple(bg_iou)!r} and fg_iou = {fg_iou!r} must satisfy bg_iou[0] <= bg_iou[1] <= fg_iou "
            "(background and foreground must not overlap)"
        )
    n_proposals, n_gt = p.shape[0], g.shape[0]

    # 1. the best ground-truth box of each proposal (float64 boxes give a float64 IoU matrix, so the
    #    thresholds see the exact IoU even for float32 boxes, which float64 represents exactly)
    if n_gt == 0:
        gt_index = np.full(n_proposals, -1, dtype=np.int64)
        max_iou = np.zeros(n_proposals, dtype=np.float64)
    else:
        overlaps = B.iou(p.astype(np.float64), g.astype(np.float64))  # (R, G)
        gt_index = overlaps.argmax(axis=1).astype(np.int64)  # (R,) ties -> lowest index
        max_iou = overlaps[np.arange(n_proposals), gt_index]  # (R,)

    # 2. foreground takes the class of its ground truth, background 0, the rest -1
    labels = np.full(n_proposals, -1, dtype=np.int64)
    labels[(max_iou >= bg_low) & (max_iou < bg_high)] = 0
    if n_gt:
        foreground = max_iou >= fg
        labels[foreground] = labels_gt[gt_index[foreground]]
    return Matches(labels, gt_index, max_iou)


# ----------------------------------------------------------------------------------------------
# 2. sample a mini-batch of RoIs
# ----------------------------------------------------------------------------------------------


def sample_rois(labels, *, batch_size, fg_fraction=0.25, rng):
    """Indices of a mini-batch of RoIs: a bounded share of foreground, the rest background.

    Fast R-CNN (Girshick 2015), section 2.3, "Mini-batch sampling": of the R / N = 64 RoIs of each
    image, "we take 25% of the RoIs from object proposals that have IoU overlap with a groundtruth
    bounding box of at least 0.5"; the remaining are background. R-CNN (Girshick et al. 2014,
    section 2.3) does the same with 32 positives and 96 background windows in a batch of 128: it
    biases "the sampling towards positive windows because they are extremely rare compared to
    background". Here:

        1. draw n_fg = min(round(fg_fraction * batch_size), #foreground) foreground RoIs
           (labels >= 1) uniformly without replacement;
        2. draw n_bg = min(batch_size - n_fg, #background) background RoIs (labels == 0) the same way.

    Ignored RoIs (label -1) are never drawn. `round` rounds half to even, like py-faster-rcnn's
    `np.round(FG_FRACTION * rois_per_image)`.

    Fewer than `batch_size` indices come back when the image has too few foreground plus background
    RoIs (background fills in for missing foreground, never the other way round); none when it has
    none.

    Args:
        labels: (R,) integer labels from `match_proposals`: >= 1 foreground, 0 background, -1 ignored.
        batch_size: integer >= 1, the most RoIs to return.
        fg_fraction: number in [0, 1], the largest share of foreground.
        rng: a `numpy.random.Generator` or an integer seed; the same one gives the same indices.

    Returns:
        (n_fg + n_bg,) int64 indices into `labels`, without repeats: the foreground ones first, then
        the background ones, each group in the order drawn. So `labels[indices[:n_fg]] >= 1` with
        `n_fg = (labels[indices] >= 1).sum()`.
    """
    labels = _check_int_vector("labels", labels)
    if labels.size and labels.min() < -1:
        i = int(np.argmin(labels))
        raise InvalidArgumentError(
            f"labels[{i}] = {labels[i]}; labels must be -1 (ignored), 0 (background) or a class >= 1"
        )
    batch_size = check_size("batch_size", batch_size)
    fg_fraction = _check_unit_number("fg_fraction", fg_fraction)
    rng = as_generator(rng)
    foreground = np.flatnonzero(labels >= 1)
    background = np.flatnonzero(labels == 0)

    # 1. foreground, at most fg_fraction of the batch
    n_fg = min(round(fg_fraction * batch_size), foreground.size)
    fg_drawn = rng.permutation(foreground)[:n_fg]  # uniform without replacement: shuffle, take the first

    # 2. background fills the rest of the batch, as far as there is background
    n_bg = min(batch_size - n_fg, background.size)
    bg_drawn = rng.permutation(background)[:n_bg]
    return np.concatenate([fg_drawn, bg_drawn]).astype(np.int64)


# ----------------------------------------------------------------------------------------------
# 3. box-regression targets
# ----------------------------------------------------------------------------------------------


def regression_targets(proposals, gt_boxes, matches, *, weights=FAST_RCNN_WEIGHTS):
    """The box-regression target v of each proposal: R-CNN's deltas to its matched ground truth.

    For a foreground proposal P matched to the ground-truth box G, `boxes.encode(P, G, weights)`
    (R-CNN, Girshick et al. 2014, appendix C, eqs. 6-9, each delta multiplied by its weight); for
    background and ignored proposals 0, which the multi-task loss never reads (its box term has the
    Iverson bracket [u >= 1], Fast R-CNN, eq. 1).

    The weights: Fast R-CNN (Girshick 2015, section 2.3, "Multi-task loss") normalises the targets
    "to have zero mean and unit variance". Its code, py-faster-rcnn, uses means 0 and standard
    deviations BBOX_NORMALIZE_STDS = (0.1, 0.1, 0.2, 0.2), so its target is t / std: exactly the
    deltas encoded with weights (1 / 0.1, 1 / 0.1, 1 / 0.2, 1 / 0.2) = (10, 10, 5, 5), torchvision's
    default for Fast R-CNN's box coder. Weights (1, 1, 1, 1) are the R-CNN paper's plain deltas. The
    model must decode its predictions with the same weights (`boxes.decode(rois, deltas, weights)`).

    Args:
        proposals: (R, 4) integer or float xyxy boxes; foreground ones need positive width and height.
        gt_boxes: (G, 4) integer or float xyxy ground-truth boxes, the ones `matches` was computed for.
        matches: the `Matches` of `match_proposals(proposals, gt_boxes, ...)`.
        weights: (wx, wy, ww, wh), positive.

    Returns:
        (R, 4) float32 targets (tx, ty, tw, th); rows of non-foreground proposals are 0.
    """
    p = B._check_boxes("proposals", proposals)
    g = B._check_boxes("gt_boxes", gt_boxes)
    n_proposals, n_gt = p.shape[0], g.shape[0]
    if not all(hasattr(matches, field) for field in Matches._fields):
        raise InvalidArgumentError(f"matches must be the Matches of match_proposals, got {type(matches).__name__}")
    labels = _check_int_vector("matches.labels", matches.labels, n_proposals)
    gt_index = _check_int_vector("matches.gt_index", matches.gt_index, n_proposals)
    foreground = np.flatnonzero(labels >= 1)  # (F,)
    matched = gt_index[foreground]  # (F,)
    if matched.size and (matched.min() < 0 or matched.max() >= n_gt):
        i = int(foreground[np.flatnonzero((matched < 0) | (matched >= n_gt))[0]])
        raise InvalidArgumentError(
            f"matches.gt_index[{i}] = {gt_index[i]} for a foreground proposal, but gt_boxes has {n_gt} boxes"
        )
    # 1. encode needs a positive size; name the offending row by its index among all proposals
    for name, rows, arr in (("proposals", foreground, p), ("gt_boxes", matched, g)):
        sizes = arr[rows, 2:].astype(np.float64) - arr[rows, :2]  # (F, 2) widths and heights
        flat = np.flatnonzero((sizes <= 0).any(axis=1))
        if flat.size:
            i = int(rows[flat[0]])
            raise InvalidArgumentError(
                f"{name}[{i}] = {arr[i].tolist()} is matched to a foreground proposal but has no area; "
                "box deltas need a positive width and height"
            )

    # 2. the deltas of the foreground rows (encode validates the weights even when F = 0)
    targets = np.zeros((n_proposals, 4), dtype=np.float32)  # (R, 4)
    deltas = B.encode(p[foreground].astype(np.float64), g[matched].astype(np.float64), weights)  # (F, 4) float64
    targets[foreground] = deltas
    return targets


# ----------------------------------------------------------------------------------------------
# 4. the ground truth as extra proposals
# ----------------------------------------------------------------------------------------------


def with_gt_boxes(proposals, gt_boxes):
    """The proposals followed by the ground-truth boxes, the RoIs to label during training.

    R-CNN trains its SVMs with the ground-truth boxes as the positive examples (Girshick et al. 2014,
    section 2.3), and Fast R-CNN's training code adds them to the object proposals of each image:
    each has IoU 1 with itself, so it is a perfectly placed foreground RoI, and an image whose
    proposals all miss an object still has a positive for it. Use at training time only.

    Args:
        proposals: (R, 4) integer or float xyxy boxes.
        gt_boxes: (G, 4) integer or float xyxy ground-truth boxes; G may be 0.

    Returns:
        (R + G, 4) float xyxy boxes, rows 0..R-1 the proposals and R..R+G-1 the ground truth:
        float32 for float32 proposals (the ground truth is rounded to float32), float64 otherwise.
    """
    p = B._check_boxes("proposals", proposals)
    g = B._check_boxes("gt_boxes", gt_boxes)
    dtype = B._float_dtype(p)
    return np.concatenate([p.astype(dtype, copy=False), g.astype(dtype, copy=False)], axis=0)  # (R + G, 4)
