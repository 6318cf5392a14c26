"""Synthetic shapes and stick figures: determinism, exact tight boxes and joints, COCO round trip, errors.

Objects are drawn in one flat colour on a noisy background, so an object's pixels are found again as
the pixels of the most frequent colour in its box; the tests check boxes and joints against those.
"""

import numpy as np
import pytest

from scratchdet.data.coco import parse_ground_truth
from scratchdet.data.shapes import (
    POSE_JOINTS,
    POSE_LIMBS,
    SHAPE_CLASSES,
    ShapesDataset,
    _shape_mask,
    shapes_dataset,
    single_object_dataset,
    stick_figures,
)
from scratchdet.errors import InvalidArgumentError
from scratchdet.eval import evaluate_coco, evaluate_voc


def object_colour(image, box):
    """The most frequent colour inside `box` (x1, y1, x2, y2): the object's flat colour, (3,) uint8."""
    x1, y1, x2, y2 = np.asarray(box).astype(int)
    pixels = image[y1:y2, x1:x2].reshape(-1, 3)
    colours, counts = np.unique(pixels, axis=0, return_counts=True)
    return colours[np.argmax(counts)]


def has_colour(image, colour):
    """(H, W) bool: the pixels of `image` (H, W, 3) that are exactly `colour`."""
    return (image == colour).all(axis=-1)


def assert_tight(image, box):
    """The object colour touches all four sides of `box`, and no pixel just outside it has that colour."""
    x1, y1, x2, y2 = box.astype(int)
    assert np.array_equal(box, [x1, y1, x2, y2]), f"box {box} is not on pixel edges"
    assert 0 <= x1 < x2 <= image.shape[1] and 0 <= y1 < y2 <= image.shape[0], f"box {box} outside the image"
    on = has_colour(image, object_colour(image, box))
    inside = on[y1:y2, x1:x2]
    sides = {"top": inside[0], "bottom": inside[-1], "left": inside[:, 0], "right": inside[:, -1]}
    for side, line in sides.items():
        assert line.any(), f"box {box.tolist()}: no object pixel on its {side} side (box too large)"
    ring = on.copy()
    ring[y1:y2, x1:x2] = False
    ring = ring[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1]
    assert not ring.any(), f"box {box.tolist()}: object pixels just outside it (box too small)"


def fill_fraction(image, box):
    """Fraction of the box covered by the object's colour."""
    x1, y1, x2, y2 = box.astype(int)
    return has_colour(image[y1:y2, x1:x2], object_colour(image, box)).mean()


# ------------------------------------------------------------------ shapes_dataset


def test_shapes_dataset_shapes_and_dtypes():
    data = shapes_dataset(6, image_size=(64, 80), objects=(2, 4), size=(8, 20), seed=1)
    assert isinstance(data, ShapesDataset)
    assert len(data) == 6
    assert data.classes == SHAPE_CLASSES
    for image, boxes, labels in data:
        assert image.shape == (64, 80, 3) and image.dtype == np.uint8
        assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
        assert labels.dtype == np.int64 and labels.shape == (len(boxes),)
        assert 1 <= len(boxes) <= 4


def test_same_seed_gives_identical_dataset(rng):
    a = shapes_dataset(5, seed=0)
    b = shapes_dataset(5, seed=0)
    c = shapes_dataset(5, seed=rng)  # the fixture's Generator is default_rng(0)
    for other in (b, c):
        for (ia, ba, la), (io, bo, lo) in zip(a, other):
            assert np.array_equal(ia, io) and np.array_equal(ba, bo) and np.array_equal(la, lo)


def test_different_seeds_differ():
    a = shapes_dataset(3, seed=0)
    b = shapes_dataset(3, seed=1)
    assert not all(np.array_equal(ia, ib) for ia, ib in zip(a.images, b.images))
    assert not all(np.array_equal(ba, bb) for ba, bb in zip(a.boxes, b.boxes))


@pytest.mark.parametrize("size", [(16, 40), (4, 40), (4, 6), (30, 30)])
def test_boxes_are_tight_to_the_object_pixels(size):
    data = shapes_dataset(12, size=size, seed=3)
    for image, boxes, _ in data:
        for box in boxes:
            assert_tight(image, box)


