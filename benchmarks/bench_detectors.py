"""Detectors: why Fast R-CNN shares one forward pass, what the detectors reach, and the same network
in PyTorch.

Run: ``python -m pytest benchmarks/bench_detectors.py -s`` (``-s`` shows the tables). Data are the
synthetic shapes of `scratchdet.data.shapes` (rectangles, ellipses and triangles on cluttered
backgrounds), so the suite needs nothing beside the repository. ``SCRATCHDET_BENCH_STEPS`` sets the
training steps of the quality table (default 400).

What it prints:
1. scoring R proposals of one 192 x 192 image (R = 100, 500, 2000): Fast R-CNN (one backbone pass,
   RoI pooling) against R-CNN (the same conv net on every warped region), and the ratio;
2. the R-CNN network (every region through the conv net) forward on 2,000 regions, and one training
   step on 128 regions, against the same network in PyTorch CPU with the same weights and threads;
3. both detectors trained on 64 images for the same steps and tested on 32 others: VOC mAP (IoU 0.5,
   all-point), COCO AP and AP50, seconds per training step and per test image; the single-object
   localiser's accuracy and mean IoU, and the pose regressor's PDJ at 0.2 of the torso (each trained
   5 x the steps on 4,096 images, tested on 256 others).
"""

import os
import time

import scratchdet  # noqa: F401  (first: before NumPy loads OpenBLAS, see scratchdet/__init__.py)

import numba
import numpy as np
import pytest

from scratchdet import nn
from scratchdet.boxes import iou
from scratchdet.data.shapes import shapes_dataset, single_object_dataset, stick_figures
from scratchdet.eval.coco import evaluate_coco
from scratchdet.eval.voc import evaluate_voc
from scratchdet.models import RCNN, FastRCNN, Localizer, PoseRegressor, percent_detected_joints, warp_regions
from scratchdet.proposals import sliding_windows
from scratchdet.train import array_batches, dataset_proposals, fit, roi_batches

from conftest import best_time

THREADS = 2
STEPS = int(os.environ.get("SCRATCHDET_BENCH_STEPS", "400"))


@pytest.fixture(scope="module")
def scene():
    """One 192 x 192 shapes image and 2,000 windows over it (proposals enough for every R)."""
    data = shapes_dataset(1, image_size=(192, 192), objects=(3, 5), seed=7)
    windows = sliding_windows((192, 192), sizes=(24, 32, 48, 64, 96), ratios=(0.5, 1.0, 2.0), stride=0.25)
    rng = np.random.default_rng(0)
    return data.images[0], windows[rng.permutation(len(windows))[:2000]].astype(np.float64)


@pytest.mark.parametrize("n_regions", [100, 500, 2000])
def test_fast_rcnn_against_rcnn(compare_with_peer, scene, n_regions):
    numba.set_num_threads(THREADS)
    image, windows = scene
    fast, slow = FastRCNN(("a", "b", "c")), RCNN(("a", "b", "c"))
    proposals = windows[:n_regions]
    compare_with_peer(
        lambda: fast.score_proposals(image, proposals),
        lambda: slow.score_proposals(image, proposals),
        f"R-CNN on {n_regions} warped regions",
        repeat=3,
    )


def _with_weights(theirs, ours, torch):
    """PyTorch layer `theirs` given the weight and bias of our layer `ours`; returns it."""
    theirs.weight.data = torch.from_numpy(ours.params["weight"].copy())
    theirs.bias.data = torch.from_numpy(ours.params["bias"].copy())
    return theirs


