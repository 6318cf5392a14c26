"""Specification of the detectors (`scratchdet.models`: FastRCNN, RCNN, warp_regions, Detections,
detections_from_scores) and of the model plumbing they share (`base`: named sub-networks, modes,
dtypes, the fork of two heads through `F.add`, saving and loading through `nn.save` / `nn.load`)."""

import dataclasses
import json

import numpy as np
import pytest

from scratchdet import nn
from scratchdet.nn.gradcheck import gradcheck_model
from scratchdet.data.shapes import shapes_dataset
from scratchdet.errors import InvalidArgumentError
from scratchdet.models import RCNN, Detections, FastRCNN, detections_from_scores, images_to_input, warp_regions
from scratchdet.models.fast_rcnn import network_input
from scratchdet.nn import functional as F
from scratchdet.proposals import selective_search
from scratchdet.train import RoIBatch, dataset_proposals, roi_batches

CLASSES = ("rectangle", "ellipse", "triangle")
TOLERANCE = 1e-6
# A hidden unit that ReLU switches off for every sample leaves gradients of ~1e-6 whose centred
# differences carry ~1e-10 of rounding: relative to the gradient's size that reads as 1e-4. Errors are
# measured relative to max(|analytic| + |numeric|, GRADIENT_FLOOR), far below the gradients that matter.
GRADIENT_FLOOR = 1e-3
UNIT_WEIGHTS = (1.0, 1.0, 1.0, 1.0)


def tiny(kind, *, dtype=np.float32, rng=0, dropout=0.0, **kwargs):
    """A FastRCNN or RCNN small enough for gradient checks: two conv stages (stride 2), 5 hidden units."""
    if kind is FastRCNN:
        kwargs.setdefault("roi_size", 2)
    else:
        kwargs.setdefault("crop_size", 8)
        kwargs.setdefault("context", 1)
    return kind(CLASSES, channels=(2, 3), hidden=5, dropout=dropout, rng=rng, dtype=dtype, **kwargs)


def toy_batch(rng, size=16):
    """An RoIBatch of 2 random images and 5 RoIs (fractional corners, one reaching past the border),
    every class present, targets random on foreground rows and zero on the background one."""
    images = rng.integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    rois = np.array(
        [
            [0, 1.0, 2.0, 12.5, 14.0], [0, 4.0, 4.0, 15.0, 10.0],
            [1, 0.0, 0.0, 16.0, 16.0], [1, 3.2, 5.0, 9.0, 13.7], [1, 9.0, 8.0, 19.0, 18.0],
        ],
        dtype=np.float32,
    )  # fmt: skip
    labels = np.array([1, 0, 2, 3, 1], dtype=np.int64)
    targets = rng.normal(0.0, 0.5, (5, 4)).astype(np.float32)
    targets[labels == 0] = 0.0
    return RoIBatch(images, rois, labels, targets)


def gradient_errors(model, total_loss, rng):
    """`nn.gradcheck_model` with the floor these tests use (see GRADIENT_FLOOR)."""
    return gradcheck_model(model, total_loss, rng, floor=GRADIENT_FLOOR)


# ---------------------------------------------------------------------------------------------------
# gradients: training_step's backward against centred differences of its loss
# ---------------------------------------------------------------------------------------------------


def off_the_kinks(model, rng):
    """The model with small random biases instead of zeros. Where a convolution sees only zeros (R-CNN's
    context beyond the image, the zero padding around it), its output is the bias: with a zero bias
    that sits exactly on ReLU's kink, where a centred difference averages the two one-sided slopes."""
    for name, layer, key in model.named_parameters():
        if key == "bias":
            layer.params[key] = rng.normal(0.0, 0.1, layer.params[key].shape)
    return model



@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize("seed", [0, 1])
def test_training_step_gradients_match_centred_differences_of_the_total_loss(kind, seed):
    rng = np.random.default_rng(seed)
    model = off_the_kinks(tiny(kind, dtype=np.float64, rng=seed, lam=0.7, beta=0.5), rng)
    batch = toy_batch(rng)

    errors, analytic = gradient_errors(model, lambda: model.training_step(batch)["total"], rng)

    assert set(errors) == {name for name, _, _ in model.named_parameters()}
    assert max(errors.values()) < TOLERANCE, f"errors {errors} (tolerance {TOLERANCE})"
    # the first convolution sits behind RoI pooling / warping and the fork of the two heads: its
    # gradient must really be there for the check above to mean something
    assert np.linalg.norm(analytic["backbone.0.weight"]) > 1e-3


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_training_step_returns_total_as_cls_plus_lam_times_loc(kind, rng):
    model = tiny(kind, lam=2.5)
    parts = model.training_step(toy_batch(rng))
    assert set(parts) == {"total", "cls", "loc"}
    assert parts["cls"] > 0 and parts["loc"] > 0
    assert parts["total"] == pytest.approx(parts["cls"] + 2.5 * parts["loc"], rel=1e-6)


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_box_gradient_reaches_the_backbone_through_the_fork(kind, rng):
    """With only foreground RoIs, weighting the loc term changes the backbone's gradient: the box
    head's input gradient is not dropped at the fork (F.add sums it with the classifier's)."""
    batch = toy_batch(rng)._replace(labels=np.array([1, 2, 3, 1, 2]))
    grads = []
    for lam in (0.0, 10.0):
        model = tiny(kind, dtype=np.float64, rng=3, lam=lam)
        model.training_step(batch)
        grads.append(np.array(model.backbone[0].grads["weight"]))
    assert not np.allclose(grads[0], grads[1], rtol=1e-3, atol=0)


