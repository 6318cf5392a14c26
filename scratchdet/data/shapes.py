"""Deterministic synthetic datasets for training and testing the detectors: flat-coloured shapes (and
stick figures for pose regression) on cluttered backgrounds, with exact tight boxes and joints.
The same seed gives the same dataset, bit for bit; nothing here touches global random state.
"""

import numbers
from dataclasses import dataclass

import numpy as np

from scratchdet.errors import InvalidArgumentError

__all__ = [
    "POSE_JOINTS",
    "POSE_LIMBS",
    "SHAPE_CLASSES",
    "ShapesDataset",
    "file_name",
    "shapes_dataset",
    "single_object_dataset",
    "stick_figures",
]

SHAPE_CLASSES = ("rectangle", "ellipse", "triangle")

# The 14 joints of the Leeds Sports Pose dataset (Johnson and Everingham, BMVC 2010), in its order, the
# one DeepPose regresses (Toshev and Szegedy, "DeepPose: Human Pose Estimation via Deep Neural
# Networks", CVPR 2014). "right" is the person's right: on the image's left for a figure facing us.
POSE_JOINTS = (
    "right_ankle",  # 0
    "right_knee",  # 1
    "right_hip",  # 2
    "left_hip",  # 3
    "left_knee",  # 4
    "left_ankle",  # 5
    "right_wrist",  # 6
    "right_elbow",  # 7
    "right_shoulder",  # 8
    "left_shoulder",  # 9
    "left_elbow",  # 10
    "left_wrist",  # 11
    "neck",  # 12
    "head_top",  # 13
)

# The limbs of a stick figure: pairs of indices into POSE_JOINTS.
POSE_LIMBS = (
    (0, 1), (1, 2), (5, 4), (4, 3),  # legs: ankle - knee - hip
    (6, 7), (7, 8), (11, 10), (10, 9),  # arms: wrist - elbow - shoulder
    (2, 12), (3, 12),  # torso: hips to neck
    (8, 12), (9, 12),  # shoulders to neck
    (12, 13),  # neck to head top
    (2, 3),  # hip to hip
)  # fmt: skip

MIN_IMAGE_SIDE = 16  # pixels; smaller images leave no room for clutter around an object
MIN_SHAPE_SIDE = 4  # pixels; a smaller triangle or ellipse is not recognisable as one
PLACEMENT_TRIES = 50  # random positions tried for one object before giving up on it
OBJECT_GAP = 2  # pixels of background kept between the boxes of two objects
CONTRAST_TRIES = 30  # random colours tried for one object before taking the best seen
MIN_CONTRAST = 80.0  # wanted RGB distance between an object's colour and every pixel under it


# ----------------------------------------------------------------------------------------------
# Datasets with many objects per image: detection
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShapesDataset:
    """A detection dataset of n images, image i holding N_i objects.

    images:  list of n (H, W, 3) uint8 RGB images
    boxes:   list of n (N_i, 4) float32 boxes (x1, y1, x2, y2) in continuous pixel coordinates, each
             the tight box of its object's drawn pixels ``[min_col, min_row, max_col + 1, max_row + 1]``
    labels:  list of n (N_i,) int64 labels in 1..K; 0 is left for the detectors' background class
    classes: tuple of K class names; label u is ``classes[u - 1]``
    """

    images: list
    boxes: list
    labels: list
    classes: tuple

    def __post_init__(self):
        if not len(self.images) == len(self.boxes) == len(self.labels):
            raise InvalidArgumentError(
                f"images, boxes and labels must have one entry per image, got {len(self.images)}, "
                f"{len(self.boxes)} and {len(self.labels)}"
            )

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        """Image i as ``(image (H, W, 3) uint8, boxes (N_i, 4) float32, labels (N_i,) int64)``."""
        return self.images[i], self.boxes[i], self.labels[i]

    def to_coco(self):
        """The ground truth as a COCO dataset dict (see `scratchdet.data.coco`).

        Images get ids 1..n and file names ``shapes_000001.png``...; categories ids 1..K (the
        labels); annotations ids 1..G, boxes ``[x, y, w, h]`` and ``area = w * h`` as Python floats,
        ``iscrowd`` 0. The images themselves are not written anywhere.
        """
        images, annotations = [], []
        for i, (image, boxes, labels) in enumerate(zip(self.images, self.boxes, self.labels)):
            image_id = i + 1
            height, width = image.shape[:2]
            images.append({"id": image_id, "file_name": file_name(image_id), "width": int(width), "height": int(height)})
            for (x1, y1, x2, y2), label in zip(boxes.tolist(), labels.tolist()):  # Python floats and ints
                w, h = x2 - x1, y2 - y1
                annotations.append(
                    {"id": len(annotations) + 1, "image_id": image_id, "category_id": label, "bbox": [x1, y1, w, h],
                     "area": w * h, "iscrowd": 0}
                )  # fmt: skip
        categories = [{"id": k + 1, "name": name} for k, name in enumerate(self.classes)]
        return {"images": images, "annotations": annotations, "categories": categories}


