"""Every layer and loss against centred differences in float64 (relative error < 1e-6), and a whole
small network end to end."""

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.errors import InvalidArgumentError
from scratchdet.nn import functional as F
from scratchdet.nn.gradcheck import gradcheck, gradcheck_layer, numerical_gradient, relative_error

TOLERANCE = 1e-6


def assert_small(errors):
    assert all(e < TOLERANCE for e in errors.values()), f"relative errors {errors} (tolerance {TOLERANCE})"


class FixedMaskDropout(nn.Dropout):
    """Dropout that draws the same mask at every forward, so that the loss is a function of x."""

    def forward(self, x):
        self._rng = np.random.default_rng(7)
        return super().forward(x)


@pytest.mark.parametrize(
    "layer, shape",
    [
        (nn.Conv2d(3, 4, 3, stride=1, padding=1, rng=0, dtype=np.float64), (2, 3, 5, 6)),
        (nn.Conv2d(2, 3, 3, stride=2, padding=0, rng=1, dtype=np.float64), (1, 2, 7, 6)),
        (nn.Conv2d(2, 2, 2, stride=3, padding=2, rng=2, init="xavier", dtype=np.float64), (2, 2, 5, 4)),
        (nn.Linear(6, 4, rng=3, dtype=np.float64), (3, 6)),
        (nn.ReLU(), (2, 3, 4, 4)),
        (nn.MaxPool2d(2), (2, 2, 6, 5)),
        (nn.MaxPool2d(3, stride=1), (1, 2, 5, 5)),
        (nn.Flatten(), (2, 3, 2, 2)),
        (FixedMaskDropout(0.4), (3, 10)),
    ],
    ids=["conv3x3-pad1", "conv3x3-stride2", "conv2x2-stride3-pad2-xavier", "linear", "relu", "maxpool2", "maxpool3-overlap", "flatten", "dropout"],
)
def test_layer_gradients_match_centred_differences(layer, shape, rng):
    x = rng.standard_normal(shape)
    assert_small(gradcheck_layer(layer, x, rng))


@pytest.mark.parametrize("output_size, spatial_scale", [((2, 2), 0.5), ((3, 2), 0.25)])
def test_roi_pool_gradient_matches_centred_differences(output_size, spatial_scale, rng):
    features = rng.standard_normal((2, 2, 6, 7))
    rois = np.array([[0, 0, 0, 11, 9], [1, 4, 2, 13, 11], [1, 6, 6, 9, 9], [0, 8, 3, 40, 30]], dtype=np.float64)
    pool = nn.RoIPool(output_size, spatial_scale)
    r = rng.standard_normal((4, 2, *output_size))

    def loss():
        return float(np.sum(pool.forward(features, rois) * r))

    pool.forward(features, rois)
    assert_small(gradcheck(loss, {"features": features}, {"features": pool.backward(r)}))


def test_softmax_cross_entropy_gradient(rng):
    logits = rng.standard_normal((5, 4)) * 3
    labels = np.array([0, 3, 1, 1, 2])
    _, dlogits = nn.softmax_cross_entropy(logits, labels)
    assert_small(gradcheck(lambda: nn.softmax_cross_entropy(logits, labels)[0], {"logits": logits}, {"logits": dlogits}))


@pytest.mark.parametrize("loss_fn", [nn.l2_loss, lambda p, t: nn.smooth_l1(p, t, beta=1.0), lambda p, t: nn.smooth_l1(p, t, beta=0.3)],
                         ids=["l2", "smooth_l1", "smooth_l1-beta0.3"])
def test_regression_loss_gradients(loss_fn, rng):
    pred, target = rng.standard_normal((4, 6)) * 2, rng.standard_normal((4, 6))
    _, grad = loss_fn(pred, target)
    assert_small(gradcheck(lambda: loss_fn(pred, target)[0], {"pred": pred}, {"pred": grad}))


@pytest.mark.parametrize("loc_loss", ["smooth_l1", "l2"])
def test_multitask_loss_gradients_for_scores_and_boxes(loc_loss, rng):
    n, classes = 6, 3
    scores = rng.standard_normal((n, classes))
    bbox_pred = rng.standard_normal((n, 4 * classes))
    bbox_targets = rng.standard_normal((n, 4))
    labels = np.array([0, 1, 2, 0, 2, 1])

    def total():
        return nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=0.7, loc_loss=loc_loss)[0].total

    _, (dscores, dbbox) = nn.multitask_loss(scores, labels, bbox_pred, bbox_targets, lam=0.7, loc_loss=loc_loss)
    assert_small(gradcheck(total, {"scores": scores, "bbox_pred": bbox_pred}, {"scores": dscores, "bbox_pred": dbbox}))


def test_pose_regression_loss_gradient(rng):
    pred, target = rng.standard_normal((3, 28)), rng.standard_normal((3, 28))
    _, grad = nn.regression_loss(pred, target, loss="l2")
    assert_small(gradcheck(lambda: nn.regression_loss(pred, target, loss="l2")[0], {"pred": pred}, {"pred": grad}))