# ---------------------------------------------------------------------------------------------------
# F.add, the fork's sum
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_add_is_the_elementwise_sum_in_a_new_array(dtype, rng):
    a = rng.standard_normal((3, 4)).astype(dtype)
    b = rng.standard_normal((3, 4)).astype(dtype)
    a_before, b_before = a.copy(), b.copy()
    out = F.add(a, b)
    assert out.dtype == dtype and out.shape == (3, 4)
    np.testing.assert_array_equal(out, a_before + b_before)
    assert not np.shares_memory(out, a) and not np.shares_memory(out, b)
    np.testing.assert_array_equal(a, a_before)
    np.testing.assert_array_equal(b, b_before)


@pytest.mark.parametrize(
    "a, b, match",
    [
        (np.zeros((2, 3), np.float32), np.zeros((2, 3), np.float64), "dtype"),
        (np.zeros((2, 3)), np.zeros((3, 2)), "shape"),
        (np.zeros((2, 3)), np.zeros(6), "shape"),
        (np.zeros((2, 3), np.int64), np.zeros((2, 3), np.int64), "float32 or float64"),
        ([[1.0, 2.0]], np.zeros((1, 2)), "NumPy array"),
    ],
    ids=["mixed-dtypes", "transposed-shape", "flat-shape", "integers", "list"],
)
def test_add_rejects_mismatched_or_non_float_arrays(a, b, match):
    with pytest.raises(InvalidArgumentError, match=match):
        F.add(a, b)


# ---------------------------------------------------------------------------------------------------
# Fast R-CNN's forward: one backbone pass, RoIs read their own image
# ---------------------------------------------------------------------------------------------------


def count_calls(monkeypatch, layer):
    """Wrap `layer.forward` to count its calls; returns the counter (a one-item list)."""
    calls = [0]
    original = layer.forward

    def counted(*args):
        calls[0] += 1
        return original(*args)

    monkeypatch.setattr(layer, "forward", counted)
    return calls


@pytest.mark.parametrize("n_rois", [1, 7])
def test_fast_rcnn_forward_shapes_and_one_backbone_pass_whatever_the_number_of_rois(n_rois, monkeypatch, rng):
    model = tiny(FastRCNN)
    calls = count_calls(monkeypatch, model.backbone)
    x = images_to_input(rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8))
    corners = rng.uniform(0, 8, (n_rois, 2))
    rois = np.concatenate([rng.integers(0, 2, (n_rois, 1)), corners, corners + rng.uniform(2, 8, (n_rois, 2))], axis=1)

    scores, deltas = model.forward(x, rois)

    assert scores.shape == (n_rois, len(CLASSES) + 1) and deltas.shape == (n_rois, 4 * (len(CLASSES) + 1))
    assert scores.dtype == np.float32 and deltas.dtype == np.float32
    assert calls[0] == 1


def test_fast_rcnn_predict_runs_the_backbone_once_for_all_proposals(monkeypatch, rng):
    model = tiny(FastRCNN)
    calls = count_calls(monkeypatch, model.backbone)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    corners = rng.uniform(0, 8, (30, 2))
    model.predict(image, np.concatenate([corners, corners + 4], axis=1))
    assert calls[0] == 1


def test_fast_rcnn_rois_read_only_their_own_image(rng):
    model = tiny(FastRCNN)
    images = rng.integers(0, 256, (2, 16, 16, 3), dtype=np.uint8)
    rois = np.array([[0, 0, 0, 16, 16], [1, 0, 0, 16, 16], [0, 2, 3, 10, 12], [1, 2, 3, 10, 12]], np.float64)
    before = model.forward(images_to_input(images), rois)
    changed = images.copy()
    changed[1] = 255 - changed[1]
    after = model.forward(images_to_input(changed), rois)
    for ours, theirs in zip(before, after):
        np.testing.assert_array_equal(ours[[0, 2]], theirs[[0, 2]])  # image 0's RoIs: untouched
        assert not np.allclose(ours[[1, 3]], theirs[[1, 3]])  # image 1's RoIs: they see the change


def test_fast_rcnn_rois_are_in_image_pixels_scaled_by_one_over_the_stride(rng):
    """RoI (0, 0, 8, 8) of a 16 x 16 image is feature cells 0..4 at stride 2; what those cells see
    (two 3 x 3 convolutions around a 2 x 2 pooling) ends at pixel 12, so the 3-pixel bottom-right corner
    cannot reach it, while it does reach RoI (8, 8, 16, 16)."""
    model = tiny(FastRCNN)
    image = rng.integers(0, 256, (1, 16, 16, 3), dtype=np.uint8)
    changed = image.copy()
    changed[0, 13:, 13:] = 255 - changed[0, 13:, 13:]
    rois = np.array([[0, 0, 0, 8, 8], [0, 8, 8, 16, 16]], np.float64)
    before, after = model.forward(images_to_input(image), rois)[0], model.forward(images_to_input(changed), rois)[0]
    np.testing.assert_array_equal(before[0], after[0])
    assert not np.allclose(before[1], after[1])


def test_fast_rcnn_input_is_padded_with_the_mean_pixel_to_a_multiple_of_the_stride(rng):
    images = rng.integers(0, 256, (2, 5, 9, 3), dtype=np.uint8)
    x = network_input(images, 4, np.float64)
    assert x.shape == (2, 3, 8, 12) and x.dtype == np.float64
    np.testing.assert_array_equal(x[:, :, :5, :9], images_to_input(images, np.float64))
    assert np.all(x[:, :, 5:, :] == 0) and np.all(x[:, :, :, 9:] == 0)
    np.testing.assert_array_equal(network_input(images[:, :4, :8], 4), images_to_input(images[:, :4, :8]))


