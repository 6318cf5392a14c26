"""The CUDA box kernels (IoU, encode / decode, bitmask NMS) against their CPU twins in `scratchdet.boxes`."""

import math

import numpy as np
import pytest

from scratchdet import boxes as B
from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError


def random_boxes(rng, n, dtype=np.float64):
    corner = rng.uniform(0, 60, (n, 2))
    size = rng.uniform(1, 30, (n, 2))
    return np.hstack([corner, corner + size]).astype(dtype)


@pytest.mark.parametrize(("dtype1", "dtype2"), [(np.float32, np.float32), (np.float32, np.float64), (np.float64, np.float64)])
def test_iou_matches_cpu_and_its_dtype(rng, gpu, close, dtype1, dtype2):
    """The same float64 formula on both backends; the GPU compiler fuses multiply-adds (one rounding
    instead of two), so float64 results may differ in the last bit."""
    a = random_boxes(rng, 7, dtype1)
    b = random_boxes(rng, 19, dtype2)
    b[0] = a[0]  # a pair with IoU exactly 1
    close(B.iou(gpu(a), gpu(b)), B.iou(a, b), rtol=1e-14, atol=1e-15)


def test_iou_of_no_boxes_has_the_right_shape(rng, gpu, host):
    assert host(B.iou(gpu(np.zeros((0, 4))), gpu(random_boxes(rng, 3)))).shape == (0, 3)


@pytest.mark.parametrize("weights", [(1.0, 1.0, 1.0, 1.0), (10.0, 10.0, 5.0, 5.0)])
def test_encode_and_decode_match_cpu(rng, gpu, close, weights):
    proposals = random_boxes(rng, 9, np.float32)
    gt = random_boxes(rng, 9, np.float32)
    deltas = B.encode(proposals, gt, weights)
    close(B.encode(gpu(proposals), gpu(gt), weights), deltas, rtol=1e-6, atol=1e-7, what="encode")
    wild = rng.standard_normal((9, 4)) * 3
    wild[0, 2] = 50.0  # exp clamp
    # float64 output: fused multiply-adds on the GPU may change the last bit
    close(B.decode(gpu(proposals), gpu(wild), weights), B.decode(proposals, wild, weights), rtol=1e-14, atol=1e-13, what="decode")


def test_decode_takes_integer_deltas_and_a_numpy_clamp_as_the_cpu_does_and_rejects_booleans(rng, gpu, close):
    proposals = random_boxes(rng, 3)
    deltas = rng.integers(-2, 3, (3, 4))
    expected = B.decode(proposals, deltas, clamp=np.float32(1.5))
    close(B.decode(gpu(proposals), gpu(deltas), clamp=np.float32(1.5)), expected, rtol=1e-14, atol=1e-13)
    with pytest.raises(InvalidArgumentError, match="integers or floats"):
        B.decode(gpu(proposals), gpu(deltas > 0))


@pytest.mark.parametrize(("n", "threshold"), [(0, 0.5), (1, 0.5), (63, 0.3), (64, 0.7), (65, 0.0), (70, 1.0), (150, 0.5)])
def test_nms_keeps_the_boxes_the_cpu_keeps(rng, gpu, host, n, threshold):
    """Sizes around the 64-box word boundary; a third of the scores tie (visited in index order)."""
    boxes = random_boxes(rng, n)
    scores = rng.random(n)
    scores[::3] = scores[0] if n else 0
    keep = B.nms(gpu(boxes), gpu(scores), threshold)
    assert is_cuda_array(keep)
    expected = B.nms(boxes, scores, threshold)
    np.testing.assert_array_equal(host(keep), expected)
    assert host(keep).dtype == np.int64


def test_nms_keeps_box_exactly_at_threshold(gpu, host):
    # IoU([0,0,2,1], [0,0,1,1]) = 1 / 2 exactly: kept at threshold 0.5, suppressed just below it
    boxes = np.array([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    scores = np.array([0.9, 0.8])
    assert host(B.iou(gpu(boxes[:1]), gpu(boxes[1:])))[0, 0] == 0.5
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), gpu(scores), 0.5)), [0, 1])
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), gpu(scores), math.nextafter(0.5, 0.0))), [0])


