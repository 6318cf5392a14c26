"""Proposal quality: recall at IoU thresholds, average recall, (mean) average best overlap, recall vs. #proposals.

A region-proposal method is judged by how well its boxes cover the ground truth, whatever their
scores: Uijlings et al. 2013 (Selective Search, section 5) report the Average Best Overlap (ABO) per
class and its mean over classes (MABO); Hosang et al. 2014 / 2016 ("What makes for effective detection
proposals?") report recall at IoU thresholds, average recall (AR) over IoU 0.5 to 1, and both as
functions of the number of proposals.
"""

import numbers

import numpy as np

from scratchdet.boxes import _check_boxes, _check_vector, _f64
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import boxes as _cpu

# COCO's object-size ranges by box area (Lin et al. 2014, "detection evaluation"): small < 32^2 <=
# medium < 96^2 <= large. COCOeval's ranges are closed at both ends, so there a box of area exactly
# 32^2 counts as both small and medium; here the three ranges partition the boxes.
SIZE_RANGES = {"small": (0.0, 32.0**2), "medium": (32.0**2, 96.0**2), "large": (96.0**2, np.inf)}

DEFAULT_COUNTS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000)

__all__ = ["SIZE_RANGES", "DEFAULT_COUNTS", "best_overlaps", "mabo", "proposal_recall", "recall_curve"]


# ----------------------------------------------------------------------------------------------
# inputs: one image's arrays or a list of them
# ----------------------------------------------------------------------------------------------


def _is_row(value):
    """True for a non-empty list or tuple of plain numbers, such as one box ``[x1, y1, x2, y2]``."""
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, numbers.Real) for v in value)


def _as_image_list(name, value, rows=True):
    """A list of per-image arrays: a NumPy array is one image, a list or tuple holds one per image.

    One image may also be written as nested lists: a list of boxes ``[[x1, y1, x2, y2], ...]``
    (`rows`), or a list of labels ``[1, 2, ...]`` (not `rows`). A per-image entry is never a single
    box or a single label, so these cannot be mistaken for a list of images.
    """
    if isinstance(value, np.ndarray):
        return [value]
    if isinstance(value, (list, tuple)):
        one_image = all(_is_row(v) for v in value) if rows else all(isinstance(v, numbers.Real) for v in value)
        return [value] if value and one_image else list(value)
    raise InvalidArgumentError(
        f"{name} must be one image's NumPy array or a list of per-image arrays, got {type(value).__name__}"
    )


def _images(gt_boxes, proposals, gt_labels=None):
    """Validate the inputs; returns lists of float64 (Gi, 4) gt, (Pi, 4) proposals and (Gi,) labels."""
    gts = _as_image_list("gt_boxes", gt_boxes)
    props = _as_image_list("proposals", proposals)
    if len(gts) != len(props):
        raise InvalidArgumentError(
            f"gt_boxes and proposals must hold the same number of images, got {len(gts)} and {len(props)}"
        )
    gts = [_f64(_check_boxes(f"gt_boxes[{i}]", g)) for i, g in enumerate(gts)]
    props = [_f64(_check_boxes(f"proposals[{i}]", p)) for i, p in enumerate(props)]
    labels = None
    if gt_labels is not None:
        labels = _as_image_list("gt_labels", gt_labels, rows=False)
        if len(labels) != len(gts):
            raise InvalidArgumentError(
                f"gt_labels must hold one array per image ({len(gts)}), got {len(labels)}"
            )
        labels = [
            np.asarray(_check_vector(f"gt_labels[{i}]", lab, g.shape[0], kinds="iu"), dtype=np.int64)
            for i, (lab, g) in enumerate(zip(labels, gts))
        ]
    return gts, props, labels


