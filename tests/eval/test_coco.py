"""COCO mAP: hand-computed cases for each rule, frozen pycocotools results, and live comparisons."""

import copy
import json
import pathlib

import numpy as np
import pytest

from scratchdet.errors import DataFormatError, InvalidArgumentError
from scratchdet.eval import coco_evaluation, evaluate_coco
from scratchdet.eval.coco import RECALL_THRESHOLDS, STAT_NAMES, coco_box_iou
from scratchdet.eval.synthetic import random_coco_problem

ROOT = pathlib.Path(__file__).resolve().parents[2]
FROZEN = ROOT / "reference" / "outputs" / "coco_stats.json"
COCO128 = ROOT.parent / "shared" / "data" / "coco128" / "annotations.json"


def dataset(boxes, areas=None, crowd=None, categories=("a",), image_ids=(1,), box_images=None, box_categories=None):
    """A small COCO dict: one annotation per box ([x, y, w, h]), by default all in image 1, category 1."""
    n = len(boxes)
    areas = [b[2] * b[3] for b in boxes] if areas is None else areas
    annotations = [
        {
            "id": i + 1,
            "image_id": box_images[i] if box_images else image_ids[0],
            "category_id": box_categories[i] if box_categories else 1,
            "bbox": list(boxes[i]),
            "area": areas[i],
            "iscrowd": int(crowd[i]) if crowd else 0,
        }
        for i in range(n)
    ]
    return {
        "images": [{"id": i} for i in image_ids],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(categories)],
    }


def dets(*rows):
    """Detections from (bbox, score[, image_id[, category_id]]) rows."""
    out = []
    for row in rows:
        box, score = row[0], row[1]
        image_id = row[2] if len(row) > 2 else 1
        category_id = row[3] if len(row) > 3 else 1
        out.append({"image_id": image_id, "category_id": category_id, "bbox": list(box), "score": score})
    return out


# COCOeval's precision is tp / (tp + fp + eps), so a perfect score is 1 - 2e-16, not 1
ONE = pytest.approx(1.0, abs=1e-12)

LARGE_A = [0, 0, 200, 200]
LARGE_B = [300, 0, 200, 200]
FAR = [1000, 1000, 150, 150]


# ------------------------------------------------------------------ hand-computed cases, rule by rule


def test_perfect_detections_give_ap_and_ar_one():
    gt = dataset([LARGE_A, LARGE_B, [10, 300, 20, 20], [100, 300, 50, 50]])
    stats = evaluate_coco(gt, dets(*[(a["bbox"], 0.9) for a in gt["annotations"]]))
    for name in ("AP", "AP50", "AP75", "APs", "APm", "APl", "AR10", "AR100", "ARs", "ARm", "ARl"):
        assert stats[name] == pytest.approx(1.0), name
    assert stats["AR1"] == pytest.approx(0.25)  # one detection per image counts: 1 of 4 objects


def test_false_positive_between_two_hits_matches_hand_computed_ap():
    # tp, fp, tp: recall .5 .5 1, precision 1 .5 2/3; the envelope is 1 up to recall .5 (51 of the
    # 101 thresholds 0, .01, ..., .5) and 2/3 above it (50 thresholds)
    gt = dataset([LARGE_A, LARGE_B])
    stats = evaluate_coco(gt, dets((LARGE_A, 0.9), (FAR, 0.8), (LARGE_B, 0.7)))
    expected = (51 * 1.0 + 50 * (2 / 3)) / 101
    assert stats["AP"] == pytest.approx(expected, abs=1e-12)
    assert stats["AP50"] == pytest.approx(expected, abs=1e-12)
    assert stats["AR100"] == pytest.approx(1.0)
    assert stats["per_class"] == {"a": pytest.approx(expected, abs=1e-12)}


def test_no_detections_give_zero_not_minus_one():
    stats = evaluate_coco(dataset([LARGE_A]), [])
    assert stats["AP"] == 0.0
    assert stats["AR100"] == 0.0
    assert stats["APs"] == -1.0  # no small ground truth at all


def test_category_without_ground_truth_is_minus_one_and_left_out_of_the_mean():
    gt = dataset([LARGE_A], categories=("a", "b"))
    stats = evaluate_coco(gt, dets((LARGE_A, 0.9, 1, 1), (LARGE_B, 0.9, 1, 2)))
    assert stats["per_class"] == {"a": ONE, "b": -1.0}
    assert stats["AP"] == ONE


