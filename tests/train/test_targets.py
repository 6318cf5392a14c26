"""Specification of `scratchdet.train.targets`: labelling proposals by IoU, Fast R-CNN's RoI sampling,
box-regression targets and the ground truth appended to the proposals."""

import numpy as np
import pytest

from scratchdet import boxes as B
from scratchdet.errors import InvalidArgumentError
from scratchdet.train import (
    FAST_RCNN_WEIGHTS,
    Matches,
    match_proposals,
    regression_targets,
    sample_rois,
    with_gt_boxes,
)


def random_boxes(rng, n, low=0.0, high=100.0, min_size=1.0, max_size=40.0):
    """(n, 4) float64 xyxy boxes with positive sizes."""
    corners = rng.uniform(low, high, size=(n, 2))
    sizes = rng.uniform(min_size, max_size, size=(n, 2))
    return np.concatenate([corners, corners + sizes], axis=1)


def reference_matches(proposals, gt_boxes, gt_labels, fg_iou, bg_iou):
    """The labelling rule as the definition reads, one proposal at a time, on a broadcast IoU matrix."""
    lt = np.maximum(proposals[:, None, :2], gt_boxes[None, :, :2])
    rb = np.minimum(proposals[:, None, 2:], gt_boxes[None, :, 2:])
    inter = np.prod(np.clip(rb - lt, 0, None), axis=2)
    area_p = np.prod(proposals[:, 2:] - proposals[:, :2], axis=1)
    area_g = np.prod(gt_boxes[:, 2:] - gt_boxes[:, :2], axis=1)
    overlaps = inter / (area_p[:, None] + area_g[None, :] - inter)
    labels = []
    for row in overlaps:
        best = max(range(len(row)), key=lambda j: (row[j], -j))  # highest IoU, then lowest index
        if row[best] >= fg_iou:
            labels.append(gt_labels[best])
        elif bg_iou[0] <= row[best] < bg_iou[1]:
            labels.append(0)
        else:
            labels.append(-1)
    return np.array(labels), overlaps


# ----------------------------------------------------------------------------------------------
# match_proposals
# ----------------------------------------------------------------------------------------------


def test_match_foreground_exactly_at_fg_iou_and_background_just_below():
    gt = np.array([[0.0, 0.0, 2.0, 1.0]])  # area 2
    just_under_one = np.nextafter(1.0, 0.0)
    proposals = np.array([
        [0.0, 0.0, 1.0, 1.0],  # IoU 1 / 2 = 0.5 exactly
        [0.0, 0.0, just_under_one, 1.0],  # IoU just below 0.5
    ])
    m = match_proposals(proposals, gt, [3])
    assert m.max_iou[0] == 0.5 and m.max_iou[1] < 0.5
    np.testing.assert_array_equal(m.labels, [3, 0])


def test_match_background_exactly_at_bg_low_and_ignored_just_below():
    gt = np.array([[0.0, 0.0, 10.0, 1.0]])  # area 10
    proposals = np.array([
        [0.0, 0.0, 1.0, 1.0],  # IoU 1 / 10 == 0.1 in float64
        [0.0, 0.0, 0.999, 1.0],  # IoU 0.0999
    ])
    m = match_proposals(proposals, gt, [1])
    assert m.max_iou[0] == 0.1 and m.max_iou[1] < 0.1
    np.testing.assert_array_equal(m.labels, [0, -1])


def test_match_proposal_at_bg_high_is_not_background_when_below_fg():
    gt = np.array([[0.0, 0.0, 2.0, 1.0]])
    proposals = np.array([[0.0, 0.0, 1.0, 1.0]])  # IoU 0.5: not below bg_iou[1] = 0.5, not >= fg_iou 0.7
    m = match_proposals(proposals, gt, [1], fg_iou=0.7, bg_iou=(0.0, 0.5))
    np.testing.assert_array_equal(m.labels, [-1])


def test_match_highest_iou_gt_wins():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [0.0, 0.0, 4.0, 4.0]])
    proposals = np.array([[0.0, 0.0, 5.0, 5.0]])  # IoU 0.25 with gt 0, 0.64 with gt 1
    m = match_proposals(proposals, gt, [1, 2])
    np.testing.assert_array_equal(m.gt_index, [1])
    np.testing.assert_array_equal(m.labels, [2])
    np.testing.assert_allclose(m.max_iou, [0.64])


