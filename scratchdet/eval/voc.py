"""Pascal VOC average precision: the devkit's rules, per class and mean, at any IoU threshold.

Everingham et al., "The PASCAL Visual Object Classes (VOC) Challenge" (IJCV 2010), section 4.2, and
the devkit's ``VOCevaldet.m`` / ``VOCap.m``. Per class:

1. Detections of the class, over all images, are sorted by score, highest first (stable: file order
   breaks ties, as MATLAB's ``sort`` does).
2. Each detection is compared with the ground truths of its image and class; the one of highest IoU
   is its candidate. If that IoU >= the threshold: a *difficult* candidate makes the detection
   neither right nor wrong (it is dropped); a candidate not yet detected makes it a true positive
   (and is now detected); an already detected one makes it a false positive (a duplicate).
   Otherwise the detection is a false positive.
3. Recall ``tp / n_pos`` (n_pos counts the non-difficult ground truths) and precision
   ``tp / (tp + fp)`` along the sorted list give the precision/recall curve.
4. AP from the curve: ``"all"`` (VOC 2010 onwards) is the exact area under the precision envelope;
   ``"11point"`` (VOC 2007) averages the highest precision at recall >= 0, 0.1, ..., 1.

Inputs are the same COCO-style dict and detection list as `evaluate_coco`. Annotations with
``"difficult": 1`` are ignored as above, and so are crowd annotations (``"iscrowd": 1``), which VOC
has no notion of: a detection on a crowd region should not be punished. A class without any
non-difficult ground truth has no AP (-1.0) and is left out of the mean.

Boxes use the package's continuous convention (area ``w * h``) unless ``legacy_voc_pixels=True``,
which takes ``x2 = x + w`` as an inclusive pixel index the way the devkit does (width
``x2 - x1 + 1``): with boxes read from VOC XML files by `scratchdet.data.voc_to_coco` that gives the
devkit's numbers exactly (for the 11-point AP, up to the devkit's rounded recall threshold 0.3 that
`voc_ap` describes, and up to the last bit: the 11 precisions are added, then divided by 11, where the
devkit adds each divided by 11).
"""

import math
import numbers
from dataclasses import dataclass

import numba
import numpy as np

from scratchdet.data.coco import parse_detections, parse_ground_truth
from scratchdet.errors import InvalidArgumentError

__all__ = ["VocEvaluation", "evaluate_voc", "voc_ap", "voc_box_iou", "voc_evaluation"]

METHODS = ("all", "11point")


@dataclass(frozen=True)
class VocEvaluation:
    """Pascal VOC results.

    mAP:       float, mean AP over the classes that have non-difficult ground truth (-1.0 if none)
    per_class: dict class name -> AP (-1.0 for a class without non-difficult ground truth)
    curves:    dict class name -> (recall (N,), precision (N,)) float64, one point per detection
               that counts (true or false positive), in score order
    n_positives: dict class name -> number of non-difficult ground truths
    iou_threshold, method, legacy_voc_pixels: the settings used
    """

    mAP: float
    per_class: dict
    curves: dict
    n_positives: dict
    iou_threshold: float
    method: str
    legacy_voc_pixels: bool

    def summary(self):
        """``{"mAP": ..., "per_class": {...}}``: the dict `evaluate_voc` returns."""
        return {"mAP": self.mAP, "per_class": dict(self.per_class)}


def evaluate_voc(ground_truth, detections, iou_threshold=0.5, method="all", legacy_voc_pixels=False):
    """Pascal VOC mean average precision.

    ground_truth:      COCO-style dict (annotations may carry ``"difficult": 1``), or a `GroundTruth`
    detections:        COCO detection list, or a `Detections`
    iou_threshold:     float in (0, 1], a detection matches at IoU >= this (VOC: 0.5)
    method:            ``"all"`` (all-point, VOC 2010+) or ``"11point"`` (VOC 2007)
    legacy_voc_pixels: bool, the devkit's inclusive pixels (width = x2 - x1 + 1) for the IoU

    Returns ``{"mAP": float, "per_class": {class name: AP}}``; see `voc_evaluation` for the curves.
    """
    return voc_evaluation(ground_truth, detections, iou_threshold, method, legacy_voc_pixels).summary()


