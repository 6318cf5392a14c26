"""Specification of `scratchdet.train.batches`: the epoch-by-epoch item order, batches of aligned
arrays, Fast R-CNN's hierarchical RoI mini-batches (labels, targets, flips) as a function of the step,
horizontal box flips and the proposals of a dataset."""

import numpy as np
import pytest

from scratchdet import boxes as B
from scratchdet.data.shapes import shapes_dataset
from scratchdet.errors import InvalidArgumentError
from scratchdet.proposals import selective_search
from scratchdet.train import FAST_RCNN_WEIGHTS, RoIBatch, array_batches, dataset_proposals, epoch_order, roi_batches, with_gt_boxes
from scratchdet.train.batches import flip_boxes

HEIGHT, WIDTH = 24, 32  # not square: a flip that mixed up x and y would show


# ---------------------------------------------------------------------------------------------------
# epoch_order
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "n_items, count", [(7, 3), (4, 10), (5, 5), (1, 2)],
    ids=["steps-straddle-epochs", "count-above-items", "one-epoch-per-step", "one-item"],
)
def test_epoch_order_visits_every_item_exactly_once_per_epoch(n_items, count):
    stream = np.concatenate([epoch_order(n_items, step, count, seed=3) for step in range(6 * n_items)])
    assert stream.dtype == np.int64
    epochs = stream.reshape(-1, n_items)  # 6 * count epochs
    for order in epochs:
        assert sorted(order.tolist()) == list(range(n_items))


def test_epoch_order_shuffles_each_epoch_differently():
    epochs = [epoch_order(20, step, 20, seed=0) for step in range(4)]  # one epoch per step
    assert len({tuple(e) for e in epochs}) == 4
    assert not np.array_equal(epochs[0], np.arange(20))


def test_epoch_order_is_a_function_of_step_count_and_seed():
    stream = epoch_order(9, 0, 40, seed=5)  # the first 40 items in one call
    for step in range(10):
        np.testing.assert_array_equal(epoch_order(9, step, 4, seed=5), stream[4 * step : 4 * step + 4])
    np.testing.assert_array_equal(epoch_order(9, 7, 4, seed=5), epoch_order(9, 7, 4, seed=5))
    assert not np.array_equal(epoch_order(20, 0, 20, seed=5), epoch_order(20, 0, 20, seed=6))


# ---------------------------------------------------------------------------------------------------
# array_batches
# ---------------------------------------------------------------------------------------------------


def test_array_batches_keep_the_rows_of_the_arrays_aligned():
    index = np.arange(10)
    images = np.zeros((10, 2, 2, 3), np.uint8)
    images[:, 0, 0, 0] = index
    batches = array_batches((index, index * 10.0, images), batch_size=4, seed=1)
    seen = []
    for step in range(5):  # 20 items: two epochs
        a, b, c = batches(step)
        assert a.shape == (4,) and b.shape == (4,) and c.shape == (4, 2, 2, 3) and c.dtype == np.uint8
        np.testing.assert_array_equal(b, a * 10.0)
        np.testing.assert_array_equal(c[:, 0, 0, 0], a)
        seen.extend(a.tolist())
    assert sorted(seen[:10]) == list(range(10)) and sorted(seen[10:]) == list(range(10))


def test_array_batches_are_a_function_of_the_step():
    arrays = (np.arange(50), np.arange(50) ** 2)
    first, again = array_batches(arrays, batch_size=8, seed=2), array_batches(arrays, batch_size=8, seed=2)
    for step in (0, 3, 11):
        for x, y in zip(first(step), again(step)):
            np.testing.assert_array_equal(x, y)
    assert not np.array_equal(first(0)[0], first(1)[0])


@pytest.mark.parametrize(
    "arrays, batch_size, match",
    [
        ((np.zeros(5), np.zeros(4)), 2, "one length"),
        ((np.zeros(0), np.zeros(0)), 2, "non-empty"),
        ((), 2, "non-empty"),
        ((np.zeros(5),), 0, "batch_size"),
        ((np.zeros(5),), 2.5, "batch_size"),
    ],
    ids=["lengths-differ", "empty-arrays", "no-arrays", "batch-size-0", "batch-size-float"],
)
def test_array_batches_reject_bad_arrays_and_sizes(arrays, batch_size, match):
    with pytest.raises(InvalidArgumentError, match=match):
        array_batches(arrays, batch_size=batch_size)


