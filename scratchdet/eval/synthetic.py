"""Seeded random detection problems (COCO ground truth + detections) for testing and benchmarking.

The same seed and settings give the same dataset, bit for bit, so frozen reference results
(``reference/outputs/coco_*.json``) can be checked against a dataset regenerated from its seed.
The problems are drawn to hit the rules of the COCO evaluation: crowds, images without ground truth
or without detections, categories without ground truth, more than 100 detections in one image, boxes
of every size (small / medium / large, and areas exactly on the range limits), tied scores and exact
duplicate detections, zero-width detections, and an ``area`` field that differs from the box area.
Each case is drawn at random, so a given seed holds most of them, not every one; tests that need a
case check that their problem has it.
"""

import math
import numbers

import numpy as np

from scratchdet.errors import InvalidArgumentError

__all__ = ["random_coco_problem"]

IMAGE_WIDTH, IMAGE_HEIGHT = 640, 480


def random_coco_problem(
    seed,
    *,
    n_images=40,
    n_categories=6,
    gt_per_image=3.0,
    dets_per_gt=1.5,
    false_positives_per_image=1.5,
    crowd_fraction=0.05,
    empty_image_fraction=0.1,
    categories_without_gt=1,
    crowded_images=1,
    score_decimals=2,
):
    """A random COCO ground-truth dict and detection list, deterministic in `seed`.

    seed:                    int >= 0, seeds a ``numpy.random.Generator``
    n_images, n_categories:  sizes of the dataset (ids are non-contiguous and listed shuffled)
    gt_per_image:            mean number of annotations per image (Poisson)
    dets_per_gt:             mean number of jittered detections made from each annotation (Poisson)
    false_positives_per_image: mean number of detections at random places (Poisson)
    crowd_fraction:          fraction of annotations marked ``iscrowd``
    empty_image_fraction:    fraction of images without any annotation
    categories_without_gt:   how many categories are given no annotations (their detections, if
                             any, are false positives; others may end without annotations too)
    crowded_images:          how many images get 120-200 extra detections of one category
    score_decimals:          scores are rounded to this many decimals (0-17), so ties are frequent

    Returns ``(gt, detections)``: a COCO dataset dict and a list of detection dicts. Raises
    InvalidArgumentError for settings that cannot be met (e.g. more crowded images than images).
    """
    # 0. settings that can be met: at least one image, and a category with ground truth
    for name, value in (("n_images", n_images), ("n_categories", n_categories)):
        if not _is_integer(value) or value < 1:
            raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")
    for name, value in (
        ("gt_per_image", gt_per_image),
        ("dets_per_gt", dets_per_gt),
        ("false_positives_per_image", false_positives_per_image),
    ):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
            raise InvalidArgumentError(f"{name} must be a finite non-negative number (a Poisson mean), got {value!r}")
    for name, value in (("crowd_fraction", crowd_fraction), ("empty_image_fraction", empty_image_fraction)):
        if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 <= value <= 1:
            raise InvalidArgumentError(f"{name} must be a number in [0, 1], got {value!r}")
    if not _is_integer(seed) or seed < 0:  # (None would draw another problem on every call)
        raise InvalidArgumentError(f"seed must be an integer >= 0, got {seed!r}")
    if not _is_integer(score_decimals) or not 0 <= score_decimals <= 17:  # (float64 holds 17 digits; 309 made NaN)
        raise InvalidArgumentError(f"score_decimals must be an integer in [0, 17], got {score_decimals!r}")
    if not _is_integer(categories_without_gt) or not 0 <= categories_without_gt < n_categories:
        raise InvalidArgumentError(
            f"categories_without_gt must be an integer in [0, n_categories - 1 = {n_categories - 1}], got {categories_without_gt!r}"
        )
    if not _is_integer(crowded_images) or not 0 <= crowded_images <= n_images:
        raise InvalidArgumentError(f"crowded_images must be an integer in [0, n_images = {n_images}], got {crowded_images!r}")
    rng = np.random.default_rng(seed)

    # 1. images and categories with non-contiguous ids, listed in shuffled order
    image_ids = np.sort(rng.choice(np.arange(1, 10 * n_images + 1), size=n_images, replace=False))
    category_ids = np.sort(rng.choice(np.arange(1, 3 * n_categories + 1), size=n_categories, replace=False))
    gt_categories = category_ids[: n_categories - categories_without_gt]

    # 2. annotations: Poisson many per image, none on the empty images
    per_image = rng.poisson(gt_per_image, size=n_images)
    per_image[rng.random(n_images) < empty_image_fraction] = 0
    n_gt = int(per_image.sum())
    gt_image = np.repeat(image_ids, per_image)
    gt_category = rng.choice(gt_categories, size=n_gt)
    gt_boxes = _random_boxes(rng, n_gt)
    # COCO's area is the segmentation's, somewhat below the box's; some sit exactly on the limits
    area = gt_boxes[:, 2] * gt_boxes[:, 3] * rng.uniform(0.5, 1.0, size=n_gt)
    on_limit = rng.random(n_gt) < 0.05
    area[on_limit] = rng.choice([32.0**2, 96.0**2], size=int(on_limit.sum()))
    iscrowd = rng.random(n_gt) < crowd_fraction

    # 3. detections: jittered copies of annotations (some with the wrong category) ...
    copies = rng.poisson(dets_per_gt, size=n_gt)
    source = np.repeat(np.arange(n_gt), copies)
    det_boxes = _jitter(rng, gt_boxes[source])
    det_image = gt_image[source]
    det_category = gt_category[source].copy()
    wrong = rng.random(len(source)) < 0.1
    det_category[wrong] = rng.choice(category_ids, size=int(wrong.sum()))

    # ... false positives anywhere, in any category (also those without ground truth) ...
    n_fp = int(rng.poisson(false_positives_per_image * n_images))
    fp_boxes = _random_boxes(rng, n_fp)
    fp_image = rng.choice(image_ids, size=n_fp)
    fp_category = rng.choice(category_ids, size=n_fp)

    # ... and a few crowded images with more than 100 detections of one category
    burst_boxes, burst_image, burst_category = [], [], []
    for image_id in rng.choice(image_ids, size=crowded_images, replace=False):
        count = int(rng.integers(120, 201))
        burst_boxes.append(_random_boxes(rng, count))
        burst_image.append(np.full(count, image_id))
        burst_category.append(np.full(count, rng.choice(gt_categories)))
    det_boxes = np.concatenate([det_boxes, fp_boxes, *burst_boxes]).reshape(-1, 4)
    det_image = np.concatenate([det_image, fp_image, *burst_image]).astype(np.int64)
    det_category = np.concatenate([det_category, fp_category, *burst_category]).astype(np.int64)
    scores = np.round(rng.random(len(det_boxes)), score_decimals)

    # 4. exact duplicates (same box, same score) and zero-width detections
    n_det = len(det_boxes)
    duplicate = rng.choice(n_det, size=n_det // 20, replace=False) if n_det else np.zeros(0, dtype=np.int64)
    det_boxes = np.concatenate([det_boxes, det_boxes[duplicate]])
    det_image = np.concatenate([det_image, det_image[duplicate]])
    det_category = np.concatenate([det_category, det_category[duplicate]])
    scores = np.concatenate([scores, scores[duplicate]])
    det_boxes[rng.random(len(det_boxes)) < 0.01, 2] = 0.0

    # 5. as JSON-like lists of dicts, in shuffled order
    images = [{"id": int(i), "width": IMAGE_WIDTH, "height": IMAGE_HEIGHT, "file_name": f"{int(i):06d}.jpg"} for i in image_ids]
    images = [images[i] for i in rng.permutation(n_images)]
    categories = [{"id": int(c), "name": f"class_{int(c)}"} for c in category_ids]
    categories = [categories[i] for i in rng.permutation(n_categories)]
    annotations = [
        {"id": int(a) + 1, "image_id": int(gt_image[a]), "category_id": int(gt_category[a]), "bbox": gt_boxes[a].tolist(),
         "area": float(area[a]), "iscrowd": int(iscrowd[a])}
        for a in rng.permutation(n_gt)
    ]  # fmt: skip
    detections = [
        {"image_id": int(det_image[d]), "category_id": int(det_category[d]), "bbox": det_boxes[d].tolist(), "score": float(scores[d])}
        for d in rng.permutation(len(det_boxes))
    ]  # fmt: skip
    gt = {"images": images, "annotations": annotations, "categories": categories}
    return gt, detections


def _is_integer(value):
    """An integer, not a boolean (``True`` is an ``Integral`` too)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _random_boxes(rng, n):
    """(n, 4) float64 boxes ``[x, y, w, h]`` inside the image, sides log-uniform in 4..400 pixels."""
    w = np.exp(rng.uniform(np.log(4), np.log(400), size=n))
    h = np.clip(w * np.exp(rng.normal(0, 0.4, size=n)), 2, IMAGE_HEIGHT)
    w = np.minimum(w, IMAGE_WIDTH)
    x = rng.uniform(0, IMAGE_WIDTH - w)
    y = rng.uniform(0, IMAGE_HEIGHT - h)
    return np.round(np.stack([x, y, w, h], axis=1), 2)


def _jitter(rng, boxes):
    """Boxes moved and resized by noise proportional to their size, so IoUs spread over 0.3..1."""
    x, y, w, h = boxes.T
    scale = rng.choice([0.02, 0.08, 0.2], size=len(boxes))
    x1 = x + rng.normal(0, 1, len(boxes)) * scale * w
    y1 = y + rng.normal(0, 1, len(boxes)) * scale * h
    x2 = x + w + rng.normal(0, 1, len(boxes)) * scale * w
    y2 = y + h + rng.normal(0, 1, len(boxes)) * scale * h
    x1, x2 = np.minimum(x1, x2), np.maximum(x1, x2)
    y1, y2 = np.minimum(y1, y2), np.maximum(y1, y2)
    return np.round(np.stack([x1, y1, x2 - x1, y2 - y1], axis=1), 2)