def test_match_ties_go_to_lowest_gt_index():
    gt = np.array([[0.0, 0.0, 2.0, 1.0], [-1.0, 0.0, 1.0, 1.0], [0.0, 0.0, 2.0, 1.0]])
    proposals = np.array([[0.0, 0.0, 1.0, 1.0]])  # IoU 0.5 with each of the three
    m = match_proposals(proposals, gt, [7, 5, 6])
    np.testing.assert_array_equal(m.max_iou, [0.5])
    np.testing.assert_array_equal(m.gt_index, [0])
    np.testing.assert_array_equal(m.labels, [7])


def test_match_labels_carried_from_matched_gt():
    gt = np.array([[0.0, 0.0, 10.0, 10.0], [50.0, 50.0, 60.0, 60.0], [100.0, 0.0, 110.0, 10.0]])
    proposals = np.array([
        [101.0, 0.0, 110.0, 10.0],  # gt 2
        [0.0, 0.0, 10.0, 9.0],  # gt 0
        [50.0, 50.0, 60.0, 60.0],  # gt 1
        [200.0, 200.0, 210.0, 210.0],  # nothing: IoU 0, ignored under bg_iou[0] = 0.1
    ])
    m = match_proposals(proposals, gt, np.array([4, 9, 2], dtype=np.uint8))
    np.testing.assert_array_equal(m.gt_index, [2, 0, 1, 0])
    np.testing.assert_array_equal(m.labels, [2, 4, 9, -1])
    assert m.labels.dtype == np.int64 and m.gt_index.dtype == np.int64 and m.max_iou.dtype == np.float64


def test_match_rcnn_setting_makes_every_miss_background():
    gt = np.array([[0.0, 0.0, 10.0, 10.0]])
    proposals = np.array([[20.0, 20.0, 30.0, 30.0], [0.0, 0.0, 10.0, 10.0]])
    np.testing.assert_array_equal(match_proposals(proposals, gt, [1], bg_iou=(0.0, 0.5)).labels, [0, 1])
    np.testing.assert_array_equal(match_proposals(proposals, gt, [1]).labels, [-1, 1])


@pytest.mark.parametrize(
    "bg_iou, expected",
    [((0.0, 0.5), 0), ((0.1, 0.5), -1), ((0.0, 0.0), -1)],
    ids=["background-when-bg-low-is-0", "ignored-when-bg-low-above-0", "ignored-when-bg-interval-empty"],
)
def test_match_no_ground_truth(bg_iou, expected):
    proposals = np.array([[0.0, 0.0, 1.0, 1.0], [2.0, 3.0, 5.0, 7.0]])
    m = match_proposals(proposals, np.zeros((0, 4)), [], bg_iou=bg_iou)
    np.testing.assert_array_equal(m.labels, [expected, expected])
    np.testing.assert_array_equal(m.gt_index, [-1, -1])
    np.testing.assert_array_equal(m.max_iou, [0.0, 0.0])
    assert m.labels.dtype == np.int64 and m.gt_index.dtype == np.int64 and m.max_iou.dtype == np.float64


def test_match_no_ground_truth_never_foreground_even_at_fg_iou_0():
    m = match_proposals(np.array([[0.0, 0.0, 1.0, 1.0]]), np.zeros((0, 4)), [], fg_iou=0.0, bg_iou=(0.0, 0.0))
    np.testing.assert_array_equal(m.labels, [-1])


def test_match_no_proposals():
    m = match_proposals(np.zeros((0, 4)), np.array([[0.0, 0.0, 1.0, 1.0]]), [1])
    assert m.labels.shape == m.gt_index.shape == m.max_iou.shape == (0,)


def test_match_float32_boxes_use_the_exact_iou():
    gt = np.array([[0.0, 0.0, 2.0, 1.0]], dtype=np.float32)
    just_under_one = np.nextafter(np.float32(1), np.float32(0))
    proposals = np.array([[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, just_under_one, 1.0]], dtype=np.float32)
    m = match_proposals(proposals, gt, [1])
    assert m.max_iou.dtype == np.float64 and m.max_iou[1] < 0.5
    np.testing.assert_array_equal(m.labels, [1, 0])