# ---------------------------------------------------------------------------------------------------
# flip_boxes
# ---------------------------------------------------------------------------------------------------


def test_flip_boxes_mirrors_x_about_the_image_width_and_leaves_y():
    boxes = np.array([[0, 1, 4, 5], [10.5, 2, 32, 20]], np.float32)
    flipped = flip_boxes(boxes, 32)
    np.testing.assert_array_equal(flipped, [[28, 1, 32, 5], [0, 2, 21.5, 20]])
    assert flipped.dtype == np.float32
    np.testing.assert_array_equal(boxes, [[0, 1, 4, 5], [10.5, 2, 32, 20]])  # the input is not touched
    np.testing.assert_array_equal(flip_boxes(flipped, 32), boxes)  # flipping twice is the identity


# ---------------------------------------------------------------------------------------------------
# roi_batches
# ---------------------------------------------------------------------------------------------------


def shifted(gt, offsets):
    """Copies of each gt box moved by each (dx, dy), clipped to the image."""
    moved = np.concatenate([gt + [dx, dy, dx, dy] for dx, dy in offsets])
    return np.clip(moved, 0, [WIDTH, HEIGHT, WIDTH, HEIGHT])


@pytest.fixture(scope="module")
def detection_data():
    """3 random 24 x 32 images with ground truth and proposals rich in both foreground (boxes moved by
    a pixel or two) and background (boxes moved by about half their size)."""
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(3)]
    gt_boxes = [
        np.array([[2, 3, 12, 15], [18, 4, 30, 20]], np.float32),
        np.array([[5, 5, 20, 18]], np.float32),
        np.array([[1, 1, 9, 9], [12, 10, 28, 22]], np.float32),
    ]
    gt_labels = [np.array([1, 2]), np.array([3]), np.array([2, 1])]
    near = [(dx, dy) for dx in (-1, 0, 1) for dy in (-1, 1)]
    far = [(dx, dy) for dx in (-5, -3, 0, 3, 5) for dy in (-5, -3, 0, 3, 5) if abs(dx) + abs(dy) >= 5]
    proposals = [shifted(gt, near + far).astype(np.float32) for gt in gt_boxes]
    return images, gt_boxes, gt_labels, proposals


def test_the_fixture_has_enough_foreground_and_background_for_full_batches(detection_data):
    from scratchdet.train import match_proposals

    _, gt_boxes, gt_labels, proposals = detection_data
    for gt, labels, props in zip(gt_boxes, gt_labels, proposals):
        matched = match_proposals(with_gt_boxes(props, gt), gt, labels).labels
        assert (matched >= 1).sum() >= 4 and (matched == 0).sum() >= 16


def image_index(batch_image, images):
    """(index of the dataset image that `batch_image` is, whether it is mirrored)."""
    for i, image in enumerate(images):
        if np.array_equal(batch_image, image):
            return i, False
        if np.array_equal(batch_image, image[:, ::-1]):
            return i, True
    raise AssertionError("a batch image is neither a dataset image nor its mirror")


def test_roi_batch_dtypes_shapes_and_batch_indices(detection_data):
    batch = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, seed=0)(0)
    assert isinstance(batch, RoIBatch)
    assert batch.images.shape == (2, HEIGHT, WIDTH, 3) and batch.images.dtype == np.uint8 and batch.images.flags.c_contiguous
    assert batch.rois.shape == (32, 5) and batch.rois.dtype == np.float32
    assert batch.labels.shape == (32,) and batch.labels.dtype == np.int64
    assert batch.bbox_targets.shape == (32, 4) and batch.bbox_targets.dtype == np.float32
    np.testing.assert_array_equal(batch.rois[:, 0], [0] * 16 + [1] * 16)


