"""COCO mean average precision: the 12 numbers of pycocotools' ``COCOeval`` for boxes, rule for rule.

Lin et al., "Microsoft COCO: Common Objects in Context" (ECCV 2014), and the evaluation code of the
COCO API (``PythonAPI/pycocotools/cocoeval.py``, Dollar and Lin 2015), whose results these are, to
the last bit of the precision arrays. The rules, in the order the code below applies them:

1. Detections of one (image, category) are sorted by score, highest first, file order breaking ties,
   and only the first 100 (``maxDets[-1]``) are kept.
2. IoU of boxes ``[x, y, w, h]``; with a crowd ground truth the denominator is the detection's area
   alone (a detection inside a crowd region overlaps it fully).
3. For each area range (all, small, medium, large: [0, 1e10], [0, 32^2], [32^2, 96^2], [96^2, 1e10],
   closed at both ends as in pycocotools, so that an area of exactly 32^2 is both small and medium;
   decided on the annotation's ``area`` field) a ground truth is *ignored* when it is a crowd or its area is outside the range;
   ignored ground truths go last.
4. For each IoU threshold 0.50:0.05:0.95, each detection in score order takes the still-free ground
   truth of highest IoU >= threshold (the later one on ties); a crowd is never used up; once a
   regular ground truth has matched, an ignored one is not considered. A detection matched to an
   ignored ground truth is ignored; an unmatched detection outside the area range is ignored.
5. Per category, the detections of every image (the first 1, 10 or 100 of each) are merged and
   sorted by score (ties: image id, then rank in the image); cumulated true and false positives
   give recall ``tp / n_gt`` and precision ``tp / (tp + fp + eps)``; the precision envelope
   (running maximum from the right) is read at the 101 recall thresholds 0:0.01:1 (the first point
   at or beyond each, 0 past the last).
6. AP is the mean of the precision array over thresholds and categories, skipping the -1 of a
   category without (regular) ground truth; AR the mean of the final recalls.

Steps 2-5 run in two Numba kernels over flat arrays sorted by (category, image, score), so the
whole evaluation is a few array passes instead of pycocotools' Python loops over dicts.
"""

import math
from dataclasses import dataclass

import numba
import numpy as np

from scratchdet.data.coco import parse_detections, parse_ground_truth

__all__ = [
    "AREA_NAMES",
    "AREA_RANGES",
    "CocoEvaluation",
    "IOU_THRESHOLDS",
    "MAX_DETECTIONS",
    "RECALL_THRESHOLDS",
    "STAT_NAMES",
    "coco_box_iou",
    "coco_evaluation",
    "evaluate_coco",
]

# COCOeval's parameters for boxes (Params.setDetParams), built exactly as pycocotools builds them
# (np.linspace, not np.arange, whose points drift above the true values).
IOU_THRESHOLDS = np.linspace(0.5, 0.95, int(np.round((0.95 - 0.5) / 0.05)) + 1, endpoint=True)  # (T=10,)
RECALL_THRESHOLDS = np.linspace(0.0, 1.00, int(np.round((1.00 - 0.0) / 0.01)) + 1, endpoint=True)  # (R=101,)
MAX_DETECTIONS = np.array([1, 10, 100], dtype=np.int64)  # (M=3,) per image and category
AREA_RANGES = np.array([[0**2, 1e5**2], [0**2, 32**2], [32**2, 96**2], [96**2, 1e5**2]], dtype=np.float64)  # (A=4, 2)
AREA_NAMES = ("all", "small", "medium", "large")

# The 12 summary numbers: (name, is AP, IoU threshold or None for the mean over all, area, maxDets)
_SUMMARY = (
    ("AP", True, None, "all", 100),
    ("AP50", True, 0.5, "all", 100),
    ("AP75", True, 0.75, "all", 100),
    ("APs", True, None, "small", 100),
    ("APm", True, None, "medium", 100),
    ("APl", True, None, "large", 100),
    ("AR1", False, None, "all", 1),
    ("AR10", False, None, "all", 10),
    ("AR100", False, None, "all", 100),
    ("ARs", False, None, "small", 100),
    ("ARm", False, None, "medium", 100),
    ("ARl", False, None, "large", 100),
)
STAT_NAMES = tuple(row[0] for row in _SUMMARY)