@pytest.mark.parametrize("fg_iou, bg_iou", [(0.5, (0.1, 0.5)), (0.7, (0.0, 0.3)), (0.5, (0.0, 0.5))])
def test_match_agrees_with_reference_on_random_boxes(rng, fg_iou, bg_iou):
    gt = random_boxes(rng, 6)
    proposals = np.concatenate([random_boxes(rng, 300), gt + rng.normal(0, 2, size=gt.shape).clip(-0.5, 0.5)])
    gt_labels = rng.integers(1, 5, size=6)
    m = match_proposals(proposals, gt, gt_labels, fg_iou=fg_iou, bg_iou=bg_iou)
    expected, overlaps = reference_matches(proposals, gt, gt_labels, fg_iou, bg_iou)
    np.testing.assert_array_equal(m.labels, expected, err_msg="ours vs the reference labelling")
    np.testing.assert_allclose(m.max_iou, overlaps.max(axis=1), rtol=1e-12, atol=1e-15)
    assert (m.labels >= 1).any() and (m.labels == 0).any(), "the random scene should hold both kinds"


# ----------------------------------------------------------------------------------------------
# sample_rois
# ----------------------------------------------------------------------------------------------


def scene_labels(rng, n_fg, n_bg, n_ignored):
    """Shuffled labels with n_fg foreground (classes 1..3), n_bg background and n_ignored -1."""
    labels = np.concatenate([
        rng.integers(1, 4, size=n_fg), np.zeros(n_bg, dtype=np.int64), np.full(n_ignored, -1, dtype=np.int64),
    ])
    return rng.permutation(labels)


def test_sample_caps_foreground_at_fraction_and_background_fills(rng):
    labels = scene_labels(rng, 100, 200, 50)
    keep = sample_rois(labels, batch_size=64, rng=rng)  # Fast R-CNN: 64 RoIs per image, 25% foreground
    assert keep.dtype == np.int64 and keep.shape == (64,)
    assert (labels[keep[:16]] >= 1).all() and (labels[keep[16:]] == 0).all()


def test_sample_background_fills_in_for_missing_foreground(rng):
    labels = scene_labels(rng, 3, 200, 50)
    keep = sample_rois(labels, batch_size=64, rng=rng)
    assert keep.shape == (64,)
    assert (labels[keep[:3]] >= 1).all() and (labels[keep[3:]] == 0).all()


def test_sample_returns_fewer_than_batch_size_when_short(rng):
    labels = scene_labels(rng, 3, 5, 50)
    keep = sample_rois(labels, batch_size=64, rng=rng)
    assert keep.shape == (8,)
    np.testing.assert_array_equal(np.sort(keep), np.flatnonzero(labels >= 0))


def test_sample_never_draws_ignored(rng):
    labels = scene_labels(rng, 10, 10, 300)
    for seed in range(20):
        keep = sample_rois(labels, batch_size=16, rng=seed)
        assert (labels[keep] != -1).all()
    assert sample_rois(-np.ones(5, dtype=np.int64), batch_size=4, rng=rng).shape == (0,)


def test_sample_no_labels_gives_no_indices(rng):
    keep = sample_rois(np.zeros(0, dtype=np.int64), batch_size=8, rng=rng)
    assert keep.dtype == np.int64 and keep.shape == (0,)


def test_sample_has_no_repeats_and_puts_foreground_first(rng):
    labels = scene_labels(rng, 40, 60, 10)
    keep = sample_rois(labels, batch_size=32, fg_fraction=0.5, rng=rng)
    assert np.unique(keep).size == keep.size == 32
    foreground = labels[keep] >= 1
    n_fg = int(foreground.sum())
    assert n_fg == 16 and foreground[:n_fg].all() and not foreground[n_fg:].any()


@pytest.mark.parametrize("fg_fraction, n_fg", [(0.0, 0), (0.25, 32), (1.0, 50)])
def test_sample_foreground_count_follows_fraction(rng, fg_fraction, n_fg):
    labels = scene_labels(rng, 50, 500, 0)
    keep = sample_rois(labels, batch_size=128, fg_fraction=fg_fraction, rng=rng)
    assert keep.shape == (128,)
    assert int((labels[keep] >= 1).sum()) == n_fg