def test_whole_network_gradients_conv_relu_pool_dropout_linear(rng):
    net = nn.Sequential(
        nn.Conv2d(2, 3, 3, padding=1, rng=0, dtype=np.float64),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(3, 4, 3, stride=2, padding=1, rng=1, dtype=np.float64),
        nn.ReLU(),
        nn.Flatten(),
        FixedMaskDropout(0.25),
        nn.Linear(4 * 2 * 2, 3, rng=2, dtype=np.float64),
    )
    x = rng.standard_normal((2, 2, 8, 8))
    labels = np.array([2, 0])

    def loss():
        return nn.softmax_cross_entropy(net.forward(x), labels)[0]

    _, dlogits = nn.softmax_cross_entropy(net.forward(x), labels)
    dx = net.backward(dlogits)
    analytic = {"x": dx}
    inputs = {"x": x}
    for name, layer, key in net.named_parameters():
        analytic[name] = layer.grads[key].copy()
        inputs[name] = layer.params[key]
    errors = gradcheck(loss, inputs, analytic)
    assert set(errors) == {"x", "0.weight", "0.bias", "3.weight", "3.bias", "7.weight", "7.bias"}
    assert_small(errors)


def test_gradcheck_catches_a_wrong_gradient(rng):
    """The checker itself can fail: a gradient off by 1% is reported as a large relative error."""
    x = rng.standard_normal(5)
    errors = gradcheck(lambda: float(np.sum(x**3)), {"x": x}, {"x": 3 * x**2 * 1.01})
    assert errors["x"] > 1e-3


def test_gradcheck_layer_refuses_a_layer_that_draws_a_new_mask_each_call(rng):
    """A Dropout in training mode is a different function at every forward pass: centred differences of it
    mean nothing, so the check refuses it; in eval mode (the identity) it passes."""
    dropout = nn.Dropout(0.5, rng=0)
    x = rng.standard_normal((4, 6))
    with pytest.raises(InvalidArgumentError, match="same output at every call"):
        gradcheck_layer(dropout, x, rng)
    dropout.eval()
    assert max(gradcheck_layer(dropout, x, rng).values()) < 1e-8


def test_numerical_gradient_restores_its_input_and_rejects_float32(rng):
    x = rng.standard_normal(4)
    before = x.copy()
    numerical_gradient(lambda: float(np.sum(np.sin(x))), x)
    np.testing.assert_array_equal(x, before)
    with pytest.raises(InvalidArgumentError, match="float64"):
        numerical_gradient(lambda: 0.0, x.astype(np.float32))
    assert relative_error(np.zeros(3), np.zeros(3)) == 0.0


def test_numerical_gradient_of_a_non_contiguous_view_perturbs_the_view(rng):
    base = rng.standard_normal((4, 6))
    x = base[:, ::2].T  # (3, 4) strided view: reshape(-1) would be a copy that f never sees
    grad = numerical_gradient(lambda: float(np.sum(x**2)), x)
    np.testing.assert_allclose(grad, 2 * x, rtol=1e-6)


def test_conv_gradient_in_float32_is_close_to_float64(rng):
    """The float32 kernels compute the same gradients as float64 ones, up to float32 rounding."""
    x, w, dy = rng.standard_normal((2, 3, 6, 6)), rng.standard_normal((4, 3, 3, 3)), rng.standard_normal((2, 4, 6, 6))
    ref = F.conv2d_backward(dy, x, w, stride=1, padding=1)
    low = F.conv2d_backward(*(a.astype(np.float32) for a in (dy, x, w)), stride=1, padding=1)
    for name, a, b in zip(("dx", "dw", "db"), low, ref):
        assert a.dtype == np.float32, name
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4, err_msg=name)


def test_gradcheck_model_passes_a_true_step_and_catches_a_wrong_gradient(rng):
    from scratchdet.nn.gradcheck import gradcheck_model

    model = nn.Sequential(nn.Linear(3, 4, rng=0, dtype=np.float64), nn.ReLU(), nn.Linear(4, 2, rng=1, dtype=np.float64))
    x, labels = rng.standard_normal((5, 3)), np.array([0, 1, 1, 0, 1])

    def step(scale=1.0):
        loss, dscores = nn.softmax_cross_entropy(model.forward(x), labels)
        model.backward(dscores * scale)
        return loss

    errors, analytic = gradcheck_model(model, step, rng)
    assert set(errors) == {"0.weight", "0.bias", "2.weight", "2.bias"} and max(errors.values()) < 1e-6
    assert analytic["2.weight"].shape == (2, 4)
    errors, _ = gradcheck_model(model, lambda: step(scale=1.5), rng)  # gradients 1.5x too large
    assert min(errors.values()) > 0.1