def _torch_rcnn(model, torch):
    """The R-CNN network of `model` in PyTorch, with its weights: (trunk, [cls_score, bbox_pred])."""
    layers = []
    for layer in model.backbone.layers + [model.pool] + model.head.layers:
        name = type(layer).__name__
        if name == "Conv2d":
            conv = torch.nn.Conv2d(layer.in_channels, layer.out_channels, layer.kernel_size, padding=layer.padding)
            layers.append(_with_weights(conv, layer, torch))
        elif name == "Linear":
            layers.append(_with_weights(torch.nn.Linear(layer.in_features, layer.out_features), layer, torch))
        elif name == "ReLU":
            layers.append(torch.nn.ReLU())
        elif name == "MaxPool2d":
            layers.append(torch.nn.MaxPool2d(2))
        elif name == "Flatten":
            layers.append(torch.nn.Flatten())
        elif name == "Dropout":
            layers.append(torch.nn.Dropout(layer.p))
    heads = [_with_weights(torch.nn.Linear(h.in_features, h.out_features), h, torch) for h in (model.cls_score, model.bbox_pred)]
    return torch.nn.Sequential(*layers), heads


def test_rcnn_network_against_pytorch(compare_with_peer, scene):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)
    image, windows = scene
    model = RCNN(("a", "b", "c")).eval()
    trunk, (cls_head, box_head) = _torch_rcnn(model, torch)
    trunk.eval()
    crops = warp_regions(image, windows, model.crop_size, model.context)  # (2000, 3, 32, 32)
    crops_t = torch.from_numpy(crops)

    def theirs():
        with torch.no_grad():
            hidden = trunk(crops_t)
            return cls_head(hidden).numpy(), box_head(hidden).numpy()

    ours = compare_with_peer(lambda: model.forward(crops), theirs, "PyTorch forward, 2000 regions", repeat=3)
    peer = theirs()
    np.testing.assert_allclose(ours[0], peer[0], rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(ours[1], peer[1], rtol=1e-3, atol=1e-4)


def test_rcnn_training_step_against_pytorch(compare_with_peer, scene):
    torch = pytest.importorskip("torch")
    torch.set_num_threads(THREADS)
    numba.set_num_threads(THREADS)
    image, windows = scene
    model = RCNN(("a", "b", "c"), dropout=0.0)
    trunk, (cls_head, box_head) = _torch_rcnn(model, torch)
    crops = warp_regions(image, windows[:128], model.crop_size, model.context)
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 4, 128)
    targets = rng.standard_normal((128, 4)).astype(np.float32)
    ours_opt = nn.SGD(model, lr=1e-3, momentum=0.9)
    params = list(trunk.parameters()) + list(cls_head.parameters()) + list(box_head.parameters())
    their_opt = torch.optim.SGD(params, lr=1e-3, momentum=0.9)
    crops_t, labels_t, targets_t = torch.from_numpy(crops), torch.from_numpy(labels), torch.from_numpy(targets)
    fg = labels_t > 0

    def ours():
        scores, deltas = model.forward(crops)
        loss, (dscores, ddeltas) = nn.multitask_loss(scores, labels, deltas, targets)
        model.backward(dscores, ddeltas)
        ours_opt.step()
        return loss.total

    def theirs():
        their_opt.zero_grad()
        hidden = trunk(crops_t)
        scores, deltas = cls_head(hidden), box_head(hidden).view(128, 4, 4)
        true_box = deltas[torch.arange(128), labels_t]  # (128, 4): the deltas of each region's class
        loc = torch.nn.functional.smooth_l1_loss(true_box[fg], targets_t[fg], reduction="sum") / 128
        total = torch.nn.functional.cross_entropy(scores, labels_t) + loc
        total.backward()
        their_opt.step()
        return float(total.detach())

    # the same step first: from the same parameters the same loss, and after each update again (3 steps)
    for step in range(3):
        assert ours() == pytest.approx(theirs(), rel=1e-4), f"step {step}"
    compare_with_peer(ours, theirs, "PyTorch training step, 128 regions", repeat=5)


def _train_detector(cls, train, proposals, steps, seed):
    model = cls(train.classes, rng=seed)
    batches = roi_batches(train.images, train.boxes, train.labels, proposals, seed=seed)
    optimizer = nn.SGD(model, lr=0.01, momentum=0.9, weight_decay=5e-4)
    start = time.perf_counter()
    history = fit(model, batches, optimizer, steps=steps, progress=False)
    return model, (time.perf_counter() - start) / steps, history