def test_sample_is_deterministic_for_a_seed(rng):
    labels = scene_labels(rng, 100, 200, 50)
    first = sample_rois(labels, batch_size=64, rng=7)
    np.testing.assert_array_equal(sample_rois(labels, batch_size=64, rng=7), first)
    np.testing.assert_array_equal(sample_rois(labels, batch_size=64, rng=np.random.default_rng(7)), first)
    assert not np.array_equal(sample_rois(labels, batch_size=64, rng=8), first)


def test_sample_draws_foreground_uniformly():
    labels = np.array([1] * 10 + [0] * 10)
    generator = np.random.default_rng(0)
    counts = np.zeros(labels.size)
    trials = 4000
    for _ in range(trials):
        np.add.at(counts, sample_rois(labels, batch_size=8, fg_fraction=0.5, rng=generator), 1)
    # 4 of 10 foreground and 4 of 10 background each draw: every RoI is drawn with probability 0.4
    np.testing.assert_allclose(counts / trials, 0.4, atol=0.04)


# ----------------------------------------------------------------------------------------------
# regression_targets
# ----------------------------------------------------------------------------------------------


def labelled_scene(rng):
    gt = random_boxes(rng, 5, min_size=10.0)
    proposals = np.concatenate([random_boxes(rng, 200), gt + rng.uniform(-2, 2, size=gt.shape)])
    matches = match_proposals(proposals, gt, rng.integers(1, 4, size=5))
    assert (matches.labels >= 1).any() and (matches.labels < 1).any()
    return proposals, gt, matches


def test_regression_targets_equal_encode_on_foreground_and_zero_elsewhere(rng):
    proposals, gt, matches = labelled_scene(rng)
    targets = regression_targets(proposals, gt, matches)
    assert targets.dtype == np.float32 and targets.shape == (proposals.shape[0], 4)
    fg = matches.labels >= 1
    expected = B.encode(proposals[fg], gt[matches.gt_index[fg]], (10.0, 10.0, 5.0, 5.0))
    np.testing.assert_allclose(targets[fg], expected, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(targets[~fg], 0.0)


@pytest.mark.parametrize("weights", [FAST_RCNN_WEIGHTS, (1.0, 1.0, 1.0, 1.0), (2.0, 3.0, 4.0, 0.5)])
def test_regression_targets_decode_back_to_the_matched_gt(rng, weights):
    proposals, gt, matches = labelled_scene(rng)
    targets = regression_targets(proposals, gt, matches, weights=weights)
    fg = matches.labels >= 1
    recovered = B.decode(proposals[fg], targets[fg].astype(np.float64), weights)
    np.testing.assert_allclose(recovered, gt[matches.gt_index[fg]], atol=1e-4)


def test_regression_default_weights_divide_plain_deltas_by_py_faster_rcnn_stds(rng):
    proposals, gt, matches = labelled_scene(rng)
    plain = regression_targets(proposals, gt, matches, weights=(1.0, 1.0, 1.0, 1.0))
    normalised = regression_targets(proposals, gt, matches)
    np.testing.assert_allclose(normalised, plain / np.float32([0.1, 0.1, 0.2, 0.2]), rtol=1e-5, atol=1e-6)


def test_regression_targets_without_foreground_are_all_zero():
    proposals = np.array([[0.0, 0.0, 1.0, 1.0], [5.0, 5.0, 5.0, 9.0]])  # a degenerate background box is fine
    matches = match_proposals(proposals, np.zeros((0, 4)), [], bg_iou=(0.0, 0.5))
    targets = regression_targets(proposals, np.zeros((0, 4)), matches)
    assert targets.dtype == np.float32
    np.testing.assert_array_equal(targets, np.zeros((2, 4)))


def test_regression_targets_of_appended_gt_boxes_are_zero(rng):
    gt = random_boxes(rng, 4, min_size=5.0).astype(np.float32)
    rois = with_gt_boxes(random_boxes(rng, 30).astype(np.float32), gt)
    matches = match_proposals(rois, gt, [1, 2, 3, 1])
    targets = regression_targets(rois, gt, matches)
    np.testing.assert_array_equal(matches.labels[30:], [1, 2, 3, 1])
    np.testing.assert_array_equal(targets[30:], 0.0)


# ----------------------------------------------------------------------------------------------
# with_gt_boxes
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_with_gt_boxes_appends_gt_in_the_proposals_dtype(rng, dtype):
    proposals = random_boxes(rng, 7).astype(dtype)
    gt = random_boxes(rng, 3)  # float64
    rois = with_gt_boxes(proposals, gt)
    assert rois.dtype == dtype and rois.shape == (10, 4)
    np.testing.assert_array_equal(rois[:7], proposals)
    np.testing.assert_array_equal(rois[7:], gt.astype(dtype))


def test_with_gt_boxes_integer_proposals_become_float64():
    rois = with_gt_boxes(np.array([[0, 0, 4, 4]]), np.array([[1.5, 1.5, 3.0, 3.0]]))
    assert rois.dtype == np.float64
    np.testing.assert_array_equal(rois, [[0, 0, 4, 4], [1.5, 1.5, 3.0, 3.0]])


def test_with_gt_boxes_without_gt_or_proposals():
    proposals = np.array([[0.0, 0.0, 1.0, 1.0]], dtype=np.float32)
    np.testing.assert_array_equal(with_gt_boxes(proposals, np.zeros((0, 4))), proposals)
    assert with_gt_boxes(np.zeros((0, 4), dtype=np.float32), proposals).shape == (1, 4)


# ----------------------------------------------------------------------------------------------
# bad arguments
# ----------------------------------------------------------------------------------------------

BOX = np.array([[0.0, 0.0, 2.0, 2.0]])
TWO = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])
FG_MATCH = Matches(np.array([1]), np.array([0]), np.array([1.0]))