@pytest.mark.parametrize("fg_fraction, n_fg", [(0.25, 4), (0.125, 2), (0.0, 0)])
def test_roi_batch_takes_the_foreground_share_and_never_an_ignored_roi(detection_data, fg_fraction, n_fg):
    batches = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, fg_fraction=fg_fraction, seed=1)
    for step in range(6):
        labels = batches(step).labels.reshape(2, 16)
        assert np.all(labels >= 0)
        assert np.all((labels >= 1).sum(axis=1) == n_fg), f"step {step}: {labels}"


@pytest.mark.parametrize("flip", [False, True])
def test_roi_batch_targets_are_zero_on_background_and_decode_to_the_matched_box(detection_data, flip):
    images, gt_boxes, gt_labels, proposals = detection_data
    batches = roi_batches(images, gt_boxes, gt_labels, proposals, images_per_batch=2, rois_per_image=16, flip=flip, seed=2)
    mirrored = []
    for step in range(8):
        batch = batches(step)
        for n in range(2):
            i, is_mirrored = image_index(batch.images[n], images)
            mirrored.append(is_mirrored)
            rows = batch.rois[:, 0] == n
            rois, labels, targets = batch.rois[rows, 1:], batch.labels[rows], batch.bbox_targets[rows]
            gt = flip_boxes(gt_boxes[i], WIDTH) if is_mirrored else gt_boxes[i]
            # the boxes were flipped with the image: mirrored back, they are RoIs of the dataset image
            original = flip_boxes(rois, WIDTH) if is_mirrored else rois
            candidates = with_gt_boxes(proposals[i], gt_boxes[i])
            assert all(np.any(np.all(candidates == box, axis=1)) for box in original)
            # background: label 0, zero target; foreground: the label and the box of the best-overlapping gt
            assert np.all(targets[labels == 0] == 0)
            fg = labels >= 1
            best = B.iou(rois[fg].astype(np.float64), gt.astype(np.float64)).argmax(axis=1)
            np.testing.assert_array_equal(labels[fg], gt_labels[i][best])
            decoded = B.decode(rois[fg].astype(np.float64), targets[fg].astype(np.float64), FAST_RCNN_WEIGHTS)
            np.testing.assert_allclose(decoded, gt[best], atol=1e-4)
    if flip:
        assert any(mirrored) and not all(mirrored)
    else:
        assert not any(mirrored)


def test_roi_batches_take_images_in_epoch_order(detection_data):
    images = detection_data[0]
    batches = roi_batches(*detection_data, images_per_batch=2, rois_per_image=8, flip=False, seed=4)
    for step in range(5):
        batch = batches(step)
        taken = [image_index(image, images)[0] for image in batch.images]
        assert taken == epoch_order(3, step, 2, 4).tolist()


def test_same_step_gives_the_same_batch_even_from_a_new_batch_function(detection_data):
    """The basis of an exact resume: a restarted run rebuilds `batches` and asks for the next step."""
    first = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, seed=7)
    restarted = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, seed=7)
    for step in (0, 5, 5, 13):
        for ours, theirs in zip(first(step), restarted(step)):
            np.testing.assert_array_equal(ours, theirs)
    for ours, theirs in zip(first(5), first(5)):
        np.testing.assert_array_equal(ours, theirs)


def test_different_steps_and_seeds_give_different_batches(detection_data):
    batches = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, seed=7)
    other_seed = roi_batches(*detection_data, images_per_batch=2, rois_per_image=16, seed=8)
    assert not np.array_equal(batches(0).rois, batches(1).rois)
    assert not np.array_equal(batches(3).rois, other_seed(3).rois)


def test_images_of_different_sizes_need_one_image_per_batch(detection_data):
    images, gt_boxes, gt_labels, proposals = detection_data
    mixed = [images[0], images[1][:, :28], images[2]]
    with pytest.raises(InvalidArgumentError, match="images_per_batch=1"):
        roi_batches(mixed, gt_boxes, gt_labels, proposals, images_per_batch=2)
    batches = roi_batches(mixed, gt_boxes, gt_labels, proposals, images_per_batch=1, rois_per_image=8, flip=False)
    shapes = {batches(step).images.shape for step in range(3)}  # one epoch: every image once
    assert shapes == {(1, HEIGHT, WIDTH, 3), (1, HEIGHT, 28, 3)}


