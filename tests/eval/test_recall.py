"""Specification of proposal recall, (M)ABO and the recall-vs-#proposals curve."""

import math

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.eval.recall import best_overlaps, mabo, proposal_recall, recall_curve

# three gt boxes, two classes; each proposal below is the best match of one gt box
GT = np.array([[0.0, 0.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0], [50.0, 50.0, 60.0, 60.0]])
LABELS = np.array([1, 1, 2])
PROPOSALS = np.array(
    [
        [50.0, 50.0, 60.0, 52.5],  # IoU 1/4 with gt 2
        [0.0, 0.0, 10.0, 10.0],  # IoU 1 with gt 0
        [20.0, 20.0, 30.0, 25.0],  # IoU 1/2 with gt 1
        [100.0, 100.0, 110.0, 110.0],  # overlaps nothing
    ]
)


def random_image(rng, n_gt, n_proposals):
    def boxes(n):
        corners = rng.uniform(0, 200, (n, 2))
        return np.concatenate([corners, corners + rng.uniform(5, 120, (n, 2))], axis=1)

    return boxes(n_gt), boxes(n_proposals)


def test_hand_computed_recall_and_best_overlaps():
    res = proposal_recall(GT, PROPOSALS, iou_thresholds=(0.25, 0.5, 0.7))
    np.testing.assert_allclose(res["best_overlaps"], [1.0, 0.5, 0.25])
    # recall counts IoU >= t, so the boxes exactly at 0.25 and 0.5 are recalled there
    assert res["recall"] == {0.25: 1.0, 0.5: pytest.approx(2 / 3), 0.7: pytest.approx(1 / 3)}
    assert (res["num_gt"], res["num_proposals"], res["num_images"]) == (3, 4, 1)


def test_average_recall_integrates_recall_over_iou_half_to_one(rng):
    # best overlaps 1, 0.5, 0.25: AR = 2 * mean(max(o - 0.5, 0)) = 2 * (0.5 + 0 + 0) / 3
    assert proposal_recall(GT, PROPOSALS)["average_recall"] == pytest.approx(1 / 3)
    # and it is the mean of recall over a fine grid of thresholds in [0.5, 1]
    gt, props = random_image(rng, 30, 60)
    res = proposal_recall(gt, props, iou_thresholds=np.linspace(0.5, 1.0, 2001)[1:])
    assert res["average_recall"] == pytest.approx(np.mean(list(res["recall"].values())), abs=1e-3)


def test_mabo_averages_per_class_when_labels_are_given():
    # classes: {1: (1 + 0.5) / 2, 2: 0.25} -> MABO (0.75 + 0.25) / 2; unlabelled: mean of 1, 0.5, 0.25
    labelled = proposal_recall(GT, PROPOSALS, gt_labels=LABELS)
    assert labelled["abo"] == {1: pytest.approx(0.75), 2: pytest.approx(0.25)}
    assert labelled["mabo"] == pytest.approx(0.5)
    assert proposal_recall(GT, PROPOSALS)["mabo"] == pytest.approx(1.75 / 3)
    assert "abo" not in proposal_recall(GT, PROPOSALS)
    assert mabo(GT, PROPOSALS, gt_labels=LABELS) == pytest.approx(0.5)
    assert mabo(GT, PROPOSALS) == pytest.approx(1.75 / 3)


def test_max_proposals_uses_only_the_first_ranked_ones():
    res = proposal_recall(GT, PROPOSALS, iou_thresholds=0.5, max_proposals=2)
    np.testing.assert_allclose(res["best_overlaps"], [1.0, 0.0, 0.25])
    assert res["recall"] == {0.5: pytest.approx(1 / 3)}
    assert res["num_proposals"] == 2
    np.testing.assert_allclose(best_overlaps(GT, PROPOSALS, max_proposals=0), [0.0, 0.0, 0.0])


def test_list_of_images_pools_gt_boxes_over_images(rng):
    images = [random_image(rng, n_gt, n_prop) for n_gt, n_prop in [(3, 20), (0, 5), (4, 0), (2, 30)]]
    gts, props = [g for g, _ in images], [p for _, p in images]
    res = proposal_recall(gts, props)
    per_image = [proposal_recall(g, p)["best_overlaps"] for g, p in images]
    np.testing.assert_array_equal(res["best_overlaps"], np.concatenate(per_image))
    assert res["num_gt"] == 9 and res["num_images"] == 4 and res["num_proposals"] == 55
    # an image without proposals covers none of its gt boxes
    np.testing.assert_array_equal(per_image[2], np.zeros(4))
    assert res["recall"][0.5] == pytest.approx(np.mean(res["best_overlaps"] >= 0.5))


