"""The detectors train on the GPU by changing one argument: `model.to("cuda")`. A training step of
Fast R-CNN, R-CNN and the single-object models on the device gives the CPU's losses and updates, and
predictions match."""

import numpy as np
import pytest

from scratchdet import backend, nn
from scratchdet.data.shapes import shapes_dataset, single_object_dataset
from scratchdet.models import RCNN, FastRCNN, Localizer
from scratchdet.train import roi_batches


def tiny(cls, seed, **kwargs):
    return cls(("a", "b"), channels=(2, 3), hidden=6, dropout=0.25, rng=seed, **kwargs)


def detection_batch(step=0):
    data = shapes_dataset(2, image_size=(16, 16), objects=(1, 1), size=(6, 10), classes=("rectangle", "ellipse"), seed=3)
    images = [image[::2, ::2].copy() for image in data.images]  # 8 x 8: the simulator runs every thread in Python
    gt_boxes = [boxes / 2 for boxes in data.boxes]
    rng = np.random.default_rng(4)
    proposals = [np.sort(rng.uniform(0, 8, (6, 4)).reshape(6, 2, 2), axis=1).transpose(0, 2, 1).reshape(6, 4) for _ in range(2)]
    proposals = [p[(p[:, 2] - p[:, 0] > 0.5) & (p[:, 3] - p[:, 1] > 0.5)] for p in proposals]
    batches = roi_batches(
        images, gt_boxes, data.labels, proposals, rois_per_image=4, fg_fraction=0.5, bg_iou=(0.0, 0.5), seed=5
    )
    return batches(step)


def assert_same_step(cpu_model, gpu_model, batch, cpu_opt, gpu_opt):
    loss_cpu = cpu_model.training_step(batch)
    loss_gpu = gpu_model.training_step(batch)
    cpu_opt.step()
    gpu_opt.step()
    for name in loss_cpu:
        assert loss_gpu[name] == pytest.approx(loss_cpu[name], rel=1e-4, abs=1e-6), name
    for (name, cpu_layer, key), (_, gpu_layer, _) in zip(cpu_model.named_parameters(), gpu_model.named_parameters()):
        assert backend.is_cuda_array(gpu_layer.params[key]), f"{name} left the GPU"
        np.testing.assert_allclose(
            backend.to_host(gpu_layer.params[key]), cpu_layer.params[key], rtol=1e-4, atol=1e-6, err_msg=name
        )


@pytest.mark.parametrize("cls", [FastRCNN, RCNN], ids=["fast_rcnn", "rcnn"])
def test_detector_training_step_on_gpu_matches_cpu(cls):
    kwargs = {"roi_size": 2} if cls is FastRCNN else {"crop_size": 4, "context": 1}
    cpu_model, gpu_model = tiny(cls, 0, **kwargs), tiny(cls, 0, **kwargs).to("cuda")
    cpu_opt, gpu_opt = nn.SGD(cpu_model, lr=0.1, momentum=0.9), nn.SGD(gpu_model, lr=0.1, momentum=0.9)
    batch = detection_batch()
    assert (batch.labels > 0).any() and (batch.labels == 0).any(), "the batch must hold foreground and background"
    assert_same_step(cpu_model, gpu_model, batch, cpu_opt, gpu_opt)

    # and the trained models detect the same boxes
    image, proposals = batch.images[0], batch.rois[batch.rois[:, 0] == 0, 1:]
    cpu_dets = cpu_model.predict(image, proposals, score_threshold=0.0)
    gpu_dets = gpu_model.predict(image, proposals, score_threshold=0.0)
    np.testing.assert_array_equal(gpu_dets.labels, cpu_dets.labels)
    np.testing.assert_allclose(gpu_dets.scores, cpu_dets.scores, rtol=1e-4)
    np.testing.assert_allclose(gpu_dets.boxes, cpu_dets.boxes, rtol=1e-4, atol=1e-4)


def test_localizer_training_step_on_gpu_matches_cpu():
    images, labels, boxes = single_object_dataset(2, image_size=(16, 16), size=(4, 8), seed=1)
    images, boxes = images[:, ::2, ::2].copy(), boxes / 2  # 8 x 8: the simulator runs every thread in Python
    kwargs = {"image_size": (8, 8), "lam": 2.0}
    cpu_model, gpu_model = tiny(Localizer, 0, **kwargs), tiny(Localizer, 0, **kwargs).to("cuda")
    cpu_opt, gpu_opt = nn.Adam(cpu_model, lr=0.01), nn.Adam(gpu_model, lr=0.01)
    assert_same_step(cpu_model, gpu_model, (images, labels % 2, boxes), cpu_opt, gpu_opt)