# ---------------------------------------------------------------------------------------------------
# NMS kernels one by one: the rank sort (with the gather) and the greedy scan over a given mask
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(("n", "threads"), [(1, 32), (33, 32), (100, 96), (100, 256)])
def test_rank_sort_is_a_stable_descending_argsort(rng, gpu, host, n, dtype, threads):
    """Ties (a third of the scores, and -0.0 == 0.0) come in index order, with the scores split
    between 1, 3 or 8 warps (a tie across two warps' slices included); the boxes are gathered in the
    same order, as float64."""
    from scratchdet.kernels.cuda import boxes as K
    from scratchdet.kernels.cuda.common import blocks_for

    scores = rng.random(n).astype(dtype)
    scores[::3] = scores[0]
    scores[1::7] = 0.0
    scores[2::7] = -0.0
    boxes = random_boxes(rng, n, dtype)
    order = gpu(np.full(n, -1, np.int64))
    sorted_boxes = gpu(np.zeros((n, 4)))
    K.rank_sort_kernel[blocks_for(n, K.SORT_BOXES), threads](gpu(scores), gpu(boxes), order, sorted_boxes)
    expected = np.argsort(-scores.astype(np.float64), kind="stable")
    np.testing.assert_array_equal(host(order), expected, err_msg=f"GPU order (actual) vs stable argsort, {threads} threads")
    np.testing.assert_array_equal(host(sorted_boxes), boxes[expected].astype(np.float64))


def greedy_over_mask(mask, n):
    """The kept ranks of greedy NMS given the suppression bits: bit b of mask[i, w] = i suppresses 64 w + b."""
    bits = np.unpackbits(mask.view(np.uint8), axis=1, bitorder="little")[:, :n].astype(bool)  # (n, n)
    removed = np.zeros(n, dtype=bool)
    kept = []
    for i in range(n):
        if not removed[i]:
            kept.append(i)
            removed |= bits[i]
    return np.array(kept, dtype=np.int64)


def upper_mask(bits):
    """(n, n) bool -> the (n, ceil(n / 64)) uint64 words of its strict upper triangle."""
    n = bits.shape[0]
    upper = np.triu(bits, k=1)
    padded = np.zeros((n, 64 * math.ceil(n / 64)), dtype=bool)
    padded[:, :n] = upper
    return np.packbits(padded, axis=1, bitorder="little").view(np.uint64)


def run_scan(gpu, host, mask, order, threads):
    from scratchdet.kernels.cuda import boxes as K

    n, words = mask.shape
    keep = gpu(np.full(n, -1, np.int64))
    n_keep = gpu(np.zeros(1, np.int64))
    K.nms_scan_kernel[1, threads](gpu(mask), gpu(order), gpu(np.full(words, 0xFFFF, np.uint64)), keep, n_keep)
    return host(keep)[: host(n_keep)[0]]


@pytest.mark.parametrize(("n", "density"), [(200, 0.002), (200, 0.05), (200, 0.5), (129, 1.0), (2150, 0.0005)])
def test_nms_scan_keeps_what_greedy_keeps(rng, gpu, host, n, density):
    """Random suppression masks from almost nothing suppressed (most kept, several per word) to
    everything (one kept). n = 2150 has 34 words, more than the 32 OR threads of the smallest block,
    so each OR thread also takes a second word."""
    from scratchdet.kernels.cuda import boxes as K

    mask = upper_mask(rng.random((n, n)) < density)
    order = rng.permutation(n).astype(np.int64)
    expected = order[greedy_over_mask(mask, n)]
    words = mask.shape[1]
    for threads in sorted({K.SCAN_HELPERS + 32, min(K.scan_threads(words), 256)}):
        np.testing.assert_array_equal(run_scan(gpu, host, mask, order, threads), expected, err_msg=f"{threads} threads")


