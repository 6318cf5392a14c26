"""`scratchdet train`: train Fast R-CNN or R-CNN on a COCO dataset and write the weights.

    scratchdet train --gt annotations.json --images DIR --model fast-rcnn|rcnn --steps N --out weights.npz
                     [--lr 0.01] [--seed 0] [--checkpoint ckpt.npz] [--resume] [--log losses.json]
                     [--proposals fast|quality] [--max-proposals 2000] [--no-progress]

Each image's ``file_name`` is read relative to DIR. The categories become the classes 1..K in sorted
id order (the ids are kept in the weights, so `scratchdet detect` writes them back); crowd, difficult
and empty boxes are left out. Selective Search proposes the regions, then SGD (momentum 0.9, weight
decay 5e-4) trains the detector on Fast R-CNN's mini-batches (Girshick 2015, section 2.3: 2 images
of 64 RoIs each, or 1 image when their sizes differ) through `scratchdet.train.fit`.
"""

import os
from typing import NamedTuple

from scratchdet.errors import DataFormatError, InvalidArgumentError

MODELS = ("fast-rcnn", "rcnn")
PROPOSAL_MODES = ("fast", "quality")
MOMENTUM = 0.9
WEIGHT_DECAY = 5e-4
ROIS_PER_IMAGE = 64
# The weights' metadata["extra"] key of the COCO category id of each class (label u -> ids[u - 1]).
CATEGORY_IDS = "category_ids"


