"""Specification of the single-object models (`scratchdet.models.localizer`): classification +
localisation (`Localizer`), 14-joint pose regression (`PoseRegressor`, DeepPose) and the percentage of
detected joints (PDJ)."""

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.nn.gradcheck import gradcheck_model
from scratchdet.data.shapes import POSE_JOINTS, SHAPE_CLASSES, single_object_dataset, stick_figures
from scratchdet.errors import InvalidArgumentError
from scratchdet.models import Localizer, PoseRegressor, images_to_input, percent_detected_joints
from scratchdet.train import array_batches

TOLERANCE = 1e-6
# A hidden unit that ReLU switches off for every sample leaves gradients of ~1e-6 whose centred
# differences carry ~1e-10 of rounding: errors are relative to max(|analytic| + |numeric|, this floor).
GRADIENT_FLOOR = 1e-3


def tiny_localizer(*, image_size=(8, 8), dtype=np.float32, rng=0, dropout=0.0, lam=1.0):
    return Localizer(SHAPE_CLASSES, image_size=image_size, channels=(2, 3), hidden=5, dropout=dropout, lam=lam, rng=rng, dtype=dtype)


def tiny_pose(*, image_size=(8, 8), n_joints=3, dtype=np.float32, rng=0, dropout=0.0):
    return PoseRegressor(n_joints=n_joints, image_size=image_size, channels=(2, 3), hidden=5, dropout=dropout, rng=rng, dtype=dtype)


def random_boxes(rng, n, height, width):
    corners = rng.uniform(0, [width / 2, height / 2], (n, 2))
    return np.concatenate([corners, corners + rng.uniform(1, [width / 2, height / 2], (n, 2))], axis=1)


def off_the_kinks(model, rng):
    """Small random biases instead of zeros, so that no ReLU input sits exactly on the kink."""
    for _, layer, key in model.named_parameters():
        if key == "bias":
            layer.params[key] = rng.normal(0.0, 0.1, layer.params[key].shape).astype(layer.params[key].dtype)
    return model


def gradient_errors(model, total_loss, rng):
    """`nn.gradcheck_model` with the floor these tests use (see GRADIENT_FLOOR)."""
    return gradcheck_model(model, total_loss, rng, floor=GRADIENT_FLOOR)


def as_arrays(prediction):
    """A prediction as a list of arrays: the Localizer's (labels, scores, boxes) or the pose joints."""
    return list(prediction) if isinstance(prediction, tuple) else [prediction]


def paired_iou(a, b):
    """IoU of a[i] with b[i]; a box with negative sides (a wild prediction) has no area."""
    w = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    h = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = w * h

    def area(x):
        return np.clip(x[:, 2] - x[:, 0], 0, None) * np.clip(x[:, 3] - x[:, 1], 0, None)

    return inter / (area(a) + area(b) - inter)


# ---------------------------------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_localizer_gradients_match_centred_differences_of_the_total_loss(seed):
    rng = np.random.default_rng(seed)
    model = off_the_kinks(tiny_localizer(dtype=np.float64, rng=seed, lam=2.0), rng)
    batch = (rng.integers(0, 256, (4, 8, 8, 3), dtype=np.uint8), np.array([0, 2, 1, 2]), random_boxes(rng, 4, 8, 8))

    errors, analytic = gradient_errors(model, lambda: model.training_step(batch)["total"], rng)

    assert max(errors.values()) < TOLERANCE, f"errors {errors} (tolerance {TOLERANCE})"
    assert np.linalg.norm(analytic["backbone.0.weight"]) > 1e-3  # the fork of the two heads is behind it


@pytest.mark.parametrize("seed", [0, 1])
def test_pose_regressor_gradients_match_centred_differences_of_the_loss(seed):
    rng = np.random.default_rng(seed)
    model = off_the_kinks(tiny_pose(image_size=(8, 12), dtype=np.float64, rng=seed), rng)
    batch = (rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8), rng.uniform(0, [12, 8], (3, 3, 2)))

    errors, analytic = gradient_errors(model, lambda: model.training_step(batch)["total"], rng)

    assert max(errors.values()) < TOLERANCE, f"errors {errors} (tolerance {TOLERANCE})"
    assert np.linalg.norm(analytic["backbone.0.weight"]) > 1e-3


# ---------------------------------------------------------------------------------------------------
# what the losses compare: boxes and joints as fractions of the image side
# ---------------------------------------------------------------------------------------------------