def test_nms_scan_with_later_words_fully_suppressed(rng, gpu, host):
    """Word 0 keeps all its 64 boxes, which suppress every box of words 1 and 2 (nothing kept there:
    the OR threads then work for nothing kept); word 3 is suppressed only by word 1's (removed)
    boxes, so it is kept whole."""
    n = 4 * 64
    bits = np.zeros((n, n), dtype=bool)
    bits[:64, 64:192] = True
    bits[64:128, 192:] = True
    mask = upper_mask(bits)
    order = np.arange(n, dtype=np.int64)[::-1].copy()
    expected = order[np.r_[0:64, 192:256]]
    np.testing.assert_array_equal(greedy_over_mask(mask, n), np.r_[0:64, 192:256])
    np.testing.assert_array_equal(run_scan(gpu, host, mask, order, 128), expected)


# ---------------------------------------------------------------------------------------------------
# NMS end to end: more cases than above
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("threshold", [0.0, 1.0])
@pytest.mark.parametrize("n", [64, 65, 129])
def test_nms_keeps_all_or_few_at_the_extreme_thresholds(rng, gpu, host, n, threshold):
    """Threshold 1 keeps every box (every word full of kept boxes), threshold 0 only boxes that
    touch no kept box."""
    boxes = random_boxes(rng, n)
    scores = rng.random(n)
    keep = host(B.nms(gpu(boxes), gpu(scores), threshold))
    np.testing.assert_array_equal(keep, B.nms(boxes, scores, threshold))
    if threshold == 1.0:
        assert len(keep) == n


def test_nms_with_all_scores_equal_visits_boxes_in_index_order(rng, gpu, host):
    boxes = random_boxes(rng, 130)
    scores = np.full(130, 0.25)
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), gpu(scores), 0.4)), B.nms(boxes, scores, 0.4))


@pytest.mark.parametrize("threshold", [0.3, 0.7])
def test_nms_float32_boxes_and_scores_match_cpu(rng, gpu, host, threshold):
    """Clusters of jittered boxes, float32 in: the three words keep 20, 4 and 0 boxes at 0.3 (a
    word with none kept), 55, 45 and 2 at 0.7."""
    centres = rng.uniform(20, 80, (6, 2))
    centre = centres[rng.integers(0, 6, 130)] + rng.normal(0, 3, (130, 2))
    size = rng.uniform(8, 14, (130, 2))
    boxes = np.hstack([centre - size / 2, centre + size / 2]).astype(np.float32)
    scores = rng.random(130).astype(np.float32)
    scores[::5] = scores[0]
    expected = B.nms(boxes, scores, threshold)
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), gpu(scores), threshold)), expected)


def test_nms_takes_host_scores_of_any_dtype_but_not_integer_device_scores(rng, gpu, host):
    from scratchdet.errors import InvalidArgumentError

    boxes = random_boxes(rng, 70)
    scores = rng.integers(0, 5, 70)
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), scores, 0.5)), B.nms(boxes, scores, 0.5))
    with pytest.raises(InvalidArgumentError, match="scores must be a float device array"):
        B.nms(gpu(boxes), gpu(scores), 0.5)


