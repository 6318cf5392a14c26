"""Mini-batches as a function of the step number, so that a resumed run sees the very batches an
uninterrupted one would (`scratchdet.train.fit` calls `batches(step)`).

Images are visited epoch by epoch, each epoch in its own random order; `roi_batches` builds Fast
R-CNN's hierarchical mini-batches (Girshick 2015, section 2.3: N images, R / N RoIs from each, a
quarter of them foreground, images flipped horizontally with probability 0.5).
"""

from typing import NamedTuple

import numpy as np

from scratchdet import boxes as B
from scratchdet.errors import InvalidArgumentError
from scratchdet.nn.layers import check_size
from scratchdet.train.targets import FAST_RCNN_WEIGHTS, match_proposals, regression_targets, sample_rois, with_gt_boxes


class RoIBatch(NamedTuple):
    """One step of detector training.

    images: (N, H, W, 3) uint8 RGB.
    rois: (R, 5) float32 rows (batch_index, x1, y1, x2, y2) in image pixels.
    labels: (R,) int64 classes, 0 = background.
    bbox_targets: (R, 4) float32 encoded box targets (zero for background rows).
    """

    images: np.ndarray
    rois: np.ndarray
    labels: np.ndarray
    bbox_targets: np.ndarray


def epoch_order(n_items, step, count, seed):
    """The `count` item indices that step `step` takes from the stream: every item once per epoch,
    each epoch shuffled by its own generator (seed, epoch). n_items, count >= 1; step, seed >= 0 ints.
    Returns (count,) int64."""
    n_items, count = check_size("n_items", n_items), check_size("count", count)
    step, seed = check_size("step", step, minimum=0), check_size("seed", seed, minimum=0)
    start = step * count
    out = []
    while len(out) < count:
        epoch, offset = divmod(start + len(out), n_items)
        order = np.random.default_rng([seed, epoch]).permutation(n_items)
        out.extend(order[offset : offset + count - len(out)].tolist())
    return np.array(out, dtype=np.int64)


def array_batches(arrays, *, batch_size, seed=0):
    """Batches of aligned arrays for the single-object models.

    Args:
        arrays: a tuple of arrays with one first dimension (e.g. images, labels, boxes).
        batch_size: items per step (an epoch may be split across two steps).
        seed: the shuffling seed, an int >= 0.

    Returns:
        `batches(step) -> tuple` of the arrays' rows for that step.
    """
    arrays = tuple(np.asarray(a) for a in arrays)
    if not arrays or len({len(a) for a in arrays}) != 1 or len(arrays[0]) == 0:
        raise InvalidArgumentError(f"arrays must be non-empty with one length, got lengths {[len(a) for a in arrays]}")
    batch_size = check_size("batch_size", batch_size)
    seed = check_size("seed", seed, minimum=0)

    def batches(step):
        rows = epoch_order(len(arrays[0]), step, batch_size, seed)
        return tuple(a[rows] for a in arrays)

    return batches


def flip_boxes(boxes, width):
    """Mirror (R, 4) xyxy boxes left to right in an image `width` pixels wide: x -> width - x."""
    flipped = boxes.copy()
    flipped[:, 0], flipped[:, 2] = width - boxes[:, 2], width - boxes[:, 0]
    return flipped


