"""Pictures: segments, proposals on an image, recall against the number of proposals.

Every function draws with matplotlib's Agg canvas (no display, no global pyplot state) and writes
the file atomically, so a failed plot never leaves half a PNG behind. The format follows the path's
extension (PNG when there is none); `figure_format` checks a path before any work is done. Other
parts of scratchdet add their figures here (detections, PR curves, training curves).
"""

import numbers
import os

import numpy as np

from scratchdet._files import atomic_path
from scratchdet.data.images import as_rgb_uint8
from scratchdet.errors import InvalidArgumentError


def _figure(width_inches, height_inches):
    """A matplotlib Figure on an Agg canvas, independent of pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width_inches, height_inches), dpi=100)
    FigureCanvasAgg(fig)
    return fig


# A figure follows the image's shape, up to this height / width (or width / height): a strip of
# 30,000 x 2 pixels is drawn narrow inside a bounded figure, not on one 100,000 inches tall (which
# matplotlib refuses, or draws into gigabytes of memory).
MAX_FIGURE_ASPECT = 4.0


def _aspect(height, width):
    """The image's height / width, clamped to [1 / MAX_FIGURE_ASPECT, MAX_FIGURE_ASPECT] for a figure."""
    return min(max(height / max(width, 1), 1.0 / MAX_FIGURE_ASPECT), MAX_FIGURE_ASPECT)


def _literal(text):
    """`text` as matplotlib draws it literally: a file name such as "cost_$1_and_$2.png" would
    otherwise be read as mathematics between the dollar signs (and fail to parse)."""
    return str(text).replace("$", r"\$")


def _legend_label(name):
    """A curve's name as its legend entry: drawn literally, and shown even when it starts with "_"
    (which matplotlib takes to mean "leave out of the legend")."""
    text = _literal(name)
    return " " + text if text.startswith("_") else text


# formats matplotlib lists but cannot write on its own: pgf runs LaTeX
NEEDS_OTHER_PROGRAMS = ("pgf",)


def figure_format(path, option="path"):
    """The picture format of an output path, from its extension ("png" when it has none), checked
    before any drawing: an `InvalidArgumentError` naming `option` for a format matplotlib cannot
    write or a path that is a directory."""
    from matplotlib.backend_bases import FigureCanvasBase

    path = os.fspath(path)
    if os.path.isdir(path) or not os.path.basename(path):  # "out/" names a directory too
        raise InvalidArgumentError(f"{option} {path!r} is a directory, expected a picture file name")
    extension = os.path.splitext(path)[1].lower().lstrip(".")
    fmt = extension or "png"
    supported = {f: name for f, name in FigureCanvasBase.get_supported_filetypes().items() if f not in NEEDS_OTHER_PROGRAMS}
    if fmt not in supported:
        raise InvalidArgumentError(f"{option} {path!r}: cannot write pictures of format {fmt!r}; use one of {sorted(supported)}")
    return fmt


def _save(fig, path, fmt=None):
    """Write `fig` to `path` atomically, in the format `fmt` (checked; default: `path`'s, see
    `figure_format`). A command that draws to a temporary file names the format of the output it
    stands for."""
    # the format is named explicitly: the temporary file's name ends in ".tmp" when `path` has no extension
    fmt = figure_format(path) if fmt is None else figure_format(f"picture.{fmt}", option="fmt")
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format=fmt, bbox_inches="tight")
    return path


def _check_image(image):
    """(H, W, 3) RGB of any pixel type the loader takes, as uint8: float images in [0, 1] or another
    range, uint16 and bool are scaled as `scratchdet.data.images.as_rgb_uint8` does (matplotlib would
    clip a float image of 0..255 to white, and paint mean colours of [0, 1] black)."""
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InvalidArgumentError(f"image must be (H, W, 3) RGB, got shape {image.shape}")
    return as_rgb_uint8(image, name="image")


