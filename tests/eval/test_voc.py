"""Pascal VOC AP: hand-computed curves, the devkit's rules case by case, and a plain-loop devkit."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.eval import evaluate_voc, voc_ap, voc_evaluation
from scratchdet.eval.synthetic import random_coco_problem
from scratchdet.eval.voc import voc_box_iou


def dataset(boxes, difficult=None, crowd=None, categories=("a",), image_ids=(1,), box_images=None, box_categories=None):
    """A small COCO-style dict: one annotation per [x, y, w, h] box, by default image 1, category 1."""
    annotations = []
    for i, box in enumerate(boxes):
        annotations.append(
            {
                "id": i + 1,
                "image_id": box_images[i] if box_images else image_ids[0],
                "category_id": box_categories[i] if box_categories else 1,
                "bbox": list(box),
                "area": box[2] * box[3],
                "iscrowd": int(crowd[i]) if crowd else 0,
                "difficult": int(difficult[i]) if difficult else 0,
            }
        )
    return {
        "images": [{"id": i} for i in image_ids],
        "annotations": annotations,
        "categories": [{"id": k + 1, "name": name} for k, name in enumerate(categories)],
    }


def dets(*rows):
    """Detections from (bbox, score[, image_id[, category_id]]) rows."""
    return [
        {"image_id": r[2] if len(r) > 2 else 1, "category_id": r[3] if len(r) > 3 else 1, "bbox": list(r[0]), "score": r[1]}
        for r in rows
    ]


A = [0, 0, 100, 100]
B = [200, 0, 100, 100]
C = [400, 0, 100, 100]
FAR = [1000, 1000, 50, 50]


# ------------------------------------------------------------------ AP of a given curve


def test_all_point_ap_of_hand_curve():
    # tp, fp, tp with 2 positives: recall .5 .5 1, precision 1 .5 2/3
    # envelope 1 up to recall .5, then 2/3: AP = .5 * 1 + .5 * 2/3
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "all") == pytest.approx(0.5 + 0.5 * 2 / 3)


def test_11_point_ap_of_hand_curve():
    # t = 0, .1, ..., .5 see precision 1; t = .6, ..., 1 see 2/3
    assert voc_ap([0.5, 0.5, 1.0], [1.0, 0.5, 2 / 3], "11point") == pytest.approx((6 + 5 * 2 / 3) / 11)


def test_11_point_counts_recall_exactly_on_a_threshold():
    # recall 3/10 reaches t = 0.3 (np.arange(0, 1.1, 0.1) would give 0.30000000000000004 and miss it)
    assert voc_ap([1 / 10, 2 / 10, 3 / 10], [1.0, 1.0, 1.0], "11point") == pytest.approx(4 / 11)


@pytest.mark.parametrize("method", ["all", "11point"])
def test_a_perfect_curve_has_ap_exactly_one(method):
    # adding 1 / 11 eleven times gives 1.0000000000000002; AP must stay in [0, 1]
    assert voc_ap([0.25, 0.5, 0.75, 1.0], [1.0, 1.0, 1.0, 1.0], method) == 1.0


@pytest.mark.parametrize("method", ["all", "11point"])
def test_empty_curve_has_zero_ap(method):
    assert voc_ap([], [], method) == 0.0


def test_all_point_ap_of_perfect_curve_is_one():
    assert voc_ap([0.25, 0.5, 0.75, 1.0], [1.0, 1.0, 1.0, 1.0], "all") == 1.0


# ------------------------------------------------------------------ the devkit's matching rules


@pytest.mark.parametrize("method, expected", [("all", 0.5 + 0.5 * 2 / 3), ("11point", (6 + 5 * 2 / 3) / 11)])
def test_false_positive_between_two_hits(method, expected):
    result = evaluate_voc(dataset([A, B]), dets((A, 0.9), (FAR, 0.8), (B, 0.7)), method=method)
    assert result["mAP"] == pytest.approx(expected)
    assert result["per_class"] == {"a": pytest.approx(expected)}


def test_detection_on_difficult_object_is_neither_right_nor_wrong():
    # det on the difficult object, a false positive, a hit on the regular one: the first is dropped,
    # so the curve is fp, tp with one positive: recall 0, 1 and precision 0, 1/2 -> AP 0.5
    gt = dataset([A, B], difficult=[1, 0])
    result = voc_evaluation(gt, dets((A, 0.9), (FAR, 0.8), (B, 0.7)))
    assert result.n_positives == {"a": 1}
    assert result.mAP == pytest.approx(0.5)


def test_crowd_annotation_is_ignored_like_difficult():
    gt = dataset([A, B], crowd=[1, 0])
    assert evaluate_voc(gt, dets((A, 0.9), (FAR, 0.8), (B, 0.7)))["mAP"] == pytest.approx(0.5)


def test_difficult_objects_not_found_do_not_lower_recall():
    gt = dataset([A, B], difficult=[0, 1])
    assert evaluate_voc(gt, dets((A, 0.9)))["mAP"] == 1.0


def test_duplicate_detection_is_a_false_positive():
    result = voc_evaluation(dataset([A]), dets((A, 0.9), (A, 0.8)))
    recall, precision = result.curves["a"]
    np.testing.assert_allclose(recall, [1.0, 1.0])
    np.testing.assert_allclose(precision, [1.0, 0.5])
    assert result.mAP == 1.0


def test_duplicate_takes_its_best_overlap_even_if_already_detected():
    # the devkit compares with the best-overlapping object only: the second detection's best is A,
    # already found, so it is a false positive although B (IoU 0.83) is still free
    gt = dataset([[0, 0, 100, 100], [0, 0, 100, 120]])
    result = voc_evaluation(gt, dets(([0, 0, 100, 100], 0.9), ([0, 0, 100, 100], 0.8)))
    np.testing.assert_allclose(result.curves["a"][0], [0.5, 0.5])
    assert result.mAP == pytest.approx(0.5)


def test_detection_on_difficult_object_leaves_no_point_on_the_curve():
    # the curve has one point per detection that counts: the one on the difficult object is dropped
    # (AP alone cannot tell, since a dropped point would repeat its neighbour's recall and precision)
    gt = dataset([A, B], difficult=[1, 0])
    recall, precision = voc_evaluation(gt, dets((A, 0.9), (FAR, 0.8), (B, 0.7))).curves["a"]
    np.testing.assert_allclose(recall, [0.0, 1.0])
    np.testing.assert_allclose(precision, [0.0, 0.5])


def test_equal_overlaps_go_to_the_first_object_in_file_order():
    # the second detection overlaps both objects by IoU 75 / 125 = 0.6 exactly; the devkit's max()
    # takes the first, already found by the first detection, so it is a duplicate although the
    # second object is still free
    gt = dataset([[0, 0, 10, 10], [5, 0, 10, 10]])
    result = voc_evaluation(gt, dets(([0, 0, 10, 10], 0.9), ([2.5, 0, 10, 10], 0.8)))
    np.testing.assert_allclose(result.curves["a"][0], [0.5, 0.5])
    assert result.mAP == pytest.approx(0.5)


@pytest.mark.parametrize("threshold, found", [(0.5, True), (0.5 + 1e-9, False)])
def test_iou_exactly_at_threshold_matches(threshold, found):
    # [0, 0, 100, 100] inside [0, 0, 100, 200]: IoU = 0.5 exactly
    result = evaluate_voc(dataset([[0, 0, 100, 200]]), dets(([0, 0, 100, 100], 0.9)), iou_threshold=threshold)
    assert result["mAP"] == (1.0 if found else 0.0)


@pytest.mark.parametrize("legacy, found", [(False, False), (True, True)])
def test_legacy_voc_pixels_count_pixels_inclusively(legacy, found):
    # x 0..9 and y 0..9 inclusive is 10 x 10 pixels; gt y 0..19 is 10 x 20: IoU 100/200 = 0.5 legacy,
    # but 81/171 = 0.47 with continuous coordinates
    gt = dataset([[0, 0, 9, 19]])
    result = evaluate_voc(gt, dets(([0, 0, 9, 9], 0.9)), legacy_voc_pixels=legacy)
    assert result["mAP"] == (1.0 if found else 0.0)


def test_box_iou_conventions():
    assert voc_box_iou(0, 0, 9, 9, 0, 0, 9, 19, 1.0) == 0.5
    assert voc_box_iou(0, 0, 9, 9, 0, 0, 9, 19, 0.0) == pytest.approx(81 / 171)
    # touching boxes: share no area continuously, but one pixel column with inclusive pixels
    assert voc_box_iou(0, 0, 10, 10, 10, 0, 20, 10, 0.0) == 0.0
    assert voc_box_iou(0, 0, 10, 10, 10, 0, 20, 10, 1.0) == pytest.approx(11 / (2 * 121 - 11))


def test_boxes_whose_area_underflows_do_not_match_as_in_the_devkit():
    # 1e-200 x 1e-200 boxes overlap, but every area rounds to 0: the devkit's ov = 0 / 0 is NaN,
    # never greater than ovmax, so the detection is a false positive (and nothing divides by zero)
    assert voc_box_iou(0, 0, 1e-200, 1e-200, 0, 0, 1e-200, 1e-200, 0.0) == 0.0
    tiny = [0.0, 0.0, 1e-200, 1e-200]
    gt = {"images": [{"id": 1}], "categories": [{"id": 1, "name": "a"}],
          "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": tiny}]}  # fmt: skip
    assert evaluate_voc(gt, [{"image_id": 1, "category_id": 1, "bbox": tiny, "score": 1.0}])["mAP"] == 0.0


def test_detections_match_only_their_own_image_and_class():
    gt = dataset([A, A], categories=("a", "b"), image_ids=(1, 2), box_images=[1, 2], box_categories=[1, 2])
    # right box, wrong image; right box, wrong class
    result = evaluate_voc(gt, dets((A, 0.9, 2, 1), (A, 0.9, 1, 2)))
    assert result["per_class"] == {"a": 0.0, "b": 0.0}


def test_class_without_positives_is_minus_one_and_left_out_of_the_mean():
    gt = dataset([A, B], difficult=[0, 1], categories=("a", "b"), box_categories=[1, 2])
    result = evaluate_voc(gt, dets((A, 0.9, 1, 1), (C, 0.9, 1, 2)))
    assert result["per_class"] == {"a": 1.0, "b": -1.0}
    assert result["mAP"] == 1.0


def test_tied_scores_keep_file_order():
    # equal scores: the false positive listed first comes first -> fp, tp
    result = voc_evaluation(dataset([A]), dets((FAR, 0.5), (A, 0.5)))
    np.testing.assert_allclose(result.curves["a"][1], [0.0, 0.5])


@pytest.mark.parametrize(
    "kwargs",
    [
        {"method": "area"},
        {"iou_threshold": 0.0},
        {"iou_threshold": 1.5},
        {"iou_threshold": "0.5"},
        {"iou_threshold": np.float32(np.nan)},
        {"legacy_voc_pixels": "no"},  # a non-empty string is truthy: it must not turn legacy pixels on
        {"legacy_voc_pixels": None},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(InvalidArgumentError):
        evaluate_voc(dataset([A]), dets((A, 0.9)), **kwargs)


def test_numpy_scalar_arguments_are_accepted():
    expected = evaluate_voc(dataset([A]), dets((A, 0.9)), iou_threshold=0.5, legacy_voc_pixels=True)
    assert evaluate_voc(dataset([A]), dets((A, 0.9)), iou_threshold=np.float32(0.5), legacy_voc_pixels=np.bool_(True)) == expected


@pytest.mark.parametrize(
    "recall, precision, match",
    [
        ([[0.5]], [[1.0]], r"recall and precision must be \(N,\) arrays"),
        ([0.5, 1.0], [1.0], r"recall and precision must be \(N,\) arrays of the same length"),
        (["a"], [1.0], "recall and precision must hold numbers"),
        ([0.5, np.nan], [1.0, 1.0], "recall and precision must be finite"),
        ([50, 100], [1.0, 0.5], r"must lie in \[0, 1\] \(fractions, not percentages\)"),
        ([0.5, 1.0], [100.0, 50.0], r"must lie in \[0, 1\]"),
        ([-1.0], [1.0], r"must lie in \[0, 1\]"),
        ([1.0, 0.5], [0.5, 1.0], "recall must not decrease"),
    ],
)
def test_voc_ap_rejects_malformed_curves(recall, precision, match):
    with pytest.raises(InvalidArgumentError, match=match):
        voc_ap(recall, precision)


# ------------------------------------------------------------------ against a plain-loop devkit


def devkit_voc_ap(gt, detections, iou_threshold, eleven_point, legacy):
    """VOCevaldet.m + VOCap.m transcribed as plain Python loops: the slow definition of the metric."""
    pixel = 1.0 if legacy else 0.0
    aps = {}
    for category in gt["categories"]:
        objects = [a for a in gt["annotations"] if a["category_id"] == category["id"]]
        ignored = [bool(a.get("difficult", 0) or a.get("iscrowd", 0)) for a in objects]
        n_pos = sum(not i for i in ignored)
        found = [False] * len(objects)
        mine = [d for d in detections if d["category_id"] == category["id"]]
        mine = sorted(mine, key=lambda d: -d["score"])  # stable
        tp, fp = [], []
        for d in mine:
            x, y, w, h = d["bbox"]
            best, j_best = -1.0, -1
            for j, a in enumerate(objects):
                if a["image_id"] != d["image_id"]:
                    continue
                gx, gy, gw, gh = a["bbox"]
                iw = min(x + w, gx + gw) - max(x, gx) + pixel
                ih = min(y + h, gy + gh) - max(y, gy) + pixel
                if iw > 0 and ih > 0:
                    union = (w + pixel) * (h + pixel) + (gw + pixel) * (gh + pixel) - iw * ih
                    if iw * ih / union > best:
                        best, j_best = iw * ih / union, j
            if j_best >= 0 and best >= iou_threshold:
                if ignored[j_best]:
                    continue
                if not found[j_best]:
                    found[j_best] = True
                    tp.append(1), fp.append(0)
                else:
                    tp.append(0), fp.append(1)
            else:
                tp.append(0), fp.append(1)
        if n_pos == 0:
            aps[category["name"]] = -1.0
            continue
        tp, fp = np.cumsum(tp), np.cumsum(fp)
        recall = tp / n_pos
        precision = tp / np.maximum(tp + fp, 1e-300)
        if eleven_point:
            aps[category["name"]] = sum(max([p for p, r in zip(precision, recall) if r >= t / 10], default=0) for t in range(11)) / 11
        else:
            mrec = [0.0, *recall, 1.0]
            mpre = [0.0, *precision, 0.0]
            for i in range(len(mpre) - 2, -1, -1):
                mpre[i] = max(mpre[i], mpre[i + 1])
            aps[category["name"]] = sum((mrec[i] - mrec[i - 1]) * mpre[i] for i in range(1, len(mrec)) if mrec[i] != mrec[i - 1])
    return aps


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("method", ["all", "11point"])
@pytest.mark.parametrize("legacy", [False, True])
def test_matches_plain_loop_devkit_on_random_problems(seed, method, legacy, rng):
    gt, detections = random_coco_problem(seed, n_images=12, n_categories=4, crowd_fraction=0.1)
    for ann in gt["annotations"]:
        ann["difficult"] = int(rng.random() < 0.15)
    threshold = [0.5, 0.3, 0.7, 0.5][seed]
    ours = evaluate_voc(gt, detections, iou_threshold=threshold, method=method, legacy_voc_pixels=legacy)
    theirs = devkit_voc_ap(gt, detections, threshold, method == "11point", legacy)
    assert ours["per_class"] == pytest.approx(theirs, abs=1e-12)
    defined = [v for v in theirs.values() if v >= 0]
    assert ours["mAP"] == pytest.approx(np.mean(defined), abs=1e-12)