def test_iou_exactly_at_threshold_matches():
    # det [0, 0, 100, 100] inside gt [0, 0, 100, 200]: IoU = 10000 / 20000 = 0.5 exactly
    gt = dataset([[0, 0, 100, 200]])
    stats = evaluate_coco(gt, dets(([0, 0, 100, 100], 0.9)))
    assert stats["AP50"] == ONE
    assert stats["AP75"] == 0.0
    assert stats["AP"] == pytest.approx(0.1)  # matched at 1 of the 10 thresholds


def test_crowd_absorbs_many_detections_without_false_positives():
    # a crowd region and one person: detections inside the crowd are ignored, however many
    gt = dataset([[0, 0, 400, 400], [500, 0, 100, 100]], crowd=[1, 0])
    inside = [([10 * i, 10 * i, 50, 50], 0.9) for i in range(5)]
    stats = evaluate_coco(gt, dets(*inside, ([500, 0, 100, 100], 0.5)))
    assert stats["AP"] == ONE


def test_crowd_iou_divides_by_the_detection_area():
    # a 10x10 detection inside a 100x100 crowd region: 100 / 100, not 100 / 10000
    assert coco_box_iou(5, 5, 10, 10, 0, 0, 100, 100, True) == 1.0
    assert coco_box_iou(5, 5, 10, 10, 0, 0, 100, 100, False) == pytest.approx(0.01)


@pytest.mark.parametrize("crowd", [False, True])
def test_iou_of_touching_boxes_is_zero(crowd):
    assert coco_box_iou(0, 0, 10, 10, 10, 0, 10, 10, crowd) == 0.0


@pytest.mark.parametrize("crowd", [False, True])
def test_iou_of_boxes_whose_area_underflows_is_nan_as_in_pycocotools(crowd):
    # 1e-200 x 1e-200 overlaps by a positive width and height, but every area rounds to 0:
    # maskApi.c divides 0.0 by 0.0 and gets NaN (where Python would raise ZeroDivisionError)
    assert np.isnan(coco_box_iou(0, 0, 1e-200, 1e-200, 0, 0, 1e-200, 1e-200, crowd))


def test_tiny_boxes_evaluate_as_in_pycocotools():
    # COCOeval's `if ious[d, g] < iou: continue` lets a NaN IoU through, so the tiny detection
    # matches: pycocotools 2.0 gives AP = AR = 1 for the small area range and for all
    tiny = {"bbox": [0.0, 0.0, 1e-200, 1e-200], "area": 0.0}
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "iscrowd": 0, **tiny}]}  # fmt: skip
    stats = evaluate_coco(gt, [{"image_id": 1, "category_id": 1, "bbox": tiny["bbox"], "score": 1.0}])
    expected = [1.0, 1.0, 1.0, 1.0, -1.0, -1.0, 1.0, 1.0, 1.0, 1.0, -1.0, -1.0]  # AP: 1 - 2e-16, from the eps
    assert [stats[name] for name in STAT_NAMES] == pytest.approx(expected, abs=1e-15)


def test_only_the_first_100_detections_per_image_and_category_count():
    # 100 false positives scored above the one true detection: it is cut, so nothing is found
    gt = dataset([LARGE_A])
    decoys = [([1000 + i, 1000, 10, 10], 0.9) for i in range(100)]
    assert evaluate_coco(gt, dets(*decoys, (LARGE_A, 0.5)))["AR100"] == 0.0
    assert evaluate_coco(gt, dets(*decoys[:99], (LARGE_A, 0.5)))["AR100"] == 1.0


def test_max_detections_one_keeps_the_best_detection_of_each_image():
    gt = dataset([LARGE_A, LARGE_B])
    stats = evaluate_coco(gt, dets((LARGE_A, 0.9), (LARGE_B, 0.8)))
    assert stats["AR1"] == 0.5
    assert stats["AR10"] == 1.0


def test_area_ranges_use_the_annotation_area_field_not_the_box():
    # a 200x200 box whose annotation says area 500: it is a small object
    gt = dataset([LARGE_A], areas=[500.0])
    stats = evaluate_coco(gt, dets((LARGE_A, 0.9)))
    assert stats["APs"] == ONE
    assert stats["APl"] == -1.0


def test_unmatched_detection_outside_area_range_is_ignored():
    # for the "small" range a large false positive does not count; for "all" it does
    gt = dataset([[0, 0, 20, 20]])
    stats = evaluate_coco(gt, dets((LARGE_B, 0.9), ([0, 0, 20, 20], 0.8)))
    assert stats["APs"] == ONE
    assert stats["AP"] < 0.9