def segment_mean_colours(image, labels):
    """Paint every segment with its mean colour: (H, W, 3) uint8 and (H, W) int -> (H, W, 3) uint8."""
    image = _check_image(image)
    labels = np.asarray(labels)
    if labels.shape != image.shape[:2]:
        raise InvalidArgumentError(f"labels must have the image's shape {image.shape[:2]}, got {labels.shape}")
    if labels.dtype.kind not in "iu" or (labels.size and labels.min() < 0):
        raise InvalidArgumentError(f"labels must be integer segment ids >= 0, got dtype {labels.dtype}")
    flat = labels.ravel()
    if flat.size and flat.max() >= flat.size:  # sparse ids (2**40): number the ones present 0, 1, ...
        flat = np.unique(flat, return_inverse=True)[1].ravel()
        labels = flat.reshape(labels.shape)
    counts = np.bincount(flat).astype(np.float64)  # (n,)
    means = np.stack(
        [np.bincount(flat, weights=image[:, :, c].ravel().astype(np.float64)) for c in range(3)], axis=1
    ) / np.maximum(counts, 1)[:, None]  # (n, 3)
    return np.round(means[labels]).astype(np.uint8)


def plot_segments(image, labels, path, title=None, fmt=None):
    """Write a figure of an image beside its segments (each painted with its mean colour, outlined).

    Args:
        image: (H, W, 3) uint8 RGB.
        labels: (H, W) int segment ids.
        path: output file (.png, .pdf, ...).
        title: optional title over the figure.
        fmt: the picture format, from `figure_format` (default: `path`'s); a command that draws to a
            temporary file names the format of the file it stands for.

    Returns:
        `path`.
    """
    from skimage.segmentation import find_boundaries

    image = _check_image(image)
    painted = segment_mean_colours(image, labels)  # checks the labels
    painted[find_boundaries(np.asarray(labels), mode="inner")] = 0
    height, width = image.shape[:2]
    fig = _figure(10, 5 * _aspect(height, width) + 0.6)
    for index, (picture, caption) in enumerate(
        [(image, "image"), (painted, f"{len(np.unique(labels))} segments")]
    ):
        ax = fig.add_subplot(1, 2, index + 1)
        ax.imshow(picture)
        ax.set_title(caption)
        ax.set_axis_off()
    if title:
        fig.suptitle(_literal(title))
    return _save(fig, path, fmt)


def plot_proposals(image, boxes, path, max_boxes=20, title=None, fmt=None):
    """Write the image with its first `max_boxes` proposals drawn as rectangles.

    Args:
        image: (H, W, 3) uint8 RGB.
        boxes: (N, 4) xyxy in pixels, best first.
        path: output file.
        max_boxes: how many of the first boxes to draw (an integer >= 0).
        title: optional title.
        fmt: the picture format, as in `plot_segments`.

    Returns:
        `path`.
    """
    from matplotlib.patches import Rectangle

    image = _check_image(image)
    if isinstance(max_boxes, (bool, np.bool_)) or not isinstance(max_boxes, (int, np.integer)) or max_boxes < 0:
        raise InvalidArgumentError(f"max_boxes must be an integer >= 0, got {max_boxes!r}")
    boxes = np.asarray(boxes, dtype=np.float64)
    if boxes.size == 0:
        boxes = boxes.reshape(0, 4)
    if boxes.ndim != 2 or boxes.shape[1] != 4:
        raise InvalidArgumentError(f"boxes must be (N, 4) rows (x1, y1, x2, y2), got shape {boxes.shape}")
    boxes = boxes[:max_boxes]
    height, width = image.shape[:2]
    fig = _figure(8, 8 * _aspect(height, width))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(image, extent=(0, width, height, 0))  # pixel (i, j) covers [j, j+1) x [i, i+1), as boxes count
    colours = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple")
    for index, (x1, y1, x2, y2) in enumerate(boxes):
        ax.add_patch(
            Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.5, edgecolor=colours[index % len(colours)])
        )
    ax.set_title(_literal(title) if title else f"first {len(boxes)} proposals")
    ax.set_axis_off()
    return _save(fig, path, fmt)