def test_localizer_loss_is_cross_entropy_plus_lam_times_l2_on_the_box_over_the_image_side(rng):
    model = tiny_localizer(image_size=(8, 16), lam=3.0)  # H != W: x and y scales cannot be swapped
    images = rng.integers(0, 256, (4, 8, 16, 3), dtype=np.uint8)
    labels, boxes = np.array([0, 1, 2, 1]), random_boxes(rng, 4, 8, 16)
    scores, pred = (np.asarray(o, np.float64) for o in model.forward(images_to_input(images)))

    parts = model.training_step((images, labels, boxes))

    log_probs = scores - scores.max(axis=1, keepdims=True)
    log_probs -= np.log(np.exp(log_probs).sum(axis=1, keepdims=True))
    expected_cls = -log_probs[np.arange(4), labels].mean()
    expected_box = ((pred - boxes / [16, 8, 16, 8]) ** 2).sum(axis=1).mean()
    assert set(parts) == {"total", "cls", "box"}
    assert parts["cls"] == pytest.approx(expected_cls, rel=1e-5)
    assert parts["box"] == pytest.approx(expected_box, rel=1e-5)
    assert parts["total"] == pytest.approx(expected_cls + 3.0 * expected_box, rel=1e-5)


def test_pose_loss_is_l2_on_the_joints_over_the_image_side(rng):
    model = tiny_pose(image_size=(8, 16), n_joints=4)
    images = rng.integers(0, 256, (3, 8, 16, 3), dtype=np.uint8)
    joints = rng.uniform(0, [16, 8], (3, 4, 2))
    pred = np.asarray(model.forward(images_to_input(images)), np.float64)  # (3, 8): x, y per joint

    parts = model.training_step((images, joints))

    expected = ((pred - (joints / [16, 8]).reshape(3, 8)) ** 2).sum(axis=1).mean()
    assert set(parts) == {"total"}
    assert parts["total"] == pytest.approx(expected, rel=1e-5)


# ---------------------------------------------------------------------------------------------------
# forward and predict
# ---------------------------------------------------------------------------------------------------


def test_localizer_forward_gives_k_scores_and_one_box_per_image(rng):
    model = tiny_localizer(image_size=(8, 12))
    scores, boxes = model.forward(images_to_input(rng.integers(0, 256, (5, 8, 12, 3), dtype=np.uint8)))
    assert scores.shape == (5, 3) and boxes.shape == (5, 4)
    assert scores.dtype == np.float32 and boxes.dtype == np.float32


def test_localizer_predict_gives_the_best_class_its_probability_and_the_box_in_pixels(rng):
    model = tiny_localizer(image_size=(8, 16))
    images = rng.integers(0, 256, (6, 8, 16, 3), dtype=np.uint8)
    scores, pred = (np.asarray(o, np.float64) for o in model.forward(images_to_input(images)))
    probs = np.exp(scores - scores.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)

    labels, confidences, boxes = model.predict(images)

    assert labels.dtype == np.int64 and confidences.dtype == np.float64 and boxes.dtype == np.float64
    np.testing.assert_array_equal(labels, probs.argmax(axis=1))
    np.testing.assert_allclose(confidences, probs.max(axis=1), rtol=1e-6)
    corners = (pred * [16, 8, 16, 8]).reshape(-1, 2, 2)  # the box the two corners span, clipped to the image
    spanned = np.concatenate([corners.min(axis=1), corners.max(axis=1)], axis=1)
    np.testing.assert_allclose(boxes, np.clip(spanned, 0, [16, 8, 16, 8]), rtol=1e-6)


def test_predict_takes_one_image_as_a_batch_of_one(rng):
    images = rng.integers(0, 256, (2, 8, 8, 3), dtype=np.uint8)
    localizer, pose = tiny_localizer(), tiny_pose()
    for one, batch in zip(localizer.predict(images[1]), localizer.predict(images)):
        assert len(one) == 1
        np.testing.assert_allclose(one[0], batch[1], rtol=1e-6)
    joints = pose.predict(images[0])
    assert joints.shape == (1, 3, 2)
    np.testing.assert_allclose(joints[0], pose.predict(images)[0], rtol=1e-6)


def test_pose_predict_gives_joints_in_pixels(rng):
    model = tiny_pose(image_size=(8, 16), n_joints=5)
    images = rng.integers(0, 256, (2, 8, 16, 3), dtype=np.uint8)
    pred = np.asarray(model.forward(images_to_input(images)), np.float64)
    joints = model.predict(images)
    assert joints.shape == (2, 5, 2) and joints.dtype == np.float64
    np.testing.assert_allclose(joints, pred.reshape(2, 5, 2) * [16, 8], rtol=1e-6)


