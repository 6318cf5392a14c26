"""One object per image: classification + localisation, and pose as 14 regressed joints.

`Localizer` is a conv net with two outputs, class scores and one box, trained with the weighted
multi-task loss L = cross-entropy + lam x L2 on the box (the OverFeat-style regression network,
Sermanet et al. 2014, trained jointly). `PoseRegressor` applies the same idea to pose (DeepPose,
Toshev and Szegedy 2014): 14 joints (x, y) regressed directly, an L2 loss on each.
Coordinates are regressed as fractions of the image side, so targets lie in [0, 1].
"""

import math
import numbers

import numpy as np

from scratchdet.backend import to_host
from scratchdet.boxes import clip
from scratchdet.errors import InvalidArgumentError
from scratchdet.models.base import (
    Model,
    check_channels,
    check_classes,
    conv_backbone,
    evaluation_mode,
    fork_backward,
    images_to_input,
    softmax,
)
from scratchdet.nn import functional as F
from scratchdet.nn.layers import Dropout, Flatten, Linear, MaxPool2d, ReLU, Sequential, as_generator, check_size, register_layer
from scratchdet.nn.losses import _check_non_negative, box_regression_loss, regression_loss, softmax_cross_entropy


def check_image_size(image_size, stride):
    """(H, W) positive ints that the backbone's stride (and one more 2x2 pooling) divides."""
    try:
        height, width = image_size
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"image_size must be (height, width), got {image_size!r}") from None
    if any(isinstance(v, (bool, np.bool_)) or not isinstance(v, numbers.Integral) for v in (height, width)):
        raise InvalidArgumentError(f"image_size must be two ints (height, width), got {image_size!r}")  # 32.5 is not 32
    height, width = int(height), int(width)
    if height < 1 or width < 1 or height % (2 * stride) or width % (2 * stride):
        raise InvalidArgumentError(f"image_size must be positive multiples of {2 * stride}, got {image_size!r}")
    return height, width