def plot_recall_curves(curves, path, iou_threshold=0.5, title=None):
    """Write recall against the number of proposals per image, one line per method (log x axis).

    Args:
        curves: dict name -> (counts, recall), each a 1-D sequence of the same length, e.g. from
            `scratchdet.eval.recall.recall_curve` (its "counts" and "recall").
        path: output file.
        iou_threshold: the IoU at which recall was measured, for the axis label.
        title: optional title.

    Returns:
        `path`.
    """
    if not isinstance(curves, dict) or not curves:
        raise InvalidArgumentError(f"curves must be a dict of at least one name -> (counts, recall), got {type(curves).__name__}")
    if isinstance(iou_threshold, bool) or not isinstance(iou_threshold, numbers.Real):
        raise InvalidArgumentError(f"iou_threshold must be a number, got {iou_threshold!r}")
    fig = _figure(6, 4.5)
    ax = fig.add_subplot(1, 1, 1)
    for name, curve in curves.items():
        if not isinstance(curve, (tuple, list)) or len(curve) != 2:
            raise InvalidArgumentError(f"curve {name!r} must be a pair (counts, recall), got {curve!r}")
        counts = np.asarray(curve[0], dtype=np.float64)
        recall = np.asarray(curve[1], dtype=np.float64)
        if counts.shape != recall.shape or counts.ndim != 1:
            raise InvalidArgumentError(f"curve {name!r}: counts and recall must be 1-D of the same length")
        ax.plot(counts, recall, marker="o", markersize=3, label=_legend_label(name))
    ax.set_xscale("log")
    ax.set_ylim(0.0, 1.0)
    ax.set_xlabel("proposals per image")
    ax.set_ylabel(f"recall at IoU >= {iou_threshold:g}")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    ax.set_title(_literal(title) if title else "recall against the number of proposals")
    return _save(fig, path)


def plot_hierarchy(image, hierarchy, path, steps=(0.0, 0.5, 0.8, 0.95)):
    """Write snapshots of one Selective Search hierarchy: the regions alive after a fraction of the merges.

    Args:
        image: (H, W, 3) uint8 RGB.
        hierarchy: a `scratchdet.proposals.Hierarchy`.
        path: output file.
        steps: fractions in [0, 1] of the merges done before each snapshot (0: the starting segments);
            one number for a single snapshot.

    Returns:
        `path`.
    """
    image = _check_image(image)
    steps = (steps,) if isinstance(steps, (int, float, np.integer, np.floating)) else steps  # one snapshot
    try:
        steps = tuple(steps)
    except TypeError:  # None, or another object that is no sequence
        raise InvalidArgumentError(f"steps must be one or more fractions of the merges in [0, 1], got {steps!r}") from None
    if not steps or not all(isinstance(f, (int, float, np.integer, np.floating)) and 0.0 <= f <= 1.0 for f in steps):
        raise InvalidArgumentError(f"steps must be one or more fractions of the merges in [0, 1], got {steps!r}")
    labels = np.asarray(hierarchy.labels)
    merges = np.asarray(hierarchy.merges)
    n_start = int(labels.max()) + 1
    height, width = image.shape[:2]
    fig = _figure(4 * len(steps), 4 * _aspect(height, width) + 0.6)
    for index, fraction in enumerate(steps):
        n_done = int(round(fraction * merges.shape[0]))
        # follow each starting region up the tree through the first n_done merges
        owner = np.arange(n_start + merges.shape[0])
        for m in range(n_done):
            owner[merges[m]] = n_start + m
        for r in range(n_start + n_done - 1, -1, -1):
            owner[r] = owner[owner[r]] if owner[r] != r else r
        region = owner[labels]
        _, region = np.unique(region, return_inverse=True)
        ax = fig.add_subplot(1, len(steps), index + 1)
        ax.imshow(segment_mean_colours(image, region.reshape(labels.shape)))
        ax.set_title(f"{n_start - n_done} regions")
        ax.set_axis_off()
    s = hierarchy.strategy
    fig.suptitle(f"hierarchical grouping: {s.colour_space}, k={s.k:g}, {s.similarity}")
    return _save(fig, path)


