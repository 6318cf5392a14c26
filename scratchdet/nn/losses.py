"""Losses and their gradients: softmax cross-entropy, L2, smooth L1, and Fast R-CNN's weighted
multi-task loss L = L_cls + lambda * [u >= 1] * L_loc (Girshick 2015, section 2.3, eq. 1).

Every loss returns `(loss, grad)`: the loss as a Python float (the multi-task loss: a `MultiTaskLoss`
with its components) and the gradient of that loss with respect to the prediction, ready for the
network's `backward`. Device arrays run the kernels of the same names in `scratchdet.kernels.cuda.nn`.
"""

import math
import numbers
from typing import NamedTuple

import numpy as np

from scratchdet.backend import is_cuda_array
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.cpu import nn as cpu
from scratchdet.nn.functional import FLOAT_DTYPES, _contiguous

LOC_LOSSES = ("smooth_l1", "l2")


def _cuda():
    from scratchdet.kernels.cuda import nn

    return nn


def _check_non_negative(name, value):
    """`value` as a float, or an `InvalidArgumentError` naming `name` unless it is a finite number >= 0."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real) or not 0 <= value < math.inf:
        raise InvalidArgumentError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _check_pred_target(pred, target, pred_name="pred", target_name="target"):
    if not isinstance(pred, np.ndarray) or pred.dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"{pred_name} must be a float32/float64 array, got {getattr(pred, 'dtype', type(pred))}")
    pred = _contiguous(pred, name=pred_name)
    target = _contiguous(target, pred.dtype, name=target_name)
    if target.shape != pred.shape:
        raise InvalidArgumentError(f"{target_name} must have the shape of {pred_name} {pred.shape}, got {target.shape}")
    return pred, target


def _check_labels(labels, n_samples, n_classes, name="labels"):
    labels = np.asarray(labels)
    if labels.shape != (n_samples,) or labels.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{name} must be ({n_samples},) integers, got shape {labels.shape} dtype {labels.dtype}")
    if n_samples and (labels.min() < 0 or labels.max() >= n_classes):
        raise InvalidArgumentError(f"{name} must be in [0, {n_classes}), got values from {labels.min()} to {labels.max()}")
    return np.ascontiguousarray(labels, dtype=np.int64)


def softmax_cross_entropy(logits, labels):
    """Mean softmax cross-entropy, -1/N sum_n log softmax(logits[n])[labels[n]] (PyTorch's `cross_entropy`).

    Computed with the log-sum-exp trick (the row maximum is subtracted), so any finite logits work.

    Args:
        logits: (N, K) float32/float64 class scores.
        labels: (N,) integer classes in [0, K).

    Returns:
        (loss, dlogits): a float, and (N, K) like logits.
    """
    if is_cuda_array(logits):
        return _cuda().softmax_cross_entropy(logits, labels)
    if not isinstance(logits, np.ndarray) or logits.ndim != 2 or logits.dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"logits must be an (N, K) float32/float64 array, got {getattr(logits, 'shape', type(logits))}")
    if logits.shape[0] == 0:
        raise InvalidArgumentError("softmax_cross_entropy needs at least one sample (the mean of nothing is undefined)")
    logits = np.ascontiguousarray(logits)
    labels = _check_labels(labels, logits.shape[0], logits.shape[1])
    dlogits = np.empty_like(logits)
    loss = cpu.softmax_cross_entropy(logits, labels, dlogits)
    return float(loss), dlogits


def l2_loss(pred, target):
    """Sum of squared differences, sum (pred - target)**2 (PyTorch's `mse_loss(reduction="sum")`).

    Args:
        pred: any shape, float32/float64; target: same shape.

    Returns:
        (loss, dpred): a float, and 2 (pred - target) like pred.
    """
    if is_cuda_array(pred):
        return _cuda().l2_loss(pred, target)
    pred, target = _check_pred_target(pred, target)
    grad = np.empty_like(pred)
    loss = cpu.l2_loss(pred.reshape(-1), target.reshape(-1), grad.reshape(-1))
    return float(loss), grad


def smooth_l1(pred, target, beta=1.0):
    """Summed smooth L1 of the residuals (Fast R-CNN, Girshick 2015, eq. 3), equal to PyTorch's
    `smooth_l1_loss(pred, target, reduction="sum", beta=beta)`:

        smooth_l1(x) = 0.5 x**2 / beta if |x| < beta, else |x| - 0.5 beta      (x = pred - target)

    Less sensitive to outliers than L2: the gradient is bounded by 1.

    Args:
        pred: any shape, float32/float64; target: same shape; beta: float >= 0 (0 gives L1).

    Returns:
        (loss, dpred): a float, and the gradient like pred.
    """
    beta = _check_non_negative("smooth_l1 beta", beta)  # (the numbers are checked here for both backends)
    if is_cuda_array(pred):
        return _cuda().smooth_l1(pred, target, beta)
    pred, target = _check_pred_target(pred, target)
    grad = np.empty_like(pred)
    loss = cpu.smooth_l1_loss(pred.reshape(-1), target.reshape(-1), float(beta), grad.reshape(-1))
    return float(loss), grad


class MultiTaskLoss(NamedTuple):
    """The value of the multi-task loss and its parts: total = cls + lam * loc."""

    total: float
    cls: float
    loc: float

    def __float__(self):
        return float(self.total)


def box_regression_loss(bbox_pred, bbox_targets, labels, *, loss="smooth_l1", beta=1.0, weight=1.0):
    """The localisation term of the multi-task loss: foreground samples only, averaged over all N.

        L_loc = 1/N sum_{n: u_n >= 1} sum_{j in x,y,w,h} loss(t^{u_n}_nj - v_nj)

    Normalisation: divided by N, the number of samples in the batch (foreground and background), as
    Fast R-CNN does (its box loss is averaged over the mini-batch of RoIs, section 2.3).

    Args:
        bbox_pred: (N, 4 * K1) class-specific boxes (columns 4u..4u+3 are t^u for class u, K1 counting
            the background), or (N, 4) one class-agnostic box; float32/float64.
        bbox_targets: (N, 4) regression targets v, same dtype (rows of background samples are ignored).
        labels: (N,) integer classes u, 0 = background.
        loss: "smooth_l1" (Fast R-CNN) or "l2" (squared error, the classification + localisation model).
        beta: smooth-L1 kink (ignored for "l2").
        weight: the factor lambda that multiplies this term in the total loss; it scales the gradient
            (not the returned value), so that the gradient is the one of weight * L_loc.

    Returns:
        (L_loc, dbbox_pred): the unweighted L_loc as a float, and d(weight * L_loc)/d bbox_pred like
        bbox_pred (zero outside t^u of foreground rows).
    """
    if loss not in LOC_LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOC_LOSSES}, got {loss!r}")
    beta = _check_non_negative("beta", beta)
    weight = _check_non_negative("weight", weight)
    if is_cuda_array(bbox_pred):
        return _cuda().box_regression_loss(bbox_pred, bbox_targets, labels, loss=loss, beta=beta, weight=weight)
    if not isinstance(bbox_pred, np.ndarray) or bbox_pred.ndim != 2 or bbox_pred.shape[1] % 4 or bbox_pred.shape[1] == 0:
        raise InvalidArgumentError(f"bbox_pred must be (N, 4) or (N, 4 * n_classes), got {getattr(bbox_pred, 'shape', type(bbox_pred))}")
    if bbox_pred.dtype not in FLOAT_DTYPES:
        raise InvalidArgumentError(f"bbox_pred must be float32 or float64, got {bbox_pred.dtype}")
    n_samples = bbox_pred.shape[0]
    if n_samples == 0:
        raise InvalidArgumentError("box_regression_loss needs at least one sample")
    bbox_pred = _contiguous(bbox_pred, name="bbox_pred")
    bbox_targets = _contiguous(bbox_targets, bbox_pred.dtype, name="bbox_targets")
    if bbox_targets.shape != (n_samples, 4):
        raise InvalidArgumentError(f"bbox_targets must be ({n_samples}, 4), got {bbox_targets.shape}")
    n_box_classes = bbox_pred.shape[1] // 4
    labels = _check_labels(labels, n_samples, n_box_classes if n_box_classes > 1 else np.iinfo(np.int64).max)
    grad = np.empty_like(bbox_pred)
    total = cpu.foreground_box_loss(bbox_pred, bbox_targets, labels, loss == "l2", float(beta), grad)
    grad *= weight / n_samples
    return float(total) / n_samples, grad


def multitask_loss(cls_scores, labels, bbox_pred, bbox_targets, *, lam=1.0, loc_loss="smooth_l1", beta=1.0):
    """Fast R-CNN's weighted multi-task loss (Girshick 2015, eq. 1) for a batch of N samples:

        L = L_cls(p, u) + lam * L_loc(t^u, v)

        L_cls = 1/N sum_n -log p_{n, u_n}                              (softmax cross-entropy)
        L_loc = 1/N sum_{n: u_n >= 1} sum_j loss(t^{u_n}_nj - v_nj)    (the Iverson bracket [u >= 1]:
                                                                         background has no box)

    Both terms are averaged over all N samples; lam = 1 in the paper. `loc_loss="l2"` gives the
    classification + localisation model's squared error. Runs on either backend through
    `softmax_cross_entropy` and `box_regression_loss`.

    Args:
        cls_scores: (N, K1) float class scores (K1 counts the background class 0).
        labels: (N,) integer classes u in [0, K1).
        bbox_pred: (N, 4 * K1) class-specific boxes, or (N, 4) class-agnostic; same dtype.
        bbox_targets: (N, 4) regression targets v.
        lam: weight of the box term (>= 0); loc_loss: "smooth_l1" or "l2"; beta: smooth-L1 kink.

    Returns:
        (MultiTaskLoss(total, cls, loc), (dcls_scores, dbbox_pred)). `loc` is L_loc before the weight.
    """
    lam = _check_non_negative("lam", lam)
    for name, array in (("cls_scores", cls_scores), ("bbox_pred", bbox_pred)):  # (a device array's shape is on the host)
        if not (isinstance(array, np.ndarray) or is_cuda_array(array)) or array.ndim != 2:
            raise InvalidArgumentError(f"{name} must be a 2-D array, got {getattr(array, 'shape', type(array).__name__)}")
    if is_cuda_array(cls_scores) != is_cuda_array(bbox_pred):
        where = {True: "a CUDA device array", False: "a NumPy array"}
        raise InvalidArgumentError(
            f"cls_scores and bbox_pred must be on one device, got {where[is_cuda_array(cls_scores)]} and "
            f"{where[is_cuda_array(bbox_pred)]}"
        )
    if bbox_pred.shape[0] != cls_scores.shape[0]:
        raise InvalidArgumentError(
            f"bbox_pred must have a row per sample of cls_scores ({cls_scores.shape[0]}), got {bbox_pred.shape}"
        )
    if bbox_pred.dtype != cls_scores.dtype:
        raise InvalidArgumentError(f"bbox_pred must have cls_scores' dtype {cls_scores.dtype}, got {bbox_pred.dtype}")
    if bbox_pred.shape[1] not in (4, 4 * cls_scores.shape[1]):
        raise InvalidArgumentError(
            f"bbox_pred must have 4 or 4 * {cls_scores.shape[1]} columns to match cls_scores, got {bbox_pred.shape}"
        )
    cls_value, dcls = softmax_cross_entropy(cls_scores, labels)
    loc_value, dbbox = box_regression_loss(bbox_pred, bbox_targets, labels, loss=loc_loss, beta=beta, weight=lam)
    return MultiTaskLoss(cls_value + lam * loc_value, cls_value, loc_value), (dcls, dbbox)


def regression_loss(pred, target, *, loss="l2", beta=1.0):
    """A box-free, class-free regression loss averaged over samples, e.g. for pose regression
    (DeepPose, Toshev and Szegedy 2014: 14 joints x 2 coordinates, squared error on each):

        L = 1/N sum_n sum_j loss(pred_nj - target_nj)

    the same normalisation as the box term of `multitask_loss`.

    Args:
        pred: (N, D) float32/float64 (D = 28 for 14 joints (x, y)); target: (N, D).
        loss: "l2" or "smooth_l1"; beta: smooth-L1 kink.

    Returns:
        (loss, dpred): a float, and the gradient like pred.
    """
    if loss not in LOC_LOSSES:
        raise InvalidArgumentError(f"loss must be one of {LOC_LOSSES}, got {loss!r}")
    beta = _check_non_negative("beta", beta)
    if is_cuda_array(pred):
        return _cuda().regression_loss(pred, target, loss=loss, beta=beta)
    pred, target = _check_pred_target(pred, target)
    if pred.ndim < 1 or pred.shape[0] == 0:
        raise InvalidArgumentError(f"pred must be (N, D) with N >= 1, got {pred.shape}")
    value, grad = l2_loss(pred, target) if loss == "l2" else smooth_l1(pred, target, beta)
    n_samples = pred.shape[0]
    grad /= n_samples
    return value / n_samples, grad