def test_unmatched_detection_with_area_on_a_range_border_counts():
    # area ranges are closed, for detections as for ground truth: a 32 x 32 false positive (area
    # 1024 = 32**2, the upper border of "small") counts there, ahead of the hit: precision 1/2
    gt = dataset([[0, 0, 20, 20]])
    stats = evaluate_coco(gt, dets(([300, 0, 32, 32], 0.9), ([0, 0, 20, 20], 0.8)))
    assert stats["APs"] == pytest.approx(0.5)


def test_image_without_ground_truth_contributes_false_positives():
    gt = dataset([LARGE_A], image_ids=(1, 2))
    stats = evaluate_coco(gt, dets((LARGE_A, 0.5, 1), (LARGE_A, 0.9, 2)))
    assert stats["AP50"] == pytest.approx((51 * 0.5 + 50 * 0.5) / 101)


def test_precision_and_recall_arrays_have_cocoeval_shapes():
    gt = dataset([LARGE_A], categories=("a", "b", "c"))
    result = coco_evaluation(gt, dets((LARGE_A, 0.9)))
    assert result.precision.shape == (10, 101, 3, 4, 3)
    assert result.recall.shape == (10, 3, 4, 3)
    assert (result.precision[:, :, 1:] == -1).all()  # categories without ground truth
    np.testing.assert_allclose(result.precision[:, :, 0, 0, 2], np.ones((10, len(RECALL_THRESHOLDS))), atol=1e-12)


def test_detection_list_order_does_not_matter_when_scores_differ(rng):
    gt, detections = random_coco_problem(21, n_images=10, n_categories=3)
    for d, score in zip(detections, rng.permutation(len(detections))):
        d["score"] = float(score) / len(detections)  # all distinct
    shuffled = [detections[i] for i in rng.permutation(len(detections))]
    assert evaluate_coco(gt, shuffled) == evaluate_coco(gt, detections)


def test_difficult_flag_plays_no_part_in_coco():
    gt, detections = random_coco_problem(22, n_images=10, n_categories=3)
    marked = copy.deepcopy(gt)
    for ann in marked["annotations"][::2]:
        ann["difficult"] = 1
    assert evaluate_coco(marked, detections) == evaluate_coco(gt, detections)


def test_parsed_inputs_give_the_same_result():
    from scratchdet.data import parse_detections, parse_ground_truth

    gt, detections = random_coco_problem(23, n_images=5, n_categories=2)
    parsed_gt = parse_ground_truth(gt)
    assert evaluate_coco(parsed_gt, parse_detections(detections, parsed_gt)) == evaluate_coco(gt, detections)


def test_bad_detection_raises_data_format_error():
    with pytest.raises(DataFormatError, match=r'detections\[0\]: field "image_id" is 7'):
        evaluate_coco(dataset([LARGE_A]), dets((LARGE_A, 0.9, 7)))


# ------------------------------------------------------------------ frozen pycocotools results

FROZEN_CASES = json.loads(FROZEN.read_text())["cases"]


@pytest.mark.parametrize("case", FROZEN_CASES, ids=[f"seed{c['seed']}" for c in FROZEN_CASES])
def test_matches_frozen_pycocotools(case):
    gt, detections = random_coco_problem(case["seed"], **case["settings"])
    assert (len(gt["annotations"]), len(detections)) == (case["n_annotations"], case["n_detections"])
    stats = evaluate_coco(gt, detections)
    for name in STAT_NAMES:
        assert stats[name] == pytest.approx(case["stats"][name], abs=1e-9), f"{name}: ours {stats[name]}, pycocotools {case['stats'][name]}"
    assert stats["per_class"] == pytest.approx(case["per_class"], abs=1e-9)


# ------------------------------------------------------------------ live pycocotools comparisons


def _pycocotools(gt, detections):
    pytest.importorskip("pycocotools")
    import sys

    sys.path.insert(0, str(ROOT / "reference"))
    try:
        from _coco import pycocotools_eval
    finally:
        sys.path.remove(str(ROOT / "reference"))
    return pycocotools_eval(gt, detections)


