"""Frozen pycocotools COCOeval (bbox) results on seeded random detection problems.

Each case is `scratchdet.eval.synthetic.random_coco_problem(seed, **settings)`; the file records the
seed and settings (so the tests regenerate the same inputs), the 12 summary numbers, the per-class
AP@[.5:.95] (area all, 100 detections) and the pycocotools and NumPy versions.
"""

import contextlib
import copy
import io
import json
import pathlib
import sys

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))  # run as `python reference/generate.py` from a plain checkout

from scratchdet._files import atomic_write  # noqa: E402
from scratchdet.eval.synthetic import random_coco_problem  # noqa: E402

STAT_NAMES = ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl")

# (seed, settings): each case leans on one rule of the evaluation
CASES = (
    (0, {}),
    (1, {"crowd_fraction": 0.3}),  # many crowd regions
    (2, {"empty_image_fraction": 0.6, "gt_per_image": 2.0}),  # mostly images without ground truth
    (3, {"n_images": 10, "crowded_images": 3}),  # more than 100 detections per image and category
    (4, {"score_decimals": 1, "dets_per_gt": 3.0}),  # many tied scores
    (5, {"n_images": 120, "n_categories": 10, "categories_without_gt": 3}),  # categories without gt
    (6, {"gt_per_image": 0.8, "dets_per_gt": 0.4, "false_positives_per_image": 0.3}),  # sparse: images without dets
    (7, {"n_images": 1, "n_categories": 3, "gt_per_image": 8.0, "empty_image_fraction": 0.0}),  # one image
)


def pycocotools_eval(gt, detections):
    """Run pycocotools' COCOeval (bbox) quietly; returns the evaluated COCOeval object."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = copy.deepcopy(gt)
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(copy.deepcopy(detections))
        evaluator = COCOeval(coco_gt, coco_dt, "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return evaluator


def per_class_ap(evaluator, gt):
    """Category name -> AP@[.5:.95] (area all, 100 detections) from COCOeval's precision array."""
    names = {c["id"]: c["name"] for c in gt["categories"]}
    result = {}
    for k, category_id in enumerate(evaluator.params.catIds):
        values = evaluator.eval["precision"][:, :, k, 0, -1]
        values = values[values > -1]
        result[names[category_id]] = float(np.mean(values)) if values.size else -1.0
    return result


def generate(outdir):
    """Write ``coco_stats.json`` into `outdir`; returns the list of paths written."""
    import pycocotools

    cases = []
    for seed, settings in CASES:
        gt, detections = random_coco_problem(seed, **settings)
        evaluator = pycocotools_eval(gt, detections)
        cases.append(
            {
                "seed": seed,
                "settings": settings,
                "n_annotations": len(gt["annotations"]),
                "n_detections": len(detections),
                "stats": dict(zip(STAT_NAMES, (float(s) for s in evaluator.stats))),
                "per_class": per_class_ap(evaluator, gt),
            }
        )
    record = {
        "source": "pycocotools COCOeval(iouType='bbox') on scratchdet.eval.synthetic.random_coco_problem(seed, **settings)",
        "versions": {"pycocotools": getattr(pycocotools, "__version__", _version("pycocotools")), "numpy": np.__version__},
        "cases": cases,
    }
    path = pathlib.Path(outdir) / "coco_stats.json"
    with atomic_write(path) as f:
        json.dump(record, f, indent=1)
    return [path]


def _version(package):
    from importlib.metadata import version

    return version(package)