def file_name(image_id):
    """The file name `ShapesDataset.to_coco` gives image `image_id` (1, 2, ...): ``shapes_000001.png``."""
    return f"shapes_{image_id:06d}.png"


def shapes_dataset(n_images, *, image_size=(96, 96), objects=(1, 3), size=(16, 40), classes=SHAPE_CLASSES, seed=0):
    """A detection dataset of flat-coloured shapes on cluttered backgrounds, deterministic in `seed`.

    Each image has a smooth random colour gradient with a few low-contrast blobs and stripes and mild
    noise, then between ``objects[0]`` and ``objects[1]`` non-overlapping objects. An object is a
    filled shape of a random class (axis-aligned rectangle or ellipse, triangle of random orientation)
    whose box sides lie in ``[size[0], size[1]]`` pixels, in one random saturated colour that
    contrasts with the background under it. Colour is drawn independently of the class: only the
    shape tells the classes apart. Boxes, grown by 2 pixels, never intersect; when an image has no
    room left for its count, it keeps fewer objects (never fewer than one).

    n_images:   int >= 1
    image_size: (H, W) ints, each >= 16
    objects:    (min, max) ints, 1 <= min <= max, objects per image (inclusive)
    size:       (min, max) ints, 4 <= min <= max <= min(H, W), box side lengths in pixels
    classes:    tuple of distinct names from `SHAPE_CLASSES`; label u draws ``classes[u - 1]``
    seed:       int >= 0 or a ``numpy.random.Generator``

    Returns a `ShapesDataset` (images (H, W, 3) uint8; boxes (N_i, 4) float32 xyxy, each exactly the
    tight box of its object's pixels; labels (N_i,) int64 in 1..K). Raises InvalidArgumentError
    naming the argument for settings out of range.
    """
    _check_count("n_images", n_images)
    height, width = _check_image_size(image_size)
    lo, hi = _check_pair("objects", objects, "1 <= min <= max objects per image")
    if not 1 <= lo <= hi:
        raise InvalidArgumentError(f"objects must be a pair (min, max) of integers with 1 <= min <= max, got {objects!r}")
    size = _check_size(size, height, width)
    classes = _check_classes(classes)
    rng = _generator(seed)

    images, boxes, labels = [], [], []
    for _ in range(n_images):
        n_objects = int(rng.integers(lo, hi + 1))
        image, image_boxes, shape_index = _scene(rng, height, width, n_objects, size, classes)
        images.append(image)
        boxes.append(image_boxes)
        labels.append(shape_index + 1)  # 1-based: 0 is the detectors' background class
    return ShapesDataset(images=images, boxes=boxes, labels=labels, classes=classes)


