"""Fast R-CNN (Girshick 2015): one forward pass of the conv backbone per image, shared by all its
region proposals through RoI max pooling, then fully connected layers and two sibling outputs, a
softmax over K + 1 classes and class-specific box deltas, trained with the multi-task loss (eq. 1).
"""

import numpy as np

from scratchdet.backend import to_host
from scratchdet.models.base import (
    check_channels,
    check_classes,
    check_fraction,
    check_positive,
    conv_backbone,
    evaluation_mode,
    fork_backward,
    images_to_input,
    small_normal_linear,
    softmax,
)
from scratchdet.models.detections import Detector
from scratchdet.nn.layers import Dropout, Flatten, Linear, ReLU, RoIPool, Sequential, as_generator, register_layer
from scratchdet.train.targets import FAST_RCNN_WEIGHTS

def detection_heads(in_features, hidden, n_classes1, dropout, rng, dtype):
    """The layers after the pooled features: fc - ReLU - dropout - fc - ReLU - dropout (`head`), then
    the sibling outputs `cls_score` (K + 1 scores) and `bbox_pred` (4 (K + 1) deltas)."""
    head = Sequential(
        Flatten(),
        Linear(in_features, hidden, rng=rng, dtype=dtype), ReLU(), Dropout(dropout, rng=rng.integers(2**31)),
        Linear(hidden, hidden, rng=rng, dtype=dtype), ReLU(), Dropout(dropout, rng=rng.integers(2**31)),
    )
    cls_score = small_normal_linear(hidden, n_classes1, 0.01, rng, dtype)
    bbox_pred = small_normal_linear(hidden, 4 * n_classes1, 0.001, rng, dtype)
    return head, cls_score, bbox_pred


@register_layer
class FastRCNN(Detector):
    """Fast R-CNN on a small VGG-style backbone.

    images (N, 3, H, W) -> backbone -> features (N, C, H/s, W/s)
    RoIs (R, 5) (batch_index, x1, y1, x2, y2) in image pixels -> RoI pooling -> (R, C, P, P)
    -> head (fc, fc) -> cls_score (R, K + 1) and bbox_pred (R, 4 (K + 1))

    Args:
        classes: the K object class names; label u in 1..K is classes[u - 1], 0 the background.
        channels: the backbone's widths (a 2x2 max pooling between each two); stride 2 ** (len - 1).
        roi_size: P, the RoI pooling grid (VGG16's is 7).
        hidden: width of the two fully connected layers (VGG16's are 4096).
        dropout: dropout probability after each of them.
        box_weights: the (wx, wy, ww, wh) the box targets were encoded with (`scratchdet.boxes.encode`).
        lam: the multi-task loss's weight of the box term; beta: smooth L1's kink (both 1 in the paper).
        rng: seed or Generator for the initial weights; dtype: float32 or float64.
    """

    CHILDREN = ("backbone", "roi_pool", "head", "cls_score", "bbox_pred")

    def __init__(
        self, classes, *, channels=(16, 32, 64), roi_size=4, hidden=256, dropout=0.5,
        box_weights=FAST_RCNN_WEIGHTS, lam=1.0, beta=1.0, rng=0, dtype=np.float32,
    ):
        super().__init__()
        rng = as_generator(rng)
        self.classes = check_classes(classes)
        self.channels = check_channels(channels)
        self.roi_size = check_positive("roi_size", roi_size)
        self.hidden = check_positive("hidden", hidden)
        self.dropout = check_fraction("dropout", dropout)
        self.box_weights = tuple(float(w) for w in box_weights)
        self.lam, self.beta = float(lam), float(beta)
        self.backbone, self.stride = conv_backbone(self.channels, rng, dtype)
        # the backbone's last max pooling is replaced by RoI pooling (section 2.3)
        self.roi_pool = RoIPool(self.roi_size, 1.0 / self.stride)
        self.head, self.cls_score, self.bbox_pred = detection_heads(
            self.channels[-1] * self.roi_size**2, self.hidden, len(self.classes) + 1, self.dropout, rng, dtype
        )

    def config(self):
        return {
            "classes": list(self.classes), "channels": list(self.channels), "roi_size": self.roi_size,
            "hidden": self.hidden, "dropout": self.dropout, "box_weights": list(self.box_weights),
            "lam": self.lam, "beta": self.beta,
        }

    # -- forward and backward ------------------------------------------------------------------------
    def forward(self, x, rois):
        """x: (N, 3, H, W) network input; rois: (R, 5) (batch_index, x1, y1, x2, y2) in x's pixels.
        Returns (cls_scores (R, K + 1), bbox_deltas (R, 4 (K + 1))), x's dtype and device."""
        features = self.backbone.forward(x)  # (N, C, H/s, W/s): once per image, whatever R is
        pooled = self.roi_pool.forward(features, rois)  # (R, C, P, P)
        hidden = self.head.forward(pooled)  # (R, hidden)
        return self.cls_score.forward(hidden), self.bbox_pred.forward(hidden)

    def backward(self, dscores, ddeltas):
        """Gradients of the two outputs -> the parameters' grads (the images get none)."""
        dhidden = fork_backward([(self.cls_score, dscores), (self.bbox_pred, ddeltas)])
        dpooled = self.head.backward(dhidden)
        dfeatures = self.roi_pool.backward(dpooled)  # each bin's gradient goes to its argmax cell (eq. 4)
        self.backbone.backward(dfeatures, input_grad=False)

    def batch_outputs(self, batch):
        """The outputs for a `scratchdet.train.RoIBatch`: its images' backbone pass and its RoIs."""
        return self.forward(self._on_device(images_to_input(batch.images, self.dtype)), batch.rois)

    # -- inference -----------------------------------------------------------------------------------
    def score_proposals(self, image, proposals):
        """Class probabilities (R, K + 1) float64 and deltas (R, 4 (K + 1)) for `proposals` (R, 4) xyxy
        in `image` (H, W, 3) uint8, from one backbone pass (evaluation mode)."""
        proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
        rois = np.concatenate([np.zeros((len(proposals), 1)), proposals], axis=1)  # all from image 0
        with evaluation_mode(self):
            x = self._on_device(images_to_input(image, self.dtype))
            scores, deltas = self.forward(x, rois)
        return softmax(scores), np.asarray(to_host(deltas), dtype=np.float64)