# numpy's np.spacing(1), the guard in COCOeval's precision tp / (tp + fp + eps)
_EPS = float(np.spacing(1.0))


@dataclass(frozen=True)
class CocoEvaluation:
    """Everything COCOeval computes for boxes.

    stats:          dict of the 12 numbers by name (`STAT_NAMES`), floats, -1.0 where undefined
    per_class:      dict category name -> AP@[.5:.95] (area all, 100 detections), -1.0 without gt
    category_names: tuple of K names, the order of the K axis (categories sorted by id)
    category_ids:   (K,) int64 category ids, same order
    precision:      (T=10, R=101, K, A=4, M=3) float64, COCOeval's ``eval['precision']``
    recall:         (T=10, K, A=4, M=3) float64, COCOeval's ``eval['recall']``
    """

    stats: dict
    per_class: dict
    category_names: tuple
    category_ids: np.ndarray
    precision: np.ndarray
    recall: np.ndarray

    def summary(self):
        """The 12 numbers by name plus ``per_class``: the dict `evaluate_coco` returns."""
        return {**self.stats, "per_class": dict(self.per_class)}


def evaluate_coco(ground_truth, detections):
    """COCO box mAP: the 12 numbers of pycocotools' ``COCOeval.summarize()`` and per-class AP.

    ground_truth: COCO dataset dict (``images``, ``annotations`` with ``[x, y, w, h]`` boxes,
                  ``area`` and ``iscrowd``, ``categories``), or a parsed `GroundTruth`
    detections:   list of dicts ``{"image_id", "category_id", "bbox": [x, y, w, h], "score"}``,
                  or a parsed `Detections`

    Returns a dict: ``AP AP50 AP75 APs APm APl AR1 AR10 AR100 ARs ARm ARl`` (floats in [0, 1], or
    -1.0 where pycocotools gives -1) and ``per_class`` (category name -> AP, -1.0 without gt).
    Raises DataFormatError on malformed input. See `coco_evaluation` for the precision arrays.

    Where pycocotools stops with an exception this gives an answer, the one its rules imply: an
    empty detection list scores 0.0 (-1.0 where there is no ground truth), a missing ``area`` is the
    box's ``w * h`` and a missing ``iscrowd`` is 0. Where pycocotools silently goes on, this raises
    instead: ids must be integers (not ``1.0`` or ``"1"``), unique, and detections must name an
    image and a category of the ground truth, with finite boxes and scores.
    """
    return coco_evaluation(ground_truth, detections).summary()