def test_detection_quality():
    numba.set_num_threads(THREADS)
    train, test = shapes_dataset(64, seed=1), shapes_dataset(32, seed=2)
    start = time.perf_counter()
    train_proposals = dataset_proposals(train.images, progress=False)
    test_proposals = dataset_proposals(test.images, progress=False)
    proposal_s = (time.perf_counter() - start) / (len(train) + len(test))
    mean_proposals = np.mean([len(p) for p in test_proposals])
    gt = test.to_coco()
    print(f"\nSelective Search (fast): {proposal_s * 1e3:.0f} ms per 96 x 96 image, {mean_proposals:.0f} proposals per test image")
    print(f"{'detector':10s} {'VOC mAP':>8s} {'COCO AP':>8s} {'AP50':>6s} {'train s/step':>13s} {'test s/image':>13s} {'final loss':>11s}")
    results = {}
    for cls in (FastRCNN, RCNN):
        model, step_s, history = _train_detector(cls, train, train_proposals, STEPS, seed=0)
        detections = []
        start = time.perf_counter()
        for i, (image, proposals) in enumerate(zip(test.images, test_proposals)):
            detections += model.predict(image, proposals).to_coco(i + 1)
        test_s = (time.perf_counter() - start) / len(test)
        voc = evaluate_voc(gt, detections)["mAP"]
        coco = evaluate_coco(gt, detections)
        results[cls.__name__] = voc
        final = np.mean(history.losses["total"][-20:])
        print(f"{cls.__name__:10s} {voc:8.3f} {coco['AP']:8.3f} {coco['AP50']:6.3f} {step_s:13.3f} {test_s:13.3f} {final:11.3f}")
    assert min(results.values()) > 0.5, f"a detector failed to learn the shapes: {results}"


def test_single_object_quality():
    numba.set_num_threads(THREADS)
    steps = 5 * STEPS  # the single-object models see 32 images a step (the detectors 2), 4,096 in all
    images, labels, boxes = single_object_dataset(4096, seed=1)
    test_images, test_labels, test_boxes = single_object_dataset(256, seed=2)
    model = Localizer(("rectangle", "ellipse", "triangle"), rng=0)
    fit(model, array_batches((images, labels, boxes), batch_size=32, seed=0), nn.Adam(model, lr=1e-3), steps=steps, progress=False)
    predicted, _, predicted_boxes = model.predict(test_images)
    accuracy = float(np.mean(predicted == test_labels))
    mean_iou = float(np.mean(np.diag(iou(predicted_boxes, test_boxes.astype(np.float64)))))
    print(f"\nLocalizer, {steps} steps of 32 images: accuracy {accuracy:.3f}, mean IoU {mean_iou:.3f} (256 test images)")

    figures, joints = stick_figures(4096, seed=1)
    test_figures, test_joints = stick_figures(256, seed=2)
    pose = PoseRegressor(rng=0)
    fit(pose, array_batches((figures, joints), batch_size=32, seed=0), nn.Adam(pose, lr=1e-3), steps=steps, progress=False)
    predicted_joints = pose.predict(test_figures)
    mean_pose = np.broadcast_to(joints.mean(axis=0), test_joints.shape)  # the baseline: always the average pose
    for fraction in (0.2, 0.5):
        pdj = percent_detected_joints(predicted_joints, test_joints, fraction=fraction)
        baseline = percent_detected_joints(mean_pose, test_joints, fraction=fraction)
        print(
            f"PoseRegressor, {steps} steps of 32 images: PDJ@{fraction} mean {pdj.mean():.3f} (the average pose: "
            f"{baseline.mean():.3f}), per joint {np.round(pdj, 2).tolist()}"
        )
        assert pdj.mean() > baseline.mean() + 0.1, (fraction, pdj.mean(), baseline.mean())
    assert accuracy > 0.6 and mean_iou > 0.4, (accuracy, mean_iou)