@pytest.mark.parametrize("side", [1, 3], ids=["one-pixel", "below-the-stride"])
def test_fast_rcnn_detects_in_an_image_smaller_than_the_stride(side, rng):
    """Stride 4: a 3 x 3 image used to reach the second 2x2 pooling as a 1 x 1 map and fail there."""
    model = FastRCNN(CLASSES, channels=(2, 3, 4), roi_size=2, hidden=5, dropout=0.0)
    image = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
    dets = model.predict(image, [[0, 0, side, side]], score_threshold=0.0)
    assert len(dets) > 0 and np.all(dets.boxes >= 0) and np.all(dets.boxes <= side)
    batch = RoIBatch(image[None], np.array([[0, 0, 0, side, side]], np.float32), np.array([1]), np.zeros((1, 4), np.float32))
    assert np.isfinite(model.training_step(batch)["total"])


def test_fast_rcnn_rois_in_the_last_columns_see_those_pixels(rng):
    """An 18-pixel-wide image at stride 4: the poolings (18 -> 9 -> 4) used to leave columns 16 and 17
    without a feature cell, so an RoI over them pooled nothing and scored the same on any image."""
    model = FastRCNN(CLASSES, channels=(2, 3, 4), roi_size=2, hidden=5, dropout=0.0)
    image = rng.integers(0, 256, (16, 18, 3), dtype=np.uint8)
    changed = image.copy()
    changed[:, 16:] = 255 - changed[:, 16:]
    proposals = [[16, 0, 18, 16]]
    before, after = model.score_proposals(image, proposals)[0], model.score_proposals(changed, proposals)[0]
    assert not np.allclose(before, after, rtol=1e-6, atol=0)


def test_fast_rcnn_scores_proposals_in_chunks_of_batch_rois_after_one_backbone_pass(monkeypatch, rng):
    chunked, whole = tiny(FastRCNN, batch_rois=2), tiny(FastRCNN)
    backbone_calls = count_calls(monkeypatch, chunked.backbone)
    pool_calls = count_calls(monkeypatch, chunked.roi_pool)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    corners = rng.uniform(0, 10, (5, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(2, 6, (5, 2))], axis=1)

    probs, deltas = chunked.score_proposals(image, proposals)

    assert backbone_calls[0] == 1 and pool_calls[0] == 3  # 2 + 2 + 1 RoIs
    assert probs.shape == (5, 4) and deltas.shape == (5, 16) and probs.dtype == np.float64
    whole_probs, whole_deltas = whole.score_proposals(image, proposals)
    np.testing.assert_allclose(probs, whole_probs, rtol=1e-5)
    np.testing.assert_allclose(deltas, whole_deltas, rtol=1e-5, atol=1e-7)
    with pytest.raises(InvalidArgumentError, match="batch_rois"):
        tiny(FastRCNN, batch_rois=0)


# ---------------------------------------------------------------------------------------------------
# R-CNN: region warping
# ---------------------------------------------------------------------------------------------------