@pytest.mark.parametrize("drop", ["images", "gt_boxes", "gt_labels", "proposals"])
def test_roi_batches_reject_inputs_of_different_lengths(detection_data, drop):
    inputs = dict(zip(["images", "gt_boxes", "gt_labels", "proposals"], detection_data))
    inputs[drop] = inputs[drop][:2]
    with pytest.raises(InvalidArgumentError, match="one length"):
        roi_batches(**inputs)


def test_roi_batches_reject_an_empty_dataset():
    with pytest.raises(InvalidArgumentError, match="non-empty"):
        roi_batches([], [], [], [])


@pytest.mark.parametrize(
    "change, match",
    [
        ({"images_per_batch": 0}, "images_per_batch"), ({"rois_per_image": 0}, "rois_per_image"),
        ({"rois_per_image": 8.0}, "rois_per_image"), ({"box_weights": (1, 1, 0, 1)}, "weights"),
    ],
    ids=["no-images", "no-rois", "float-rois", "zero-weight"],
)  # fmt: skip
def test_roi_batches_reject_bad_settings(detection_data, change, match):
    with pytest.raises(InvalidArgumentError, match=match):
        roi_batches(*detection_data, **change)


def without_ground_truth(detection_data, i):
    """The fixture with image i's ground truth removed: its proposals all have IoU 0, below bg_iou[0] = 0.1."""
    images, gt_boxes, gt_labels, proposals = detection_data
    gt_boxes, gt_labels = list(gt_boxes), list(gt_labels)
    gt_boxes[i], gt_labels[i] = np.zeros((0, 4), np.float32), np.zeros(0, np.int64)
    return images, gt_boxes, gt_labels, proposals


@pytest.mark.parametrize("images_per_batch", [1, 2])
def test_an_image_with_no_roi_to_sample_is_left_out_of_the_epochs(detection_data, images_per_batch):
    """An image without ground truth has no foreground, and with bg_iou = (0.1, 0.5) no background
    either: sampling it gives no RoI, and a step of only such images would have nothing for the loss
    (py-faster-rcnn's filter_roidb drops such images)."""
    images = detection_data[0]
    batches = roi_batches(*without_ground_truth(detection_data, 1), images_per_batch=images_per_batch, rois_per_image=8, seed=0)
    taken = []
    for step in range(12):
        batch = batches(step)
        assert len(batch.images) == images_per_batch
        for n, image in enumerate(batch.images):
            taken.append(image_index(image, images)[0])
            assert (batch.rois[:, 0] == n).sum() > 0, f"step {step}: image {n} of the batch has no RoI"
    assert sorted(set(taken)) == [0, 2]
    # the two images left are visited epoch by epoch, as the whole dataset would be
    flat = [image_index(image, images)[0] for step in range(4) for image in batches(step).images]
    assert sorted(flat[:2]) == [0, 2]


def test_an_image_without_ground_truth_trains_as_background_when_bg_iou_starts_at_zero(detection_data):
    """R-CNN's setting, bg_iou = (0, 0.5): every proposal of an image without objects is background."""
    images = detection_data[0]
    batches = roi_batches(*without_ground_truth(detection_data, 1), images_per_batch=1, rois_per_image=8, bg_iou=(0.0, 0.5), seed=0)
    seen = False
    for step in range(3):  # one epoch: every image once
        batch = batches(step)
        if image_index(batch.images[0], images)[0] == 1:
            seen = True
            assert len(batch.labels) == 8 and np.all(batch.labels == 0) and np.all(batch.bbox_targets == 0)
    assert seen


def test_an_image_of_only_foreground_is_left_out_when_the_batch_takes_no_foreground(detection_data):
    """rois_per_image=2 and fg_fraction=0.25 take round(0.5) = 0 foreground RoIs, so an image whose
    RoIs are its ground-truth boxes alone (no proposals) gives nothing."""
    images, gt_boxes, gt_labels, proposals = detection_data
    proposals = [proposals[0], np.zeros((0, 4), np.float32), proposals[2]]
    batches = roi_batches(images, gt_boxes, gt_labels, proposals, images_per_batch=1, rois_per_image=2, seed=0)
    taken = {image_index(batches(step).images[0], images)[0] for step in range(6)}
    assert taken == {0, 2}
    assert all(len(batches(step).labels) == 2 for step in range(6))