def register(subparsers):
    """Add the `train` subcommand."""
    parser = subparsers.add_parser(
        "train",
        help="train Fast R-CNN or R-CNN on a COCO dataset",
        description="Train Fast R-CNN or R-CNN on a COCO ground-truth file and its images; write the weights (.npz).",
        epilog="Images of different sizes train one per step. --resume goes on from --checkpoint up to --steps.",
    )
    parser.add_argument("--gt", required=True, metavar="GT.json", help="ground truth, a COCO dataset JSON file")
    parser.add_argument("--images", required=True, metavar="DIR", help="directory the images' file_name fields are relative to")
    parser.add_argument("--model", required=True, choices=MODELS, metavar="NAME", help="fast-rcnn (Girshick 2015) or rcnn (Girshick et al. 2014)")
    parser.add_argument("--steps", required=True, type=int, metavar="N", help="number of SGD steps")
    parser.add_argument("--out", required=True, metavar="WEIGHTS.npz", help="write the trained weights here")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default 0)")
    parser.add_argument("--checkpoint", metavar="CKPT.npz", help="save the run here every 100 steps and at the end")
    parser.add_argument("--resume", action="store_true", help="go on from --checkpoint if it exists")
    parser.add_argument("--log", metavar="LOSSES.json", help="write the loss of every step here")
    parser.add_argument("--proposals", choices=PROPOSAL_MODES, default="fast", metavar="MODE", help="Selective Search mode: fast (default) or quality")
    parser.add_argument("--max-proposals", type=int, default=2000, metavar="N", help="proposals per image (default 2000)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


class Dataset(NamedTuple):
    """A COCO dataset read for training: per image its path, pixels, boxes and labels.

    paths: list of n image paths.
    images: list of n (H_i, W_i, 3) uint8 RGB.
    boxes: list of n (G_i, 4) float64 xyxy boxes (crowd, difficult and empty ones left out).
    labels: list of n (G_i,) int64 classes 1..K.
    classes: tuple of K category names, in sorted id order.
    category_ids: list of K ints, the COCO id of each class (label u is category_ids[u - 1]).
    ignored: how many boxes were left out.
    """

    paths: list
    images: list
    boxes: list
    labels: list
    classes: tuple
    category_ids: list
    ignored: int


def read_annotations(gt_path, image_dir):
    """Read and check a COCO ground-truth file: (the dict, its `GroundTruth`, the path of each image).

    The images are listed in sorted id order, each ``file_name`` joined to `image_dir`. Raises
    FileMissingError / DataFormatError naming the file for a missing or malformed one, or an image
    without a ``file_name``, and InvalidArgumentError when `image_dir` is not a directory.
    """
    from scratchdet.data.coco import load_json, parse_ground_truth

    gt_dict = load_json(gt_path)
    gt = parse_ground_truth(gt_dict, source=gt_path)
    if not os.path.isdir(image_dir):
        raise InvalidArgumentError(f"--images {image_dir!r} is not a directory")
    if len(gt.image_ids) == 0:
        raise DataFormatError(f"{gt_path}: no images to train on")
    if len(gt.category_ids) == 0:
        raise DataFormatError(f"{gt_path}: no categories to train on")
    paths = []
    for image_id, name in zip(gt.image_ids.tolist(), gt.image_names):
        if not name:
            raise DataFormatError(f'{gt_path}: the image with id {image_id} has no "file_name"')
        paths.append(os.path.join(image_dir, name))
    return gt_dict, gt, paths


def read_dataset(gt_dict, gt, paths, gt_path):
    """The images and boxes of a ground truth read by `read_annotations`: a `Dataset`.

    Raises FileMissingError / DataFormatError naming an image that is missing or unreadable, or whose
    size is not the ``width`` / ``height`` the ground truth gives.
    """
    import numpy as np

    from scratchdet.data.images import load_image
    from scratchdet.proposals.selective_search import check_rgb_image

    # 1. the pixels, checked against the sizes the file declares
    declared = {entry["id"]: entry for entry in gt_dict["images"]}  # ids are checked integers
    images = []
    for image_id, path in zip(gt.image_ids.tolist(), paths):
        image = check_rgb_image(load_image(path), name=path)  # e.g. one pixel: too small for Selective Search
        height, width = image.shape[:2]
        entry = declared[image_id]
        if entry.get("width", width) != width or entry.get("height", height) != height:
            raise DataFormatError(
                f"{path}: the image is {width}x{height} pixels, {gt_path} says {entry.get('width')}x{entry.get('height')}"
            )
        images.append(image)

    # 2. the boxes: [x, y, w, h] -> (x1, y1, x2, y2); crowd, difficult and empty boxes are not learned from
    x, y, w, h = gt.boxes.T  # (G,) each
    xyxy = np.stack([x, y, x + w, y + h], axis=1)  # (G, 4)
    used = ~gt.iscrowd & ~gt.difficult & (w > 0) & (h > 0)
    boxes = [xyxy[(gt.image == i) & used] for i in range(len(images))]
    labels = [gt.category[(gt.image == i) & used] + 1 for i in range(len(images))]  # rank 0..K-1 -> label 1..K
    return Dataset(paths, images, boxes, labels, tuple(gt.category_names), gt.category_ids.tolist(), int((~used).sum()))


def build_model(name, classes, seed):
    """A fresh detector: `name` one of MODELS, `classes` its K class names, `seed` its initial weights."""
    from scratchdet.models import RCNN, FastRCNN

    return {"fast-rcnn": FastRCNN, "rcnn": RCNN}[name](classes, rng=seed)


def train_detector(model, images, boxes, labels, proposals, *, steps, lr, seed, checkpoint=None, resume=False, progress=True):
    """Train `model` with SGD (momentum 0.9, weight decay 5e-4) on Fast R-CNN's mini-batches; returns the `History`.

    images: list of (H_i, W_i, 3) uint8; boxes: list of (G_i, 4) xyxy; labels: list of (G_i,) in 1..K;
    proposals: list of (P_i, 4) xyxy. Two images per step when all have one size, else one.
    """
    from scratchdet import nn
    from scratchdet.train import fit, roi_batches

    images_per_batch = 2 if len({image.shape for image in images}) == 1 else 1
    batches = roi_batches(
        images, boxes, labels, proposals, images_per_batch=images_per_batch, rois_per_image=ROIS_PER_IMAGE, seed=seed
    )
    optimizer = nn.SGD(model, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)
    return fit(model, batches, optimizer, steps=steps, checkpoint=checkpoint, resume=resume, progress=progress, desc="train")


def save_detector(path, detector, category_ids, **settings):
    """`nn.save` the detector with the COCO id of each class and the training settings in metadata["extra"]."""
    from scratchdet import nn

    nn.save(path, detector, classes=detector.classes, extra={CATEGORY_IDS: list(category_ids), **settings})


def loss_summary(history):
    """'loss 0.231 (cls 0.120, loc 0.111), mean of the last 20 steps'."""
    import numpy as np

    if len(history) == 0:
        return "no steps recorded"
    last = max(1, min(20, len(history) // 10))
    means = {name: float(np.mean(values[-last:])) for name, values in history.losses.items()}
    parts = ", ".join(f"{name} {value:.3f}" for name, value in means.items() if name != "total")
    over = "the last step" if last == 1 else f"mean of the last {last} steps"
    return f"loss {means['total']:.3f}" + (f" ({parts})" if parts else "") + f", {over}"


def check_training_options(args):
    """The options every training run shares: --steps, --lr, --seed (InvalidArgumentError naming the bad one)."""
    import math

    if args.steps < 1:
        raise InvalidArgumentError(f"--steps must be a positive number of steps, got {args.steps}")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise InvalidArgumentError(f"--lr must be a positive number, got {args.lr}")
    if args.seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {args.seed}")


def run(args):
    """Read the data, propose regions, train, write the weights (and the losses); returns 0."""
    import json
    import time

    from scratchdet._files import atomic_write
    from scratchdet.commands.outputs import check_distinct, check_output_file
    from scratchdet.train import dataset_proposals

    # 1. the options and the outputs, before any work
    check_training_options(args)
    if args.max_proposals < 1:
        raise InvalidArgumentError(f"--max-proposals must be positive, got {args.max_proposals}")
    if args.resume and args.checkpoint is None:
        raise InvalidArgumentError("--resume needs --checkpoint, the file to resume from")
    outputs = [("--out", args.out), ("--log", args.log), ("--checkpoint", args.checkpoint)]
    for option, path in outputs:
        check_output_file(option, path)

    # 2. the dataset (no output may overwrite the ground truth or an image)
    gt_dict, gt, paths = read_annotations(args.gt, args.images)
    check_distinct(outputs, [args.gt, *paths])
    dataset = read_dataset(gt_dict, gt, paths, args.gt)
    progress = not args.no_progress
    resuming = args.resume and os.path.isfile(args.checkpoint)

    # 3. proposals and training
    start = time.perf_counter()
    proposals = dataset_proposals(dataset.images, mode=args.proposals, max_boxes=args.max_proposals, progress=progress)
    model = build_model(args.model, dataset.classes, args.seed)
    history = train_detector(
        model, dataset.images, dataset.boxes, dataset.labels, proposals, steps=args.steps, lr=args.lr, seed=args.seed,
        checkpoint=args.checkpoint, resume=args.resume, progress=progress,
    )
    seconds = time.perf_counter() - start

    # 4. the weights, with what `detect` needs to map labels back to category ids, then the losses
    try:
        save_detector(
            args.out, model, dataset.category_ids, model=args.model, steps=args.steps, lr=args.lr, seed=args.seed,
            proposals=args.proposals, max_proposals=args.max_proposals,
        )
        if args.log:
            with atomic_write(args.log) as f:
                json.dump(history.as_dict(), f)
    except OSError as error:
        raise InvalidArgumentError(f"cannot write {error.filename or args.out}: {error.strerror or error}") from error
    resumed = f", resumed from {args.checkpoint}" if resuming else ""
    ignored = f", {dataset.ignored} crowd / difficult / empty boxes left out" if dataset.ignored else ""
    print(
        f"{args.model}: {len(dataset.images)} images, {len(dataset.classes)} classes{ignored}; {args.steps} steps{resumed} "
        f"in {seconds:.1f} s; {loss_summary(history)}; weights {args.out}"
    )
    return 0