def test_warp_of_the_whole_image_at_its_own_size_without_context_is_the_network_input_exactly(rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    crops = warp_regions(image, [[0, 0, 8, 8]], 8, context=0)
    assert crops.shape == (1, 3, 8, 8) and crops.dtype == np.float32
    np.testing.assert_array_equal(crops[0], images_to_input(image)[0])


def test_warp_of_an_integer_aligned_box_at_scale_one_is_the_crop(rng):
    image = rng.integers(0, 256, (8, 10, 3), dtype=np.uint8)  # H != W: rows and columns cannot be swapped
    crops = warp_regions(image, [[2, 1, 6, 5], [6, 3, 10, 7]], 4, context=0)
    pixels = images_to_input(image)[0]
    np.testing.assert_array_equal(crops[0], pixels[:, 1:5, 2:6])
    np.testing.assert_array_equal(crops[1], pixels[:, 3:7, 6:10])


def test_warp_context_shows_the_surrounding_image_and_zero_beyond_its_border(rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    pixels = images_to_input(image)[0]
    # 2 warped pixels of context around a 4 x 4 box at scale 1: the whole 8 x 8 image
    np.testing.assert_array_equal(warp_regions(image, [[2, 2, 6, 6]], 8, context=2)[0], pixels)
    # the whole image with 2 pixels of context: a frame of the mean pixel (0 after scaling) around it
    framed = warp_regions(image, [[0, 0, 8, 8]], 12, context=2)[0]
    np.testing.assert_array_equal(framed[:, 2:10, 2:10], pixels)
    inside = np.zeros((12, 12), bool)
    inside[2:10, 2:10] = True
    assert np.all(framed[:, ~inside] == 0)
    # a box in the bottom-right corner: context from the image above and left, zeros below and right
    corner = warp_regions(image, [[4, 4, 8, 8]], 8, context=2)[0]
    np.testing.assert_array_equal(corner[:, :6, :6], pixels[:, 2:8, 2:8])
    assert np.all(corner[:, 6:, :] == 0) and np.all(corner[:, :, 6:] == 0)


def test_warp_scales_each_axis_on_its_own(rng):
    """A 2:1 box warped to a square averages pixel pairs along its long side only (bilinear at the
    midpoint between two pixel centres), and a 1:2 box along the other axis."""
    image = rng.integers(0, 256, (6, 10, 3), dtype=np.uint8)
    pixels = images_to_input(image).astype(np.float64)[0]
    wide = warp_regions(image, [[2, 1, 10, 5]], 4, context=0)[0]
    expected_wide = 0.5 * (pixels[:, 1:5, 2:10:2] + pixels[:, 1:5, 3:10:2])
    np.testing.assert_allclose(wide, expected_wide, rtol=0, atol=1e-5)
    tall = warp_regions(image, [[5, 0, 8, 6]], 3, context=0)[0]
    expected_tall = 0.5 * (pixels[:, 0:6:2, 5:8] + pixels[:, 1:6:2, 5:8])
    np.testing.assert_allclose(tall, expected_tall, rtol=0, atol=1e-5)


@pytest.mark.parametrize("n_boxes", [0, 1, 5])
def test_warp_output_is_float32_r_by_3_by_s_by_s(n_boxes, rng):
    image = rng.integers(0, 256, (12, 9, 3), dtype=np.uint8)
    boxes = np.tile([[1.0, 2.0, 7.5, 9.0]], (n_boxes, 1))
    crops = warp_regions(image, boxes, 6, context=1)
    assert crops.shape == (n_boxes, 3, 6, 6) and crops.dtype == np.float32 and crops.flags.c_contiguous


@pytest.mark.parametrize(
    "size, context, match",
    [(0, 0, "size"), (8.0, 0, "size"), (-4, 0, "size"), (8, -1, "context"), (8, 4, "context"), (9, 5, "context")],
    ids=["size-0", "size-float", "size-negative", "context-negative", "context-half-of-size", "context-over-half"],
)
def test_warp_rejects_bad_size_or_context(size, context, match, rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match=match):
        warp_regions(image, [[0, 0, 8, 8]], size, context)


def test_warp_accepts_the_largest_context_below_half_the_size(rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    assert warp_regions(image, [[0, 0, 8, 8]], 9, 4).shape == (1, 3, 9, 9)


@pytest.mark.parametrize("context", [1.5, True], ids=["float", "bool"])
def test_warp_rejects_a_context_that_is_not_an_int(context, rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match="context"):
        warp_regions(image, [[0, 0, 8, 8]], 8, context)


@pytest.mark.parametrize(
    "box, match",
    [([np.nan, 0, 4, 4], "not finite"), ([0, 0, np.inf, 4], "not finite"), ([6, 6, 2, 2], "width"), ([0, 0, 4], "shape")],
    ids=["nan", "inf", "inverted", "three-numbers"],
)
def test_warp_rejects_boxes_that_are_not_finite_xyxy(box, match, rng):
    """A NaN corner used to become an index of -2**63 (an IndexError), and an inverted box a mirrored crop."""
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match=match):
        warp_regions(image, [box], 8, context=1)


def test_warp_takes_degenerate_boxes_and_boxes_beyond_the_image(rng):
    image = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    crops = warp_regions(image, [[3, 3, 3, 7], [20, 20, 30, 30], [-9, -9, -1, -1]], 4, context=0)
    np.testing.assert_array_equal(crops[0], np.repeat(crops[0][:, :, :1], 4, axis=2))  # one column, repeated
    assert np.all(crops[1:] == 0)  # wholly outside: the mean pixel


def test_warp_rejects_an_image_that_is_not_uint8_rgb():
    with pytest.raises(InvalidArgumentError, match="uint8"):
        warp_regions(np.zeros((8, 8, 3), np.float32), [[0, 0, 8, 8]], 8)
    with pytest.raises(InvalidArgumentError, match="uint8"):
        warp_regions(np.zeros((8, 8), np.uint8), [[0, 0, 8, 8]], 8)


@pytest.mark.parametrize("channels, bad, good", [((2, 3), 6, 8), ((2, 3, 4), 12, 16)], ids=["stride-2", "stride-4"])
def test_rcnn_rejects_a_crop_size_that_is_not_a_multiple_of_twice_the_stride(channels, bad, good):
    with pytest.raises(InvalidArgumentError, match="crop_size"):
        RCNN(CLASSES, channels=channels, crop_size=bad, context=0)
    assert RCNN(CLASSES, channels=channels, crop_size=good, context=0).crop_size == good


def test_rcnn_rejects_a_context_of_half_the_crop_or_more():
    with pytest.raises(InvalidArgumentError, match="context"):
        RCNN(CLASSES, channels=(2, 3), crop_size=8, context=4)


def test_rcnn_warp_takes_each_roi_from_its_own_image_in_roi_order(rng):
    model = tiny(RCNN, crop_size=8, context=1)
    images = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    rois = np.array([[1, 0, 0, 6, 6], [0, 2, 2, 10, 9], [1, 3, 1, 12, 12]], np.float32)
    crops = model.warp(images, rois)
    np.testing.assert_array_equal(crops[[0, 2]], warp_regions(images[1], rois[[0, 2], 1:], 8, 1))
    np.testing.assert_array_equal(crops[1], warp_regions(images[0], rois[[1], 1:], 8, 1)[0])


@pytest.mark.parametrize("index", [0.5, -1, 2, np.nan], ids=["fraction", "negative", "past-the-batch", "nan"])
def test_rcnn_warp_rejects_a_batch_index_that_names_no_image(index, rng):
    """As Fast R-CNN's RoI pooling does (a fraction once left its crop uninitialised memory, and -1 took
    the last image)."""
    model = tiny(RCNN, crop_size=8, context=1)
    images = rng.integers(0, 256, (2, 12, 12, 3), dtype=np.uint8)
    with pytest.raises(InvalidArgumentError, match=r"rois\[:, 0\] must be integer batch indices in \[0, 2\)|rois must be finite"):
        model.warp(images, [[0, 0, 0, 6, 6], [index, 2, 2, 9, 9]])


def test_rcnn_scores_proposals_in_chunks_of_batch_regions(monkeypatch, rng):
    chunked = tiny(RCNN, batch_regions=2)
    whole = tiny(RCNN, batch_regions=256)
    calls = count_calls(monkeypatch, chunked.backbone)
    image = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    corners = rng.uniform(0, 10, (5, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(2, 6, (5, 2))], axis=1)

    probs, deltas = chunked.score_proposals(image, proposals)

    assert calls[0] == 3  # 2 + 2 + 1 regions
    assert probs.shape == (5, 4) and deltas.shape == (5, 16) and probs.dtype == np.float64
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-12)
    whole_probs, whole_deltas = whole.score_proposals(image, proposals)
    np.testing.assert_allclose(probs, whole_probs, rtol=1e-5)
    np.testing.assert_allclose(deltas, whole_deltas, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------------
# detections_from_scores: Fast R-CNN's test-time post-processing
# ---------------------------------------------------------------------------------------------------


def post_process(proposals, probs, deltas=None, image_shape=(100, 100), **kwargs):
    proposals, probs = np.asarray(proposals, np.float64), np.asarray(probs, np.float64)
    if deltas is None:
        deltas = np.zeros((len(probs), 4 * probs.shape[1]))
    return detections_from_scores(proposals, probs, np.asarray(deltas, np.float64), image_shape, box_weights=UNIT_WEIGHTS, **kwargs)


def test_zero_deltas_give_the_proposals_themselves():
    proposals = [[10, 10, 30, 40], [50, 5, 70, 25]]
    dets = post_process(proposals, [[0.1, 0.9, 0.0], [0.2, 0.0, 0.8]])
    assert dets.boxes.dtype == np.float32 and dets.scores.dtype == np.float32 and dets.labels.dtype == np.int64
    np.testing.assert_array_equal(dets.boxes, np.array(proposals, np.float32))
    np.testing.assert_array_equal(dets.labels, [1, 2])
    np.testing.assert_allclose(dets.scores, [0.9, 0.8], rtol=1e-7)


def test_each_class_decodes_its_own_deltas_with_the_box_weights():
    proposals = np.array([[10.0, 10.0, 30.0, 30.0]])
    deltas = np.zeros((1, 12))
    deltas[0, 4:8] = [10 * 0.1, 0.0, 0.0, 0.0]  # class 1: move right by 0.1 x width (weights (10, 10, 5, 5))
    deltas[0, 8:12] = [0.0, 0.0, 0.0, 5 * np.log(2.0)]  # class 2: twice as tall, same centre
    dets = detections_from_scores(
        proposals, np.array([[0.0, 0.6, 0.4]]), deltas, (100, 100), box_weights=(10.0, 10.0, 5.0, 5.0)
    )
    np.testing.assert_array_equal(dets.labels, [1, 2])
    np.testing.assert_allclose(dets.boxes, [[12, 10, 32, 30], [10, 0, 30, 40]], atol=1e-5)


def test_the_background_column_gives_no_detection_and_its_deltas_are_never_read():
    probs = [[0.97, 0.01, 0.02], [0.5, 0.5, 0.0]]
    deltas = np.zeros((2, 12))
    deltas[:, :4] = 1e6  # the background's "box": would move anything far away if it were read
    dets = post_process([[10, 10, 20, 20], [40, 40, 60, 60]], probs, deltas)
    np.testing.assert_array_equal(dets.labels, [1])
    np.testing.assert_array_equal(dets.boxes, [[40, 40, 60, 60]])
    assert dets.scores[0] == pytest.approx(0.5)


def test_score_threshold_is_strict():
    probs = [[0.75, 0.25, 0.0], [0.7, 0.0, 0.3]]
    dets = post_process([[0, 0, 10, 10], [50, 50, 60, 60]], probs, score_threshold=0.25)
    np.testing.assert_array_equal(dets.labels, [2])  # 0.25 is not above 0.25; 0.3 is


def test_nms_suppresses_overlaps_of_one_class_but_keeps_other_classes():
    # IoU of the two proposals: 100 / 140 = 0.71 > 0.3
    proposals = [[0, 0, 10, 10], [0, 0, 10, 14]]
    probs = [[0.05, 0.9, 0.05], [0.05, 0.8, 0.15]]  # 0.05 is not above the default threshold 0.05
    dets = post_process(proposals, probs)
    np.testing.assert_array_equal(dets.labels, [1, 2])
    np.testing.assert_array_equal(dets.boxes, [[0, 0, 10, 10], [0, 0, 10, 14]])
    np.testing.assert_allclose(dets.scores, [0.9, 0.15], rtol=1e-7)


def test_boxes_are_clipped_to_the_image_and_boxes_left_without_area_are_dropped():
    proposals = [[-5, -5, 10, 10], [20, 2, 40, 30], [50, 50, 60, 60]]  # the last lies wholly outside a 24 x 32 image
    probs = [[0.0, 1.0], [0.0, 0.9], [0.0, 0.8]]
    dets = post_process(proposals, probs, image_shape=(24, 32))
    np.testing.assert_array_equal(dets.boxes, [[0, 0, 10, 10], [20, 2, 32, 24]])


def test_max_detections_keeps_the_best_and_results_are_sorted_by_score(rng):
    proposals = [[20 * i, 0, 20 * i + 10, 10] for i in range(5)]  # no two overlap
    scores = [0.3, 0.9, 0.5, 0.7, 0.1]
    probs = [[1 - s, s] for s in scores]
    dets = post_process(proposals, probs, max_detections=3)
    np.testing.assert_allclose(dets.scores, [0.9, 0.7, 0.5], rtol=1e-7)
    np.testing.assert_array_equal(dets.boxes[:, 0], [20, 60, 40])
    everything = post_process(proposals, probs)
    assert np.all(np.diff(everything.scores) <= 0) and len(everything) == 5


def test_labels_are_one_to_k(rng):
    n_rois, n_classes = 40, 4
    corners = rng.uniform(0, 80, (n_rois, 2))
    proposals = np.concatenate([corners, corners + rng.uniform(5, 20, (n_rois, 2))], axis=1)
    probs = rng.dirichlet(np.ones(n_classes + 1), n_rois)
    dets = post_process(proposals, probs, rng.normal(0, 0.1, (n_rois, 4 * (n_classes + 1))))
    assert len(dets) > 0
    assert dets.labels.min() >= 1 and dets.labels.max() <= n_classes
    assert set(dets.labels.tolist()) == set(range(1, n_classes + 1))  # 40 random rows: every class shows
    assert np.all(dets.boxes[:, :2] >= 0) and np.all(dets.boxes[:, 2:] <= 100)


@pytest.mark.parametrize("n_rois, n_classes1", [(0, 4), (3, 1)], ids=["no-proposals", "background-only"])
def test_no_proposals_or_no_object_class_give_empty_detections(n_rois, n_classes1):
    dets = post_process(np.zeros((n_rois, 4)), np.full((n_rois, n_classes1), 1.0 / n_classes1))
    assert len(dets) == 0
    assert dets.boxes.shape == (0, 4) and dets.boxes.dtype == np.float32
    assert dets.scores.shape == (0,) and dets.scores.dtype == np.float32
    assert dets.labels.shape == (0,) and dets.labels.dtype == np.int64


def test_detections_from_scores_rejects_mismatched_shapes():
    with pytest.raises(InvalidArgumentError, match="deltas"):
        post_process([[0, 0, 1, 1]], [[0.5, 0.5]], np.zeros((1, 4)))
    with pytest.raises(InvalidArgumentError, match="proposals"):
        post_process([[0, 0, 1, 1], [0, 0, 2, 2]], [[0.5, 0.5]], np.zeros((1, 8)))


# ---------------------------------------------------------------------------------------------------
# Detections
# ---------------------------------------------------------------------------------------------------


def two_detections():
    return Detections(
        np.array([[1.0, 2.0, 11.0, 7.0], [0.5, 0.0, 3.0, 4.5]], np.float32),
        np.array([0.75, 0.5], np.float32),
        np.array([2, 1], np.int64),
    )


def test_to_coco_writes_xywh_boxes_and_labels_as_categories():
    records = two_detections().to_coco(image_id=7)
    assert records == [
        {"image_id": 7, "category_id": 2, "bbox": [1.0, 2.0, 10.0, 5.0], "score": 0.75},
        {"image_id": 7, "category_id": 1, "bbox": [0.5, 0.0, 2.5, 4.5], "score": 0.5},
    ]
    json.dumps(records)  # plain Python numbers


def test_to_coco_maps_label_u_to_category_ids_u_minus_1():
    records = two_detections().to_coco(image_id=3, category_ids=[18, 44])
    assert [r["category_id"] for r in records] == [44, 18]


def test_empty_detections_give_no_coco_records():
    assert post_process(np.zeros((0, 4)), np.zeros((0, 3))).to_coco(image_id=1) == []


def test_to_coco_records_are_json_ready_with_numpy_category_ids():
    records = two_detections().to_coco(image_id=3, category_ids=np.array([18, 44]))
    json.dumps(records)


def test_detections_replace_works_whatever_the_number_of_detections():
    dets = two_detections()
    assert len(dets) == 2
    halved = dataclasses.replace(dets, scores=dets.scores / 2)
    np.testing.assert_array_equal(halved.scores, [0.375, 0.25])


# ---------------------------------------------------------------------------------------------------
# predict
# ---------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def scene():
    """A 32 x 32 image of shapes, its ground truth and a few proposals around it."""
    data = shapes_dataset(1, image_size=(32, 32), objects=(2, 2), size=(8, 14), seed=3)
    gt = data.boxes[0].astype(np.float64)
    proposals = np.concatenate([gt, gt + [1, -1, 2, 1], gt + [-2, 1, -1, 3], [[0, 0, 16, 16], [10, 8, 30, 31]]])
    return data.images[0], np.clip(proposals, 0, 32)


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_predict_with_proposals_gives_labels_one_to_k_and_boxes_inside_the_image(kind, scene):
    image, proposals = scene
    dets = tiny(kind).predict(image, proposals)
    assert isinstance(dets, Detections) and len(dets) > 0  # an untrained model scores every class ~1/4 > 0.05
    assert dets.labels.dtype == np.int64 and set(dets.labels.tolist()) <= {1, 2, 3}
    assert np.all(dets.boxes >= 0) and np.all(dets.boxes[:, [0, 2]] <= 32) and np.all(dets.boxes[:, [1, 3]] <= 32)
    assert np.all(dets.boxes[:, 2:] > dets.boxes[:, :2])
    assert np.all(np.diff(dets.scores) <= 0) and np.all((dets.scores > 0.05) & (dets.scores <= 1))


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_predict_without_proposals_runs_selective_search(kind, scene):
    image, _ = scene
    model = tiny(kind)
    ours = model.predict(image, max_proposals=20)
    theirs = model.predict(image, selective_search(image, mode="fast", max_boxes=20))
    assert len(ours) > 0
    for field in ("boxes", "scores", "labels"):
        a, b = getattr(ours, field), getattr(theirs, field)
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize("proposals", [np.zeros((0, 4)), []], ids=["array", "list"])
def test_predict_with_no_proposals_gives_empty_detections(kind, proposals, scene):
    dets = tiny(kind).predict(scene[0], proposals)
    assert len(dets) == 0 and dets.boxes.shape == (0, 4)


def dropouts(model):
    return [layer for child in model.children() if isinstance(child, nn.Sequential) for layer in child if isinstance(layer, nn.Dropout)]


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_predict_leaves_the_model_in_the_mode_it_found(kind, scene):
    image, proposals = scene
    model = tiny(kind, dropout=0.5)
    assert len(dropouts(model)) == 2

    model.train()
    first = model.predict(image, proposals)
    assert model.training and all(d.training for d in dropouts(model))
    second = model.predict(image, proposals)  # no dropout at test time, even when called in training mode
    np.testing.assert_array_equal(first.scores, second.scores)

    model.eval()
    model.predict(image, proposals)
    assert not model.training and not any(d.training for d in dropouts(model))


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize(
    "image, match",
    [
        (np.zeros((16, 16, 3), np.float32), "uint8"), (np.zeros((16, 16), np.uint8), "image"), (np.zeros((16, 16, 4), np.uint8), "image"),
        (np.zeros((0, 16, 3), np.uint8), "H, W >= 1"), (np.zeros((16, 0, 3), np.uint8), "H, W >= 1"),
    ],
    ids=["float-image", "grey-image", "rgba-image", "no-rows", "no-columns"],
)
def test_predict_rejects_images_that_are_not_uint8_rgb(kind, image, match):
    with pytest.raises(InvalidArgumentError, match=match):
        tiny(kind).predict(image, [[0, 0, 8, 8]])


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize(
    "settings, match",
    [
        ({"score_threshold": 1.5}, "score_threshold"), ({"score_threshold": -0.1}, "score_threshold"),
        ({"score_threshold": float("nan")}, "score_threshold"), ({"nms_threshold": 2}, "nms_threshold"),
        ({"nms_threshold": True}, "nms_threshold"), ({"max_detections": 0}, "max_detections"),
        ({"max_detections": 2.0}, "max_detections"), ({"max_detections": True}, "max_detections"),
    ],
    ids=["score-above-1", "score-negative", "score-nan", "nms-above-1", "nms-bool", "max-0", "max-float", "max-bool"],
)  # fmt: skip
def test_predict_rejects_bad_settings(kind, settings, match):
    with pytest.raises(InvalidArgumentError, match=match):
        tiny(kind).predict(np.zeros((16, 16, 3), np.uint8), [[0, 0, 8, 8]], **settings)


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_predict_rejects_proposals_that_are_not_xyxy_boxes(kind):
    with pytest.raises(InvalidArgumentError):
        tiny(kind).predict(np.zeros((16, 16, 3), np.uint8), [[5, 5, 2, 2]])


# ---------------------------------------------------------------------------------------------------
# model plumbing: names, modes, dtypes, children
# ---------------------------------------------------------------------------------------------------


def test_fast_rcnn_parameters_are_named_child_dot_index_dot_key():
    names = [name for name, _, _ in tiny(FastRCNN).named_parameters()]
    assert names == [
        "backbone.0.weight", "backbone.0.bias", "backbone.3.weight", "backbone.3.bias",
        "head.1.weight", "head.1.bias", "head.4.weight", "head.4.bias",
        "cls_score.weight", "cls_score.bias", "bbox_pred.weight", "bbox_pred.bias",
    ]  # fmt: skip


def test_rcnn_parameter_shapes_follow_the_crop_size():
    model = RCNN(CLASSES, channels=(2, 3), crop_size=16, hidden=5)
    shapes = {name: layer.params[key].shape for name, layer, key in model.named_parameters()}
    assert shapes["backbone.0.weight"] == (2, 3, 3, 3) and shapes["backbone.3.weight"] == (3, 2, 3, 3)
    assert shapes["head.1.weight"] == (5, 3 * 4 * 4)  # 16 / stride 2 / the 2x2 pooling = 4
    assert shapes["cls_score.weight"] == (4, 5) and shapes["bbox_pred.weight"] == (16, 5)


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_children_are_the_named_sub_networks_in_forward_order(kind):
    model = tiny(kind)
    assert model.children() == [getattr(model, name) for name in kind.CHILDREN]
    assert kind.CHILDREN[0] == "backbone" and kind.CHILDREN[-2:] == ("cls_score", "bbox_pred")


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_train_and_eval_reach_the_dropout_layers_inside_the_children(kind):
    model = tiny(kind, dropout=0.5)
    assert model.eval() is model
    assert not model.training and not any(d.training for d in dropouts(model))
    assert model.train() is model
    assert model.training and all(d.training for d in dropouts(model))


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_astype_float64_casts_every_parameter_and_gradient_and_the_outputs(kind, scene):
    model = tiny(kind)
    assert model.dtype == np.float32
    assert model.astype(np.float64) is model
    assert model.dtype == np.float64
    for _, layer, key in model.named_parameters():
        assert layer.params[key].dtype == np.float64 and layer.grads[key].dtype == np.float64
    probs, deltas = model.score_proposals(*scene)
    assert np.isfinite(probs).all() and np.isfinite(deltas).all()
    model.training_step(toy_batch(np.random.default_rng(0)))
    assert model.backbone[0].grads["weight"].dtype == np.float64


def test_same_seed_builds_the_same_model_and_another_seed_another():
    a, b, c = tiny(FastRCNN, rng=4), tiny(FastRCNN, rng=4), tiny(FastRCNN, rng=5)
    for (_, la, ka), (_, lb, kb), (_, lc, kc) in zip(a.named_parameters(), b.named_parameters(), c.named_parameters()):
        np.testing.assert_array_equal(la.params[ka], lb.params[kb])
    assert not np.array_equal(a.backbone[0].params["weight"], c.backbone[0].params["weight"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"classes": ()}, "classes"), ({"classes": ("a", "a")}, "classes"), ({"classes": "abc"}, "classes"),
        ({"channels": ()}, "channels"), ({"channels": (2, 0)}, "channels"), ({"hidden": 0}, "hidden"),
        ({"dropout": 1.0}, "dropout"), ({"roi_size": 0}, "roi_size"), ({"rng": 1.5}, "rng"),
    ],
    ids=[
        "no-classes", "repeated-class", "string-classes", "no-channels", "zero-channel", "hidden-0", "dropout-1",
        "roi-size-0", "float-rng",
    ],
)  # fmt: skip
def test_fast_rcnn_rejects_bad_settings(kwargs, match):
    settings = {"classes": CLASSES, "channels": (2, 3), "hidden": 5, **kwargs}
    with pytest.raises(InvalidArgumentError, match=match):
        FastRCNN(settings.pop("classes"), **settings)