def coco_evaluation(ground_truth, detections):
    """Run COCO box evaluation and return a `CocoEvaluation` (stats and precision/recall arrays).

    Arguments as for `evaluate_coco`. Categories are all those of the ground truth, images all its
    images (as COCOeval uses by default).
    """
    gt = parse_ground_truth(ground_truth)
    dt = parse_detections(detections, gt)
    n_images = len(gt.image_ids)
    n_categories = len(gt.category_ids)

    # 1. detections sorted by (category, image, score high to low), file order breaking ties;
    #    keep the first 100 of each (image, category) and note each one's rank within it
    order = np.lexsort((-dt.scores, dt.image, dt.category))  # (D,)
    det_key = dt.category[order] * n_images + dt.image[order]  # (D,) one value per (category, image)
    det_group, det_group_start = _groups(det_key)
    det_rank = np.arange(len(order)) - det_group_start[det_group]  # (D,) 0 = best in its group
    keep = det_rank < MAX_DETECTIONS[-1]
    order, det_key, det_rank = order[keep], det_key[keep], det_rank[keep]  # (D',)
    _, det_group_start = _groups(det_key)  # (P,) where each of the P (image, category) groups starts
    det_boxes = np.ascontiguousarray(dt.boxes[order])  # (D', 4) [x, y, w, h]
    with np.errstate(over="ignore"):  # a huge box's area is infinite: outside every area range, as in pycocotools
        det_area = det_boxes[:, 2] * det_boxes[:, 3]  # (D',) as pycocotools' loadRes: w * h
    group_det_start = np.append(det_group_start, len(order)).astype(np.int64)  # (P+1,)

    # 2. ground truth sorted by (category, image), annotation order kept; for each detection group,
    #    the range of ground truths of the same image and category
    gt_order = np.lexsort((gt.image, gt.category))  # (G,)
    gt_key = gt.category[gt_order] * n_images + gt.image[gt_order]  # (G,)
    group_key = det_key[det_group_start]  # (P,)
    group_gt_start = np.searchsorted(gt_key, group_key, side="left").astype(np.int64)
    group_gt_end = np.searchsorted(gt_key, group_key, side="right").astype(np.int64)
    gt_boxes = np.ascontiguousarray(gt.boxes[gt_order])  # (G, 4)
    gt_area = np.ascontiguousarray(gt.area[gt_order])  # (G,)
    gt_crowd = np.ascontiguousarray(gt.iscrowd[gt_order])  # (G,) bool
    # pycocotools records a match by the gt's id, so a gt with id 0 reads as "no match": keep that
    gt_id_zero = np.ascontiguousarray(gt.ann_ids[gt_order] == 0)  # (G,) bool

    # 3. greedy matching for every area range and IoU threshold: status (A, T, D') of each detection
    status = _match_coco(
        det_boxes, det_area, group_det_start, group_gt_start, group_gt_end,
        gt_boxes, gt_area, gt_crowd, gt_id_zero, IOU_THRESHOLDS, AREA_RANGES,
    )  # fmt: skip

    # 4. number of regular (not crowd, in area range) ground truths per category and area range
    in_range = (gt.area[:, None] >= AREA_RANGES[:, 0]) & (gt.area[:, None] <= AREA_RANGES[:, 1])  # (G, A)
    regular = in_range & ~gt.iscrowd[:, None]
    n_regular = np.stack(
        [np.bincount(gt.category[regular[:, a]], minlength=n_categories) for a in range(len(AREA_RANGES))], axis=1
    ).astype(np.int64)  # (K, A)

    # 5. per category, detections merged over images in score order (ties: image, then rank)
    det_category = dt.category[order]  # (D',)
    merged = np.lexsort((dt.image[order], -dt.scores[order], det_category))  # (D',)
    category_start = np.searchsorted(det_category[merged], np.arange(n_categories + 1)).astype(np.int64)  # (K+1,)
    precision, recall = _accumulate_coco(
        status, det_rank, merged, category_start, n_regular, RECALL_THRESHOLDS, MAX_DETECTIONS
    )

    # 6. the summary numbers, computed as COCOeval.summarize() does (same slices, same means)
    stats = {name: _summarize(precision, recall, ap, iou, area, max_dets) for name, ap, iou, area, max_dets in _SUMMARY}
    per_class = {}
    for k, name in enumerate(gt.category_names):
        values = precision[:, :, k, 0, -1]  # (T, R) area all, 100 detections
        values = values[values > -1]
        per_class[name] = float(np.mean(values)) if values.size else -1.0
    return CocoEvaluation(
        stats=stats,
        per_class=per_class,
        category_names=gt.category_names,
        category_ids=gt.category_ids,
        precision=precision,
        recall=recall,
    )


def _groups(keys):
    """Runs of equal values in a sorted (N,) key array: (N,) run index of each element, (P,) run starts."""
    new_run = np.ones(len(keys), dtype=bool)
    new_run[1:] = keys[1:] != keys[:-1]
    starts = np.flatnonzero(new_run)
    return np.cumsum(new_run) - 1, starts


def _summarize(precision, recall, ap, iou, area, max_dets):
    """One summary number, sliced and averaged exactly as ``COCOeval.summarize._summarize``."""
    a = [AREA_NAMES.index(area)]
    m = [int(np.flatnonzero(MAX_DETECTIONS == max_dets)[0])]
    s = precision if ap else recall
    if iou is not None:
        s = s[np.where(iou == IOU_THRESHOLDS)[0]]
    s = s[:, :, :, a, m] if ap else s[:, :, a, m]
    valid = s[s > -1]
    return float(np.mean(valid)) if valid.size else -1.0


# ----------------------------------------------------------------------------------------------
# Kernels
# ----------------------------------------------------------------------------------------------