BAD_CALLS = {
    "match-proposals-not-n-by-4": (lambda: match_proposals(np.zeros(3), BOX, [1]), "proposals"),
    "match-proposals-inverted": (lambda: match_proposals([[2.0, 0.0, 0.0, 2.0]], BOX, [1]), "proposals"),
    "match-gt-boxes-nan": (lambda: match_proposals(BOX, [[0.0, np.nan, 1.0, 1.0]], [1]), "gt_boxes"),
    "match-gt-labels-float": (lambda: match_proposals(BOX, BOX, [1.0]), "gt_labels"),
    "match-gt-labels-wrong-length": (lambda: match_proposals(BOX, BOX, [1, 2]), "gt_labels"),
    "match-gt-labels-zero": (lambda: match_proposals(BOX, TWO, [1, 0]), r"gt_labels\[1\]"),
    "match-gt-labels-negative": (lambda: match_proposals(BOX, BOX, [-1]), "gt_labels"),
    "match-fg-iou-above-1": (lambda: match_proposals(BOX, BOX, [1], fg_iou=1.5), "fg_iou"),
    "match-fg-iou-negative": (lambda: match_proposals(BOX, BOX, [1], fg_iou=-0.1), "fg_iou"),
    "match-fg-iou-string": (lambda: match_proposals(BOX, BOX, [1], fg_iou="0.5"), "fg_iou"),
    "match-fg-iou-bool": (lambda: match_proposals(BOX, BOX, [1], fg_iou=True), "fg_iou"),
    "match-fg-iou-nan": (lambda: match_proposals(BOX, BOX, [1], fg_iou=float("nan")), "fg_iou"),
    "match-bg-iou-one-number": (lambda: match_proposals(BOX, BOX, [1], bg_iou=0.1), "bg_iou"),
    "match-bg-iou-length-1": (lambda: match_proposals(BOX, BOX, [1], bg_iou=(0.1,)), "bg_iou"),
    "match-bg-iou-string": (lambda: match_proposals(BOX, BOX, [1], bg_iou="ab"), "bg_iou"),
    "match-bg-iou-low-nan": (lambda: match_proposals(BOX, BOX, [1], bg_iou=(float("nan"), 0.5)), r"bg_iou\[0\]"),
    "match-bg-iou-high-above-1": (lambda: match_proposals(BOX, BOX, [1], bg_iou=(0.1, 2.0)), r"bg_iou\[1\]"),
    "match-bg-iou-reversed": (lambda: match_proposals(BOX, BOX, [1], bg_iou=(0.5, 0.1)), "bg_iou"),
    "match-bg-iou-above-fg-iou": (lambda: match_proposals(BOX, BOX, [1], bg_iou=(0.1, 0.6)), "fg_iou"),
    "sample-labels-2d": (lambda: sample_rois(np.zeros((2, 2), dtype=int), batch_size=4, rng=0), "labels"),
    "sample-labels-float": (lambda: sample_rois(np.array([0.0, 1.0]), batch_size=4, rng=0), "labels"),
    "sample-labels-below-minus-1": (lambda: sample_rois([0, -2, 1], batch_size=4, rng=0), r"labels\[1\]"),
    "sample-batch-size-0": (lambda: sample_rois([0, 1], batch_size=0, rng=0), "batch_size"),
    "sample-batch-size-float": (lambda: sample_rois([0, 1], batch_size=2.5, rng=0), "batch_size"),
    "sample-batch-size-bool": (lambda: sample_rois([0, 1], batch_size=True, rng=0), "batch_size"),
    "sample-fg-fraction-above-1": (lambda: sample_rois([0, 1], batch_size=4, fg_fraction=1.5, rng=0), "fg_fraction"),
    "sample-fg-fraction-negative": (lambda: sample_rois([0, 1], batch_size=4, fg_fraction=-0.25, rng=0), "fg_fraction"),
    "sample-rng-string": (lambda: sample_rois([0, 1], batch_size=4, rng="seed"), "rng"),
    "sample-rng-float": (lambda: sample_rois([0, 1], batch_size=4, rng=1.5), "rng"),
    "targets-proposals-not-n-by-4": (lambda: regression_targets(np.zeros((1, 3)), BOX, FG_MATCH), "proposals"),
    "targets-gt-boxes-inverted": (lambda: regression_targets(BOX, [[2.0, 2.0, 0.0, 0.0]], FG_MATCH), "gt_boxes"),
    "targets-matches-plain-tuple": (lambda: regression_targets(BOX, BOX, ([1], [0], [1.0])), "matches"),
    "targets-matches-wrong-length": (lambda: regression_targets(TWO, BOX, FG_MATCH), "matches.labels"),
    "targets-gt-index-out-of-range": (
        lambda: regression_targets(BOX, BOX, Matches(np.array([1]), np.array([1]), np.array([1.0]))),
        r"matches.gt_index\[0\]",
    ),
    "targets-gt-index-minus-1-for-foreground": (
        lambda: regression_targets(BOX, np.zeros((0, 4)), FG_MATCH),
        "matches.gt_index",
    ),
    "targets-foreground-proposal-without-area": (
        lambda: regression_targets(np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 1.0, 3.0]]), BOX,
                                   Matches(np.array([0, 1]), np.array([0, 0]), np.array([1.0, 0.0]))),
        r"proposals\[1\]",
    ),
    "targets-weights-negative": (lambda: regression_targets(BOX, BOX, FG_MATCH, weights=(10, 10, -5, 5)), "weights"),
    "targets-weights-three": (lambda: regression_targets(BOX, BOX, FG_MATCH, weights=(10, 10, 5)), "weights"),
    "with-gt-proposals-not-n-by-4": (lambda: with_gt_boxes(np.zeros((2, 5)), BOX), "proposals"),
    "with-gt-gt-boxes-inverted": (lambda: with_gt_boxes(BOX, [[0.0, 3.0, 1.0, 1.0]]), "gt_boxes"),
    "with-gt-gt-boxes-strings": (lambda: with_gt_boxes(BOX, [["a", "b", "c", "d"]]), "gt_boxes"),
}


@pytest.mark.parametrize("call, match", list(BAD_CALLS.values()), ids=list(BAD_CALLS))
def test_bad_arguments_raise_invalid_argument_error(call, match):
    with pytest.raises(InvalidArgumentError, match=match):
        call()


def test_weights_are_checked_even_without_foreground():
    matches = Matches(np.array([0]), np.array([0]), np.array([0.2]))
    with pytest.raises(InvalidArgumentError, match="weights"):
        regression_targets(BOX, BOX, matches, weights=(0.0, 1.0, 1.0, 1.0))