def voc_evaluation(ground_truth, detections, iou_threshold=0.5, method="all", legacy_voc_pixels=False):
    """Pascal VOC evaluation with the per-class precision/recall curves: a `VocEvaluation`.

    Arguments as for `evaluate_voc`.
    """
    if method not in METHODS:
        raise InvalidArgumentError(f'method must be "all" or "11point", got {method!r}')
    if isinstance(iou_threshold, (bool, np.bool_)) or not isinstance(iou_threshold, numbers.Real) or not 0 < iou_threshold <= 1:
        raise InvalidArgumentError(f"iou_threshold must be a number in (0, 1], got {iou_threshold!r}")
    if not isinstance(legacy_voc_pixels, (bool, np.bool_)):
        raise InvalidArgumentError(f"legacy_voc_pixels must be True or False, got {legacy_voc_pixels!r}")
    gt = parse_ground_truth(ground_truth)
    dt = parse_detections(detections, gt)
    n_images = len(gt.image_ids)

    # 1. detections sorted by (class, score high to low), file order breaking ties
    order = np.lexsort((-dt.scores, dt.category))  # (D,)
    det_category = dt.category[order]
    det_key = det_category * n_images + dt.image[order]  # (D,) one value per (class, image)
    det_boxes = _xyxy(dt.boxes[order])  # (D, 4) x1, y1, x2, y2

    # 2. ground truths sorted by (class, image); each detection's candidates are a range of them
    gt_order = np.lexsort((gt.image, gt.category))  # (G,)
    gt_key = gt.category[gt_order] * n_images + gt.image[gt_order]  # (G,)
    gt_boxes = _xyxy(gt.boxes[gt_order])  # (G, 4)
    gt_ignored = np.ascontiguousarray((gt.difficult | gt.iscrowd)[gt_order])  # (G,) bool
    gt_start = np.searchsorted(gt_key, det_key, side="left").astype(np.int64)  # (D,)
    gt_end = np.searchsorted(gt_key, det_key, side="right").astype(np.int64)  # (D,)

    # 3. true positives, false positives and ignored detections, in score order
    pixel = 1.0 if legacy_voc_pixels else 0.0
    status = _match_voc(det_boxes, gt_start, gt_end, gt_boxes, gt_ignored, float(iou_threshold), pixel)  # (D,)

    # 4. per class: the precision/recall curve and its AP
    n_positives = np.bincount(gt.category[~(gt.difficult | gt.iscrowd)], minlength=len(gt.category_ids))  # (K,)
    per_class, curves, positives = {}, {}, {}
    for k, name in enumerate(gt.category_names):
        in_class = status[det_category == k]
        in_class = in_class[in_class != 0]  # drop detections on difficult objects: they change nothing
        tp = np.cumsum(in_class == 1).astype(np.float64)
        fp = np.cumsum(in_class == 2).astype(np.float64)
        positives[name] = int(n_positives[k])
        if n_positives[k] == 0:
            per_class[name] = -1.0
            curves[name] = (np.zeros(0), np.zeros(0))
            continue
        recall = tp / n_positives[k]
        precision = tp / np.maximum(tp + fp, np.finfo(np.float64).eps)
        curves[name] = (recall, precision)
        per_class[name] = voc_ap(recall, precision, method)
    defined = [ap for ap in per_class.values() if ap >= 0]
    mean_ap = float(np.mean(defined)) if defined else -1.0
    return VocEvaluation(
        mAP=mean_ap,
        per_class=per_class,
        curves=curves,
        n_positives=positives,
        iou_threshold=float(iou_threshold),
        method=method,
        legacy_voc_pixels=bool(legacy_voc_pixels),
    )