def test_roi_batches_reject_a_dataset_with_no_roi_to_sample(detection_data):
    data = detection_data
    for i in range(3):
        data = without_ground_truth(data, i)
    with pytest.raises(InvalidArgumentError, match="no image has a RoI"):
        roi_batches(*data)


@pytest.mark.parametrize("seed", [-1, 1.5, None], ids=["negative", "float", "none"])
def test_batches_reject_a_seed_that_is_not_an_int_at_least_zero(detection_data, seed):
    with pytest.raises(InvalidArgumentError, match="seed"):
        roi_batches(*detection_data, seed=seed)
    with pytest.raises(InvalidArgumentError, match="seed"):
        array_batches((np.zeros(3),), batch_size=2, seed=seed)


def test_roi_batches_reject_images_that_are_not_uint8_rgb(detection_data):
    images, gt_boxes, gt_labels, proposals = detection_data
    with pytest.raises(InvalidArgumentError, match=r"images\[1\]"):
        roi_batches([images[0], images[1].astype(np.float32), images[2]], gt_boxes, gt_labels, proposals)
    with pytest.raises(InvalidArgumentError, match=r"images\[2\] .* H, W >= 1"):
        roi_batches([images[0], images[1], images[2][:0]], gt_boxes, gt_labels, proposals, images_per_batch=1)


def test_roi_batches_name_the_image_whose_boxes_or_labels_are_wrong(detection_data):
    """A (P, 5) array of proposals with a score column was once read as 5/4 as many boxes, and a bad
    label was named by its index within its image alone."""
    images, gt_boxes, gt_labels, proposals = detection_data
    scored = [proposals[0], np.concatenate([proposals[1], np.ones((len(proposals[1]), 1))], axis=1), proposals[2]]
    with pytest.raises(InvalidArgumentError, match=r"proposals\[1\] must have shape \(N, 4\)"):
        roi_batches(images, gt_boxes, gt_labels, scored)
    with pytest.raises(InvalidArgumentError, match=r"gt_boxes\[2\] must have shape \(N, 4\)"):
        roi_batches(images, [gt_boxes[0], gt_boxes[1], np.zeros((1, 5))], gt_labels, proposals)
    background = [gt_labels[0], gt_labels[1], np.zeros_like(gt_labels[2])]
    with pytest.raises(InvalidArgumentError, match=r"image 2: gt_labels\[0\] = 0; ground-truth classes must be >= 1"):
        roi_batches(images, gt_boxes, background, proposals)


@pytest.mark.parametrize("step", [-1, "2", 1.5, None], ids=["negative", "text", "float", "none"])
def test_batches_reject_a_step_that_is_not_an_int_at_least_zero(detection_data, step):
    for batches in (roi_batches(*detection_data, rois_per_image=8), array_batches((np.zeros(3),), batch_size=2)):
        with pytest.raises(InvalidArgumentError, match="step must be an integer >= 0"):
            batches(step)


# ---------------------------------------------------------------------------------------------------
# dataset_proposals
# ---------------------------------------------------------------------------------------------------


def test_dataset_proposals_are_each_images_selective_search_boxes():
    data = shapes_dataset(2, image_size=(24, 24), objects=(1, 1), size=(6, 12), seed=0)
    proposals = dataset_proposals(data.images, max_boxes=15, progress=False)
    assert isinstance(proposals, list) and len(proposals) == 2
    for image, boxes in zip(data.images, proposals):
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4 and 0 < len(boxes) <= 15
        np.testing.assert_array_equal(boxes, selective_search(image, mode="fast", max_boxes=15))
    single = dataset_proposals(data.images[:1], mode="single", max_boxes=15, progress=False)
    np.testing.assert_array_equal(single[0], selective_search(data.images[0], mode="single", max_boxes=15))