def coco_box_iou(dx, dy, dw, dh, gx, gy, gw, gh, crowd):
    """IoU of a detection and a ground-truth box, both ``[x, y, w, h]``, as pycocotools' ``bbIou``.

    With ``crowd`` the union is the detection's area alone: the fraction of the detection inside the
    crowd region. The arithmetic follows maskApi.c operation by operation, so results are bit-equal,
    down to its NaN for boxes that overlap but whose areas all underflow to 0 (1e-200 wide).
    """
    w = min(dx + dw, gx + gw) - max(dx, gx)
    if w <= 0.0:
        return 0.0
    h = min(dy + dh, gy + gh) - max(dy, gy)
    if h <= 0.0:
        return 0.0
    intersection = w * h
    det_area = dw * dh
    union = det_area if crowd else det_area + gw * gh - intersection
    if union <= 0.0:
        return math.nan  # every area underflowed to 0: C's 0.0 / 0.0, which COCOeval lets match
    return intersection / union


_coco_box_iou = numba.njit(cache=True)(coco_box_iou)


@numba.njit(cache=True)
def _match_coco(det_boxes, det_area, group_det_start, group_gt_start, group_gt_end,
                gt_boxes, gt_area, gt_crowd, gt_id_zero, iou_thresholds, area_ranges):  # fmt: skip
    """Greedy matching of COCOeval.evaluateImg for every (image, category) group at once.

    det_boxes:       (D, 4) float64 ``[x, y, w, h]``, sorted by group, then score high to low
    det_area:        (D,) float64, ``w * h``
    group_det_start: (P+1,) int64, detections of group p are ``group_det_start[p]:group_det_start[p+1]``
    group_gt_start, group_gt_end: (P,) int64, ground truths of group p (same image and category)
    gt_boxes:        (G, 4) float64 ``[x, y, w, h]``; gt_area (G,) float64 (the ``area`` field)
    gt_crowd:        (G,) bool; gt_id_zero (G,) bool, annotation id 0 (read as "no match")
    iou_thresholds:  (T,) float64; area_ranges (A, 2) float64, inclusive ``[low, high]``

    Returns status (A, T, D) uint8: 0 ignored, 1 true positive, 2 false positive.
    """
    n_groups = group_gt_start.shape[0]
    n_areas = area_ranges.shape[0]
    n_thresholds = iou_thresholds.shape[0]
    status = np.zeros((n_areas, n_thresholds, det_boxes.shape[0]), dtype=np.uint8)
    max_dets, max_gts = 0, 0
    for p in range(n_groups):
        max_dets = max(max_dets, group_det_start[p + 1] - group_det_start[p])
        max_gts = max(max_gts, group_gt_end[p] - group_gt_start[p])
    ious = np.empty((max_dets, max_gts))  # scratch, reused by every group
    ignored = np.empty(max_gts, dtype=np.bool_)
    order = np.empty(max_gts, dtype=np.int64)
    used = np.empty(max_gts, dtype=np.bool_)

    for p in range(n_groups):
        d0 = group_det_start[p]
        g0 = group_gt_start[p]
        n_det = group_det_start[p + 1] - d0
        n_gt = group_gt_end[p] - g0

        # 1. IoU of every detection with every ground truth of the group
        for i in range(n_det):
            dx, dy, dw, dh = det_boxes[d0 + i, 0], det_boxes[d0 + i, 1], det_boxes[d0 + i, 2], det_boxes[d0 + i, 3]
            for j in range(n_gt):
                g = g0 + j
                ious[i, j] = _coco_box_iou(
                    dx, dy, dw, dh, gt_boxes[g, 0], gt_boxes[g, 1], gt_boxes[g, 2], gt_boxes[g, 3], gt_crowd[g]
                )

        for a in range(n_areas):
            low, high = area_ranges[a, 0], area_ranges[a, 1]

            # 2. ignore crowds and ground truths outside the area range; visit regular ones first
            n_order = 0
            for j in range(n_gt):
                ignored[j] = gt_crowd[g0 + j] or gt_area[g0 + j] < low or gt_area[g0 + j] > high
                if not ignored[j]:
                    order[n_order] = j
                    n_order += 1
            for j in range(n_gt):
                if ignored[j]:
                    order[n_order] = j
                    n_order += 1

            for t in range(n_thresholds):
                # 3. each detection, best first, takes the free ground truth of highest IoU
                used[:n_gt] = False
                for i in range(n_det):
                    best_iou = min(iou_thresholds[t], 1.0 - 1e-10)
                    m = -1
                    for jj in range(n_gt):
                        j = order[jj]
                        if used[j] and not gt_crowd[g0 + j]:
                            continue  # taken, and not a crowd
                        if m > -1 and not ignored[m] and ignored[j]:
                            break  # matched a regular gt; the rest are ignored ones
                        if ious[i, j] < best_iou:
                            continue
                        best_iou = ious[i, j]
                        m = j

                    # 4. true positive, false positive, or ignored
                    det_outside = det_area[d0 + i] < low or det_area[d0 + i] > high
                    if m == -1:
                        is_ignored, is_match = det_outside, False
                    else:
                        used[m] = True
                        is_match = not gt_id_zero[g0 + m]
                        is_ignored = ignored[m] or (not is_match and det_outside)
                    if is_ignored:
                        status[a, t, d0 + i] = 0
                    elif is_match:
                        status[a, t, d0 + i] = 1
                    else:
                        status[a, t, d0 + i] = 2
    return status