@pytest.mark.parametrize("make", [tiny_localizer, tiny_pose], ids=["localizer", "pose"])
def test_predict_uses_no_dropout_and_leaves_the_mode_as_it_was(make, rng):
    model = make(dropout=0.5)
    images = rng.integers(0, 256, (3, 8, 8, 3), dtype=np.uint8)
    first, second = model.predict(images), model.predict(images)
    for a, b in zip(as_arrays(first), as_arrays(second)):
        np.testing.assert_array_equal(a, b)
    assert model.training and model.head[-1].training
    model.eval()
    model.predict(images)
    assert not model.training and not model.head[-1].training


@pytest.mark.parametrize("make", [tiny_localizer, tiny_pose], ids=["localizer", "pose"])
@pytest.mark.parametrize(
    "images",
    [np.zeros((2, 8, 12, 3), np.uint8), np.zeros((2, 8, 8, 3), np.float32), np.zeros((2, 8, 8), np.uint8), np.zeros((8, 8, 4), np.uint8)],
    ids=["wrong-size", "float", "grey", "rgba"],
)
def test_predict_and_training_step_reject_images_of_another_size_or_kind(make, images):
    model = make()
    with pytest.raises(InvalidArgumentError, match="images"):
        model.predict(images)
    n = len(images) if images.ndim == 4 else 1
    if make is tiny_localizer:
        batch = (images, np.zeros(n, np.int64), np.tile([[0.0, 0.0, 4.0, 4.0]], (n, 1)))
    else:
        batch = (images, np.zeros((n, 3, 2)))
    with pytest.raises(InvalidArgumentError, match="images"):
        model.training_step(batch)


@pytest.mark.parametrize("shape", [(2, 4, 2), (2, 3, 3), (3, 3, 2), (2, 6)], ids=["joints", "coordinates", "images", "flat"])
def test_pose_training_step_rejects_joints_of_another_shape(shape):
    with pytest.raises(InvalidArgumentError, match="joints"):
        tiny_pose().training_step((np.zeros((2, 8, 8, 3), np.uint8), np.zeros(shape)))


@pytest.mark.parametrize(
    "make, batch, match",
    [
        (tiny_localizer, (np.zeros((2, 8, 8, 3), np.uint8), [0, 1], np.zeros((2, 3))), r"boxes must be \(2, 4\), got \(2, 3\)"),
        (tiny_localizer, (np.zeros((2, 8, 8, 3), np.uint8), [0, 1], np.zeros((3, 4))), r"boxes must be \(2, 4\), got \(3, 4\)"),
        (tiny_localizer, (np.zeros((2, 8, 8, 3), np.uint8), [0, 1], [["a"] * 4] * 2), "boxes must hold numbers"),
        (tiny_localizer, (np.zeros((2, 8, 8, 3), np.uint8), [0, 1]), r"batch must be \(images, labels, boxes\), got 2 items"),
        (tiny_localizer, np.zeros((2, 8, 8, 3), np.uint8), r"batch must be \(images, labels, boxes\), got ndarray"),
        (tiny_localizer, (np.zeros((0, 8, 8, 3), np.uint8), [], np.zeros((0, 4))), "at least one image"),
        (tiny_pose, (np.zeros((0, 8, 8, 3), np.uint8), np.zeros((0, 3, 2))), "at least one image"),
        (tiny_pose, (np.zeros((2, 8, 8, 3), np.uint8),), r"batch must be \(images, joints\), got 1 item"),
    ],
    ids=["box-columns", "box-rows", "text-boxes", "no-boxes", "images-alone", "no-images", "pose-no-images", "pose-no-joints"],
)
def test_training_step_names_what_is_wrong_with_the_batch(make, batch, match):
    """(These were NumPy's reshape and unpacking errors.)"""
    with pytest.raises(InvalidArgumentError, match=match):
        make().training_step(batch)


@pytest.mark.parametrize(
    "make, image_size",
    [
        (tiny_localizer, (6, 8)), (tiny_localizer, (8, 10)), (tiny_pose, (0, 8)), (tiny_pose, (8,)), (tiny_pose, 8),
        (tiny_localizer, (8.5, 8)), (tiny_pose, (8, 8.9)), (tiny_localizer, ("8", 8)),
    ],
    ids=["height-not-multiple", "width-not-multiple", "zero", "one-side", "int", "float-height", "float-width", "text"],
)
def test_image_size_must_be_a_pair_of_multiples_of_twice_the_stride(make, image_size):
    with pytest.raises(InvalidArgumentError, match="image_size"):
        make(image_size=image_size)