@pytest.mark.parametrize("shape", SHAPE_CLASSES)
@pytest.mark.parametrize("size", [(4, 4), (4, 40), (16, 40)])
def test_shape_masks_touch_all_four_sides_so_box_sides_stay_in_size(shape, size):
    rng = np.random.default_rng(7)
    for _ in range(100):
        mask = _shape_mask(rng, shape, size)
        assert size[0] <= mask.shape[0] <= size[1] and size[0] <= mask.shape[1] <= size[1]
        assert mask[0].any() and mask[-1].any() and mask[:, 0].any() and mask[:, -1].any()


def test_boxes_inside_image_apart_and_sized():
    data = shapes_dataset(30, image_size=(96, 112), objects=(1, 4), size=(10, 30), seed=5)
    for _, boxes, _ in data:
        assert 1 <= len(boxes) <= 4
        assert (boxes[:, :2] >= 0).all() and (boxes[:, 2] <= 112).all() and (boxes[:, 3] <= 96).all()
        sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
        assert sides.min() >= 10 and sides.max() <= 30
        # boxes grown by 2 pixels do not intersect
        for i in range(len(boxes)):
            for j in range(i + 1, len(boxes)):
                a, b = boxes[i] + [-2, -2, 2, 2], boxes[j]
                assert a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1], f"{boxes[i]} and {boxes[j]} too close"


def test_object_counts_cover_the_range():
    counts = {len(boxes) for boxes in shapes_dataset(40, objects=(1, 3), size=(8, 16), seed=2).boxes}
    assert counts == {1, 2, 3}


def test_image_too_full_keeps_fewer_objects_but_at_least_one():
    # two 12-pixel objects 2 pixels apart cannot fit in 16 x 16
    data = shapes_dataset(5, image_size=(16, 16), objects=(3, 3), size=(12, 16), seed=0)
    assert [len(boxes) for boxes in data.boxes] == [1] * 5


def test_labels_in_range_and_every_class_appears():
    data = shapes_dataset(30, seed=4)
    labels = np.concatenate(data.labels)
    assert labels.min() >= 1 and labels.max() <= len(SHAPE_CLASSES)
    assert set(labels.tolist()) == {1, 2, 3}


@pytest.mark.parametrize("classes", [SHAPE_CLASSES, ("triangle", "rectangle"), ("ellipse",)])
def test_labels_name_the_drawn_shape(classes):
    # a rectangle fills its box, an ellipse about pi/4 of it, a triangle at most about half (plus edge pixels)
    expected = {"rectangle": (1.0, 1.0), "ellipse": (0.7, 0.88), "triangle": (0.2, 0.65)}
    data = shapes_dataset(15, classes=classes, seed=6)
    assert data.classes == tuple(classes)
    seen = set()
    for image, boxes, labels in data:
        for box, label in zip(boxes, labels):
            name = data.classes[label - 1]
            seen.add(name)
            low, high = expected[name]
            assert low <= fill_fraction(image, box) <= high, f"{name} in {box.tolist()}"
    assert seen == set(classes)


def test_objects_contrast_with_the_background_around_them():
    data = shapes_dataset(10, seed=8)
    for image, boxes, _ in data:
        for box in boxes:
            colour = object_colour(image, box).astype(float)
            x1, y1, x2, y2 = box.astype(int)
            around = image[max(y1 - 1, 0) : y2 + 1, max(x1 - 1, 0) : x2 + 1].reshape(-1, 3).astype(float)
            distance = np.sqrt(((around - colour) ** 2).sum(axis=1))
            assert np.median(distance[distance > 0]) > 60


