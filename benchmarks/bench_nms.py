"""NMS and IoU: scratchdet against OpenCV (`cv2.dnn.NMSBoxes`), torchvision and torch, same run.

Run: `python -m pytest benchmarks/bench_nms.py -s`. Inputs are 10,000 boxes clustered around objects
of varied sizes (jittered copies, as a detector's raw output looks), in a 1000 x 1000 image.
The scenarios span few kept boxes (50 objects, IoU 0.5) to most boxes kept (5000 objects, IoU 0.7),
where a plain greedy NMS does the most work. Each test checks that the kept boxes agree with the
peer's.
"""

import numpy as np
import pytest

from scratchdet import boxes as B

N_BOXES = 10_000

# (number of objects the boxes cluster around, IoU threshold)
SCENARIOS = {"few_kept": (50, 0.5), "medium": (500, 0.7), "most_kept": (5000, 0.7)}


def clustered_boxes(rng, n, n_objects, image_size=1000.0):
    """(n, 4) float32 xyxy boxes jittered around `n_objects` objects of size 16..400, and (n,) scores."""
    centres = rng.uniform(0, image_size, (n_objects, 2))
    sizes = np.exp(rng.uniform(np.log(16), np.log(400), (n_objects, 1))) * np.exp(rng.normal(0, 0.3, (n_objects, 2)))
    obj = rng.integers(0, n_objects, n)
    c = centres[obj] + rng.normal(0, 0.15, (n, 2)) * sizes[obj]
    s = sizes[obj] * np.exp(rng.normal(0, 0.15, (n, 2)))
    boxes = np.concatenate([c - s / 2, c + s / 2], axis=1).astype(np.float32)
    scores = rng.uniform(0, 1, n).astype(np.float32)
    return boxes, scores


@pytest.fixture(params=list(SCENARIOS))
def scenario(request):
    n_objects, iou_threshold = SCENARIOS[request.param]
    boxes, scores = clustered_boxes(np.random.default_rng(0), N_BOXES, n_objects)
    return boxes, scores, iou_threshold


def test_nms_vs_opencv(scenario, compare_with_peer):
    cv2 = pytest.importorskip("cv2")
    boxes, scores, t = scenario
    xywh = B.convert(boxes, "xyxy", "xywh")
    keep = compare_with_peer(
        lambda: B.nms(boxes, scores, t),
        # OpenCV's own inputs: xywh boxes, a score threshold (keeps scores > 0), its IoU threshold
        lambda: cv2.dnn.NMSBoxes(xywh, scores, 0.0, t),
        "OpenCV cv2.dnn.NMSBoxes",
    )
    theirs = np.asarray(cv2.dnn.NMSBoxes(xywh, scores, 0.0, t)).reshape(-1)
    assert keep.size > 0
    np.testing.assert_array_equal(keep, theirs)


def test_batched_nms_vs_opencv(scenario, compare_with_peer):
    cv2 = pytest.importorskip("cv2")
    boxes, scores, t = scenario
    labels = np.random.default_rng(1).integers(0, 20, boxes.shape[0])
    xywh = B.convert(boxes, "xyxy", "xywh")
    keep = compare_with_peer(
        lambda: B.batched_nms(boxes, scores, labels, t),
        lambda: cv2.dnn.NMSBoxesBatched(xywh, scores, labels, 0.0, t),
        "OpenCV cv2.dnn.NMSBoxesBatched",
    )
    theirs = np.asarray(cv2.dnn.NMSBoxesBatched(xywh, scores, labels, 0.0, t)).reshape(-1)
    # OpenCV returns the survivors in its own order (per class); compare the sets
    np.testing.assert_array_equal(np.sort(keep), np.sort(theirs))


def test_nms_vs_torchvision(scenario, compare_with_peer):
    torchvision = pytest.importorskip("torchvision")
    torch = pytest.importorskip("torch")
    boxes, scores, t = scenario
    tb, ts = torch.from_numpy(boxes), torch.from_numpy(scores)
    keep = compare_with_peer(lambda: B.nms(boxes, scores, t), lambda: torchvision.ops.nms(tb, ts, t), "torchvision.ops.nms")
    np.testing.assert_array_equal(keep, torchvision.ops.nms(tb, ts, t).numpy())


def _torch_box_iou(torch, a, b):
    """torchvision.ops.box_iou's computation, written with torch alone (torchvision may be absent)."""
    area1 = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area2 = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    lt = torch.max(a[:, None, :2], b[:, :2])  # (N, M, 2)
    rb = torch.min(a[:, None, 2:], b[:, 2:])  # (N, M, 2)
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_iou_2000_by_2000_vs_torch(compare_with_peer, dtype):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    a, _ = clustered_boxes(rng, 2000, 100)
    b, _ = clustered_boxes(rng, 2000, 100)
    a, b = a.astype(dtype), b.astype(dtype)
    ta, tb = torch.from_numpy(a), torch.from_numpy(b)
    ours = compare_with_peer(lambda: B.iou(a, b), lambda: _torch_box_iou(torch, ta, tb), "torch (torchvision box_iou formula)")
    np.testing.assert_allclose(ours, _torch_box_iou(torch, ta, tb).numpy(), rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-6)


def test_iou_2000_by_2000_vs_numpy_broadcasting(compare_with_peer):
    rng = np.random.default_rng(0)
    a, _ = clustered_boxes(rng, 2000, 100)
    b, _ = clustered_boxes(rng, 2000, 100)
    a, b = a.astype(np.float64), b.astype(np.float64)

    def numpy_iou():
        lt = np.maximum(a[:, None, :2], b[None, :, :2])
        rb = np.minimum(a[:, None, 2:], b[None, :, 2:])
        wh = np.clip(rb - lt, 0, None)
        inter = wh[..., 0] * wh[..., 1]
        union = ((a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]))[:, None] + (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]) - inter
        return inter / union

    ours = compare_with_peer(lambda: B.iou(a, b), numpy_iou, "NumPy broadcasting")
    np.testing.assert_allclose(ours, numpy_iou(), rtol=1e-12)