def features_head(channels, image_size, hidden, dropout, rng, dtype):
    """The conv backbone and the layers between it and the outputs (`head`: a 2x2 max pooling,
    flatten, fc - ReLU - dropout): images (N, 3, H, W) -> backbone -> head -> (N, hidden).

    Returns (backbone, head, (H, W) checked)."""
    backbone, stride = conv_backbone(channels, rng, dtype)
    height, width = check_image_size(image_size, stride)
    cells = (height // (2 * stride)) * (width // (2 * stride))
    head = Sequential(
        MaxPool2d(2), Flatten(),
        Linear(channels[-1] * cells, hidden, rng=rng, dtype=dtype), ReLU(), Dropout(dropout, rng=rng.integers(2**31)),
    )
    return backbone, head, (height, width)


def _check_batch_images(images, image_size, training=False):
    """images (N, H, W, 3) or one (H, W, 3) uint8 -> (N, H, W, 3); a training batch needs N >= 1."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != (*image_size, 3) or images.dtype != np.uint8:
        raise InvalidArgumentError(
            f"images must be (N, {image_size[0]}, {image_size[1]}, 3) uint8 RGB, got shape {images.shape} dtype {images.dtype}"
        )
    if training and len(images) == 0:
        raise InvalidArgumentError("a training batch needs at least one image, got none")
    return images


def _unpack(batch, names):
    """A training batch's parts, one per name, or an InvalidArgumentError naming what it should hold."""
    if not isinstance(batch, (tuple, list)) or len(batch) != len(names):
        got = f"{len(batch)} item{'' if len(batch) == 1 else 's'}" if isinstance(batch, (tuple, list)) else type(batch).__name__
        raise InvalidArgumentError(f"batch must be ({', '.join(names)}), got {got}")
    return batch


def _float_array(name, values, shape):
    """`values` as a float64 array of `shape`, or an InvalidArgumentError naming it."""
    try:
        array = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        raise InvalidArgumentError(f"{name} must hold numbers") from None
    if array.shape != shape:
        raise InvalidArgumentError(f"{name} must be {shape}, got {array.shape}")
    return array


@register_layer
class Localizer(Model):
    """Classification + localisation of the one object in each image.

    images (N, 3, H, W) -> backbone -> pooling, fc (`head`) -> cls_score (N, K) and box (N, 4): the
    box as (x1 / W, y1 / H, x2 / W, y2 / H).

    Args:
        classes: the K class names; labels are 0..K-1 (no background: every image holds an object).
        image_size: (H, W) of the input images (multiples of twice the backbone's stride).
        channels: the backbone's widths; hidden: the fully connected layer's width; dropout: after it.
        lam: the weight of the box term in L = L_cls + lam * L_box.
        rng: seed or Generator for the initial weights; dtype: float32 or float64.
    """

    CHILDREN = ("backbone", "head", "cls_score", "box")

    def __init__(self, classes, *, image_size=(32, 32), channels=(16, 32, 64), hidden=128, dropout=0.0, lam=1.0, rng=0, dtype=np.float32):
        super().__init__()
        rng = as_generator(rng)
        self.classes = check_classes(classes)
        self.channels = check_channels(channels)
        self.hidden = check_size("hidden", hidden)
        self.dropout = F.check_probability(dropout)
        self.lam = _check_non_negative("lam", lam)
        self.backbone, self.head, self.image_size = features_head(self.channels, image_size, self.hidden, self.dropout, rng, dtype)
        self.cls_score = Linear(self.hidden, len(self.classes), rng=rng, dtype=dtype)
        self.box = Linear(self.hidden, 4, rng=rng, dtype=dtype)

    def config(self):
        return {
            "classes": list(self.classes), "image_size": list(self.image_size), "channels": list(self.channels),
            "hidden": self.hidden, "dropout": self.dropout, "lam": self.lam,
        }

    def forward(self, x):
        """x: (N, 3, H, W) -> (class scores (N, K), boxes (N, 4) as fractions of the image side)."""
        hidden = self.head.forward(self.backbone.forward(x))
        return self.cls_score.forward(hidden), self.box.forward(hidden)

    def backward(self, dscores, dboxes):
        dhidden = fork_backward([(self.cls_score, dscores), (self.box, dboxes)])
        self.backbone.backward(self.head.backward(dhidden), input_grad=False)

    def _scale(self):
        height, width = self.image_size
        return np.array([width, height, width, height], dtype=np.float64)

    def training_step(self, batch):
        """batch: (images (N, H, W, 3) uint8, labels (N,) ints in 0..K-1, boxes (N, 4) xyxy pixels).

        L = L_cls + lam * L_box, L_box = 1/N sum_n ||b_n - b*_n||^2 on the box as fractions of the
        image side. Returns {"total", "cls", "box"}."""
        images, labels, boxes = _unpack(batch, ("images", "labels", "boxes"))
        images = _check_batch_images(images, self.image_size, training=True)
        boxes = _float_array("boxes", boxes, (len(images), 4))
        x = self._on_device(images_to_input(images, self.dtype))
        scores, pred = self.forward(x)
        targets = (boxes / self._scale()).astype(self.dtype)
        cls_loss, dscores = softmax_cross_entropy(scores, self._on_device(np.asarray(labels)))
        # the box term with every sample counted (label 1 = "has a box" for the class-agnostic box loss)
        box_loss, dpred = box_regression_loss(
            pred, self._on_device(targets), self._on_device(np.ones(len(targets), np.int64)), loss="l2", weight=self.lam
        )
        self.backward(dscores, dpred)
        return {"total": cls_loss + self.lam * box_loss, "cls": cls_loss, "box": box_loss}

    def predict(self, images):
        """images: (N, H, W, 3) or (H, W, 3) uint8 -> (labels (N,) int64, scores (N,) float64 (the
        class probability), boxes (N, 4) float64 xyxy pixels: the box the two regressed corners span,
        clipped to the image)."""
        images = _check_batch_images(images, self.image_size)
        with evaluation_mode(self):
            scores, pred = self.forward(self._on_device(images_to_input(images, self.dtype)))
        probs = softmax(scores)
        labels = probs.argmax(axis=1)
        corners = (np.asarray(to_host(pred), dtype=np.float64) * self._scale()).reshape(-1, 2, 2)  # (N, 2 corners, x y)
        # the regressed corners are not bound to any order: the box is the one they span, in the image
        boxes = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
        return labels, probs[np.arange(len(labels)), labels], clip(boxes, self.image_size)


@register_layer
class PoseRegressor(Model):
    """Pose as regression (DeepPose, Toshev and Szegedy 2014, section 3): the conv net's last layer
    outputs the 2 J coordinates of J joints directly, trained with an L2 loss on each coordinate.

    images (N, 3, H, W) -> backbone -> pooling, fc (`head`) -> joints (N, 2 J): (x / W, y / H) per joint.

    Args:
        n_joints: J (14 in the Leeds Sports Pose order DeepPose uses).
        image_size, channels, hidden, dropout, rng, dtype: as `Localizer`.
    """

    CHILDREN = ("backbone", "head", "joints")

    def __init__(self, *, n_joints=14, image_size=(48, 48), channels=(16, 32, 64), hidden=256, dropout=0.0, rng=0, dtype=np.float32):
        super().__init__()
        rng = as_generator(rng)
        self.n_joints = check_size("n_joints", n_joints)
        self.channels = check_channels(channels)
        self.hidden = check_size("hidden", hidden)
        self.dropout = F.check_probability(dropout)
        self.backbone, self.head, self.image_size = features_head(self.channels, image_size, self.hidden, self.dropout, rng, dtype)
        self.joints = Linear(self.hidden, 2 * self.n_joints, rng=rng, dtype=dtype)

    def config(self):
        return {
            "n_joints": self.n_joints, "image_size": list(self.image_size), "channels": list(self.channels),
            "hidden": self.hidden, "dropout": self.dropout,
        }

    def forward(self, x):
        """x: (N, 3, H, W) -> (N, 2 J) joint coordinates as fractions of the image side."""
        return self.joints.forward(self.head.forward(self.backbone.forward(x)))

    def backward(self, djoints):
        self.backbone.backward(self.head.backward(self.joints.backward(djoints)), input_grad=False)

    def _scale(self):
        height, width = self.image_size
        return np.tile([width, height], self.n_joints).astype(np.float64)  # (2 J,) x, y per joint

    def training_step(self, batch):
        """batch: (images (N, H, W, 3) uint8, joints (N, J, 2) (x, y) pixels).

        L = 1/N sum_n sum_j ||y_nj - y*_nj||^2 on the fractions of the image side. Returns {"total"}."""
        images, joints = _unpack(batch, ("images", "joints"))
        images = _check_batch_images(images, self.image_size, training=True)
        joints = _float_array("joints", joints, (len(images), self.n_joints, 2))
        pred = self.forward(self._on_device(images_to_input(images, self.dtype)))
        targets = (joints.reshape(len(images), -1) / self._scale()).astype(self.dtype)
        loss, dpred = regression_loss(pred, self._on_device(targets), loss="l2")
        self.backward(dpred)
        return {"total": loss}

    def predict(self, images):
        """images: (N, H, W, 3) or (H, W, 3) uint8 -> joints (N, J, 2) float64 (x, y) pixels."""
        images = _check_batch_images(images, self.image_size)
        with evaluation_mode(self):
            pred = self.forward(self._on_device(images_to_input(images, self.dtype)))
        return (np.asarray(to_host(pred), dtype=np.float64) * self._scale()).reshape(len(images), self.n_joints, 2)


def percent_detected_joints(pred, true, fraction=0.2, torso=(9, 2)):
    """PDJ, the Percent of Detected Joints (DeepPose, Toshev and Szegedy 2014, section 4.1, "Metrics"):
    per joint, the share of images where it is predicted within `fraction` x the torso diameter of
    the truth (distance <= the limit).

    Args:
        pred, true: (N, J, 2) joint coordinates (x, y).
        fraction: the distance threshold as a fraction of the torso diameter.
        torso: the two joints whose distance is the torso diameter (LSP: left shoulder 9, right hip 2).

    Returns:
        (J,) float64 in [0, 1].
    """
    pred, true = np.asarray(pred, dtype=np.float64), np.asarray(true, dtype=np.float64)
    if pred.shape != true.shape or pred.ndim != 3 or pred.shape[2] != 2 or len(pred) == 0:
        raise InvalidArgumentError(f"pred and true must both be (N, J, 2) with N >= 1, got {pred.shape} and {true.shape}")
    n_joints = pred.shape[1]
    if len(torso) != 2 or any(isinstance(j, bool) or not isinstance(j, numbers.Integral) or not 0 <= j < n_joints for j in torso):
        raise InvalidArgumentError(f"torso must be two joint indices in [0, {n_joints}), got {torso!r}")
    if isinstance(fraction, bool) or not isinstance(fraction, numbers.Real) or not 0 <= fraction < math.inf:
        raise InvalidArgumentError(f"fraction must be a finite number >= 0, got {fraction!r}")
    diameter = np.linalg.norm(true[:, torso[0]] - true[:, torso[1]], axis=1)  # (N,)
    distance = np.linalg.norm(pred - true, axis=2)  # (N, J)
    return (distance <= fraction * diameter[:, None]).mean(axis=0)