def _check_thresholds(iou_thresholds):
    if isinstance(iou_thresholds, np.ndarray):
        iou_thresholds = iou_thresholds.tolist()  # a 0-d array becomes a number, a 1-d one a list
    try:
        values = (iou_thresholds,) if isinstance(iou_thresholds, numbers.Real) else tuple(iou_thresholds)
    except TypeError:
        raise InvalidArgumentError(f"iou_thresholds must be a number or a sequence of numbers, got {iou_thresholds!r}") from None
    for t in values:
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not 0.0 <= float(t) <= 1.0:
            raise InvalidArgumentError(f"iou_thresholds must be numbers in [0, 1], got {iou_thresholds!r}")
    if not values:
        raise InvalidArgumentError("iou_thresholds must hold at least one threshold")
    return tuple(float(t) for t in values)


def _check_max_proposals(max_proposals):
    if max_proposals is None:
        return None
    if isinstance(max_proposals, bool) or not isinstance(max_proposals, numbers.Integral) or max_proposals < 0:
        raise InvalidArgumentError(f"max_proposals must be None or a non-negative integer, got {max_proposals!r}")
    return int(max_proposals)


# ----------------------------------------------------------------------------------------------
# the measures
# ----------------------------------------------------------------------------------------------


def best_overlaps(gt_boxes, proposals, max_proposals=None):
    """Best overlap of each ground-truth box: max over the proposals of IoU(gt, proposal).

    Args:
        gt_boxes: one image's (G, 4) xyxy array (integers or floats, finite), or a list of them (one per image).
        proposals: one image's (P, 4) xyxy array (integers or floats, finite), or a list of them, ranked
            best first. Overlaps are computed in float64 whatever the input dtype.
        max_proposals: use only each image's first `max_proposals` proposals (None: all).

    Returns:
        (sum G,) float64 in [0, 1], image after image; 0 for a gt box in an image without proposals.
    """
    gts, props, _ = _images(gt_boxes, proposals)
    k = _check_max_proposals(max_proposals)
    return _best_overlaps(gts, props, k)


def _iou64(gt, proposals):
    """(G, P) float64 IoU of validated float64 boxes.

    Kept in float64 even for float32 input, so that a best overlap just under a threshold is not
    rounded onto it.
    """
    out = np.empty((gt.shape[0], proposals.shape[0]), dtype=np.float64)
    _cpu.iou_matrix(gt, proposals, out)
    return out


def _best_overlaps(gts, props, max_proposals):
    out = [np.zeros(0)]
    for g, p in zip(gts, props):
        p = p if max_proposals is None else p[:max_proposals]
        if p.shape[0] == 0:
            out.append(np.zeros(g.shape[0]))
        else:
            out.append(_iou64(g, p).max(axis=1))  # (G, P) -> (G,)
    return np.concatenate(out)


def _mabo(overlaps, labels):
    """MABO (Uijlings et al. 2013, section 5): ABO per class, then the mean over classes.

    Without labels, every box is one class: the mean best overlap. NaN when there is no gt box.
    Returns (mabo, {label: abo}) with an empty dict when there are no labels.
    """
    if overlaps.size == 0:
        return float("nan"), {}
    if labels is None:
        return float(overlaps.mean()), {}
    # ABO_c = (1 / |G_c|) sum over gt g of class c of max_l IoU(g, l)
    abo = {int(c): float(overlaps[labels == c].mean()) for c in np.unique(labels)}
    return float(np.mean(list(abo.values()))), abo


def mabo(gt_boxes, proposals, gt_labels=None, max_proposals=None):
    """Mean Average Best Overlap (Uijlings et al. 2013, section 5).

    ABO of class c: the mean over the ground-truth boxes of class c of their best overlap with any
    proposal; MABO: the mean of the ABOs over the classes present. Without `gt_labels` all boxes form
    one class, and MABO is the mean best overlap over all ground-truth boxes.

    Args:
        gt_boxes: one image's (G, 4) xyxy array (integers or floats, finite), or a list of them (one per image).
        proposals: one image's (P, 4) xyxy array (integers or floats, finite), or a list of them, ranked
            best first. Overlaps are computed in float64 whatever the input dtype.
        gt_labels: optional (G,) integer class labels, or a list of them, matching `gt_boxes`.
        max_proposals: use only each image's first `max_proposals` proposals (None: all).

    Returns:
        float in [0, 1]; NaN when there is no ground-truth box at all.
    """
    gts, props, labels = _images(gt_boxes, proposals, gt_labels)
    k = _check_max_proposals(max_proposals)
    overlaps = _best_overlaps(gts, props, k)
    return _mabo(overlaps, None if labels is None else np.concatenate([np.zeros(0, np.int64)] + labels))[0]