def test_nms_never_suppresses_boxes_that_only_touch(gpu, host):
    """The mask kernel skips pairs without overlap (IoU 0); boxes sharing an edge or a corner, or
    identical degenerate boxes, stay even at threshold 0, as on the CPU, while a real overlap is removed."""
    boxes = np.array([
        [0.0, 0.0, 2.0, 2.0],
        [2.0, 0.0, 4.0, 2.0],  # shares an edge with box 0
        [2.0, 2.0, 3.0, 3.0],  # shares a corner with box 0
        [5.0, 5.0, 5.0, 6.0],  # no width
        [5.0, 5.0, 5.0, 6.0],
        [1.0, 1.0, 3.0, 3.0],  # overlaps boxes 0, 1 and 2
    ])
    scores = np.linspace(1.0, 0.5, len(boxes))
    expected = B.nms(boxes, scores, 0.0)
    np.testing.assert_array_equal(expected, [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(host(B.nms(gpu(boxes), gpu(scores), 0.0)), expected)


# (boxes, labels drawn from, IoU threshold): one label, a few, nearly one box per label; sizes around
# the 64-box words; negative and extreme labels
BATCHED_CASES = [
    (70, [0], 0.5),
    (150, [3, 1, 2], 0.3),
    (65, [-5, 7, 2**62, -(2**63)], 0.5),
    (40, list(range(30)), 0.0),
    (1, [4], 0.5),
]


@pytest.mark.parametrize(("n", "label_values", "threshold"), BATCHED_CASES)
def test_batched_nms_keeps_the_boxes_the_cpu_keeps_in_its_order(rng, gpu, host, n, label_values, threshold):
    """Clustered boxes so that classes overlap; a third of the scores tie across classes (index order)."""
    boxes = random_boxes(rng, n)
    boxes[n // 2 :] = boxes[: n - n // 2] + rng.uniform(-2, 2, (n - n // 2, 4))  # near-copies, other labels
    boxes[:, 2:] = np.maximum(boxes[:, 2:], boxes[:, :2])
    scores = rng.random(n)
    scores[::3] = scores[0]
    labels = rng.choice(np.array(label_values, np.int64), n)
    expected = B.batched_nms(boxes, scores, labels, threshold)
    keep = B.batched_nms(gpu(boxes), gpu(scores), gpu(labels), threshold)
    assert is_cuda_array(keep) and host(keep).dtype == np.int64
    np.testing.assert_array_equal(host(keep), expected)
    # host scores and labels are copied over; int32 labels order as int64 ones do
    fits = all(-(2**31) <= v < 2**31 for v in label_values)
    host_labels = labels.astype(np.int32) if fits else labels
    np.testing.assert_array_equal(host(B.batched_nms(gpu(boxes), scores, host_labels, threshold)), expected)


def test_batched_nms_never_suppresses_across_labels_and_checks_its_inputs(gpu, host):
    boxes = np.array([[0, 0, 10, 10], [0, 0, 10, 10], [0, 0, 10, 10.5]], np.float64)
    scores, labels = np.array([0.9, 0.8, 0.7]), np.array([1, 2, 1])
    np.testing.assert_array_equal(host(B.batched_nms(gpu(boxes), gpu(scores), gpu(labels), 0.5)), [0, 1])
    np.testing.assert_array_equal(host(B.batched_nms(gpu(boxes), gpu(scores), gpu(np.zeros(3, np.int64)), 0.5)), [0])
    assert host(B.batched_nms(gpu(np.zeros((0, 4))), gpu(np.zeros(0)), gpu(np.zeros(0, np.int64)), 0.5)).shape == (0,)
    with pytest.raises(InvalidArgumentError, match="labels must be an integer"):
        B.batched_nms(gpu(boxes), gpu(scores), gpu(np.array([1.0, 2.0, 1.0])), 0.5)
    with pytest.raises(InvalidArgumentError, match=r"labels must have shape \(3,\)"):
        B.batched_nms(gpu(boxes), gpu(scores), gpu(np.zeros(2, np.int64)), 0.5)
    with pytest.raises(InvalidArgumentError, match="iou_threshold"):
        B.batched_nms(gpu(boxes), gpu(scores), labels, 1.5)


def test_nms_checks_host_scores_as_the_cpu_and_orders_huge_integers_exactly(gpu, host):
    """A NaN score once left a slot of the device's order unwritten (an index past the boxes came
    back), and distinct integers beyond 2**53 tied as float64."""
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], np.float64)
    for call in (lambda s: B.nms(gpu(boxes), s, 0.5), lambda s: B.batched_nms(gpu(boxes), s, gpu(np.zeros(3, np.int64)), 0.5)):
        with pytest.raises(InvalidArgumentError, match=r"scores\[1\] = nan is not finite"):
            call(np.array([0.9, np.nan, 0.5]))
        big = np.array([2**62, 2**62 + 1, 5])
        np.testing.assert_array_equal(host(call(big)), B.nms(boxes, big, 0.5))  # [1, 2]: box 1 outscores box 0
