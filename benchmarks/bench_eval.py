"""COCO evaluation: scratchdet's `evaluate_coco` against pycocotools and faster-coco-eval, same run.

Run: `python -m pytest benchmarks/bench_eval.py -s`. The input is a seeded random problem of 5,000
images, 80 categories, about 17k annotations (crowds included) and 25k detections
(`scratchdet.eval.synthetic.random_coco_problem`). Every timing is the whole call from the
ground-truth dict and the detection list to the 12 numbers: parsing, matching, accumulation and
summary. Each test also checks that the 12 numbers are identical.
"""

import contextlib
import copy
import io

import numpy as np
import pytest

from scratchdet.eval import evaluate_coco
from scratchdet.eval.coco import STAT_NAMES
from scratchdet.eval.synthetic import random_coco_problem

SETTINGS = dict(
    n_images=5000,
    n_categories=80,
    gt_per_image=3.8,
    dets_per_gt=1.0,
    false_positives_per_image=1.2,
    crowd_fraction=0.02,
    crowded_images=3,
    categories_without_gt=2,
)


@pytest.fixture(scope="module")
def problem():
    gt, detections = random_coco_problem(2024, **SETTINGS)
    return gt, detections


def _ours(gt, detections):
    stats = evaluate_coco(gt, detections)
    return np.array([stats[name] for name in STAT_NAMES])


def _pycocotools(gt, detections):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    with contextlib.redirect_stdout(io.StringIO()):
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        evaluator = COCOeval(coco_gt, coco_gt.loadRes(detections), "bbox")
        evaluator.evaluate()
        evaluator.accumulate()
        evaluator.summarize()
    return np.asarray(evaluator.stats[:12])


def _faster_coco_eval(gt, detections):
    from faster_coco_eval import COCO, COCOeval_faster

    coco_gt = COCO(gt)
    evaluator = COCOeval_faster(coco_gt, coco_gt.loadRes(detections), "bbox", print_function=lambda *a, **k: None)
    evaluator.evaluate()
    evaluator.accumulate()
    evaluator.summarize()
    return np.asarray(evaluator.stats[:12])


def test_problem_size(problem):
    gt, detections = problem
    assert 15_000 <= len(gt["annotations"]) <= 19_000
    assert 22_000 <= len(detections) <= 28_000


@pytest.mark.parametrize(
    "peer_name, peer",
    [("pycocotools COCOeval", _pycocotools), ("faster-coco-eval COCOeval_faster", _faster_coco_eval)],
    ids=["pycocotools", "faster_coco_eval"],
)
def test_evaluate_coco_vs_peer(problem, compare_with_peer, peer_name, peer):
    pytest.importorskip("pycocotools" if peer is _pycocotools else "faster_coco_eval")
    gt, detections = problem
    # each library gets its own copy (the peers add fields to the dicts they are given)
    peer_gt, peer_detections = copy.deepcopy(gt), copy.deepcopy(detections)
    ours = compare_with_peer(
        lambda: _ours(gt, detections), lambda: peer(peer_gt, peer_detections), peer_name, repeat=3 if peer is _pycocotools else 5
    )
    theirs = peer(copy.deepcopy(gt), copy.deepcopy(detections))
    np.testing.assert_array_equal(ours, theirs, err_msg=f"ours {ours}\n{peer_name} {theirs}")