def _assert_same_as_pycocotools(gt, detections):
    theirs = _pycocotools(gt, detections)
    ours = coco_evaluation(gt, detections)
    np.testing.assert_array_equal(ours.precision, theirs.eval["precision"])
    np.testing.assert_array_equal(ours.recall, theirs.eval["recall"])
    np.testing.assert_array_equal([ours.stats[n] for n in STAT_NAMES], theirs.stats)


@pytest.mark.parametrize("seed", range(100, 106))
def test_matches_pycocotools_live_bit_for_bit(seed):
    rng = np.random.default_rng(seed)
    settings = {
        "n_images": int(rng.integers(1, 25)),
        "n_categories": int(rng.integers(2, 6)),
        "gt_per_image": float(rng.uniform(0.5, 5)),
        "dets_per_gt": float(rng.uniform(0.3, 3)),
        "crowd_fraction": float(rng.uniform(0, 0.3)),
        "score_decimals": int(rng.integers(1, 4)),
    }
    _assert_same_as_pycocotools(*random_coco_problem(seed, **settings))


@pytest.mark.parametrize(
    "settings, match",
    [
        ({"n_images": 1, "crowded_images": 2}, "crowded_images must be an integer in"),
        ({"n_categories": 1, "categories_without_gt": 1}, "categories_without_gt must be an integer in"),
        ({"n_images": 0}, "n_images must be a positive integer"),
        ({"n_categories": 0}, "n_categories must be a positive integer"),
        ({"n_images": True}, "n_images must be a positive integer"),
        ({"gt_per_image": -1.0}, "gt_per_image must be a finite non-negative number"),
        ({"dets_per_gt": float("nan")}, "dets_per_gt must be a finite non-negative number"),
        ({"false_positives_per_image": float("inf")}, "false_positives_per_image must be a finite non-negative number"),
        ({"crowd_fraction": 1.5}, r"crowd_fraction must be a number in \[0, 1\]"),
        ({"empty_image_fraction": -0.1}, r"empty_image_fraction must be a number in \[0, 1\]"),
        ({"score_decimals": 1.5}, r"score_decimals must be an integer in \[0, 17\]"),
        ({"score_decimals": 309}, r"score_decimals must be an integer in \[0, 17\]"),  # (np.round made every score NaN)
        ({"seed": None}, "seed must be an integer >= 0"),  # (another problem on every call)
        ({"seed": -1}, "seed must be an integer >= 0"),
        ({"seed": 1.5}, "seed must be an integer >= 0"),
    ],
)
def test_random_problem_rejects_settings_it_cannot_meet(settings, match):
    settings = {"seed": 0, **settings}
    with pytest.raises(InvalidArgumentError, match=match):
        random_coco_problem(**settings)


def test_random_problem_with_one_image_and_one_category():
    gt, detections = random_coco_problem(5, n_images=1, n_categories=1, categories_without_gt=0)
    assert len(gt["images"]) == 1 and len(detections) >= 120  # the one image is the crowded one
    assert evaluate_coco(gt, detections)["AP"] >= 0


def test_annotation_id_zero_reads_as_unmatched_as_in_pycocotools():
    # pycocotools stores a match as the gt's id, so a match to id 0 looks like no match at all
    gt, detections = random_coco_problem(11)
    gt["annotations"][0]["id"] = 0
    _assert_same_as_pycocotools(gt, detections)


def test_matches_pycocotools_on_coco128_with_perturbed_boxes(rng):
    if not COCO128.is_file():
        pytest.skip(f"{COCO128} is absent")
    gt = json.loads(COCO128.read_text())
    detections = []
    for ann in gt["annotations"]:
        for _ in range(int(rng.integers(0, 3))):
            x, y, w, h = ann["bbox"]
            noise = rng.normal(0, 0.1, 4) * [w, h, w, h]
            box = [x + noise[0], y + noise[1], max(w + noise[2], 0.0), max(h + noise[3], 0.0)]
            detections.append({"image_id": ann["image_id"], "category_id": ann["category_id"], "bbox": box,
                               "score": round(float(rng.random()), 2)})  # fmt: skip
    category_ids = [c["id"] for c in gt["categories"]]
    image_ids = [im["id"] for im in gt["images"]]
    for _ in range(300):  # false positives
        detections.append({"image_id": int(rng.choice(image_ids)), "category_id": int(rng.choice(category_ids)),
                           "bbox": (rng.uniform(0, 300, 4)).tolist(), "score": round(float(rng.random()), 2)})  # fmt: skip
    _assert_same_as_pycocotools(gt, copy.deepcopy(detections))