def test_image_size_follows_the_backbone_depth():
    assert Localizer(SHAPE_CLASSES, image_size=(16, 24), channels=(2, 3, 4), hidden=5).image_size == (16, 24)
    with pytest.raises(InvalidArgumentError, match="multiples of 8"):
        Localizer(SHAPE_CLASSES, image_size=(12, 16), channels=(2, 3, 4), hidden=5)


# ---------------------------------------------------------------------------------------------------
# plumbing and saving
# ---------------------------------------------------------------------------------------------------


def test_parameters_are_named_after_the_children():
    assert [name for name, _, _ in tiny_localizer().named_parameters()] == [
        "backbone.0.weight", "backbone.0.bias", "backbone.3.weight", "backbone.3.bias",
        "head.2.weight", "head.2.bias", "cls_score.weight", "cls_score.bias", "box.weight", "box.bias",
    ]  # fmt: skip
    assert [name for name, _, _ in tiny_pose().named_parameters()][-2:] == ["joints.weight", "joints.bias"]
    assert tiny_pose(n_joints=14).joints.params["weight"].shape == (28, 5)


@pytest.mark.parametrize("make", [tiny_localizer, tiny_pose], ids=["localizer", "pose"])
def test_train_eval_and_astype_reach_every_child(make, rng):
    model = make(dropout=0.5)
    assert model.children() == [getattr(model, name) for name in type(model).CHILDREN]
    dropout = model.head[-1]
    assert isinstance(dropout, nn.Dropout)
    assert not model.eval().training and not dropout.training
    assert model.train().training and dropout.training
    model.astype(np.float64)
    assert model.dtype == np.float64
    assert all(layer.params[key].dtype == np.float64 for _, layer, key in model.named_parameters())
    out = model.predict(rng.integers(0, 256, (1, 8, 8, 3), dtype=np.uint8))
    assert all(np.isfinite(np.asarray(o, np.float64)).all() for o in as_arrays(out))


