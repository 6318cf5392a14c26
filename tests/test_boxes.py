"""Specification of `scratchdet.boxes`: formats, IoU, clipping, the R-CNN box deltas and NMS."""

import math
import pathlib
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from scratchdet import boxes as B
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.shared.boxes import iou_pair

PROPERTY = settings(max_examples=60, deadline=None)


# ----------------------------------------------------------------------------------------------
# strategies and plain-Python references
# ----------------------------------------------------------------------------------------------


@st.composite
def xyxy_boxes(draw, min_n=0, max_n=25, grid=False, min_size=0.5):
    """(N, 4) float64 xyxy boxes; on a coarse integer `grid` many pairs sit exactly at 1/2, 1/3, ..."""
    n = draw(st.integers(min_n, max_n))
    if grid:
        corners = draw(arrays(np.int64, (n, 2), elements=st.integers(0, 12))).astype(np.float64)
        sizes = draw(arrays(np.int64, (n, 2), elements=st.integers(1, 8))).astype(np.float64)
    else:
        corners = draw(arrays(np.float64, (n, 2), elements=st.floats(-50, 150)))
        sizes = draw(arrays(np.float64, (n, 2), elements=st.floats(min_size, 80)))
    return np.concatenate([corners, corners + sizes], axis=1)


@st.composite
def scored_boxes(draw, max_n=25):
    """Boxes on a grid with scores drawn from few values, so that exact IoU and score ties occur."""
    boxes = draw(xyxy_boxes(grid=True, max_n=max_n))
    scores = draw(arrays(np.float64, (boxes.shape[0],), elements=st.integers(0, 6).map(float)))
    return boxes, scores