def _average_recall(overlaps, axis=-1):
    """Average recall (Hosang et al. 2016): AR = 2 * integral over IoU o in [0.5, 1] of recall(o).

    Recall(o) is the fraction of gt boxes whose best overlap is >= o, so the integral is the mean over
    gt boxes of max(best overlap - 0.5, 0), and AR = 2 * mean(max(best overlap - 0.5, 0)).
    """
    return 2.0 * np.maximum(overlaps - 0.5, 0.0).mean(axis=axis)


def _summary(overlaps, labels, thresholds):
    value, abo = _mabo(overlaps, labels)
    n = overlaps.size
    recall = {t: (float(np.count_nonzero(overlaps >= t)) / n if n else float("nan")) for t in thresholds}
    average_recall = float(_average_recall(overlaps)) if n else float("nan")
    out = {"recall": recall, "average_recall": average_recall, "mabo": value, "num_gt": int(n)}
    if labels is not None:
        out["abo"] = abo
    return out


def proposal_recall(gt_boxes, proposals, iou_thresholds=(0.5, 0.7), gt_labels=None, max_proposals=None):
    """Recall and (M)ABO of region proposals over a set of images.

    A ground-truth box is recalled at threshold t when some proposal of its image has IoU >= t with
    it (COCO's convention, `>=`). Scores play no part: every proposal counts, or the first
    `max_proposals` of each image.

    Args:
        gt_boxes: one image's (G, 4) xyxy array (integers or floats, finite), or a list of them (one per image).
        proposals: one image's (P, 4) xyxy array (integers or floats, finite), or a list of them, ranked
            best first. Overlaps are computed in float64 whatever the input dtype.
        iou_thresholds: a number or a sequence of numbers in [0, 1].
        gt_labels: optional (G,) integer labels (or a list of them): MABO is then the mean over
            classes of the per-class ABO (Uijlings et al. 2013); without labels it is the mean best
            overlap over all ground-truth boxes.
        max_proposals: use only each image's first `max_proposals` proposals (None: all).

    Returns:
        dict with
            "recall": {t: fraction of gt boxes with best overlap >= t} for each threshold;
            "average_recall": float, Hosang et al.'s AR, recall averaged over IoU in [0.5, 1];
            "mabo": float, as described above;
            "abo": {label: ABO of that class} (only when `gt_labels` is given);
            "best_overlaps": (sum G,) float64, each gt box's best overlap, image after image;
            "num_gt", "num_proposals", "num_images": ints (proposals counted after `max_proposals`);
            "by_size": {"small" | "medium" | "large": {"recall", "average_recall", "mabo", "num_gt"(, "abo")}} with
                the gt boxes split by area as in `SIZE_RANGES`.
        Recall and MABO are NaN where there is no ground-truth box.
    """
    thresholds = _check_thresholds(iou_thresholds)
    gts, props, labels = _images(gt_boxes, proposals, gt_labels)
    k = _check_max_proposals(max_proposals)
    # 1. each gt box's best overlap with its image's proposals
    overlaps = _best_overlaps(gts, props, k)
    all_labels = None if labels is None else np.concatenate([np.zeros(0, np.int64)] + labels)
    # 2. recall and MABO over all boxes
    out = _summary(overlaps, all_labels, thresholds)
    out["best_overlaps"] = overlaps
    out["num_proposals"] = int(sum(p.shape[0] if k is None else min(k, p.shape[0]) for p in props))
    out["num_images"] = len(gts)
    # 3. the same per COCO size range
    areas = np.concatenate([np.zeros(0)] + [(g[:, 2] - g[:, 0]) * (g[:, 3] - g[:, 1]) for g in gts])
    out["by_size"] = {}
    for name, (lo, hi) in SIZE_RANGES.items():
        sel = (areas >= lo) & (areas < hi)
        out["by_size"][name] = _summary(overlaps[sel], None if all_labels is None else all_labels[sel], thresholds)
    return out


