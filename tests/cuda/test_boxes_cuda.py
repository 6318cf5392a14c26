"""The CUDA box kernels (IoU, encode / decode, bitmask NMS) against their CPU twins in `scratchdet.boxes`."""

import math

import numpy as np
import pytest

from scratchdet import boxes as B
from scratchdet.backend import is_cuda_array


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