def reference_nms(boxes, scores, iou_threshold):
    """Greedy NMS as the definition reads, in plain Python (ties visited in index order)."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # Python's sort is stable
    keep = []
    for i in order:
        if all(iou_pair(*boxes[k], *boxes[i]) <= iou_threshold for k in keep):
            keep.append(i)
    return np.array(keep, dtype=np.int64)


def reference_iou(a, b):
    """The IoU matrix by NumPy broadcasting, independently of the kernels."""
    lt = np.maximum(a[:, None, :2], b[None, :, :2])
    rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
    wh = np.clip(rb - lt, 0, None)
    inter = wh[..., 0] * wh[..., 1]
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


# ----------------------------------------------------------------------------------------------
# formats, area, clip, remove_small
# ----------------------------------------------------------------------------------------------


def test_convert_known_values():
    xyxy = np.array([[1.0, 2.0, 4.0, 6.0]])
    np.testing.assert_array_equal(B.convert(xyxy, "xyxy", "xywh"), [[1, 2, 3, 4]])
    np.testing.assert_array_equal(B.convert(xyxy, "xyxy", "cxcywh"), [[2.5, 4, 3, 4]])
    np.testing.assert_array_equal(B.convert([[1, 2, 3, 4]], "xywh", "xyxy"), xyxy)
    np.testing.assert_array_equal(B.convert([[2.5, 4, 3, 4]], "cxcywh", "xyxy"), xyxy)


@pytest.mark.parametrize("src", B.FORMATS)
@pytest.mark.parametrize("dst", B.FORMATS)
@PROPERTY
@given(boxes=xyxy_boxes())
def test_convert_round_trip(boxes, src, dst):
    start = B.convert(boxes, "xyxy", src)
    back = B.convert(B.convert(start, src, dst), dst, src)
    np.testing.assert_allclose(back, start, rtol=1e-12, atol=1e-9)


@pytest.mark.parametrize(
    "dtype, expected", [(np.float32, np.float32), (">f4", np.float32), (np.float64, np.float64), (np.int64, np.float64)]
)
def test_convert_and_area_dtypes(dtype, expected):
    boxes = np.array([[0, 0, 4, 2]], dtype=dtype)
    assert B.convert(boxes, "xyxy", "cxcywh").dtype == expected
    assert B.area(boxes).dtype == expected


def test_area_uses_continuous_coordinates_without_plus_one():
    np.testing.assert_array_equal(B.area([[0, 0, 4, 2], [1, 1, 1, 5], [2.5, 0, 3, 0.5]]), [8.0, 0.0, 0.25])


def test_no_boxes_give_empty_results_of_the_right_shape():
    assert B.area(np.zeros((0, 4))).shape == (0,)
    assert B.area(np.array([])).shape == (0,)
    assert B.convert(np.zeros((0, 4)), "xywh", "cxcywh").shape == (0, 4)
    assert B.clip(np.zeros((0, 4)), (5, 5)).shape == (0, 4)
    assert B.remove_small(np.zeros((0, 4)), 1).shape == (0,)


def test_clip_to_image_shape_h_w_c():
    boxes = np.array([[-5.0, -1.0, 30.0, 8.0], [2.0, 3.0, 4.0, 5.0], [50.0, 50.0, 60.0, 60.0]])
    out = B.clip(boxes, (10, 20, 3))  # H = 10, W = 20
    np.testing.assert_array_equal(out, [[0, 0, 20, 8], [2, 3, 4, 5], [20, 10, 20, 10]])
    assert boxes[0, 0] == -5.0, "clip must not modify its input"


@pytest.mark.parametrize("image_shape", [(10,), (0, 5), (10, 5.5), "10x5", None])
def test_clip_rejects_bad_image_shape(image_shape):
    with pytest.raises(InvalidArgumentError, match="image_shape"):
        B.clip(np.zeros((1, 4)), image_shape)


def test_remove_small_keeps_boxes_exactly_at_min_size():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 1.999, 5], [0, 0, 5, 1.5], [1, 1, 6, 6]])
    np.testing.assert_array_equal(B.remove_small(boxes, 2), [0, 3])
    assert B.remove_small(boxes, 0).tolist() == [0, 1, 2, 3]
    assert B.remove_small(np.zeros((0, 4)), 1).dtype == np.int64


# ----------------------------------------------------------------------------------------------
# IoU
# ----------------------------------------------------------------------------------------------


def test_iou_hand_computed():
    a = np.array([[0.0, 0.0, 2.0, 2.0]])
    b = np.array([[1.0, 1.0, 3.0, 3.0], [0.0, 0.0, 1.0, 2.0], [2.0, 0.0, 4.0, 2.0], [5.0, 5.0, 6.0, 6.0]])
    # overlap 1 of union 7; half of a; touching edges; far away
    np.testing.assert_allclose(B.iou(a, b), [[1 / 7, 0.5, 0.0, 0.0]], rtol=1e-15)


def test_iou_of_degenerate_boxes_is_zero():
    point = np.array([[1.0, 1.0, 1.0, 1.0]])
    line = np.array([[0.0, 1.0, 2.0, 1.0]])
    assert B.iou(point, point)[0, 0] == 0.0
    assert B.iou(line, np.array([[0.0, 0.0, 2.0, 2.0]]))[0, 0] == 0.0


@PROPERTY
@given(a=xyxy_boxes(), b=xyxy_boxes())
def test_iou_is_symmetric_bounded_and_matches_broadcast_formula(a, b):
    m = B.iou(a, b)
    assert m.shape == (a.shape[0], b.shape[0])
    assert np.all((m >= 0) & (m <= 1))
    np.testing.assert_array_equal(m, B.iou(b, a).T)
    np.testing.assert_allclose(m, reference_iou(a, b), rtol=1e-12, atol=1e-15)


@PROPERTY
@given(a=xyxy_boxes(min_n=1))
def test_iou_of_a_box_with_itself_is_one(a):
    np.testing.assert_allclose(np.diag(B.iou(a, a)), 1.0, rtol=1e-12)


@pytest.mark.parametrize("n, m", [(0, 0), (0, 3), (3, 0)])
def test_iou_of_no_boxes_has_the_right_shape(n, m, rng):
    out = B.iou(rng.uniform(0, 1, (n, 4)).cumsum(axis=1), rng.uniform(0, 1, (m, 4)).cumsum(axis=1))
    assert out.shape == (n, m)


@pytest.mark.parametrize(
    "dtype1, dtype2, expected",
    [
        (np.float32, np.float32, np.float32),
        (np.float32, np.float64, np.float64),
        (np.int32, np.int32, np.float64),
        (">f4", "<f4", np.float32),  # float32 of either byte order stays float32
    ],
)
def test_iou_result_dtype(dtype1, dtype2, expected):
    a = np.array([[0, 0, 2, 2]], dtype=dtype1)
    b = np.array([[1, 0, 3, 2]], dtype=dtype2)
    out = B.iou(a, b)
    assert out.dtype == expected
    assert out[0, 0] == pytest.approx(1 / 3)


# ----------------------------------------------------------------------------------------------
# encode / decode (R-CNN appendix C)
# ----------------------------------------------------------------------------------------------


def test_encode_hand_computed():
    proposals = np.array([[0.0, 0.0, 10.0, 20.0]])  # centre (5, 10), size (10, 20)
    gt = np.array([[5.0, 0.0, 25.0, 10.0]])  # centre (15, 5), size (20, 10)
    expected = [[10 / 10, -5 / 20, math.log(2), math.log(0.5)]]
    np.testing.assert_allclose(B.encode(proposals, gt), expected, rtol=1e-15)
    np.testing.assert_allclose(
        B.encode(proposals, gt, weights=(10, 10, 5, 5)), np.array(expected) * [10, 10, 5, 5], rtol=1e-15
    )


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0), (0.5, 2.0, 3.0, 0.25)])
@PROPERTY
@given(data=st.data())
def test_decode_inverts_encode(weights, data):
    proposals = data.draw(xyxy_boxes())
    gt = data.draw(xyxy_boxes(min_n=proposals.shape[0], max_n=proposals.shape[0]))
    deltas = B.encode(proposals, gt, weights=weights)
    # growth beyond the clamp (62.5x) is possible here, so decode without it
    np.testing.assert_allclose(B.decode(proposals, deltas, weights=weights, clamp=math.inf), gt, rtol=1e-9, atol=1e-9)


def test_decode_clamps_log_size_before_exp():
    proposals = np.array([[0.0, 0.0, 4.0, 2.0]])
    out = B.decode(proposals, np.array([[0.0, 0.0, 1000.0, -3.0]]))
    width, height = out[0, 2] - out[0, 0], out[0, 3] - out[0, 1]
    assert np.isfinite(out).all()
    assert width == pytest.approx(4.0 * 1000.0 / 16)  # clamped at log(1000 / 16)
    assert height == pytest.approx(2.0 * math.exp(-3.0))  # shrinking is not clamped
    np.testing.assert_allclose(0.5 * (out[0, :2] + out[0, 2:]), [2.0, 1.0])  # the centre stays


def test_decode_clamps_after_undoing_the_weights():
    # the clamp bounds tw / ww, not tw: with ww = wh = 5, tw = 10 is a log-size change of 2 (below the
    # clamp) and th = 50 one of 10 (clamped to log(1000 / 16))
    proposals = np.array([[0.0, 0.0, 4.0, 2.0]])
    out = B.decode(proposals, np.array([[0.0, 0.0, 10.0, 50.0]]), weights=(10, 10, 5, 5))
    assert out[0, 2] - out[0, 0] == pytest.approx(4.0 * math.exp(2.0))
    assert out[0, 3] - out[0, 1] == pytest.approx(2.0 * 1000.0 / 16)


def test_decode_of_zero_deltas_returns_the_proposals(rng):
    corners = rng.uniform(0, 100, (7, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(1, 50, (7, 2))], axis=1)
    np.testing.assert_allclose(B.decode(proposals, np.zeros((7, 4)), weights=(10, 10, 5, 5)), proposals, rtol=1e-14)


def test_encode_decode_keep_float32_and_handle_no_boxes():
    p = np.array([[0, 0, 4, 4]], dtype=np.float32)
    assert B.encode(p, p).dtype == np.float32
    assert B.decode(p, np.zeros((1, 4), np.float32)).dtype == np.float32
    assert B.encode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)
    assert B.decode(np.zeros((0, 4)), np.zeros((0, 4))).shape == (0, 4)


# ----------------------------------------------------------------------------------------------
# NMS
# ----------------------------------------------------------------------------------------------


def test_nms_keeps_box_exactly_at_threshold():
    # IoU([0,0,2,1], [0,0,1,1]) = 1 / 2 exactly
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = np.array([0.9, 0.8])
    assert B.iou(boxes[:1], boxes[1:])[0, 0] == 0.5
    assert B.nms(boxes, scores, 0.5).tolist() == [0, 1]
    assert B.nms(boxes, scores, np.nextafter(0.5, 0.0)).tolist() == [0]


def test_nms_hand_computed_cluster():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 10, 9], [21, 20, 31, 30]], float)
    scores = np.array([0.5, 0.9, 0.3, 0.8, 0.1])
    # 1 beats 0 (IoU 81/119) and 3 (IoU 72/118); 3 and 0: IoU 0.9 but 0 is already gone
    assert B.nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert B.nms(boxes, scores, 0.7).tolist() == [1, 3, 2]


@PROPERTY
@given(case=scored_boxes(), iou_threshold=st.sampled_from([0.0, 0.25, 1 / 3, 0.5, 0.7, 1.0]))
def test_nms_equals_plain_python_greedy_reference(case, iou_threshold):
    boxes, scores = case
    np.testing.assert_array_equal(B.nms(boxes, scores, iou_threshold), reference_nms(boxes, scores, iou_threshold))


@pytest.mark.parametrize("iou_threshold", [0.1, 0.5, 0.9])
def test_nms_with_boxes_beyond_its_grid_equals_the_reference(rng, iou_threshold):
    """The grid spans all but the outermost 0.5 % of the box centres on each side (one far box once
    stretched its cells over all the others: quadratic time): boxes beyond it fall in the border
    cells, where they must still suppress each other and the boxes inside they overlap."""
    inside = rng.uniform(0, 100, (900, 2))
    far = np.concatenate([rng.uniform(-1e6, -1e5, (20, 2)), rng.uniform(1e5, 1e6, (20, 2))])
    edge = np.array([[100.0, 50.0], [0.0, 50.0], [50.0, 100.0]]) + rng.uniform(-3, 3, (3, 2))  # across the border
    centres = np.concatenate([inside, far, far + rng.uniform(-2, 2, far.shape), edge, edge + 1.0])  # near-duplicates
    sizes = rng.uniform(2, 12, (len(centres), 2))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = rng.random(len(boxes))
    np.testing.assert_array_equal(B.nms(boxes, scores, iou_threshold), reference_nms(boxes, scores, iou_threshold))
    labels = rng.integers(0, 3, len(boxes))
    expected = np.concatenate([np.flatnonzero(labels == c)[reference_nms(boxes[labels == c], scores[labels == c], iou_threshold)]
                               for c in range(3)])
    ours = B.batched_nms(boxes, scores, labels, iou_threshold)
    assert sorted(ours.tolist()) == sorted(expected.tolist())


@PROPERTY
@given(data=st.data(), iou_threshold=st.floats(0.0, 1.0))
def test_nms_equals_reference_on_boxes_of_very_different_sizes(data, iou_threshold):
    # the kernel searches a grid of kept-box centres: sizes from 0.01 to 1000 and far-apart
    # clusters exercise its cell size and reach
    n = data.draw(st.integers(1, 60))
    centres = data.draw(arrays(np.float64, (n, 2), elements=st.sampled_from([0.0, 3.0, 500.0, 1e5]) | st.floats(0, 50)))
    sizes = data.draw(arrays(np.float64, (n, 2), elements=st.sampled_from([0.0, 0.01, 1000.0]) | st.floats(0.5, 40)))
    boxes = np.concatenate([centres - sizes / 2, centres + sizes / 2], axis=1)
    scores = data.draw(arrays(np.float64, (n,), elements=st.floats(0, 1)))
    np.testing.assert_array_equal(B.nms(boxes, scores, iou_threshold), reference_nms(boxes, scores, iou_threshold))


@PROPERTY
@given(case=scored_boxes(), iou_threshold=st.floats(0.0, 1.0))
def test_nms_keeps_top_box_and_no_two_kept_boxes_overlap_above_threshold(case, iou_threshold):
    boxes, scores = case
    keep = B.nms(boxes, scores, iou_threshold)
    assert keep.dtype == np.int64
    assert len(set(keep.tolist())) == len(keep)
    if len(boxes):
        assert keep[0] == int(np.argmax(scores))  # argmax takes the first of equal scores, as NMS does
    assert np.all(np.diff(scores[keep]) <= 0), "kept boxes must come by descending score"
    m = B.iou(boxes[keep], boxes[keep])
    np.fill_diagonal(m, 0.0)
    assert np.all(m <= iou_threshold)
    # every suppressed box overlaps a kept box above the threshold
    dropped = np.setdiff1d(np.arange(len(boxes)), keep)
    if len(dropped) and len(keep):
        assert np.all(B.iou(boxes[dropped], boxes[keep]).max(axis=1) > iou_threshold)


def test_nms_visits_equal_scores_in_index_order():
    boxes = np.array([[0, 0, 2, 2], [10, 0, 12, 2], [0, 0, 2, 2], [20, 0, 22, 2], [10, 0, 12, 2.0]])
    scores = np.array([0.5, 0.7, 0.5, 0.5, 0.7])
    # 1 and 4 tie and coincide: 1 wins; then 0, 2 (a copy of 0, suppressed) and 3 in index order
    assert B.nms(boxes, scores, 0.5).tolist() == [1, 0, 3]
    assert B.nms(boxes, np.zeros(5), 1.0).tolist() == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("dtype", [np.int64, np.uint64])
def test_nms_orders_integer_scores_beyond_2_53_exactly(dtype):
    # float64 rounds 2**53 + 1 to 2**53: sorting the scores as floats would make them tie
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [20, 0, 30, 10]], float)
    scores = np.array([2**53, 2**53 + 1, 2**53 - 1], dtype)
    assert B.nms(boxes, scores, 0.5).tolist() == [1, 2]
    assert B.batched_nms(boxes, scores, np.zeros(3, np.int64), 0.5).tolist() == [1, 2]
    extremes = np.array([np.iinfo(dtype).min, np.iinfo(dtype).max, 0, np.iinfo(dtype).min], dtype)
    apart = np.array([[0, 0, 1, 1], [2, 0, 3, 1], [4, 0, 5, 1], [6, 0, 7, 1]], float)
    assert B.nms(apart, extremes, 0.5).tolist() == ([1, 2, 0, 3] if dtype == np.int64 else [1, 0, 2, 3])


@pytest.mark.parametrize("side", [1e150, 1e153, 9e153, 1e154, 1.3e154, 1e155])
def test_boxes_near_the_size_limit_are_refused_or_have_self_iou_one(side):
    # the union of two boxes' areas must stay finite, not just each area
    boxes = np.array([[0, 0, side, side], [0, 0, 0.9 * side, side]])
    try:
        overlaps = B.iou(boxes, boxes)
    except InvalidArgumentError as error:
        assert "too large" in str(error)
        assert side > 9e153  # every box with a finite doubled area is accepted
    else:
        np.testing.assert_allclose(overlaps, [[1, 0.9], [0.9, 1]], rtol=1e-12)
        assert B.nms(boxes, np.array([1.0, 0.5]), 0.5).tolist() == [0]


def test_nms_threshold_one_keeps_everything_and_zero_keeps_only_disjoint():
    boxes = np.array([[0, 0, 2, 2], [0, 0, 2, 2], [1, 1, 3, 3], [2, 0, 4, 2]], float)  # box 3 only touches 0
    scores = np.array([0.4, 0.3, 0.2, 0.1])
    assert sorted(B.nms(boxes, scores, 1.0).tolist()) == [0, 1, 2, 3]
    assert B.nms(boxes, scores, 0.0).tolist() == [0, 3]


def test_batched_nms_of_empty_lists_is_empty_int64():
    keep = B.batched_nms([], [], [], 0.5)
    assert keep.dtype == np.int64 and keep.shape == (0,)


def test_nms_of_no_boxes_is_empty_int64():
    keep = B.nms(np.zeros((0, 4)), np.zeros(0), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64
    keep = B.batched_nms(np.zeros((0, 4)), np.zeros(0), np.zeros(0, np.int64), 0.5)
    assert keep.shape == (0,) and keep.dtype == np.int64


def test_nms_float32_boxes_and_integer_scores_give_the_same_answer():
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.1, 0.0, 2.0, 1.0]])
    scores = np.array([3, 2, 1], dtype=np.uint8)
    assert B.nms(boxes.astype(np.float32), scores, 0.5).tolist() == B.nms(boxes, scores.astype(float), 0.5).tolist()


@pytest.mark.parametrize("iou_threshold", [0.005, 0.3, 0.5, 0.7, 0.95])
@pytest.mark.parametrize("n_objects", [3, 40])
def test_nms_equals_reference_on_clustered_detections(rng, iou_threshold, n_objects):
    boxes, scores = _clustered_boxes(rng, 300, n_objects)
    np.testing.assert_array_equal(B.nms(boxes, scores, iou_threshold), reference_nms(boxes, scores, iou_threshold))


def test_batched_nms_never_suppresses_across_classes():
    box = [0.0, 0.0, 10.0, 10.0]
    boxes = np.array([box, box, box, [0.0, 0.0, 10.0, 9.0]])
    scores = np.array([0.2, 0.9, 0.5, 0.8])
    labels = np.array([7, 3, 7, 3])
    assert B.batched_nms(boxes, scores, labels, 0.5).tolist() == [1, 2]


@PROPERTY
@given(case=scored_boxes(), data=st.data(), iou_threshold=st.sampled_from([0.0, 0.3, 0.5, 0.7]))
def test_batched_nms_equals_nms_per_class(case, data, iou_threshold):
    boxes, scores = case
    labels = data.draw(arrays(np.int64, (boxes.shape[0],), elements=st.integers(-1, 2)))
    keep = B.batched_nms(boxes, scores, labels, iou_threshold)
    expected = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        expected.extend(idx[B.nms(boxes[idx], scores[idx], iou_threshold)].tolist())
    expected = sorted(expected, key=lambda i: (-scores[i], i))
    assert keep.tolist() == expected


# ----------------------------------------------------------------------------------------------
# bad input
# ----------------------------------------------------------------------------------------------

GOOD = np.array([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 3.0, 3.0]])


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: B.iou(np.zeros((2, 3)), GOOD), r"boxes1 must have shape \(N, 4\)"),
        (lambda: B.iou(GOOD, np.zeros(4)), r"boxes2 must have shape \(N, 4\)"),
        (lambda: B.iou(GOOD, np.array([[0, 0, np.nan, 1]])), r"boxes2\[0\].*not finite"),
        (lambda: B.iou(np.array([[0, 0, np.inf, 1]]), GOOD), r"boxes1\[0\].*not finite"),
        (lambda: B.iou(np.array([[5.0, 0, 2, 2]]), GOOD), r"boxes1\[0\].*xywh"),
        (lambda: B.iou(np.array([["a", "b", "c", "d"]]), GOOD), "boxes1 must hold integers or floats"),
        (lambda: B.iou(np.ones((1, 4), dtype=bool), GOOD), "boxes1 must hold integers or floats"),
        (lambda: B.area([[0, 0, 1]]), r"boxes must have shape \(N, 4\)"),
        (lambda: B.area(np.array([[5, 0, 2, 2]], dtype=np.uint8)), r"boxes\[0\].*width -3"),
        (lambda: B.convert(GOOD, "xyxy", "yxyx"), "dst must be one of"),
        (lambda: B.convert(np.array([[0, 0, -1, 1]]), "xywh", "xyxy"), r"boxes\[0\].*non-negative"),
        (lambda: B.nms(GOOD, np.ones(3), 0.5), r"scores must have shape \(2,\)"),
        (lambda: B.nms(GOOD, np.array([1.0, np.nan]), 0.5), r"scores\[1\] = nan is not finite"),
        (lambda: B.nms(GOOD, np.ones(2), 1.5), r"iou_threshold must be a number in \[0, 1\]"),
        (lambda: B.nms(GOOD, np.ones(2), "0.5"), "iou_threshold"),
        (lambda: B.nms(GOOD, np.ones(2), float("nan")), "iou_threshold"),
        (lambda: B.batched_nms(GOOD, np.ones(2), np.array([0.0, 1.0]), 0.5), "labels must be an integer array"),
        (lambda: B.batched_nms(GOOD, np.ones(2), np.array([0]), 0.5), r"labels must have shape \(2,\)"),
        (lambda: B.encode(GOOD, GOOD[:1]), "same number of rows"),
        (lambda: B.encode(np.array([[0, 0, 0, 1.0]]), GOOD[:1]), r"proposals\[0\].*positive"),
        (lambda: B.encode(GOOD[:1], np.array([[0, 0, 1.0, 0]])), r"gt\[0\].*positive"),
        (lambda: B.encode(GOOD, GOOD, weights=(1, 1, 0, 1)), "weights must be four positive numbers"),
        (lambda: B.decode(GOOD, np.zeros((2, 3))), r"deltas must have shape \(2, 4\)"),
        (lambda: B.decode(GOOD, np.array([[0, 0, 0, 0], [0, np.nan, 0, 0]])), r"deltas\[1\].*not finite"),
        (lambda: B.decode(GOOD, np.zeros((2, 4)), clamp=float("nan")), "clamp must be a number"),
        (lambda: B.remove_small(GOOD, -1), "min_size must be a non-negative number"),
        (lambda: B.iou(np.array([[0, 0, 1e200, 1e200]]), GOOD), r"boxes1\[0\].*too large"),
        (lambda: B.nms(np.array([[-1.7e308, 0, 1.7e308, 1.0]] * 2), np.ones(2), 0.5), r"boxes\[0\].*too large"),
    ],
)
def test_bad_input_raises_invalid_argument_naming_it(call, match):
    with pytest.raises(InvalidArgumentError, match=match):
        call()


def test_cpu_only_functions_reject_device_arrays_clearly():
    fake = types.SimpleNamespace(__cuda_array_interface__={}, shape=(2, 4))
    with pytest.raises(InvalidArgumentError, match="boxes is a CUDA device array"):
        B.clip(fake, (10, 10))
    with pytest.raises(InvalidArgumentError, match="boxes is a CUDA device array"):
        B.area(fake)


# ----------------------------------------------------------------------------------------------
# dispatch to the CUDA kernels (DESIGN.md, Backends)
# ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, args",
    [
        ("iou", ("A", "B")),
        ("nms", ("A", "S", 0.5)),
        ("batched_nms", ("A", "S", "L", 0.5)),
        ("encode", ("A", "G", (1, 1, 1, 1))),
        ("decode", ("A", "D", (1, 1, 1, 1), 2.0)),
    ],
)
def test_device_arrays_dispatch_to_the_cuda_module_with_the_same_arguments(monkeypatch, name, args):
    calls = []
    fake_module = types.SimpleNamespace(**{name: lambda *a: calls.append(a) or "from cuda"})
    monkeypatch.setattr(B, "_cuda", lambda: fake_module)
    device_array = types.SimpleNamespace(__cuda_array_interface__={})
    args = tuple(device_array if isinstance(a, str) else a for a in args)  # device scores pass as they are
    assert getattr(B, name)(*args) == "from cuda"
    assert calls == [args]


@pytest.mark.parametrize("name", ["nms", "batched_nms"])
def test_the_cuda_nms_gets_host_scores_checked_and_in_exact_order(monkeypatch, name):
    """As the CPU's: a NaN score once left a slot of the device's order unwritten, an inf passed, a
    threshold of True passed, and integers beyond 2**53 tied as float64."""
    calls = []
    fake_module = types.SimpleNamespace(**{name: lambda *a: calls.append(a) or "from cuda"})
    monkeypatch.setattr(B, "_cuda", lambda: fake_module)
    boxes = types.SimpleNamespace(__cuda_array_interface__={}, shape=(3, 4))
    extra = (types.SimpleNamespace(__cuda_array_interface__={}),) if name == "batched_nms" else ()
    call = getattr(B, name)
    for scores, match in [([0.9, np.nan, 0.5], r"scores\[1\] = nan is not finite"), ([np.inf, 1, 0], "not finite"),
                          ([1, 2], r"scores must have shape \(3,\)")]:
        with pytest.raises(InvalidArgumentError, match=match):
            call(boxes, np.array(scores), *extra, 0.5)
    for threshold in (True, "0.5", 1.5):
        with pytest.raises(InvalidArgumentError, match="iou_threshold"):
            call(boxes, np.ones(3), *extra, threshold)
    big = np.array([2**62, 2**62 + 1, 2**62], np.int64)
    call(boxes, big, *extra, 0.5)
    keys = calls[-1][1]
    assert keys.dtype == np.float64 and keys[1] > keys[0] == keys[2]  # the order and the tie, kept


# ----------------------------------------------------------------------------------------------
# live comparisons with the libraries people would otherwise use
# ----------------------------------------------------------------------------------------------


FROZEN = pathlib.Path(__file__).resolve().parent.parent / "reference" / "outputs" / "boxes_reference.npz"


def _random_boxes(rng, n):
    corners = rng.uniform(0, 50, (n, 2))
    return np.concatenate([corners, corners + rng.uniform(0, 30, (n, 2))], axis=1)


@pytest.fixture(scope="module")
def frozen():
    """OpenCV's NMS and pycocotools' IoU on seeded boxes, frozen by `reference/_boxes.py`."""
    with np.load(FROZEN) as z:
        return {key: z[key] for key in z.files}


@pytest.mark.parametrize("case", [0, 1])
@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_and_batched_nms_match_frozen_opencv(frozen, case, iou_threshold):
    boxes, scores, labels = (frozen[f"case{case}_{k}"] for k in ("boxes", "scores", "labels"))
    theirs = frozen[f"case{case}_keep_{iou_threshold}"]
    ours = B.nms(boxes, scores, iou_threshold)
    np.testing.assert_array_equal(ours, theirs, err_msg=f"ours {ours[:10]}..., opencv {theirs[:10]}...")
    # OpenCV orders the survivors of NMSBoxesBatched its own way: compare them as sets
    theirs = frozen[f"case{case}_batched_keep_{iou_threshold}"]
    np.testing.assert_array_equal(np.sort(B.batched_nms(boxes, scores, labels, iou_threshold)), theirs)


def test_iou_matches_frozen_pycocotools(frozen):
    ours = B.iou(frozen["iou_boxes1"], frozen["iou_boxes2"])
    np.testing.assert_allclose(ours, frozen["iou_pycocotools"], rtol=1e-12, atol=1e-15)
    assert (ours == 0).any() and (ours > 0.5).any()  # the input has disjoint and strongly overlapping pairs


def test_iou_matches_pycocotools_live(rng):
    coco_mask = pytest.importorskip("pycocotools.mask")
    a, b = _random_boxes(rng, 25), _random_boxes(rng, 35)
    theirs = coco_mask.iou(B.convert(a, "xyxy", "xywh"), B.convert(b, "xyxy", "xywh"), [0] * len(b))
    np.testing.assert_allclose(B.iou(a, b), theirs, rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("iou_threshold", [0.5, 2.0 / 3.0, 0.75])
def test_nms_decides_exact_ties_with_the_threshold_like_frozen_opencv(frozen, iou_threshold):
    boxes, scores = frozen["boundary_boxes"], frozen["boundary_scores"]
    theirs = frozen[f"boundary_keep_{iou_threshold!r}"]
    assert B.nms(boxes, scores, iou_threshold).tolist() == theirs.tolist()


def _clustered_boxes(rng, n, n_objects, size=500.0):
    """Jittered copies of a few object boxes of varied size, as a detector's raw output looks."""
    centres = rng.uniform(0, size, (n_objects, 2))
    sizes = np.exp(rng.uniform(np.log(10), np.log(200), (n_objects, 2)))
    obj = rng.integers(0, n_objects, n)
    c = centres[obj] + rng.normal(0, 0.15, (n, 2)) * sizes[obj]
    s = sizes[obj] * np.exp(rng.normal(0, 0.15, (n, 2)))
    return np.concatenate([c - s / 2, c + s / 2], axis=1), rng.uniform(0.01, 1.0, n)