# a detection's label: its font size and the padding of its coloured box, in points
LABEL_FONTSIZE = 7
LABEL_PAD = 1.0


def plot_detections(images, detections, path, classes=None, ground_truth=None, titles=None, columns=4):
    """Write one or more images with their detections drawn: a box per detection, coloured by class
    (8 colours, repeating every 8 classes), labelled "class score" on its top edge (inside the box at
    the image's top; a label is cut at the image's edges); ground-truth boxes, when given, dashed in
    white underneath.

    Args:
        images: one (H, W, 3) uint8 RGB image, or a list of them (sizes may differ).
        detections: for each image, its detections: anything with `boxes` (N, 4) xyxy, `scores` (N,)
            and `labels` (N,) classes 1..K (`scratchdet.models.Detections`); one for a single image.
        path: output file.
        classes: optional K class names; label u is drawn as classes[u - 1] (else as the number u).
        ground_truth: optional, for each image, its (G, 4) xyxy ground-truth boxes.
        titles: optional, for each image, its title (default: the number of detections).
        columns: images per row of the grid.

    Returns:
        `path`.
    """
    from matplotlib.patches import Rectangle

    if isinstance(images, np.ndarray) and images.ndim == 3:  # one image (its title and boxes may come as lists of one)
        images, detections = [images], [detections]
        if ground_truth is not None and np.ndim(ground_truth) != 3:  # (G, 4), not [(G, 4)]
            ground_truth = [ground_truth]
        if titles is not None and not isinstance(titles, (list, tuple)):  # a title, not [title]
            titles = [titles]
    images = [_check_image(image) for image in images]
    n_images = len(images)
    if not isinstance(detections, (list, tuple)) or any(not hasattr(d, a) for d in detections for a in ("boxes", "scores", "labels")):
        raise InvalidArgumentError(
            "detections must be, for each image, one object with boxes, scores and labels (scratchdet.models.Detections); "
            "one for a single image"
        )
    if n_images == 0 or len(detections) != n_images:
        raise InvalidArgumentError(f"need one or more images and one detections per image, got {n_images} and {len(detections)}")
    for name, per_image in (("ground_truth", ground_truth), ("titles", titles)):
        if per_image is not None and len(per_image) != n_images:
            raise InvalidArgumentError(f"{name} must have one entry per image ({n_images}), got {len(per_image)}")
    if isinstance(columns, bool) or not isinstance(columns, (int, np.integer)) or columns < 1:
        raise InvalidArgumentError(f"columns must be a positive integer, got {columns!r}")
    columns = min(int(columns), n_images)
    rows = -(-n_images // columns)
    colours = ("tab:red", "tab:blue", "tab:green", "tab:orange", "tab:purple", "tab:cyan", "tab:pink", "tab:olive")

    def as_boxes(value, what):
        boxes = np.asarray(value, dtype=np.float64)
        boxes = boxes.reshape(0, 4) if boxes.size == 0 else boxes
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise InvalidArgumentError(f"{what} must be (N, 4) rows (x1, y1, x2, y2), got shape {boxes.shape}")
        return boxes

    aspect = max(_aspect(*image.shape[:2]) for image in images)
    side = 4.0 if n_images > 1 else 7.0  # inches per image
    fig = _figure(side * columns, side * aspect * rows + 0.4)
    label_points = LABEL_FONTSIZE * 1.2 + 2 * LABEL_PAD  # a label's height, in points
    for index, (image, found) in enumerate(zip(images, detections)):
        ax = fig.add_subplot(rows, columns, index + 1)
        height, width = image.shape[:2]
        ax.imshow(image, extent=(0, width, height, 0))  # pixel (i, j) covers [j, j+1) x [i, i+1), as boxes count
        # a label sits on its box's top edge, or just inside it where the image ends above the box
        # (above the image it would cover the title); the image fills the axes' width or height
        box = ax.get_position()  # in figure fractions
        shown_points = 72 * min(box.height * fig.get_figheight(), box.width * fig.get_figwidth() * height / width)
        label_height = label_points * height / shown_points  # in image pixels
        # 1. the ground truth, dashed, under the detections
        if ground_truth is not None:
            for x1, y1, x2, y2 in as_boxes(ground_truth[index], "ground_truth boxes"):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.0, linestyle="--", edgecolor="white"))
        # 2. the detections, worst first so that the best are drawn on top
        boxes = as_boxes(found.boxes, "detection boxes")
        scores = np.asarray(found.scores, dtype=np.float64).reshape(-1)
        labels = np.asarray(found.labels).reshape(-1).astype(np.int64)
        if not len(boxes) == len(scores) == len(labels):
            raise InvalidArgumentError(f"image {index}: boxes, scores and labels must have one row per detection")
        for (x1, y1, x2, y2), score, label in reversed(list(zip(boxes, scores, labels))):
            colour = colours[(label - 1) % len(colours)]
            name = classes[label - 1] if classes is not None and 1 <= label <= len(classes) else str(label)
            ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, linewidth=1.5, edgecolor=colour))
            # the label's corner in the image (a box may begin outside it), the text cut at the image's
            # edges: a label outside would widen the picture around it
            lx, ly = min(max(x1, 0.0), width), min(max(y1, 0.0), height)
            ax.text(lx, ly, _literal(f"{name} {score:.2f}"), fontsize=LABEL_FONTSIZE, color="white",
                    va="bottom" if ly >= label_height else "top", clip_on=True,
                    bbox={"facecolor": colour, "edgecolor": "none", "pad": LABEL_PAD, "alpha": 0.8})
        ax.set_title(_literal(titles[index]) if titles is not None else f"{len(boxes)} detections", fontsize=9)
        ax.set_axis_off()
    return _save(fig, path)


