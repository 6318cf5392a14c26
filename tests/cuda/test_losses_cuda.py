"""The CUDA losses against their CPU twins in `scratchdet.nn.losses`."""

import numpy as np
import pytest

from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import losses as L


@pytest.mark.parametrize(("n", "k", "scale"), [(1, 2, 1.0), (7, 5, 1.0), (40, 3, 1000.0)])
def test_softmax_cross_entropy_matches_cpu_even_for_huge_logits(rng, gpu, close, n, k, scale):
    logits = (rng.standard_normal((n, k)) * scale).astype(np.float32)
    labels = rng.integers(0, k, n)
    loss, dlogits = L.softmax_cross_entropy(logits, labels)
    loss_gpu, dlogits_gpu = L.softmax_cross_entropy(gpu(logits), gpu(labels))
    assert np.isfinite(loss_gpu) and loss_gpu == pytest.approx(loss, rel=1e-6)
    close(dlogits_gpu, dlogits, atol=1e-7)


def test_softmax_cross_entropy_of_tied_huge_logits_keeps_the_log_sum(gpu, close):
    # m + log 2 - z_u would round to 0 at 3e38: the CPU's order, (m - z_u) first
    logits = np.array([[np.finfo(np.float32).max] * 2 + [0.0], [1e20] * 3], dtype=np.float32)
    labels = np.array([1, 2])
    loss, dlogits = L.softmax_cross_entropy(logits, labels)
    loss_gpu, dlogits_gpu = L.softmax_cross_entropy(gpu(logits), gpu(labels))
    assert loss_gpu == pytest.approx((np.log(2) + np.log(3)) / 2) and loss_gpu == pytest.approx(loss, rel=1e-6)
    close(dlogits_gpu, dlogits, atol=1e-7)


def test_softmax_cross_entropy_rejects_a_label_outside_the_classes(gpu):
    # the message begins as the CPU's
    for logits, labels in ((np.zeros((2, 3), np.float32), np.array([0, 3])),):
        with pytest.raises(InvalidArgumentError, match=r"^labels must be in \[0, 3\)"):
            L.softmax_cross_entropy(logits, labels)
        with pytest.raises(InvalidArgumentError, match=r"^labels must be in \[0, 3\)"):
            L.softmax_cross_entropy(gpu(logits), gpu(labels))


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda g: L.smooth_l1(g(np.ones(3, np.float32)), g(np.zeros(3, np.float32)), beta=np.inf), "beta"),
        (lambda g: L.regression_loss(g(np.ones((2, 3), np.float32)), g(np.zeros((2, 3), np.float32)), loss="huber"), "loss"),
        (lambda g: L.box_regression_loss(g(np.ones((2, 4), np.float32)), g(np.zeros((2, 4), np.float32)), g(np.ones(2, np.int64)), weight=-1.0), "weight"),
        (lambda g: L.box_regression_loss(g(np.ones((2, 4), np.float32)), g(np.zeros((2, 4), np.float32)), g(np.ones(2, np.int64)), weight=np.nan), "weight"),
        (lambda g: L.multitask_loss(g(np.zeros((3, 3), np.float32)), g(np.ones(3, np.int64)), g(np.zeros((3, 8), np.float32)), g(np.zeros((3, 4), np.float32))), "4 or 4 \\* 3 columns"),
    ],
    ids=["infinite-beta", "unknown-loss", "negative-weight", "nan-weight", "box-columns-of-no-class-count"],
)
def test_losses_refuse_on_the_gpu_what_they_refuse_on_the_cpu(gpu, call, match):
    for to in (np.asarray, gpu):
        with pytest.raises(InvalidArgumentError, match=match):
            call(to)


@pytest.mark.parametrize("size", [1, 100])
def test_l2_and_smooth_l1_match_cpu(rng, gpu, close, size):
    pred = rng.standard_normal(size).astype(np.float32) * 2
    target = rng.standard_normal(size).astype(np.float32)
    for fn, kwargs in ((L.l2_loss, {}), (L.smooth_l1, {"beta": 1.0}), (L.smooth_l1, {"beta": 0.5}), (L.smooth_l1, {"beta": 0.0})):
        loss, grad = fn(pred, target, **kwargs)
        loss_gpu, grad_gpu = fn(gpu(pred), gpu(target), **kwargs)
        assert loss_gpu == pytest.approx(loss, rel=1e-6), f"{fn.__name__} {kwargs}"
        close(grad_gpu, grad, rtol=0, atol=0, what=f"{fn.__name__} {kwargs}")


@pytest.mark.parametrize("loc_loss", ["smooth_l1", "l2"])
@pytest.mark.parametrize("per_class", [True, False])
def test_multitask_loss_matches_cpu(rng, gpu, close, loc_loss, per_class):
    n, classes = 9, 4
    scores = rng.standard_normal((n, classes)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3, 0])
    bbox_pred = rng.standard_normal((n, 4 * classes if per_class else 4)).astype(np.float32)
    targets = rng.standard_normal((n, 4)).astype(np.float32)
    value, (dcls, dbox) = L.multitask_loss(scores, labels, bbox_pred, targets, lam=2.5, loc_loss=loc_loss)
    value_gpu, (dcls_gpu, dbox_gpu) = L.multitask_loss(
        gpu(scores), gpu(labels), gpu(bbox_pred), gpu(targets), lam=2.5, loc_loss=loc_loss
    )
    np.testing.assert_allclose(tuple(value_gpu), tuple(value), rtol=1e-6)
    close(dcls_gpu, dcls, atol=1e-7, what="dcls")
    close(dbox_gpu, dbox, rtol=0, atol=0, what="dbbox")


def test_box_regression_loss_rejects_a_class_without_box_columns(gpu):
    with pytest.raises(InvalidArgumentError, match="outside"):
        L.box_regression_loss(gpu(np.zeros((1, 8), np.float32)), gpu(np.zeros((1, 4), np.float32)), np.array([2]))


@pytest.mark.parametrize("loss", ["l2", "smooth_l1"])
def test_regression_loss_matches_cpu(rng, gpu, close, loss):
    pred = rng.standard_normal((5, 28)).astype(np.float32)
    target = rng.standard_normal((5, 28)).astype(np.float32)
    value, grad = L.regression_loss(pred, target, loss=loss)
    value_gpu, grad_gpu = L.regression_loss(gpu(pred), gpu(target), loss=loss)
    assert value_gpu == pytest.approx(value, rel=1e-6)
    close(grad_gpu, grad, rtol=0, atol=0)


def test_multitask_loss_refuses_scores_and_boxes_on_two_devices(gpu):
    # (it once returned one gradient on each)
    scores, labels = np.zeros((2, 3), np.float32), np.array([0, 1])
    bbox_pred, targets = np.zeros((2, 12), np.float32), np.zeros((2, 4), np.float32)
    for args in ((gpu(scores), labels, bbox_pred, targets), (scores, labels, gpu(bbox_pred), gpu(targets))):
        with pytest.raises(InvalidArgumentError, match="cls_scores and bbox_pred must be on one device"):
            L.multitask_loss(*args)