@pytest.mark.parametrize("iou_threshold", [0.3, 0.5, 0.7])
def test_nms_matches_opencv_nmsboxes(rng, iou_threshold):
    cv2 = pytest.importorskip("cv2")
    boxes, scores = _clustered_boxes(rng, 800, 15)
    # OpenCV takes xywh boxes, float32 scores and a score threshold (it keeps scores > it). Its Rect2d
    # overlap, 1 - jaccardDistance(a, b) with area w * h, is our continuous-coordinate IoU rounded to
    # float32 and compared with a float32 threshold, so pairs within ~1e-7 of the threshold could be
    # decided differently: this input has none
    m = B.iou(boxes, boxes)
    assert np.abs(m - iou_threshold).min() > 1e-6
    theirs = np.asarray(cv2.dnn.NMSBoxes(B.convert(boxes, "xyxy", "xywh").tolist(), scores.tolist(), 0.0, iou_threshold))
    ours = B.nms(boxes, scores, iou_threshold)
    np.testing.assert_array_equal(ours, theirs.reshape(-1), err_msg=f"ours {ours[:10]}..., opencv {theirs[:10]}...")


def test_nms_keeps_box_exactly_at_threshold_like_opencv():
    cv2 = pytest.importorskip("cv2")
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.5, 1.0]])  # IoU 1/2, 2/3, 3/4
    scores = np.array([0.9, 0.8, 0.7])
    for t in (0.5, 0.75):
        theirs = np.asarray(cv2.dnn.NMSBoxes(B.convert(boxes, "xyxy", "xywh").tolist(), scores.tolist(), 0.0, t))
        assert B.nms(boxes, scores, t).tolist() == theirs.reshape(-1).tolist()


@pytest.mark.parametrize("iou_threshold", [0.5, 0.7])
def test_nms_and_iou_match_torchvision(rng, iou_threshold):
    torchvision = pytest.importorskip("torchvision")  # first: importing torch alone takes seconds
    torch = pytest.importorskip("torch")
    boxes, scores = _clustered_boxes(rng, 500, 10)
    np.testing.assert_allclose(
        B.iou(boxes, boxes), torchvision.ops.box_iou(torch.from_numpy(boxes), torch.from_numpy(boxes)).numpy(), rtol=1e-12
    )
    theirs = torchvision.ops.nms(torch.from_numpy(boxes), torch.from_numpy(scores), iou_threshold).numpy()
    np.testing.assert_array_equal(B.nms(boxes, scores, iou_threshold), theirs)