def recall_curve(gt_boxes, proposals, counts=DEFAULT_COUNTS, iou_threshold=0.5):
    """Recall and mean best overlap as functions of the number of proposals kept per image.

    Keeping the first k proposals of each image (proposals are ranked best first) for each k in
    `counts` gives the "recall vs. number of proposals" curves of Hosang et al. 2016 and, with
    the mean best overlap, the quality-vs-#locations curves of Uijlings et al. 2013. An image with
    fewer than k proposals uses all of them.

    Args:
        gt_boxes: one image's (G, 4) xyxy array (integers or floats, finite), or a list of them (one per image).
        proposals: one image's (P, 4) xyxy array (integers or floats, finite), or a list of them, ranked
            best first. Overlaps are computed in float64 whatever the input dtype.
        counts: increasing positive integers, the numbers of proposals per image.
        iou_threshold: number in [0, 1]; a gt box is recalled when a kept proposal has IoU >= it.

    Returns:
        dict with "counts" (C,) int64, "recall" (C,) float64 (at `iou_threshold`),
        "average_recall" (C,) float64 (Hosang et al.'s AR, see `proposal_recall`),
        "mean_best_overlap" (C,) float64, "iou_threshold" float and "num_gt" int. The curves are NaN
        when there is no gt box.
    """
    if not isinstance(iou_threshold, numbers.Real):
        raise InvalidArgumentError(f"iou_threshold must be a number in [0, 1], got {iou_threshold!r}")
    (threshold,) = _check_thresholds(iou_threshold)
    gts, props, _ = _images(gt_boxes, proposals)
    ks = np.asarray(counts)
    if ks.dtype.kind == "u":
        ks = ks.astype(np.float64)  # so that the differences of decreasing counts are negative, not wrapped
        ks = ks.astype(np.int64) if (ks < 2**63).all() else ks
    if ks.ndim != 1 or ks.size == 0 or ks.dtype.kind not in "iu" or (ks < 1).any() or (np.diff(ks) <= 0).any():
        raise InvalidArgumentError(f"counts must be increasing positive integers, got {counts!r}")
    ks = ks.astype(np.int64)
    # columns[j, i]: best overlap of gt box i among the first ks[j] proposals of its image
    columns = [np.zeros((ks.size, 0))]
    for g, p in zip(gts, props):
        if p.shape[0] == 0:
            columns.append(np.zeros((ks.size, g.shape[0])))
            continue
        p = p[: ks[-1]]
        # 1. the running maximum over proposals: overlap of each gt with the best of the first k
        running = np.maximum.accumulate(_iou64(g, p), axis=1)  # (G, P)
        # 2. read it off at k - 1, capped at the image's own number of proposals
        cols = np.minimum(ks, p.shape[0]) - 1  # (C,)
        columns.append(running[:, cols].T)  # (C, G)
    best = np.concatenate(columns, axis=1)  # (C, sum G)
    n = best.shape[1]
    if n == 0:
        recall = average_recall = mean_best = np.full(ks.size, np.nan)
    else:
        recall = (best >= threshold).mean(axis=1)
        average_recall = _average_recall(best, axis=1)
        mean_best = best.mean(axis=1)
    return {
        "counts": ks,
        "recall": recall,
        "average_recall": average_recall,
        "mean_best_overlap": mean_best,
        "iou_threshold": threshold,
        "num_gt": n,
    }