# ---------------------------------------------------------------------------------------------------
# saving and loading
# ---------------------------------------------------------------------------------------------------


def parameters(model):
    return {name: np.array(layer.params[key]) for name, layer, key in model.named_parameters()}


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_save_then_load_gives_the_same_detector(kind, dtype, tmp_path, scene):
    image, proposals = scene
    model = tiny(kind, dtype=dtype, rng=7, dropout=0.25, lam=0.5, beta=2.0, box_weights=(8, 8, 4, 4))
    path = tmp_path / "detector.npz"
    nn.save(path, model)
    loaded = nn.load(path)

    assert type(loaded) is kind and loaded.config() == model.config()
    assert loaded.dtype == dtype
    ours, theirs = parameters(loaded), parameters(model)
    assert list(ours) == list(theirs)
    for name in ours:
        assert ours[name].dtype == dtype
        np.testing.assert_array_equal(ours[name], theirs[name], err_msg=name)
    ours, theirs = loaded.predict(image, proposals), model.predict(image, proposals)
    for field in ("boxes", "scores", "labels"):
        a, b = getattr(ours, field), getattr(theirs, field)
        np.testing.assert_array_equal(a, b)


def test_load_rebuilds_a_detector_whose_module_was_not_imported_yet(tmp_path):
    """`build_layer` imports `scratchdet.models` for a type it does not know (the registry fills on import)."""
    import subprocess
    import sys

    path = tmp_path / "fast.npz"
    nn.save(path, tiny(FastRCNN))
    code = (
        "import sys; from scratchdet import nn; assert 'scratchdet.models' not in sys.modules; "
        f"m = nn.load({str(path)!r}); print(type(m).__name__)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "FastRCNN"


def test_register_layer_needs_a_from_config_method():
    from scratchdet.nn.layers import register_layer

    class NotLoadable(nn.Layer):
        pass

    with pytest.raises(InvalidArgumentError, match="from_config"):
        register_layer(NotLoadable)


# ---------------------------------------------------------------------------------------------------
# learning
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_fast_rcnn_lowers_its_loss_on_a_tiny_shapes_dataset(seed):
    data = shapes_dataset(4, image_size=(32, 32), objects=(1, 2), size=(8, 16), seed=seed)
    proposals = dataset_proposals(data.images, max_boxes=200, progress=False)
    batches = roi_batches(data.images, data.boxes, data.labels, proposals, images_per_batch=2, rois_per_image=16, seed=seed)
    model = FastRCNN(data.classes, channels=(8, 16), roi_size=2, hidden=32, dropout=0.0, rng=seed)
    optimizer = nn.Adam(model, lr=3e-3)

    losses = []
    for step in range(60):
        losses.append(model.training_step(batches(step)))
        optimizer.step()

    def mean(part, steps):
        return float(np.mean([loss[part] for loss in losses[steps]]))

    first, last = mean("total", slice(0, 5)), mean("total", slice(-5, None))
    assert last < 0.5 * first, f"total loss {first:.3f} -> {last:.3f}"
    # below the 0.84 nats of always answering the class frequencies (75% background, 3 classes)
    assert mean("cls", slice(-5, None)) < 0.6


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
def test_training_goes_through_a_dataset_with_an_image_without_objects(kind):
    """COCO has images without annotations: with Fast R-CNN's bg_iou = (0.1, 0.5) such an image has no
    RoI to sample, and a step of that image alone used to reach the loss with no RoI and fail."""
    from scratchdet.train import fit

    data = shapes_dataset(3, image_size=(16, 16), objects=(1, 1), size=(6, 10), seed=2)
    gt_boxes, gt_labels = list(data.boxes), list(data.labels)
    gt_boxes[1], gt_labels[1] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    proposals = [np.array([[0, 0, 8, 8], [4, 4, 12, 12], [8, 8, 16, 16]], np.float32)] * 3
    batches = roi_batches(data.images, gt_boxes, gt_labels, proposals, images_per_batch=1, rois_per_image=8, seed=0)
    model = tiny(kind)
    history = fit(model, batches, nn.SGD(model, lr=0.01), steps=6, progress=False)
    assert len(history) == 6 and np.all(np.isfinite(history.losses["total"]))


@pytest.mark.parametrize("kind", [FastRCNN, RCNN])
@pytest.mark.parametrize(
    ("setting", "match"),
    [({"lam": -1.0}, "lam"), ({"beta": float("nan")}, "beta"), ({"box_weights": (10, 10, 5)}, "weights"),
     ({"box_weights": (10, 10, 5, 0)}, "weights")],
    ids=["negative-lam", "nan-beta", "three-weights", "zero-weight"],
)
def test_detectors_refuse_bad_loss_and_box_settings_when_built(kind, setting, match):
    """Checked at construction, not at the first training step or the first decode."""
    with pytest.raises(InvalidArgumentError, match=match):
        kind(("a",), **setting)


def test_to_coco_names_a_label_beyond_the_category_ids():
    with pytest.raises(InvalidArgumentError, match="category_ids"):
        two_detections().to_coco(image_id=1, category_ids=[7])