# ----------------------------------------------------------------------------------------------
# One object per image: classification + localisation
# ----------------------------------------------------------------------------------------------


def single_object_dataset(n_images, *, image_size=(32, 32), size=(10, 24), classes=SHAPE_CLASSES, seed=0):
    """Images of exactly one shape each, for the classification + localisation model.

    Backgrounds and objects are drawn as in `shapes_dataset`, with one object per image.

    n_images:   int >= 1
    image_size: (H, W) ints, each >= 16
    size:       (min, max) ints, 4 <= min <= max <= min(H, W), box side lengths in pixels
    classes:    tuple of distinct names from `SHAPE_CLASSES`
    seed:       int >= 0 or a ``numpy.random.Generator``

    Returns ``(images, labels, boxes)``:
        images: (N, H, W, 3) uint8 RGB
        labels: (N,) int64 in 0..K-1, 0-BASED (unlike `shapes_dataset`): there is no background
                class here, label k is ``classes[k]``
        boxes:  (N, 4) float32 (x1, y1, x2, y2), the tight box of the object's pixels
    """
    _check_count("n_images", n_images)
    height, width = _check_image_size(image_size)
    size = _check_size(size, height, width)
    classes = _check_classes(classes)
    rng = _generator(seed)

    images = np.empty((n_images, height, width, 3), dtype=np.uint8)
    labels = np.empty(n_images, dtype=np.int64)
    boxes = np.empty((n_images, 4), dtype=np.float32)
    for i in range(n_images):
        images[i], image_boxes, shape_index = _scene(rng, height, width, 1, size, classes)
        boxes[i], labels[i] = image_boxes[0], shape_index[0]  # one object always fits: size <= image
    return images, labels, boxes


# ----------------------------------------------------------------------------------------------
# Stick figures: 14-joint pose regression
# ----------------------------------------------------------------------------------------------

# Body proportions as fractions of the standing height (ankle to head top).
_HEAD = 0.16  # neck to head top
_TORSO = 0.32  # mid-hip to neck
_THIGH, _SHIN = 0.26, 0.26
_UPPER_ARM, _FOREARM = 0.18, 0.17
_HALF_HIPS, _HALF_SHOULDERS = 0.06, 0.10
_SHOULDER_DROP = 0.03  # shoulders sit this far below the neck
_HEAD_RADIUS = 0.065
_LINE_HALF_WIDTH = 1.0  # a pixel is on a limb when its centre is within 1 pixel: lines 2 pixels thick


def stick_figures(n_images, *, image_size=(48, 48), seed=0):
    """Images of one stick figure each with its 14 joints, for DeepPose-style pose regression.

    A figure faces the viewer (its right side on the image's left). Its pose is random: position,
    standing height 50-90% of the image height (shrunk when a pose with raised arms would not fit),
    torso lean, head tilt, and limb angles in plausible ranges, knees and elbows bent. Limbs
    (`POSE_LIMBS`) are lines 2 pixels thick and the head a filled disc whose top is the head-top
    joint, all in one saturated colour, on the same kind of background as `shapes_dataset`. Every
    joint is at least 1 pixel inside the image.

    n_images:   int >= 1
    image_size: (H, W) ints, each >= 16
    seed:       int >= 0 or a ``numpy.random.Generator``

    Returns ``(images, joints)``:
        images: (N, H, W, 3) uint8 RGB
        joints: (N, 14, 2) float32 (x, y) in continuous pixel coordinates (the centre of pixel (i, j)
                is (j + 0.5, i + 0.5)), in the order of `POSE_JOINTS` (Leeds Sports Pose, as in
                DeepPose, Toshev and Szegedy 2014); the exact points the figure was drawn from
    """
    _check_count("n_images", n_images)
    height, width = _check_image_size(image_size)
    rng = _generator(seed)

    images = np.empty((n_images, height, width, 3), dtype=np.uint8)
    joints = np.empty((n_images, len(POSE_JOINTS), 2), dtype=np.float32)
    y, x = _pixel_centres(height, width)
    for n in range(n_images):
        image = _background(rng, height, width)
        figure_joints, head_radius = _random_pose(rng, height, width)
        joints[n] = figure_joints
        drawn = joints[n].astype(np.float64)  # draw from the float32 values that are returned

        # the figure's pixels: every limb as a thick line, and the head disc below the head top
        mask = np.zeros((height, width), dtype=bool)
        for a, b in POSE_LIMBS:
            mask |= _segment_distance(x, y, drawn[a], drawn[b]) <= _LINE_HALF_WIDTH
        head_top, neck = drawn[13], drawn[12]
        head_centre = head_top + (neck - head_top) / max(np.hypot(*(neck - head_top)), 1e-12) * head_radius
        mask |= np.hypot(x - head_centre[0], y - head_centre[1]) <= head_radius

        image[mask] = _contrasting_colour(rng, image[mask])
        images[n] = image
    return images, joints