@pytest.mark.parametrize("make", [tiny_localizer, tiny_pose], ids=["localizer", "pose"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_gives_the_same_model(make, dtype, tmp_path, rng):
    model = make(image_size=(8, 12), dtype=dtype, rng=5, dropout=0.25)
    path = tmp_path / "model.npz"
    nn.save(path, model)
    loaded = nn.load(path)

    assert type(loaded) is type(model) and loaded.config() == model.config() and loaded.dtype == dtype
    ours = {name: layer.params[key] for name, layer, key in loaded.named_parameters()}
    theirs = {name: layer.params[key] for name, layer, key in model.named_parameters()}
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].dtype == dtype
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    images = rng.integers(0, 256, (3, 8, 12, 3), dtype=np.uint8)
    for a, b in zip(as_arrays(loaded.predict(images)), as_arrays(model.predict(images))):
        np.testing.assert_array_equal(a, b)


def test_localizer_config_round_trips_its_settings():
    model = Localizer(("a", "b"), image_size=(8, 12), channels=(2, 3), hidden=7, dropout=0.3, lam=4.0)
    assert model.config() == {
        "classes": ["a", "b"], "image_size": [8, 12], "channels": [2, 3], "hidden": 7, "dropout": 0.3, "lam": 4.0,
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_localizer_learns_to_classify_and_locate_one_shape(seed):
    """Chance is 1/3 of the classes, and always answering the training set's mean box reaches an IoU of
    about 0.2 on these 16 x 16 images (after 800 steps the model gets ~0.8 and ~0.5 over seeds)."""
    images, labels, boxes = single_object_dataset(2048, image_size=(16, 16), size=(4, 9), seed=seed)
    test_images, test_labels, test_boxes = single_object_dataset(100, image_size=(16, 16), size=(4, 9), seed=1000 + seed)
    model = Localizer(SHAPE_CLASSES, image_size=(16, 16), channels=(8, 16), hidden=64, lam=3.0, rng=seed)
    optimizer = nn.Adam(model, lr=3e-3)
    batches = array_batches((images, labels, boxes), batch_size=32, seed=seed)
    for step in range(800):
        model.training_step(batches(step))
        optimizer.step()

    predicted_labels, _, predicted_boxes = model.predict(test_images)

    accuracy = float((predicted_labels == test_labels).mean())
    iou = float(paired_iou(predicted_boxes, test_boxes.astype(np.float64)).mean())
    mean_box_iou = float(paired_iou(np.tile(boxes.mean(axis=0), (100, 1)), test_boxes.astype(np.float64)).mean())
    assert accuracy > 0.55, f"accuracy {accuracy:.2f} (chance 0.33)"
    assert iou > 0.38 and iou > mean_box_iou + 0.15, f"mean IoU {iou:.2f} (the mean box: {mean_box_iou:.2f})"


@pytest.mark.parametrize("seed", [0, 1])
def test_pose_regressor_loss_drops_tenfold_in_fifty_steps(seed):
    images, joints = stick_figures(512, image_size=(16, 16), seed=seed)
    model = PoseRegressor(image_size=(16, 16), channels=(8, 16), hidden=64, rng=seed)
    optimizer = nn.Adam(model, lr=3e-3)
    batches = array_batches((images, joints), batch_size=32, seed=seed)
    losses = []
    for step in range(50):
        losses.append(model.training_step(batches(step))["total"])
        optimizer.step()
    first, last = np.mean(losses[:3]), np.mean(losses[-5:])
    assert last < first / 10, f"loss {first:.3f} -> {last:.3f}"


# ---------------------------------------------------------------------------------------------------
# percentage of detected joints
# ---------------------------------------------------------------------------------------------------


def test_pdj_counts_joints_within_the_fraction_of_the_torso_diameter_per_joint():
    true = np.array([[[0, 0], [0, 10], [5, 5]], [[0, 0], [0, 20], [5, 5]]], np.float64)  # torso 10, then 20
    pred = true + np.array(
        [
            [[1, 1], [2, 0], [3, 0]],  # limit 2: 1.41 in, 2.0 in (exactly at the limit), 3 out
            [[3, 0], [0, 4.5], [0, 3.9]],  # limit 4: in, out, in
        ]
    )
    np.testing.assert_allclose(percent_detected_joints(pred, true, fraction=0.2, torso=(0, 1)), [1.0, 0.5, 0.5])
    np.testing.assert_allclose(percent_detected_joints(pred, true, fraction=0.05, torso=(0, 1)), [0.0, 0.0, 0.0])


def test_pdj_default_torso_is_left_shoulder_to_right_hip():
    assert POSE_JOINTS[9] == "left_shoulder" and POSE_JOINTS[2] == "right_hip"
    true = np.zeros((1, 14, 2))
    true[0, 9] = [0, 0]
    true[0, 2] = [30, 40]  # diameter 50: the limit at fraction 0.2 is 10
    pred = true.copy()
    pred[0, 0] += [6, 8]  # 10 away: detected
    pred[0, 5] += [0, 10.5]  # missed
    expected = np.ones(14)
    expected[5] = 0
    np.testing.assert_array_equal(percent_detected_joints(pred, true), expected)


@pytest.mark.parametrize(
    "pred_shape, true_shape",
    [((2, 14, 2), (2, 14, 3)), ((2, 14, 3), (2, 14, 3)), ((0, 14, 2), (0, 14, 2)), ((14, 2), (14, 2)), ((1, 14, 2), (2, 14, 2))],
    ids=["shapes-differ", "three-coordinates", "no-images", "no-batch-axis", "counts-differ"],
)
def test_pdj_rejects_arrays_that_are_not_n_by_j_by_2(pred_shape, true_shape):
    with pytest.raises(InvalidArgumentError):
        percent_detected_joints(np.zeros(pred_shape), np.zeros(true_shape))


def test_pdj_rejects_a_torso_joint_beyond_the_joints():
    with pytest.raises(InvalidArgumentError, match="torso"):
        percent_detected_joints(np.zeros((1, 3, 2)), np.zeros((1, 3, 2)))  # the default torso (9, 2) needs J >= 10


def test_localizer_predicts_the_box_its_corners_span_inside_the_image():
    """The box output is unconstrained: corners regressed in the wrong order, or beyond the image,
    still give a valid xyxy box in the image."""
    model = Localizer(("a", "b"), image_size=(16, 16), channels=(2, 3), hidden=4, rng=0)
    model.box.params["weight"][:] = 0
    model.box.params["bias"][:] = np.array([0.75, 1.5, 0.25, -0.25], dtype=np.float32)  # x2 < x1, y beyond both edges
    _, _, boxes = model.predict(np.zeros((2, 16, 16, 3), np.uint8))
    np.testing.assert_array_equal(boxes, [[4.0, 0.0, 12.0, 16.0]] * 2)