def test_to_coco_round_trip_through_parse_ground_truth():
    data = shapes_dataset(4, image_size=(64, 72), seed=9)
    coco = data.to_coco()
    gt = parse_ground_truth(coco)
    assert gt.image_ids.tolist() == [1, 2, 3, 4]
    assert gt.image_names == tuple(f"shapes_{i:06d}.png" for i in range(1, 5))
    assert all(image["width"] == 72 and image["height"] == 64 for image in coco["images"])
    assert gt.category_ids.tolist() == [1, 2, 3] and gt.category_names == SHAPE_CLASSES
    boxes = np.concatenate(data.boxes).astype(np.float64)
    xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
    np.testing.assert_array_equal(gt.boxes, xywh)
    np.testing.assert_array_equal(gt.area, xywh[:, 2] * xywh[:, 3])
    np.testing.assert_array_equal(gt.category + 1, np.concatenate(data.labels))
    np.testing.assert_array_equal(gt.image, np.repeat(np.arange(4), [len(b) for b in data.boxes]))
    assert not gt.iscrowd.any()
    for annotation in coco["annotations"]:
        assert all(type(v) is float for v in annotation["bbox"]) and type(annotation["area"]) is float


def test_perfect_detections_from_the_ground_truth_score_map_one():
    coco = shapes_dataset(8, seed=10).to_coco()
    detections = [
        {"image_id": a["image_id"], "category_id": a["category_id"], "bbox": a["bbox"], "score": 1.0} for a in coco["annotations"]
    ]
    stats = evaluate_coco(coco, detections)
    assert stats["AP"] == 1.0 and stats["AP50"] == 1.0 and stats["AP75"] == 1.0 and stats["AR100"] == 1.0
    assert evaluate_voc(coco, detections)["mAP"] == 1.0
    # and a shifted detection is no longer perfect: the check can fail
    detections[0]["bbox"] = [v + 10.0 for v in detections[0]["bbox"]]
    assert evaluate_coco(coco, detections)["AP"] < 1.0


# ------------------------------------------------------------------ single_object_dataset


def test_single_object_dataset_shapes_dtypes_and_zero_based_labels():
    images, labels, boxes = single_object_dataset(40, seed=11)
    assert images.shape == (40, 32, 32, 3) and images.dtype == np.uint8
    assert labels.shape == (40,) and labels.dtype == np.int64
    assert boxes.shape == (40, 4) and boxes.dtype == np.float32
    assert set(labels.tolist()) == {0, 1, 2}
    sides = np.concatenate([boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]])
    assert sides.min() >= 10 and sides.max() <= 24


def test_single_object_dataset_has_exactly_one_tight_object_per_image():
    images, labels, boxes = single_object_dataset(20, seed=12)
    for image, label, box in zip(images, labels, boxes):
        assert_tight(image, box)
        on = has_colour(image, object_colour(image, box))
        x1, y1, x2, y2 = box.astype(int)
        on[y1:y2, x1:x2] = False
        assert not on.any(), "object colour outside the one box"
        if SHAPE_CLASSES[label] == "rectangle":  # label k is classes[k]
            assert fill_fraction(image, box) == 1.0
        else:
            assert fill_fraction(image, box) < 0.9


def test_single_object_dataset_is_deterministic():
    a = single_object_dataset(4, seed=3)
    b = single_object_dataset(4, seed=3)
    c = single_object_dataset(4, seed=4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])


# ------------------------------------------------------------------ stick figures


def test_pose_joints_follow_the_lsp_order_and_limbs_connect_all_joints():
    assert len(POSE_JOINTS) == 14
    assert POSE_JOINTS[0] == "right_ankle" and POSE_JOINTS[6] == "right_wrist" and POSE_JOINTS[13] == "head_top"
    assert len(set(POSE_LIMBS)) == len(POSE_LIMBS)
    # every joint is on a limb, and the limbs form one connected skeleton (a tree plus the hip line)
    reached, frontier = {13}, [13]
    while frontier:
        j = frontier.pop()
        for a, b in POSE_LIMBS:
            for here, there in ((a, b), (b, a)):
                if here == j and there not in reached:
                    reached.add(there)
                    frontier.append(there)
    assert reached == set(range(14))


def test_stick_figures_shapes_dtypes_and_determinism():
    images, joints = stick_figures(5, image_size=(40, 56), seed=0)
    assert images.shape == (5, 40, 56, 3) and images.dtype == np.uint8
    assert joints.shape == (5, 14, 2) and joints.dtype == np.float32
    again = stick_figures(5, image_size=(40, 56), seed=0)
    assert np.array_equal(images, again[0]) and np.array_equal(joints, again[1])
    other = stick_figures(5, image_size=(40, 56), seed=1)
    assert not np.array_equal(joints, other[1])