def test_best_overlap_is_the_max_iou_over_proposals(rng):
    gt, props = random_image(rng, 6, 40)
    lt = np.maximum(gt[:, None, :2], props[None, :, :2])
    rb = np.minimum(gt[:, None, 2:], props[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area = lambda b: (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])  # noqa: E731
    expected = (inter / (area(gt)[:, None] + area(props)[None, :] - inter)).max(axis=1)
    np.testing.assert_allclose(best_overlaps(gt, props), expected, rtol=1e-12)


def test_no_gt_boxes_gives_nan_not_a_crash():
    res = proposal_recall(np.zeros((0, 4)), PROPOSALS)
    assert math.isnan(res["recall"][0.5]) and math.isnan(res["mabo"]) and res["num_gt"] == 0
    curve = recall_curve([np.zeros((0, 4))], [PROPOSALS], counts=(1, 2))
    assert np.isnan(curve["recall"]).all() and curve["num_gt"] == 0


def test_split_by_coco_size_ranges():
    # areas 31^2 (small), exactly 32^2 (medium), 95^2 (medium), exactly 96^2 (large)
    gt = np.array([[0, 0, 31, 31], [0, 0, 32, 32], [0, 0, 95, 95], [0, 0, 96, 96]], dtype=float)
    proposals = np.array([[0, 0, 31, 31], [0, 0, 96, 96]], dtype=float)
    res = proposal_recall(gt, proposals, iou_thresholds=0.95)
    by_size = res["by_size"]
    assert [by_size[s]["num_gt"] for s in ("small", "medium", "large")] == [1, 2, 1]
    assert by_size["small"]["recall"][0.95] == 1.0
    assert by_size["medium"]["recall"][0.95] == pytest.approx(0.5)  # 95^2 / 96^2 >= 0.95 > 31^2 / 32^2
    assert by_size["large"]["mabo"] == 1.0


def test_recall_curve_hand_computed():
    curve = recall_curve(GT, PROPOSALS, counts=(1, 2, 3, 10), iou_threshold=0.5)
    np.testing.assert_array_equal(curve["counts"], [1, 2, 3, 10])
    np.testing.assert_allclose(curve["recall"], [0, 1 / 3, 2 / 3, 2 / 3])
    np.testing.assert_allclose(curve["mean_best_overlap"], [0.25 / 3, 1.25 / 3, 1.75 / 3, 1.75 / 3])
    np.testing.assert_allclose(curve["average_recall"], [0, 1 / 3, 1 / 3, 1 / 3])


def test_recall_curve_agrees_with_proposal_recall_and_never_decreases(rng):
    images = [random_image(rng, n_gt, n_prop) for n_gt, n_prop in [(5, 50), (3, 7), (6, 120)]]
    gts, props = [g for g, _ in images], [p for _, p in images]
    counts = (1, 3, 10, 30, 100, 1000)
    curve = recall_curve(gts, props, counts=counts, iou_threshold=0.6)
    assert np.all(np.diff(curve["recall"]) >= 0) and np.all(np.diff(curve["mean_best_overlap"]) >= 0)
    for k, r, o in zip(counts, curve["recall"], curve["mean_best_overlap"]):
        res = proposal_recall(gts, props, iou_thresholds=0.6, max_proposals=k)
        assert r == pytest.approx(res["recall"][0.6]) and o == pytest.approx(res["mabo"])
    np.testing.assert_allclose(
        curve["average_recall"], [proposal_recall(gts, props, max_proposals=k)["average_recall"] for k in counts]
    )


def test_one_image_as_nested_lists_equals_the_arrays():
    expected = proposal_recall(GT, PROPOSALS, gt_labels=LABELS)
    got = proposal_recall(GT.tolist(), PROPOSALS.tolist(), gt_labels=LABELS.tolist())
    assert got["recall"] == expected["recall"] and got["abo"] == expected["abo"] and got["num_images"] == 1
    assert mabo([[0.0, 0.0, 10.0, 10.0]], [(0, 0, 10, 5)]) == 0.5
    # a list of per-image box lists is still a list of images
    assert proposal_recall([GT.tolist(), GT.tolist()], [PROPOSALS.tolist(), []])["num_images"] == 2


def test_thresholds_may_be_a_numpy_array_of_any_dimension():
    assert proposal_recall(GT, PROPOSALS, iou_thresholds=np.array(0.5))["recall"] == {0.5: 2 / 3}
    assert proposal_recall(GT, PROPOSALS, iou_thresholds=np.array([0.5, 0.75]))["recall"] == {0.5: 2 / 3, 0.75: 1 / 3}


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: proposal_recall([GT, GT], [PROPOSALS]), "same number of images"),
        (lambda: proposal_recall([GT], [PROPOSALS[:, :3]]), r"proposals\[0\] must have shape \(N, 4\)"),
        (lambda: proposal_recall([GT, GT[:, [2, 3, 0, 1]]], [PROPOSALS] * 2), r"gt_boxes\[1\]\[0\]"),
        (lambda: proposal_recall(GT, PROPOSALS, iou_thresholds=(0.5, 1.5)), "iou_thresholds"),
        (lambda: proposal_recall(GT, PROPOSALS, gt_labels=LABELS[:2]), r"gt_labels\[0\] must have shape \(3,\)"),
        (lambda: proposal_recall(GT, PROPOSALS, max_proposals=-1), "max_proposals"),
        (lambda: proposal_recall("gt.json", PROPOSALS), "gt_boxes must be one image's NumPy array"),
        (lambda: recall_curve(GT, PROPOSALS, counts=(10, 5)), "counts must be increasing positive integers"),
        (lambda: recall_curve(GT, PROPOSALS, counts=(0, 5)), "counts must be increasing positive integers"),
        (lambda: recall_curve(GT, PROPOSALS, counts=np.array([10, 5], np.uint64)), "counts must be increasing positive integers"),
        (lambda: proposal_recall(GT, PROPOSALS, iou_thresholds=None), "iou_thresholds must be a number or a sequence"),
        (lambda: recall_curve(GT, PROPOSALS, iou_threshold=(0.5, 0.7)), "iou_threshold must be a number"),
    ],
)
def test_bad_input_raises_invalid_argument_naming_it(call, match):
    with pytest.raises(InvalidArgumentError, match=match):
        call()


def test_num_proposals_counts_at_most_max_proposals_per_image():
    # an image with fewer proposals than max_proposals counts only the ones it has
    res = proposal_recall([GT, GT[:1]], [PROPOSALS, PROPOSALS[1:2]], max_proposals=3)
    assert res["num_proposals"] == 3 + 1
