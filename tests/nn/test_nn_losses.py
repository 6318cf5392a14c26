"""Losses: what each one counts, its normalisation, and the multi-task loss's Iverson bracket."""

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.errors import InvalidArgumentError
from scratchdet.kernels.shared.nn import smooth_l1_grad, smooth_l1_value


def test_cross_entropy_is_stable_for_huge_logits():
    logits = np.array([[1000.0, 0.0], [-1000.0, 1000.0]])
    loss, grad = nn.softmax_cross_entropy(logits, np.array([1, 1]))
    assert loss == pytest.approx(500.0)  # sample 0 loses 1000, sample 1 nothing; mean 500
    assert np.all(np.isfinite(grad))
    np.testing.assert_allclose(grad, [[0.5, -0.5], [0.0, 0.0]], atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_of_tied_huge_logits_keeps_the_log_sum(dtype):
    # the row maximum is tied: loss = log(number of ties) + (m - z_u); m + log 2 - z_u would round to 0
    big = np.finfo(dtype).max
    logits = np.array([[big, big, 0.0], [1e20, 1e20, 1e20]], dtype=dtype)
    loss, grad = nn.softmax_cross_entropy(logits, np.array([1, 2]))
    assert loss == pytest.approx((np.log(2) + np.log(3)) / 2)
    np.testing.assert_allclose(grad, [[0.25, -0.25, 0.0], [1 / 6, 1 / 6, -1 / 3]], rtol=1e-6)


def test_cross_entropy_of_uniform_scores_is_log_k():
    loss, grad = nn.softmax_cross_entropy(np.zeros((3, 4)), np.array([0, 1, 3]))
    assert loss == pytest.approx(np.log(4))
    np.testing.assert_allclose(grad.sum(axis=1), 0.0, atol=1e-15)  # each row: softmax - one-hot


@pytest.mark.parametrize("labels, match", [(np.array([0, 4]), r"\[0, 4\)"), (np.array([0, -1]), r"\[0, 4\)"), (np.array([0.0, 1.0]), "integers"), (np.array([0]), "shape")],
                         ids=["label-too-large", "negative-label", "float-labels", "wrong-count"])
def test_cross_entropy_rejects_bad_labels(labels, match):
    with pytest.raises(InvalidArgumentError, match=match):
        nn.softmax_cross_entropy(np.zeros((2, 4)), labels)


def test_smooth_l1_scalar_kink_at_beta():
    assert smooth_l1_value(0.5, 1.0) == 0.125  # 0.5 x^2 inside
    assert smooth_l1_value(-3.0, 1.0) == 2.5  # |x| - 0.5 outside
    assert smooth_l1_value(1.0, 1.0) == 0.5  # both pieces meet at |x| = beta
    assert smooth_l1_grad(1.0, 1.0) == 1.0 and smooth_l1_grad(-0.25, 0.5) == -0.5
    assert smooth_l1_value(-2.0, 0.0) == 2.0 and smooth_l1_grad(0.0, 0.0) == 0.0  # beta 0 is L1


def test_smooth_l1_with_beta_zero_is_l1_at_a_zero_residual_too():
    # beta 0 never takes the quadratic branch, not even at x = 0, where 0.5 x**2 / beta is 0 / 0
    assert smooth_l1_value(0.0, 0.0) == 0.0
    loss, grad = nn.smooth_l1(np.array([1.0, 3.0]), np.array([1.0, 1.0]), beta=0.0)
    assert loss == 2.0
    np.testing.assert_array_equal(grad, [0.0, 1.0])


def test_l2_loss_is_a_sum_not_a_mean():
    loss, grad = nn.l2_loss(np.array([[1.0, 2.0]]), np.array([[0.0, 0.0]]))
    assert loss == 5.0
    np.testing.assert_array_equal(grad, [[2.0, 4.0]])


def _batch():
    scores = np.array([[2.0, 0.0, 0.0], [0.0, 2.0, 0.0], [0.0, 0.0, 2.0], [1.0, 1.0, 1.0]])
    labels = np.array([0, 1, 2, 2])
    bbox_pred = np.zeros((4, 12))
    bbox_pred[1, 4:8] = [0.5, 0.5, 2.0, 0.0]  # class 1 box of sample 1
    bbox_pred[0, 0:4] = 100.0  # background's box: must not count
    bbox_pred[2, 4:8] = 100.0  # another class's box: must not count
    bbox_targets = np.zeros((4, 4))
    return scores, labels, bbox_pred, bbox_targets


def test_multitask_loss_counts_boxes_of_foreground_samples_only_for_their_class():
    scores, labels, bbox_pred, bbox_targets = _batch()
    loss, (dscores, dbbox) = nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=1.0)
    # sample 1: smooth L1 of (0.5, 0.5, 2, 0) = 0.125 + 0.125 + 1.5 + 0; samples 2, 3: zero residuals
    assert loss.loc == pytest.approx(1.75 / 4)  # divided by all N = 4 samples
    assert loss.cls == pytest.approx(nn.softmax_cross_entropy(scores, labels)[0])
    assert loss.total == pytest.approx(loss.cls + loss.loc) and float(loss) == loss.total
    assert np.all(dbbox[0] == 0) and np.all(dbbox[2, 4:8] == 0), "background and other classes get no gradient"
    np.testing.assert_allclose(dbbox[1, 4:8], np.array([0.5, 0.5, 1.0, 0.0]) / 4)