@numba.njit(cache=True)
def _accumulate_coco(status, det_rank, merged, category_start, n_regular, recall_thresholds, max_detections):
    """Precision and recall arrays of COCOeval.accumulate from the matching results.

    status:         (A, T, D) uint8 from `_match_coco`
    det_rank:       (D,) int64, rank of each detection within its (image, category), 0 = best
    merged:         (D,) int64, detection indices sorted by (category, score high to low, image, rank)
    category_start: (K+1,) int64, category k's detections are ``merged[category_start[k]:category_start[k+1]]``
    n_regular:      (K, A) int64, regular ground truths per category and area range
    recall_thresholds: (R,) float64; max_detections (M,) int64

    Returns precision (T, R, K, A, M) and recall (T, K, A, M), float64, -1 where there is no
    regular ground truth.
    """
    n_areas, n_thresholds = status.shape[0], status.shape[1]
    n_categories = n_regular.shape[0]
    n_recall = recall_thresholds.shape[0]
    n_max = max_detections.shape[0]
    precision = -np.ones((n_thresholds, n_recall, n_categories, n_areas, n_max))
    recall = -np.ones((n_thresholds, n_categories, n_areas, n_max))
    longest = 0
    for k in range(n_categories):
        longest = max(longest, category_start[k + 1] - category_start[k])
    rc = np.empty(longest)
    pr = np.empty(longest)

    for k in range(n_categories):
        for a in range(n_areas):
            n_gt = n_regular[k, a]
            if n_gt == 0:
                continue  # no regular ground truth: precision and recall stay -1
            for m in range(n_max):
                for t in range(n_thresholds):
                    # 1. cumulated true and false positives along the score order; ignored
                    #    detections leave both unchanged, so they add no point to the curve
                    tp, fp = 0.0, 0.0
                    n = 0
                    for idx in range(category_start[k], category_start[k + 1]):
                        d = merged[idx]
                        if det_rank[d] >= max_detections[m] or status[a, t, d] == 0:
                            continue
                        if status[a, t, d] == 1:
                            tp += 1.0
                        else:
                            fp += 1.0
                        rc[n] = tp / n_gt
                        pr[n] = tp / (fp + tp + _EPS)
                        n += 1
                    recall[t, k, a, m] = rc[n - 1] if n > 0 else 0.0

                    # 2. the precision envelope: running maximum from the right
                    for i in range(n - 1, 0, -1):
                        if pr[i] > pr[i - 1]:
                            pr[i - 1] = pr[i]

                    # 3. read it at each recall threshold: the first point with recall >= threshold
                    i = 0
                    for r in range(n_recall):
                        while i < n and rc[i] < recall_thresholds[r]:
                            i += 1
                        precision[t, r, k, a, m] = pr[i] if i < n else 0.0
    return precision, recall