def voc_ap(recall, precision, method="all"):
    """Average precision of one precision/recall curve, as the VOC devkit computes it.

    recall, precision: (N,) float64, one point per detection in score order (recall non-decreasing)
    method: ``"all"``: area under the precision envelope (VOCap.m, VOC 2010+);
            ``"11point"``: mean over t = 0, 0.1, ..., 1 of the highest precision at recall >= t
            (VOC 2007). The thresholds are k / 10, so a recall of exactly 3/10 counts at 0.3.
            Implementations differ here: the MATLAB devkit's ``0:0.1:1`` makes the fourth
            threshold 3 * 0.1 = 0.30000000000000004, and py-faster-rcnn's ``np.arange(0, 1.1,
            0.1)`` also 0.6000000000000001 and 0.7000000000000001, so where a class's recall
            lands exactly on 0.3 (0.6, 0.7) their 11-point AP can be a little lower than this one.

    Returns AP, a float in [0, 1]. Raises InvalidArgumentError for arrays of other shapes, values
    outside [0, 1] (a recall in percent, say), or a recall that decreases.
    """
    try:
        recall = np.asarray(recall, dtype=np.float64)
        precision = np.asarray(precision, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError("recall and precision must hold numbers") from None
    if recall.ndim != 1 or recall.shape != precision.shape:
        raise InvalidArgumentError(
            f"recall and precision must be (N,) arrays of the same length, got shapes {recall.shape} and {precision.shape}"
        )
    if not (np.isfinite(recall).all() and np.isfinite(precision).all()):
        raise InvalidArgumentError("recall and precision must be finite")
    if ((recall < 0) | (recall > 1) | (precision < 0) | (precision > 1)).any():
        raise InvalidArgumentError("recall and precision must lie in [0, 1] (fractions, not percentages)")
    if (np.diff(recall) < 0).any():
        raise InvalidArgumentError("recall must not decrease: one point per detection, in score order")
    if method == "11point":
        # the 11 highest precisions added first, then divided (the devkit adds p / 11 eleven times,
        # which can pass 1 in the last bit)
        highest = [precision[recall >= k / 10].max(initial=0.0) for k in range(11)]
        return float(sum(highest) / 11)
    if method != "all":
        raise InvalidArgumentError(f'method must be "all" or "11point", got {method!r}')
    # 1. sentinels: the curve starts at recall 0 and ends at recall 1 with precision 0
    mrec = np.concatenate(([0.0], recall, [1.0]))
    mpre = np.concatenate(([0.0], precision, [0.0]))
    # 2. the precision envelope: the highest precision at this recall or beyond
    mpre = np.maximum.accumulate(mpre[::-1])[::-1]
    # 3. sum the rectangles where recall changes
    steps = np.flatnonzero(mrec[1:] != mrec[:-1])
    return float(np.sum((mrec[steps + 1] - mrec[steps]) * mpre[steps + 1]))


def _xyxy(boxes):
    """(N, 4) ``[x, y, w, h]`` -> (N, 4) float64 ``[x1, y1, x2, y2]`` with x2 = x + w."""
    return np.ascontiguousarray(np.concatenate([boxes[:, :2], boxes[:, :2] + boxes[:, 2:]], axis=1))


def voc_box_iou(ax1, ay1, ax2, ay2, bx1, by1, bx2, by2, pixel):
    """IoU of two ``(x1, y1, x2, y2)`` boxes; ``pixel`` is 1.0 for the devkit's inclusive pixels, else 0.0.

    With pixel = 1 a box covers the pixels x1..x2 inclusive, so its width is x2 - x1 + 1 (VOCevaldet.m).
    """
    iw = min(ax2, bx2) - max(ax1, bx1) + pixel
    ih = min(ay2, by2) - max(ay1, by1) + pixel
    if iw <= 0.0 or ih <= 0.0:
        return 0.0
    intersection = iw * ih
    union = (ax2 - ax1 + pixel) * (ay2 - ay1 + pixel) + (bx2 - bx1 + pixel) * (by2 - by1 + pixel) - intersection
    if union <= 0.0:
        return 0.0  # areas underflowed to 0 (1e-200 wide boxes): the devkit's NaN never matches either
    return intersection / union


_voc_box_iou = numba.njit(cache=True)(voc_box_iou)


@numba.njit(cache=True)
def _match_voc(det_boxes, gt_start, gt_end, gt_boxes, gt_ignored, iou_threshold, pixel):
    """Assign each detection, in score order, as VOCevaldet.m does.

    det_boxes: (D, 4) float64 ``(x1, y1, x2, y2)``, sorted by class, then score high to low
    gt_start, gt_end: (D,) int64, the ground truths of each detection's image and class
    gt_boxes:  (G, 4) float64 ``(x1, y1, x2, y2)``; gt_ignored (G,) bool (difficult or crowd)

    Returns status (D,) uint8: 0 ignored (its best match is difficult), 1 true positive, 2 false positive.
    """
    status = np.full(det_boxes.shape[0], 2, dtype=np.uint8)
    detected = np.zeros(gt_boxes.shape[0], dtype=np.bool_)
    for d in range(det_boxes.shape[0]):
        # 1. the ground truth of highest IoU (the first one on ties)
        best, j_best = -math.inf, -1
        for j in range(gt_start[d], gt_end[d]):
            iou = _voc_box_iou(
                det_boxes[d, 0], det_boxes[d, 1], det_boxes[d, 2], det_boxes[d, 3],
                gt_boxes[j, 0], gt_boxes[j, 1], gt_boxes[j, 2], gt_boxes[j, 3], pixel,
            )  # fmt: skip
            if iou > 0.0 and iou > best:
                best, j_best = iou, j
        # 2. difficult: don't care; free: true positive; already detected: duplicate, false positive
        if j_best >= 0 and best >= iou_threshold:
            if gt_ignored[j_best]:
                status[d] = 0
            elif not detected[j_best]:
                status[d] = 1
                detected[j_best] = True
    return status