def test_multitask_loss_lambda_weights_the_box_term_and_its_gradient():
    scores, labels, bbox_pred, bbox_targets = _batch()
    one, (_, g1) = nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=1.0)
    three, (_, g3) = nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=3.0)
    assert three.loc == one.loc and three.total == pytest.approx(one.cls + 3 * one.loc)
    np.testing.assert_allclose(g3, 3 * g1)
    zero, (_, g0) = nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=0.0)
    assert zero.total == zero.cls and not g0.any()


def test_multitask_loss_with_l2_and_class_agnostic_boxes():
    scores = np.zeros((2, 3))
    labels = np.array([0, 2])
    bbox_pred = np.array([[9.0, 9.0, 9.0, 9.0], [1.0, 2.0, 0.0, 0.0]])
    loss, (_, dbbox) = nn.multitask_loss(scores, labels, bbox_pred, np.zeros((2, 4)), loc_loss="l2")
    assert loss.loc == pytest.approx((1 + 4) / 2)
    np.testing.assert_allclose(dbbox, [[0, 0, 0, 0], [1.0, 2.0, 0, 0]])


def test_multitask_loss_all_background_has_zero_box_term():
    loss, (_, dbbox) = nn.multitask_loss(np.zeros((3, 2)), np.zeros(3, int), np.ones((3, 8)), np.zeros((3, 4)))
    assert loss.loc == 0.0 and not dbbox.any()


def test_multitask_loss_rejects_box_columns_that_match_no_class_count():
    with pytest.raises(InvalidArgumentError, match="4 or 4 \\* 3"):
        nn.multitask_loss(np.zeros((2, 3)), np.array([0, 1]), np.zeros((2, 8)), np.zeros((2, 4)))


def test_multitask_loss_names_bbox_pred_when_its_rows_or_dtype_differ_from_cls_scores():
    """The labels match cls_scores: the error is bbox_pred's (it once blamed the labels)."""
    with pytest.raises(InvalidArgumentError, match=r"bbox_pred must have a row per sample of cls_scores \(2\)"):
        nn.multitask_loss(np.zeros((2, 3)), [0, 1], np.zeros((3, 12)), np.zeros((3, 4)))
    with pytest.raises(InvalidArgumentError, match="bbox_pred must have cls_scores' dtype float32"):
        nn.multitask_loss(np.zeros((2, 3), np.float32), [0, 1], np.zeros((2, 12)), np.zeros((2, 4)))


@pytest.mark.parametrize(
    "arguments, kwargs, match",
    [
        ((np.zeros((2, 3)), [0, 1], [[0.0] * 12] * 2, np.zeros((2, 4))), {}, "bbox_pred"),
        (([[0.0] * 3] * 2, [0, 1], np.zeros((2, 12)), np.zeros((2, 4))), {}, "cls_scores"),
        ((np.zeros((2, 3)), [0, 1], np.zeros(8), np.zeros((2, 4))), {}, "bbox_pred"),
        ((np.zeros((2, 3)), [0, 1], np.zeros((2, 12)), np.zeros((2, 4))), {"lam": "1"}, "lam"),
        ((np.zeros((2, 3)), [0, 1], np.zeros((2, 12)), np.zeros((2, 4))), {"beta": "1"}, "beta"),
        ((np.zeros((2, 3)), [0, 1], np.zeros((2, 12)), np.zeros((2, 4))), {"lam": float("inf")}, "lam"),
    ],
    ids=["list-bbox-pred", "list-cls-scores", "1d-bbox-pred", "text-lam", "text-beta", "infinite-lam"],
)
def test_multitask_loss_rejects_non_arrays_and_non_numbers_naming_them(arguments, kwargs, match):
    with pytest.raises(InvalidArgumentError, match=match):
        nn.multitask_loss(*arguments, **kwargs)


@pytest.mark.parametrize("beta", ["1", None, float("nan"), -1.0])
def test_smooth_l1_rejects_beta_that_is_not_a_number_at_least_zero(beta):
    with pytest.raises(InvalidArgumentError, match="beta"):
        nn.smooth_l1(np.ones(2), np.zeros(2), beta)


def test_box_regression_loss_rejects_unknown_loss_name():
    with pytest.raises(InvalidArgumentError, match="smooth_l1"):
        nn.box_regression_loss(np.zeros((1, 4)), np.zeros((1, 4)), np.array([1]), loss="l1")


def test_pose_regression_loss_is_l2_summed_over_joints_averaged_over_samples(rng):
    pred = rng.standard_normal((5, 28))  # 14 joints x (x, y)
    target = rng.standard_normal((5, 28))
    loss, grad = nn.regression_loss(pred, target)
    assert loss == pytest.approx(np.sum((pred - target) ** 2) / 5)
    np.testing.assert_allclose(grad, 2 * (pred - target) / 5)
    smooth, _ = nn.regression_loss(pred, target, loss="smooth_l1")
    assert 0 < smooth < loss


def test_losses_keep_0_d_shapes_and_name_non_numeric_targets():
    loss, grad = nn.l2_loss(np.array(3.0), np.array(1.0))
    assert loss == 4.0 and grad.shape == ()
    with pytest.raises(InvalidArgumentError, match="target must hold numbers"):
        nn.l2_loss(np.ones(2), ["a", "b"])
    with pytest.raises(InvalidArgumentError, match=r"\(N, D\)"):
        nn.regression_loss(np.array(3.0), np.array(1.0))
