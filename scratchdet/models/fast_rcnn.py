"""Fast R-CNN (Girshick 2015): one forward pass of the conv backbone per image, shared by all its
region proposals through RoI max pooling, then fully connected layers and two sibling outputs, a
softmax over K + 1 classes and class-specific box deltas, trained with the multi-task loss (eq. 1).
"""

import numpy as np

from scratchdet.models.base import (
    check_image,
    conv_backbone,
    evaluation_mode,
    fork_backward,
    images_to_input,
    small_normal_linear,
)
from scratchdet.models.detections import Detector
from scratchdet.nn.layers import Dropout, Flatten, Linear, ReLU, RoIPool, Sequential, as_generator, check_size, register_layer
from scratchdet.train.targets import FAST_RCNN_WEIGHTS


def network_input(images, stride, dtype=np.float32):
    """Images to Fast R-CNN's input: (H, W, 3) or (N, H, W, 3) uint8 -> (N, 3, H', W') `dtype`,
    scaled as `images_to_input`, with H' = s * ceil(H / s) and W' = s * ceil(W / s) for the backbone's
    stride s: rows and columns of the mean pixel (0 after the scaling) are added at the bottom and right.

    The backbone's 2x2 poolings drop an odd last row or column, so without the padding the last
    H mod s rows and W mod s columns would have no feature cell of their own (an RoI there pools
    nothing), and an image smaller than s would leave no feature map at all. The image stays at the
    top left, so RoIs keep their pixel coordinates.
    """
    x = images_to_input(images, dtype)  # (N, 3, H, W)
    height, width = x.shape[2:]
    pad_h, pad_w = -height % stride, -width % stride
    if pad_h or pad_w:
        x = np.pad(x, ((0, 0), (0, 0), (0, pad_h), (0, pad_w)))  # (N, 3, H', W')
    return x


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
        batch_rois: RoIs pooled and run through the head per pass at test time (bounds the memory of
            20,000 proposals; the backbone still runs once).
        rng: seed or Generator for the initial weights; dtype: float32 or float64.

    Images of any size >= 1 x 1 are taken: their sides are padded up to multiples of the stride
    (`network_input`).
    """

    CHILDREN = ("backbone", "roi_pool", "head", "cls_score", "bbox_pred")

    def __init__(
        self, classes, *, channels=(16, 32, 64), roi_size=4, hidden=256, dropout=0.5,
        box_weights=FAST_RCNN_WEIGHTS, lam=1.0, beta=1.0, batch_rois=2048, rng=0, dtype=np.float32,
    ):
        super().__init__()
        rng = as_generator(rng)
        self.keep_settings(classes, channels, hidden, dropout, box_weights, lam, beta)
        self.roi_size = check_size("roi_size", roi_size)
        self.batch_rois = check_size("batch_rois", batch_rois)
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
            "lam": self.lam, "beta": self.beta, "batch_rois": self.batch_rois,
        }

    # -- forward and backward ------------------------------------------------------------------------
    def forward(self, x, rois):
        """x: (N, 3, H, W) network input; rois: (R, 5) (batch_index, x1, y1, x2, y2) in x's pixels.
        Returns (cls_scores (R, K + 1), bbox_deltas (R, 4 (K + 1))), x's dtype and device."""
        features = self.backbone.forward(x)  # (N, C, H/s, W/s): once per image, whatever R is
        return self.roi_forward(features, rois)

    def roi_forward(self, features, rois):
        """features: (N, C, H/s, W/s) the backbone's output; rois: (R, 5) as `forward`'s.
        Returns (cls_scores (R, K + 1), bbox_deltas (R, 4 (K + 1)))."""
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
        return self.forward(self._on_device(network_input(batch.images, self.stride, self.dtype)), batch.rois)

    # -- inference -----------------------------------------------------------------------------------
    def score_proposals(self, image, proposals):
        """Class probabilities (R, K + 1) float64 and deltas (R, 4 (K + 1)) float64 for `proposals`
        (R, 4) xyxy in `image` (H, W, 3) uint8: one backbone pass, then `batch_rois` RoIs per pass
        through RoI pooling and the head (evaluation mode)."""
        image = check_image(image)
        proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
        rois = np.concatenate([np.zeros((len(proposals), 1)), proposals], axis=1)  # (R, 5), all from image 0
        with evaluation_mode(self):
            features = self.backbone.forward(self._on_device(network_input(image, self.stride, self.dtype)))
            return self.score_in_chunks(len(rois), self.batch_rois, lambda a, b: self.roi_forward(features, rois[a:b]))
