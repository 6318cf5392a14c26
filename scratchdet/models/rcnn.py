"""R-CNN (Girshick et al. 2014): every region proposal is cut out of the image, warped to a fixed
size and run through the whole conv net on its own; the net scores K + 1 classes and regresses a box
per class. What it computes per region is what Fast R-CNN computes once per image: compare the two.

Departures from the paper, to keep one training recipe for both detectors: the fine-tuned softmax
scores the regions (the paper trains linear SVMs on the features afterwards, and reports the softmax
a few mAP points lower, appendix B) and the box regressor is a sibling output of the net trained
with the multi-task loss (the paper fits ridge regressors on pool5 features, appendix C).
"""

import numpy as np

from scratchdet import boxes as B
from scratchdet.errors import InvalidArgumentError
from scratchdet.models.base import (
    check_image,
    conv_backbone,
    evaluation_mode,
    fork_backward,
    images_to_input,
)
from scratchdet.models.detections import Detector
from scratchdet.models.fast_rcnn import detection_heads
from scratchdet.nn.functional import check_host_rois
from scratchdet.nn.layers import MaxPool2d, as_generator, check_size, register_layer
from scratchdet.train.targets import FAST_RCNN_WEIGHTS


def warp_regions(image, boxes, size, context=2):
    """R-CNN's region warping (Girshick et al. 2014, section 2.1 and appendix A).

    Each box is dilated so that, at the warped size, `context` pixels of the surrounding image show on
    every side, then scaled anisotropically (whatever its aspect ratio) to size x size with bilinear
    interpolation. Samples whose centre falls outside the image take the mean pixel (0 after the
    input scaling), as the paper pads with the image mean.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (R, 4) integer or float xyxy boxes in the image's continuous pixel coordinates: finite,
            x1 <= x2 and y1 <= y2 (InvalidArgumentError otherwise); they may reach beyond the image.
        size: S, the warped side (227 in the paper).
        context: p, pixels of context per side at the warped size (16 of 227 in the paper), 0 <= 2p < S.

    Returns:
        (R, 3, S, S) float32 network input (scaled as `images_to_input`).
    """
    image = check_image(image)
    size, context = check_size("size", size), check_size("context", context, minimum=0)
    if not 2 * context < size:
        raise InvalidArgumentError(f"context must satisfy 0 <= 2 * context < size = {size}, got {context}")
    boxes = B._check_boxes("boxes", boxes).astype(np.float64)  # finite, not inverted: (R, 4)
    return warp_pixels(images_to_input(image)[0], boxes, size, context)


def warp_pixels(pixels, boxes, size, context):
    """`warp_regions` on an image already scaled to the network's input, so that R-CNN's test time
    scales its image once for all its chunks of regions.

    Args:
        pixels: (3, H, W) float32, `images_to_input(image)[0]`.
        boxes: (R, 4) float64 xyxy boxes, finite and not inverted; size, context: as `warp_regions`.

    Returns:
        (R, 3, S, S) float32.
    """
    height, width = pixels.shape[1:]
    # 1. the dilated box: `context` warped pixels of margin, each (box side / (S - 2p)) image pixels wide
    step_x = (boxes[:, 2] - boxes[:, 0]) / (size - 2 * context)  # (R,) image pixels per warped pixel
    step_y = (boxes[:, 3] - boxes[:, 1]) / (size - 2 * context)
    start_x = boxes[:, 0] - context * step_x
    start_y = boxes[:, 1] - context * step_y
    # 2. where each warped pixel's centre falls, in pixel-index coordinates (pixel j's centre is j + 0.5)
    offsets = np.arange(size) + 0.5  # (S,)
    xs = start_x[:, None] + offsets[None, :] * step_x[:, None] - 0.5  # (R, S)
    ys = start_y[:, None] + offsets[None, :] * step_y[:, None] - 0.5  # (R, S)
    # 3. bilinear interpolation between the four nearest pixels (clamped at the border)
    x0 = np.clip(np.floor(xs), 0, width - 1).astype(np.int64)
    y0 = np.clip(np.floor(ys), 0, height - 1).astype(np.int64)
    x1 = np.minimum(x0 + 1, width - 1)
    y1 = np.minimum(y0 + 1, height - 1)
    fx = np.clip(xs - x0, 0.0, 1.0).astype(np.float32)[:, None, None, :]  # (R, 1, 1, S)
    fy = np.clip(ys - y0, 0.0, 1.0).astype(np.float32)[:, None, :, None]  # (R, 1, S, 1)

    def gather(rows, cols):  # (R, 3, S, S): pixels[c, rows[r, i], cols[r, j]]
        return pixels[:, rows[:, :, None], cols[:, None, :]].transpose(1, 0, 2, 3)

    top = gather(y0, x0) * (1 - fx) + gather(y0, x1) * fx
    bottom = gather(y1, x0) * (1 - fx) + gather(y1, x1) * fx
    crops = top * (1 - fy) + bottom * fy
    # 4. samples beyond the image are the mean pixel, which is 0 after the input scaling
    inside_x = (xs >= -0.5) & (xs <= width - 0.5)  # (R, S)
    inside_y = (ys >= -0.5) & (ys <= height - 0.5)
    crops *= (inside_y[:, :, None] & inside_x[:, None, :])[:, None]  # (R, 1, S, S)
    return np.ascontiguousarray(crops, dtype=np.float32)