def _random_pose(rng, height, width):
    """A random standing pose placed inside the image: ((14, 2) float32 joints (x, y), head radius).

    Angles are measured from straight down, positive towards the image's right; the direction of
    angle phi is ``(sin phi, cos phi)`` in (x, y) with y pointing down.
    """
    def direction(phi):
        return np.array([np.sin(phi), np.cos(phi)])

    def draw_degrees(lo, hi):
        return np.deg2rad(rng.uniform(lo, hi))

    joints = np.zeros((len(POSE_JOINTS), 2))
    lean = draw_degrees(-15, 15)
    up = -direction(lean)  # (2,) from the hips to the neck
    across = direction(lean + np.pi / 2)  # (2,) towards the image's right, square to the torso

    # 1. the torso around the mid-hip point (the origin), in units of the standing height
    joints[2] = -_HALF_HIPS * across  # right hip
    joints[3] = _HALF_HIPS * across  # left hip
    joints[12] = _TORSO * up  # neck
    joints[13] = joints[12] - _HEAD * direction(lean + draw_degrees(-15, 15))  # head top
    for shoulder, side in ((8, -1), (9, 1)):
        joints[shoulder] = joints[12] - _SHOULDER_DROP * up + side * _HALF_SHOULDERS * across

    # 2. legs: thighs spread outwards a little, knees bend one way or the other
    for hip, knee, ankle, side in ((2, 1, 0, -1), (3, 4, 5, 1)):
        thigh = lean + side * draw_degrees(-5, 30)
        shin = thigh + rng.choice([-1, 1]) * draw_degrees(0, 50)
        joints[knee] = joints[hip] + _THIGH * direction(thigh)
        joints[ankle] = joints[knee] + _SHIN * direction(shin)

    # 3. arms: from hanging beside the body to raised, elbows bent
    for shoulder, elbow, wrist, side in ((8, 7, 6, -1), (9, 10, 11, 1)):
        upper = lean + side * draw_degrees(15, 150)
        fore = upper + rng.choice([-1, 1]) * draw_degrees(0, 120)
        joints[elbow] = joints[shoulder] + _UPPER_ARM * direction(upper)
        joints[wrist] = joints[elbow] + _FOREARM * direction(fore)

    # 4. scale: a standing height of 50-90% of the image, less if the pose would not fit
    scale = rng.uniform(0.5, 0.9) * height
    head_top, neck = joints[13], joints[12]
    head_centre = head_top + (neck - head_top) / np.hypot(*(neck - head_top)) * _HEAD_RADIUS
    points = np.concatenate([joints, [head_centre - _HEAD_RADIUS, head_centre + _HEAD_RADIUS]])  # (16, 2)
    extent = points.max(axis=0) - points.min(axis=0)  # (2,) width, height in units of standing height
    room = np.array([width - 2.0, height - 2.0])  # joints stay 1 pixel from the border
    scale = min(scale, *(0.98 * room / extent))

    # 5. position: anywhere the whole figure stays at least 1 pixel inside the image
    low = 1.0 - points.min(axis=0) * scale  # (2,) the smallest allowed offset of the mid-hip
    high = room + 1.0 - points.max(axis=0) * scale  # (2,) the largest
    offset = rng.uniform(low, high)
    placed = (joints * scale + offset).astype(np.float32)
    placed = np.clip(placed, np.float32(1.0), np.array([width - 1.0, height - 1.0], dtype=np.float32))
    return placed, max(_HEAD_RADIUS * scale, 1.5)