def roi_batches(
    images, gt_boxes, gt_labels, proposals, *, images_per_batch=2, rois_per_image=64, fg_fraction=0.25,
    fg_iou=0.5, bg_iou=(0.1, 0.5), box_weights=FAST_RCNN_WEIGHTS, flip=True, seed=0,
):
    """Fast R-CNN's mini-batches over a detection dataset.

    Every image's RoIs (its proposals and ground-truth boxes) are labelled once (`match_proposals`);
    each step then takes `images_per_batch` images in epoch order, samples `rois_per_image` RoIs from
    each (`sample_rois`), flips the image and its boxes with probability 0.5 when `flip`, and encodes
    the foreground RoIs' box targets (`regression_targets`).

    An image from which `sample_rois` can draw nothing (no foreground and no background RoI: e.g. an
    image without ground truth, whose proposals all have IoU 0 < bg_iou[0]) is left out of the epochs,
    as py-faster-rcnn's `filter_roidb` leaves it out: a step of only such images would have no RoI
    for the loss. Every step's batch then holds at least one RoI per image.

    Args:
        images: sequence of (H, W, 3) uint8 images, all one size when images_per_batch > 1.
        gt_boxes: sequence of (G_i, 4) xyxy boxes; gt_labels: sequence of (G_i,) classes 1..K.
        proposals: sequence of (P_i, 4) xyxy proposals (e.g. Selective Search's).
        images_per_batch, rois_per_image: N and R / N (the paper: 2 and 64).
        fg_fraction, fg_iou, bg_iou: as `sample_rois` and `match_proposals`.
        box_weights: the encoding weights; the model must decode with the same.
        flip: horizontal flips as data augmentation; seed: the shuffling and sampling seed, an int >= 0.

    Returns:
        `batches(step) -> RoIBatch`.

    Raises:
        InvalidArgumentError: a bad argument, or no image with a RoI to sample.
    """
    n_images = len(images)
    if not n_images or not len(gt_boxes) == len(gt_labels) == len(proposals) == n_images:
        raise InvalidArgumentError(
            f"images, gt_boxes, gt_labels and proposals must be non-empty and of one length, got "
            f"{n_images}, {len(gt_boxes)}, {len(gt_labels)}, {len(proposals)}"
        )
    images_per_batch = check_size("images_per_batch", images_per_batch)
    rois_per_image = check_size("rois_per_image", rois_per_image)
    seed = check_size("seed", seed, minimum=0)
    images = [np.asarray(image) for image in images]
    for i, image in enumerate(images):
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8 or 0 in image.shape:
            raise InvalidArgumentError(
                f"images[{i}] must be (H, W, 3) uint8 RGB with H, W >= 1, got shape {image.shape} dtype {image.dtype}"
            )
    if images_per_batch > 1 and len({image.shape for image in images}) > 1:
        raise InvalidArgumentError("images of different sizes need images_per_batch=1 (a batch is one array)")
    # 1. label every image's RoIs once: proposals and ground truth, by IoU
    gt_boxes = [B._check_boxes(f"gt_boxes[{i}]", g).astype(np.float64) for i, g in enumerate(gt_boxes)]  # (G_i, 4) each
    rois, matches = [], []
    for i, gt in enumerate(gt_boxes):
        image_rois = with_gt_boxes(B._check_boxes(f"proposals[{i}]", proposals[i]).astype(np.float64), gt)  # (P_i + G_i, 4)
        rois.append(image_rois)
        try:
            matches.append(match_proposals(image_rois, gt, gt_labels[i], fg_iou=fg_iou, bg_iou=bg_iou))
        except InvalidArgumentError as error:  # it names the labels within the image: say which image
            raise InvalidArgumentError(f"image {i}: {error}") from None
    regression_targets(rois[0], gt_boxes[0], matches[0], weights=box_weights)  # checks the weights now
    # 2. only images that give RoIs take part (how many `sample_rois` draws depends on the labels alone)
    n_drawn = [len(sample_rois(m.labels, batch_size=rois_per_image, fg_fraction=fg_fraction, rng=0)) for m in matches]
    usable = np.flatnonzero(n_drawn)  # (U,) int64 indices of the images that take part
    if usable.size == 0:
        raise InvalidArgumentError(
            f"no image has a RoI to train on: none of the {n_images} images has a foreground RoI (IoU >= {fg_iou}) "
            f"or a background one (IoU in [{bg_iou[0]}, {bg_iou[1]})) that rois_per_image={rois_per_image} and "
            f"fg_fraction={fg_fraction} let sample_rois draw"
        )

    def batches(step):
        step = check_size("step", step, minimum=0)
        rng = np.random.default_rng([seed, step, 1])
        batch_images, batch_rois, batch_labels, batch_targets = [], [], [], []
        for n, i in enumerate(usable[epoch_order(len(usable), step, images_per_batch, seed)]):
            # 3. sample this image's RoIs: a quarter foreground, the rest background
            keep = sample_rois(matches[i].labels, batch_size=rois_per_image, fg_fraction=fg_fraction, rng=rng)
            image, image_rois, gt = images[i], rois[i][keep], gt_boxes[i]
            # 4. flip the image and every box with it, half the time
            if flip and rng.random() < 0.5:
                width = image.shape[1]
                image, image_rois, gt = image[:, ::-1], flip_boxes(image_rois, width), flip_boxes(gt, width)
            sampled = matches[i]._replace(
                labels=matches[i].labels[keep], gt_index=matches[i].gt_index[keep], max_iou=matches[i].max_iou[keep]
            )
            # 5. the box targets of the foreground RoIs (zero rows for the background)
            batch_targets.append(regression_targets(image_rois, gt, sampled, weights=box_weights))
            batch_images.append(image)
            batch_rois.append(np.concatenate([np.full((len(keep), 1), n), image_rois], axis=1))
            batch_labels.append(sampled.labels)
        return RoIBatch(
            np.ascontiguousarray(np.stack(batch_images)),
            np.concatenate(batch_rois).astype(np.float32),
            np.concatenate(batch_labels).astype(np.int64),
            np.concatenate(batch_targets).astype(np.float32),
        )

    return batches


def dataset_proposals(images, *, mode="fast", max_boxes=2000, progress=True):
    """Selective Search's proposals for every image, with a progress bar: list of (P_i, 4) float32."""
    from tqdm import tqdm

    from scratchdet.proposals import selective_search

    return [
        selective_search(image, mode=mode, max_boxes=max_boxes)
        for image in tqdm(images, desc="proposals", unit="image", disable=not progress)
    ]