@register_layer
class RCNN(Detector):
    """R-CNN with the same conv stack and heads as `FastRCNN`, run on each warped region.

    crops (R, 3, S, S) -> backbone -> (R, C, S/s, S/s) -> 2x2 max pooling (the layer Fast R-CNN
    replaces by RoI pooling) -> (R, C, S/2s, S/2s) -> head -> cls_score (R, K + 1), bbox_pred (R, 4 (K + 1))

    Args:
        classes, channels, hidden, dropout, box_weights, lam, beta, rng, dtype: as `FastRCNN`.
        crop_size: S, the warped side; a multiple of twice the backbone's stride.
        context: pixels of image context per side of the warped region (see `warp_regions`).
        batch_regions: regions per forward pass at test time (bounds the memory).
    """

    CHILDREN = ("backbone", "pool", "head", "cls_score", "bbox_pred")

    def __init__(
        self, classes, *, channels=(16, 32, 64), crop_size=32, context=2, hidden=256, dropout=0.5,
        box_weights=FAST_RCNN_WEIGHTS, lam=1.0, beta=1.0, batch_regions=256, rng=0, dtype=np.float32,
    ):
        super().__init__()
        rng = as_generator(rng)
        self.keep_settings(classes, channels, hidden, dropout, box_weights, lam, beta)
        self.crop_size = check_size("crop_size", crop_size)
        self.context = check_size("context", context, minimum=0)
        self.batch_regions = check_size("batch_regions", batch_regions)
        self.backbone, self.stride = conv_backbone(self.channels, rng, dtype)
        if self.crop_size % (2 * self.stride):
            raise InvalidArgumentError(f"crop_size must be a multiple of {2 * self.stride} for channels {self.channels}, got {crop_size}")
        if not 2 * self.context < self.crop_size:
            raise InvalidArgumentError(f"context must satisfy 0 <= 2 * context < crop_size, got {context}")
        self.pool = MaxPool2d(2)
        side = self.crop_size // (2 * self.stride)
        self.head, self.cls_score, self.bbox_pred = detection_heads(
            self.channels[-1] * side**2, self.hidden, len(self.classes) + 1, self.dropout, rng, dtype
        )

    def config(self):
        return {
            "classes": list(self.classes), "channels": list(self.channels), "crop_size": self.crop_size,
            "context": self.context, "hidden": self.hidden, "dropout": self.dropout,
            "box_weights": list(self.box_weights), "lam": self.lam, "beta": self.beta,
            "batch_regions": self.batch_regions,
        }

    # -- forward and backward ------------------------------------------------------------------------
    def forward(self, crops):
        """crops: (R, 3, S, S) warped regions -> (cls_scores (R, K + 1), bbox_deltas (R, 4 (K + 1)))."""
        features = self.pool.forward(self.backbone.forward(crops))  # the whole conv net, once per region
        hidden = self.head.forward(features)
        return self.cls_score.forward(hidden), self.bbox_pred.forward(hidden)

    def backward(self, dscores, ddeltas):
        """Gradients of the two outputs -> the parameters' grads (the crops get none)."""
        dhidden = fork_backward([(self.cls_score, dscores), (self.bbox_pred, ddeltas)])
        dfeatures = self.pool.backward(self.head.backward(dhidden))
        self.backbone.backward(dfeatures, input_grad=False)

    def warp(self, images, rois):
        """The warped regions of a batch: images (N, H, W, 3) uint8, rois (R, 5) (batch_index, x1, y1,
        x2, y2) -> (R, 3, S, S) float32, in RoI order. The batch indices are checked as RoI pooling's
        (integers in [0, N)), the boxes as `warp_regions`'."""
        rois = check_host_rois(rois, len(images), 1.0)  # (R, 5) float64
        crops = np.empty((len(rois), 3, self.crop_size, self.crop_size), dtype=np.float32)
        for n in np.unique(rois[:, 0]).astype(np.int64):
            rows = np.flatnonzero(rois[:, 0] == n)
            crops[rows] = warp_regions(images[n], rois[rows, 1:], self.crop_size, self.context)
        return crops

    def batch_outputs(self, batch):
        """The outputs for a `scratchdet.train.RoIBatch`: its regions warped, then `forward`."""
        return self.forward(self._on_device(self.warp(batch.images, batch.rois).astype(self.dtype, copy=False)))

    # -- inference -----------------------------------------------------------------------------------
    def score_proposals(self, image, proposals):
        """Class probabilities (R, K + 1) float64 and deltas (R, 4 (K + 1)) for `proposals` (R, 4) xyxy
        in `image` (H, W, 3) uint8: `batch_regions` warped regions per forward pass (evaluation mode)."""
        image = check_image(image)
        proposals = B._check_boxes("proposals", proposals).astype(np.float64)  # (R, 4)
        pixels = images_to_input(image)[0]  # (3, H, W), scaled once for every chunk

        def outputs(start, stop):
            crops = warp_pixels(pixels, proposals[start:stop], self.crop_size, self.context)  # (r, 3, S, S)
            return self.forward(self._on_device(crops.astype(self.dtype, copy=False)))

        with evaluation_mode(self):
            return self.score_in_chunks(len(proposals), self.batch_regions, outputs)