def _segment_distance(x, y, a, b):
    """Distance of each point (x, y) (arrays of one shape) to the segment from a to b ((2,) each)."""
    ab = b - a
    length2 = max(float(ab @ ab), 1e-12)
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / length2, 0.0, 1.0)  # nearest point's position
    return np.hypot(x - (a[0] + t * ab[0]), y - (a[1] + t * ab[1]))


# ----------------------------------------------------------------------------------------------
# Drawing: background, shape masks, placement, colour (one private function per job)
# ----------------------------------------------------------------------------------------------


def _scene(rng, height, width, n_objects, size, classes):
    """A background with up to `n_objects` (at least 1) non-overlapping shapes drawn on it.

    Returns ``(image (H, W, 3) uint8, boxes (M, 4) float32 xyxy, shape_index (M,) int64)`` where
    ``classes[shape_index[m]]`` is the shape of object m.
    """
    image = _background(rng, height, width)
    boxes, shape_index = [], []
    for _ in range(n_objects):
        k = int(rng.integers(len(classes)))
        mask = _shape_mask(rng, classes[k], size)  # (h, w) bool
        corner = _place(rng, mask.shape, boxes, height, width)
        if corner is None:
            continue  # no room left: keep fewer objects (the first always fits: size <= image size)
        top, left = corner
        region = image[top : top + mask.shape[0], left : left + mask.shape[1]]  # a view into image
        region[mask] = _contrasting_colour(rng, region[mask])

        # the box is read off the drawn pixels, not from the intended geometry
        rows = np.flatnonzero(mask.any(axis=1))
        cols = np.flatnonzero(mask.any(axis=0))
        boxes.append((left + cols[0], top + rows[0], left + cols[-1] + 1, top + rows[-1] + 1))
        shape_index.append(k)
    return image, np.array(boxes, dtype=np.float32).reshape(-1, 4), np.array(shape_index, dtype=np.int64)


