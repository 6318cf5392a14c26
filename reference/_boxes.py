"""Frozen NMS results from OpenCV (`cv2.dnn.NMSBoxes`, `NMSBoxesBatched`) and IoUs from pycocotools.

Writes ``boxes_reference.npz``: seeded clustered detections (boxes, scores, labels) and, for each
IoU threshold, the indices OpenCV keeps, plus a few boxes whose IoUs are exactly 1/2, 2/3 and 3/4
to pin the threshold boundary; and an IoU matrix of seeded boxes from pycocotools' `mask.iou`
(COCO's box IoU, continuous coordinates). `tests/test_boxes.py` holds `scratchdet.boxes` to these
without OpenCV or pycocotools installed.

OpenCV takes xywh boxes and float32 scores, and compares its Rect2d overlap (1 - jaccardDistance,
our continuous-coordinate IoU rounded to float32) with a float32 threshold; so the scores are drawn
as float32, and the inputs are checked to have no IoU within 1e-6 of a threshold, where the
rounding could decide differently.
"""

import json
import pathlib
import platform
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python reference/generate.py` from a plain checkout

from scratchdet._files import atomic_path  # noqa: E402

THRESHOLDS = (0.3, 0.5, 0.7)
# (seed, number of boxes, number of objects they cluster around, number of classes)
CASES = ((0, 800, 15, 5), (1, 400, 40, 3))
# three boxes whose IoUs are exactly IoU(1, 2) = 2/3, IoU(1, 0) = 1/2 and IoU(2, 0) = 3/4, visited in
# the order 1, 2, 0: at each threshold one decision falls exactly on the boundary
BOUNDARY_BOXES = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.5, 1.0]])
BOUNDARY_SCORES = np.array([0.7, 0.9, 0.8], dtype=np.float32)
BOUNDARY_THRESHOLDS = (0.5, 2.0 / 3.0, 0.75)
IOU_SEED = 2


def clustered_detections(rng, n, n_objects, n_classes, size=500.0):
    """Jittered copies of object boxes of varied size: (n, 4) float64 xyxy, (n,) float32 scores, (n,) int labels."""
    centres = rng.uniform(0, size, (n_objects, 2))
    sizes = np.exp(rng.uniform(np.log(10), np.log(200), (n_objects, 2)))
    obj = rng.integers(0, n_objects, n)
    c = centres[obj] + rng.normal(0, 0.15, (n, 2)) * sizes[obj]
    s = sizes[obj] * np.exp(rng.normal(0, 0.15, (n, 2)))
    boxes = np.concatenate([c - s / 2, c + s / 2], axis=1)
    scores = rng.uniform(0.01, 1.0, n).astype(np.float32)
    labels = rng.integers(0, n_classes, n)
    return boxes, scores, labels


def _iou(a, b):
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a)[:, None] + area(b)[None, :] - inter)


def generate(outdir):
    import cv2

    arrays = {}
    for c, (seed, n, n_objects, n_classes) in enumerate(CASES):
        boxes, scores, labels = clustered_detections(np.random.default_rng(seed), n, n_objects, n_classes)
        overlaps = _iou(boxes, boxes)
        for t in THRESHOLDS:
            assert np.abs(overlaps - t).min() > 1e-6, f"case {c}: an IoU lies within 1e-6 of {t}"
        xywh = np.c_[boxes[:, :2], boxes[:, 2:] - boxes[:, :2]]
        arrays[f"case{c}_boxes"] = boxes
        arrays[f"case{c}_scores"] = scores
        arrays[f"case{c}_labels"] = labels
        for t in THRESHOLDS:
            keep = cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, t)
            batched = cv2.dnn.NMSBoxesBatched(xywh.tolist(), scores.tolist(), labels.tolist(), 0.0, t)
            arrays[f"case{c}_keep_{t}"] = np.asarray(keep, dtype=np.int64).reshape(-1)
            arrays[f"case{c}_batched_keep_{t}"] = np.sort(np.asarray(batched, dtype=np.int64).reshape(-1))
    xywh = np.c_[BOUNDARY_BOXES[:, :2], BOUNDARY_BOXES[:, 2:] - BOUNDARY_BOXES[:, :2]]
    arrays["boundary_boxes"] = BOUNDARY_BOXES
    arrays["boundary_scores"] = BOUNDARY_SCORES
    for t in BOUNDARY_THRESHOLDS:
        keep = cv2.dnn.NMSBoxes(xywh.tolist(), BOUNDARY_SCORES.tolist(), 0.0, t)
        arrays[f"boundary_keep_{t!r}"] = np.asarray(keep, dtype=np.int64).reshape(-1)
    # pycocotools' box IoU (xywh boxes, no crowd) on seeded boxes, some of them disjoint or nested
    from importlib.metadata import version

    from pycocotools import mask as coco_mask

    rng = np.random.default_rng(IOU_SEED)
    iou_boxes = []
    for n in (30, 40):
        corners = rng.uniform(0, 100, (n, 2))
        iou_boxes.append(np.concatenate([corners, corners + rng.uniform(1, 60, (n, 2))], axis=1))
    xywh1, xywh2 = (np.c_[b[:, :2], b[:, 2:] - b[:, :2]] for b in iou_boxes)
    arrays["iou_boxes1"], arrays["iou_boxes2"] = iou_boxes
    arrays["iou_pycocotools"] = np.asarray(coco_mask.iou(xywh1, xywh2, [0] * len(xywh2)), dtype=np.float64)
    meta = {
        "source": "OpenCV cv2.dnn.NMSBoxes / NMSBoxesBatched (score_threshold 0, xywh Rect2d boxes)",
        "opencv": cv2.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cases": [dict(zip(("seed", "n_boxes", "n_objects", "n_classes"), case)) for case in CASES],
        "thresholds": list(THRESHOLDS),
        "boundary_thresholds": list(BOUNDARY_THRESHOLDS),
        "iou_source": "pycocotools.mask.iou (xywh boxes, iscrowd 0)",
        "pycocotools": version("pycocotools"),
        "iou_seed": IOU_SEED,
    }
    arrays["meta"] = np.array(json.dumps(meta))
    path = pathlib.Path(outdir) / "boxes_reference.npz"
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)
    return [path]