def plot_training_curves(history, path, title=None):
    """Write the loss of every component (total, cls, loc, ...) against the training step.

    Args:
        history: a `scratchdet.train.History`, or its `as_dict()`: {"steps": [int], "losses": {name: [float]}}.
        path: output file.
        title: optional title.

    Each component is drawn per step (thin) and as a running mean over about 1/20 of the run (thick).

    Returns:
        `path`.
    """
    record = history.as_dict() if hasattr(history, "as_dict") else history
    try:
        steps = np.asarray(record["steps"], dtype=np.float64)
        losses = {str(name): np.asarray(values, dtype=np.float64) for name, values in record["losses"].items()}
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise InvalidArgumentError(f"history must be a History or a dict with 'steps' and 'losses': {error}") from None
    if steps.ndim != 1 or any(values.shape != steps.shape for values in losses.values()):
        raise InvalidArgumentError("history: every loss must have one value per step")
    window = max(1, len(steps) // 20)
    fig = _figure(6, 4)
    ax = fig.add_subplot(1, 1, 1)
    for index, (name, values) in enumerate(losses.items()):
        colour = f"C{index}"
        ax.plot(steps, values, color=colour, linewidth=0.6, alpha=0.35)
        if len(values) >= window:
            mean = np.convolve(values, np.ones(window) / window, mode="valid")  # (n - window + 1,)
            ax.plot(steps[window - 1 :], mean, color=colour, linewidth=1.8, label=_legend_label(name))
        else:
            ax.plot([], [], color=colour, label=_legend_label(name))
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(True, alpha=0.3)
    if losses:
        ax.legend()
    ax.set_title(_literal(title) if title else "training loss")
    return _save(fig, path)