def _background(rng, height, width):
    """A random (H, W, 3) uint8 background: a smooth colour gradient, low-contrast clutter, mild noise."""
    y, x = _pixel_centres(height, width)  # (H, W) each

    # 1. a smooth gradient: the bilinear blend of four weakly saturated corner colours
    corners = rng.uniform(60, 190, size=(2, 2, 1)) + rng.uniform(-25, 25, size=(2, 2, 3))  # (2, 2, 3) [top/bottom, left/right]
    ty = (y / height)[..., None]  # (H, W, 1)
    tx = (x / width)[..., None]
    image = (1 - ty) * ((1 - tx) * corners[0, 0] + tx * corners[0, 1]) + ty * ((1 - tx) * corners[1, 0] + tx * corners[1, 1])  # (H, W, 3)

    # 2. clutter for the proposals and the classifier: a few low-contrast blobs (ellipses) and stripes
    for _ in range(int(rng.integers(2, 5))):
        cx, cy = rng.uniform(0, width), rng.uniform(0, height)
        if rng.random() < 0.5:
            a, b = rng.uniform(0.08, 0.3) * width, rng.uniform(0.08, 0.3) * height
            region = ((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0
        else:
            angle, half_width = rng.uniform(0, np.pi), rng.uniform(1.0, 4.0)
            region = np.abs((x - cx) * np.cos(angle) + (y - cy) * np.sin(angle)) <= half_width
        image[region] += rng.uniform(-22, 22, size=3)

    # 3. mild noise
    image += rng.normal(0.0, 3.0, size=image.shape)
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _shape_mask(rng, shape, size):
    """The pixels of one random shape, a (h, w) bool mask whose True pixels touch all four sides.

    shape: a name from `SHAPE_CLASSES`
    size:  (min, max) side lengths; h and w are drawn in it independently (random aspect)

    Pixels are in when their centre is inside the shape. Rectangles fill the mask; ellipses are
    inscribed in it (on a long thin ellipse the ends can fall between pixel centres, so the mask is
    cropped to its tight box); a triangle has one vertex on a corner and one on each opposite side, all
    on pixel centres, so it touches every side.
    """
    h, w = (int(v) for v in rng.integers(size[0], size[1] + 1, size=2))
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)  # (h, w) each, pixel centres in index units
    if shape == "rectangle":
        mask = np.ones((h, w), dtype=bool)
    elif shape == "ellipse":
        a, b = w / 2, h / 2  # semi-axes, centred in the mask; in index units the centre is (a - .5, b - .5)
        mask = ((x + 0.5 - a) / a) ** 2 + ((y + 0.5 - b) / b) ** 2 <= 1.0
    elif shape == "triangle":
        # vertices (in index units) A = (0, 0), B on the right side, C on the bottom side, with
        # u * v <= 1/2 so that the area stays >= 1/4 of the box; then flipped to a random corner
        u = rng.random()
        v = rng.random() * min(1.0, 0.5 / max(u, 0.5))
        vertices = np.array([[0, 0], [w - 1, round(u * (h - 1))], [round(v * (w - 1)), h - 1]], dtype=np.float64)  # (3, 2) x, y
        if rng.random() < 0.5:
            vertices[:, 0] = (w - 1) - vertices[:, 0]
        if rng.random() < 0.5:
            vertices[:, 1] = (h - 1) - vertices[:, 1]
        mask = _inside_triangle(x, y, vertices)
    else:
        raise InvalidArgumentError(f"shape must be one of {SHAPE_CLASSES}, got {shape!r}")
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def _inside_triangle(x, y, vertices):
    """Points (x, y) (arrays of one shape) inside or on the triangle `vertices` ((3, 2) x, y): bool array.

    A point is inside when it is on the inner side of all three edges (edge functions >= 0 for a
    counter-clockwise triangle); integer vertices and points make the test exact.
    """
    (ax, ay), (bx, by), (cx, cy) = vertices
    if (bx - ax) * (cy - ay) - (by - ay) * (cx - ax) < 0:  # make the vertex order counter-clockwise
        (bx, by), (cx, cy) = (cx, cy), (bx, by)
    inside = np.ones(x.shape, dtype=bool)
    for (px, py), (qx, qy) in (((ax, ay), (bx, by)), ((bx, by), (cx, cy)), ((cx, cy), (ax, ay))):
        inside &= (qx - px) * (y - py) - (qy - py) * (x - px) >= 0
    return inside


def _place(rng, shape, boxes, height, width):
    """A random top-left corner (row, col) for an object of `shape` (h, w), or None if none was found.

    A position is kept when the object's box, grown by OBJECT_GAP pixels, intersects none of `boxes`
    (xyxy tuples of the objects already placed); PLACEMENT_TRIES positions are tried.
    """
    h, w = shape
    for _ in range(PLACEMENT_TRIES):
        top = int(rng.integers(0, height - h + 1))
        left = int(rng.integers(0, width - w + 1))
        x1, y1, x2, y2 = left - OBJECT_GAP, top - OBJECT_GAP, left + w + OBJECT_GAP, top + h + OBJECT_GAP
        if all(x2 <= bx1 or bx2 <= x1 or y2 <= by1 or by2 <= y1 for bx1, by1, bx2, by2 in boxes):
            return top, left
    return None


def _contrasting_colour(rng, under):
    """A random saturated colour far from every pixel of `under` ((P, 3) uint8): (3,) uint8.

    A saturated colour has one channel high (200-255), one low (0-55) and one anywhere. Colours are
    drawn until one is at least MIN_CONTRAST from every pixel under it (RGB distance); after
    CONTRAST_TRIES draws, the best one seen is kept.
    """
    under = under.astype(np.float64)
    best, best_distance = None, -1.0
    for _ in range(CONTRAST_TRIES):
        colour = np.empty(3)
        colour[rng.permutation(3)] = (rng.integers(200, 256), rng.integers(0, 56), rng.integers(0, 256))
        distance = np.sqrt(((under - colour) ** 2).sum(axis=1)).min() if len(under) else np.inf
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= MIN_CONTRAST:
            break
    return best.astype(np.uint8)


def _pixel_centres(height, width):
    """(y, x): two (H, W) float64 arrays of the pixel centres (i + 0.5, j + 0.5)."""
    y, x = np.mgrid[0:height, 0:width].astype(np.float64)
    return y + 0.5, x + 0.5


# ----------------------------------------------------------------------------------------------
# Argument checks
# ----------------------------------------------------------------------------------------------


def _is_integer(value):
    """An integer, not a boolean (``True`` is an ``Integral`` too)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def _check_count(name, value):
    if not _is_integer(value) or value < 1:
        raise InvalidArgumentError(f"{name} must be a positive integer, got {value!r}")


def _check_pair(name, value, meaning):
    """`value` as two Python ints, or an InvalidArgumentError naming `name` and what it means."""
    if not isinstance(value, (tuple, list)) or len(value) != 2 or not all(_is_integer(v) for v in value):
        raise InvalidArgumentError(f"{name} must be a pair of integers ({meaning}), got {value!r}")
    lo, hi = int(value[0]), int(value[1])
    return lo, hi


def _check_image_size(image_size):
    height, width = _check_pair("image_size", image_size, f"height, width, each >= {MIN_IMAGE_SIDE}")
    if height < MIN_IMAGE_SIDE or width < MIN_IMAGE_SIDE:
        raise InvalidArgumentError(f"image_size must be (height, width) with each >= {MIN_IMAGE_SIDE}, got {image_size!r}")
    return height, width


def _check_size(size, height, width):
    lo, hi = _check_pair("size", size, f"{MIN_SHAPE_SIDE} <= min <= max side length in pixels")
    if not MIN_SHAPE_SIDE <= lo <= hi:
        raise InvalidArgumentError(f"size must be (min, max) side lengths with {MIN_SHAPE_SIDE} <= min <= max, got {size!r}")
    if hi > min(height, width):
        raise InvalidArgumentError(
            f"size={size!r} does not fit in image_size=({height}, {width}): an object of side {hi} cannot fit; "
            f"the largest side must be <= {min(height, width)}"
        )
    return lo, hi


def _check_classes(classes):
    if not isinstance(classes, (tuple, list)) or len(classes) == 0:
        raise InvalidArgumentError(f"classes must be a non-empty tuple of names from {SHAPE_CLASSES}, got {classes!r}")
    for name in classes:
        if name not in SHAPE_CLASSES:
            raise InvalidArgumentError(f"classes must hold names from {SHAPE_CLASSES}, got {name!r} in classes={classes!r}")
    if len(set(classes)) < len(classes):
        raise InvalidArgumentError(f"classes must not repeat a name, got {classes!r}")
    return tuple(classes)


def _generator(seed):
    """A numpy Generator from an integer seed >= 0 (or the Generator itself)."""
    if isinstance(seed, np.random.Generator):
        return seed
    if not _is_integer(seed) or seed < 0:
        raise InvalidArgumentError(f"seed must be a non-negative integer or a numpy.random.Generator, got {seed!r}")
    return np.random.default_rng(int(seed))