def test_stick_figure_joints_are_inside_and_on_the_drawn_limbs():
    height, width = 48, 48
    images, joints = stick_figures(25, image_size=(height, width), seed=13)
    assert (joints >= 1).all() and (joints[..., 0] <= width - 1).all() and (joints[..., 1] <= height - 1).all()
    for image, figure in zip(images, joints):
        colour = object_colour(image, [0, 0, width, height])  # the figure's flat colour
        on = has_colour(image, colour)
        # the pixel under every joint, and under points along every limb, is the figure's
        for a, b in POSE_LIMBS:
            t = np.linspace(0.0, 1.0, 9)[:, None]
            points = figure[a] + t * (figure[b] - figure[a])  # (9, 2) x, y
            cols, rows = np.floor(points).astype(int).T
            assert on[rows, cols].all(), f"limb {POSE_JOINTS[a]} - {POSE_JOINTS[b]} not drawn through {points.tolist()}"
        # and the figure is only a small part of the image
        assert 0.02 < on.mean() < 0.4


def test_stick_figures_face_the_viewer_upright():
    _, joints = stick_figures(40, seed=14)
    x, y = joints[..., 0], joints[..., 1]
    j = {name: i for i, name in enumerate(POSE_JOINTS)}
    assert (x[:, j["right_hip"]] < x[:, j["left_hip"]]).all()  # the person's right is on the image's left
    assert (x[:, j["right_shoulder"]] < x[:, j["left_shoulder"]]).all()
    assert (y[:, j["head_top"]] < y[:, j["neck"]]).all()
    assert (y[:, j["neck"]] < np.minimum(y[:, j["right_hip"]], y[:, j["left_hip"]])).all()
    assert (y[:, j["right_ankle"]] > y[:, j["right_hip"]]).all() and (y[:, j["left_ankle"]] > y[:, j["left_hip"]]).all()
    height = y.max(axis=1) - y.min(axis=1)
    assert height.min() > 0.3 * 48 and height.max() < 48 - 2


# ------------------------------------------------------------------ bad arguments


@pytest.mark.parametrize(
    "argument, value",
    [
        ("n_images", 0),
        ("n_images", -3),
        ("n_images", 2.0),
        ("n_images", True),
        ("image_size", (15, 96)),
        ("image_size", (96,)),
        ("image_size", (96.0, 96)),
        ("image_size", "96"),
        ("objects", (0, 2)),
        ("objects", (3, 2)),
        ("objects", (1, 2, 3)),
        ("size", (3, 10)),
        ("size", (20, 10)),
        ("size", (16, 97)),
        ("size", (16.5, 20)),
        ("classes", ()),
        ("classes", "ellipse"),
        ("classes", ("circle",)),
        ("classes", ("ellipse", "ellipse")),
        ("seed", -1),
        ("seed", 1.5),
        ("seed", "a"),
    ],
)
def test_shapes_dataset_rejects_bad_arguments(argument, value):
    kwargs = {"n_images": 2, argument: value}
    n_images = kwargs.pop("n_images")
    with pytest.raises(InvalidArgumentError) as excinfo:
        shapes_dataset(n_images, **kwargs)
    message = str(excinfo.value)
    assert argument in message and repr(value) in message, message


@pytest.mark.parametrize(
    "function, argument, value",
    [
        (single_object_dataset, "size", (10, 40)),  # larger than the default 32 x 32 image
        (single_object_dataset, "image_size", (8, 8)),
        (single_object_dataset, "classes", ("square",)),
        (stick_figures, "image_size", (12, 48)),
        (stick_figures, "seed", -2),
    ],
)
def test_other_generators_reject_bad_arguments(function, argument, value):
    with pytest.raises(InvalidArgumentError, match=argument):
        function(2, **{argument: value})
    with pytest.raises(InvalidArgumentError, match="n_images"):
        function(0)
