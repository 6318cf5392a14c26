"""`scratchdet train`: train Fast R-CNN or R-CNN on a COCO dataset and write the weights.

    scratchdet train --gt annotations.json --images DIR --model fast-rcnn|rcnn --steps N --out weights.npz
                     [--lr 0.01] [--seed 0] [--checkpoint ckpt.npz] [--resume] [--log losses.json]
                     [--proposals fast|quality] [--max-proposals 2000] [--device cpu|cuda] [--no-progress]

Each image's ``file_name`` is read relative to DIR. The categories become the classes 1..K in sorted
id order (the ids are kept in the weights, so `scratchdet detect` writes them back); crowd, difficult
and empty boxes are left out, and so are images with no box left: Fast R-CNN's background RoIs are
proposals that overlap an object (IoU 0.1 to 0.5), so such an image has nothing to learn from.
Selective Search proposes the regions, then SGD (momentum 0.9, weight decay 5e-4) trains the detector
on Fast R-CNN's mini-batches (Girshick 2015, section 2.3: 2 images of 64 RoIs each, or 1 image when
their sizes differ) through `scratchdet.train.fit`.

``--device cuda`` trains the network on an NVIDIA GPU (`model.to("cuda")`: the mini-batches are
copied to it each step; the proposals are found on the CPU either way).

A resumed run (``--resume``) takes the checkpoint's state, its learning rate included, and trains up
to ``--steps``; the checkpoint is checked before any work (it must be of the same model, classes and
category ids, ``--seed`` and proposals), and one that already holds ``--steps`` steps gives its
weights without training.
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
        epilog="Images of different sizes train one per step; images without boxes are left out. "
        "--resume goes on from --checkpoint (its learning rate included) up to --steps.",
    )
    parser.add_argument("--gt", required=True, metavar="GT.json", help="ground truth, a COCO dataset JSON file")
    parser.add_argument("--images", required=True, metavar="DIR", help="directory the images' file_name fields are relative to")
    parser.add_argument("--model", required=True, choices=MODELS, metavar="NAME", help="fast-rcnn (Girshick 2015) or rcnn (Girshick et al. 2014)")
    parser.add_argument(
        "--steps", required=True, type=int, metavar="N", help="number of SGD steps (with --resume: in all, the checkpoint's included)"
    )
    parser.add_argument("--out", required=True, metavar="WEIGHTS.npz", help="write the trained weights here")
    parser.add_argument("--lr", type=float, default=0.01, help="learning rate (default 0.01; a resumed run keeps the checkpoint's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the initial weights and the batches (default 0)")
    parser.add_argument("--checkpoint", metavar="CKPT.npz", help="save the run here every 100 steps and at the end")
    parser.add_argument("--resume", action="store_true", help="go on from --checkpoint if it exists (else start afresh)")
    parser.add_argument("--log", metavar="LOSSES.json", help="write the loss of every step here")
    parser.add_argument("--proposals", choices=PROPOSAL_MODES, default="fast", metavar="MODE", help="Selective Search mode: fast (default) or quality")
    parser.add_argument("--max-proposals", type=int, default=2000, metavar="N", help="proposals per image (default 2000)")
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def add_device_option(parser):
    """``--device cpu|cuda``: where the network runs (`train`, `detect`, `demo`)."""
    from scratchdet.backend import DEVICES

    parser.add_argument(
        "--device", choices=DEVICES, default="cpu", metavar="DEVICE",
        help="run the network on the cpu (default) or on an NVIDIA GPU: cuda (the proposals run on the CPU either way)",
    )


class Dataset(NamedTuple):
    """A COCO dataset read for training: per image with at least one box its path, pixels, boxes and labels.

    paths: list of n image paths.
    images: list of n (H_i, W_i, 3) uint8 RGB.
    boxes: list of n (G_i, 4) float64 xyxy boxes, G_i >= 1 (crowd, difficult and empty ones left out).
    labels: list of n (G_i,) int64 classes 1..K.
    classes: tuple of K category names, in sorted id order.
    category_ids: list of K ints, the COCO id of each class (label u is category_ids[u - 1]).
    ignored: how many boxes were left out.
    without_boxes: how many images were left out, having no box left.
    """

    paths: list
    images: list
    boxes: list
    labels: list
    classes: tuple
    category_ids: list
    ignored: int
    without_boxes: int


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


def read_checked_image(path, entry=None, gt_path=None):
    """An image file as (H, W, 3) uint8 RGB that Selective Search can take, of the size its ground-truth
    entry declares (`entry`, a COCO ``images`` dict from the file `gt_path`, may omit ``width`` and
    ``height``). Raises FileMissingError / DataFormatError naming the image."""
    from scratchdet.data.images import load_image
    from scratchdet.proposals.selective_search import check_rgb_image

    image = check_rgb_image(load_image(path), name=path)  # e.g. one pixel: too small for Selective Search
    height, width = image.shape[:2]
    if entry is not None and (entry.get("width", width) != width or entry.get("height", height) != height):
        raise DataFormatError(
            f"{path}: the image is {width}x{height} pixels, {gt_path} says {entry.get('width')}x{entry.get('height')}"
        )
    return image


def read_dataset(gt_dict, gt, paths, gt_path):
    """The images and boxes of a ground truth read by `read_annotations`: a `Dataset` of the images
    that have at least one box to learn from.

    Every image is read and checked, those left out too. Raises FileMissingError / DataFormatError
    naming an image that is missing or unreadable, or whose size is not the ``width`` / ``height`` the
    ground truth gives, and a DataFormatError naming `gt_path` when no image has a box.
    """
    from scratchdet import boxes as B

    # 1. the boxes: [x, y, w, h] -> (x1, y1, x2, y2); crowd, difficult and empty boxes are not learned from
    xyxy = B.convert(gt.boxes, "xywh", "xyxy")  # (G, 4)
    used = ~gt.iscrowd & ~gt.difficult & (gt.boxes[:, 2] > 0) & (gt.boxes[:, 3] > 0)
    boxes = [xyxy[(gt.image == i) & used] for i in range(len(paths))]
    labels = [gt.category[(gt.image == i) & used] + 1 for i in range(len(paths))]  # rank 0..K-1 -> label 1..K
    if not any(len(b) for b in boxes):
        why = f"its {len(gt.boxes)} annotations are all crowd, difficult or empty" if len(gt.boxes) else "it has no annotations"
        raise DataFormatError(f"{gt_path}: no boxes to train on ({why})")

    # 2. the pixels, checked against the sizes the file declares; only the images with boxes are kept
    declared = {entry["id"]: entry for entry in gt_dict["images"]}  # ids are checked integers
    kept = []
    for i, (image_id, path) in enumerate(zip(gt.image_ids.tolist(), paths)):
        image = read_checked_image(path, declared[image_id], gt_path)
        if len(boxes[i]):
            kept.append((path, image, boxes[i], labels[i]))
    paths, images, boxes, labels = (list(column) for column in zip(*kept))
    return Dataset(
        paths, images, boxes, labels, tuple(gt.category_names), gt.category_ids.tolist(), int((~used).sum()),
        len(gt.image_ids) - len(kept),
    )


def build_model(name, classes, seed, device="cpu"):
    """A fresh detector on `device`: `name` one of MODELS, `classes` its K class names, `seed` its initial
    weights (the same on either device)."""
    from scratchdet.models import RCNN, FastRCNN

    return {"fast-rcnn": FastRCNN, "rcnn": RCNN}[name](classes, rng=seed).to(device)


def build_optimizer(model, lr):
    """SGD with momentum 0.9 and weight decay 5e-4 (Girshick 2015, section 2.3) over the model's parameters."""
    from scratchdet import nn

    return nn.SGD(model, lr=lr, momentum=MOMENTUM, weight_decay=WEIGHT_DECAY)


def run_settings(args, dataset):
    """What a checkpoint of `train` must match to be resumed besides the model: the batches' seed, the
    proposals (another --seed would draw other batches, other proposals other RoIs), and the classes
    and their COCO category ids (a model of as many classes would otherwise go on learning other ones
    under the same outputs)."""
    return {
        "seed": args.seed, "proposals": args.proposals, "max_proposals": args.max_proposals,
        "classes": [str(name) for name in dataset.classes], "category_ids": [int(i) for i in dataset.category_ids],
    }


def train_detector(
    model, images, boxes, labels, proposals, *, steps, lr, seed, checkpoint=None, resume=False, settings=None, progress=True
):
    """Train `model` with SGD (momentum 0.9, weight decay 5e-4) on Fast R-CNN's mini-batches; returns the `History`.

    images: list of (H_i, W_i, 3) uint8; boxes: list of (G_i, 4) xyxy, G_i >= 1; labels: list of
    (G_i,) in 1..K; proposals: list of (P_i, 4) xyxy. Two images per step when all have one size, else one.
    settings: what the checkpoint must match to be resumed (see `fit`).
    """
    from scratchdet.train import fit, roi_batches

    images_per_batch = 2 if len({image.shape for image in images}) == 1 else 1
    batches = roi_batches(
        images, boxes, labels, proposals, images_per_batch=images_per_batch, rois_per_image=ROIS_PER_IMAGE, seed=seed
    )
    optimizer = build_optimizer(model, lr)
    return fit(
        model, batches, optimizer, steps=steps, checkpoint=checkpoint, resume=resume, settings=settings, progress=progress,
        desc="train",
    )


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


def check_training_options(*, steps, seed, lr=None):
    """The options every training run shares: --steps, --seed and --lr (InvalidArgumentError naming the bad one)."""
    import math

    if steps < 1:
        raise InvalidArgumentError(f"--steps must be a positive number of steps, got {steps}")
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise InvalidArgumentError(f"--lr must be a positive number, got {lr}")
    if seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {seed}")


def _count(n, noun, plural=None):
    """'1 step', '2 steps' ('1 box', '2 boxes' with plural="boxes")."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


def run(args):
    """Read the data, check a checkpoint to resume, propose regions, train, write the weights (and the
    losses); returns 0."""
    import json
    import time

    from scratchdet import backend
    from scratchdet.commands.outputs import check_distinct, check_output_file, reporting_write_errors, written_together
    from scratchdet.train import dataset_proposals, load_checkpoint

    # 1. the options and the outputs, before any work
    check_training_options(steps=args.steps, seed=args.seed, lr=args.lr)
    backend.require(args.device)  # a clear error now, not after the proposals, where there is no GPU
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
    model = build_model(args.model, dataset.classes, args.seed, args.device)

    # 3. the checkpoint to resume from, checked before the proposals: it must be of this model, and
    #    hold no more steps than --steps; its learning rate is the one the run goes on with
    done, lr, history = 0, args.lr, None
    if args.resume and os.path.isfile(args.checkpoint):
        optimizer = build_optimizer(model, args.lr)
        done, history = load_checkpoint(args.checkpoint, model, optimizer, settings=run_settings(args, dataset))
        lr = optimizer.lr
        if done > args.steps:
            raise InvalidArgumentError(
                f"--steps {args.steps}: {args.checkpoint} already holds {_count(done, 'step')}; give --steps {done} or more to resume it"
            )

    # 4. proposals and training (none when the checkpoint already holds every step)
    proposal_seconds = seconds = 0.0
    if done < args.steps:
        start = time.perf_counter()
        proposals = dataset_proposals(dataset.images, mode=args.proposals, max_boxes=args.max_proposals, progress=progress)
        proposal_seconds = time.perf_counter() - start
        start = time.perf_counter()
        history = train_detector(
            model, dataset.images, dataset.boxes, dataset.labels, proposals, steps=args.steps, lr=lr, seed=args.seed,
            checkpoint=args.checkpoint, resume=args.resume, settings=run_settings(args, dataset), progress=progress,
        )
        seconds = time.perf_counter() - start

    # 5. the weights, with what `detect` needs to map labels back to category ids, and the losses: both or neither
    with reporting_write_errors(args.out), written_together({"out": args.out, "log": args.log}) as tmp:
        save_detector(
            tmp["out"], model, dataset.category_ids, model=args.model, steps=args.steps, lr=lr, seed=args.seed,
            proposals=args.proposals, max_proposals=args.max_proposals,
        )
        if args.log:
            with open(tmp["log"], "w") as f:
                json.dump(history.as_dict(), f)
    left_out = []
    if dataset.ignored:
        left_out.append(_count(dataset.ignored, "crowd / difficult / empty box", "crowd / difficult / empty boxes"))
    if dataset.without_boxes:
        left_out.append(_count(dataset.without_boxes, "image") + " without boxes")
    left_out = f" ({' and '.join(left_out)} left out)" if left_out else ""
    if done == args.steps:
        trained = f"nothing to train: {args.checkpoint} already holds {_count(done, 'step')}"
    else:
        resumed = f" (resumed from {args.checkpoint} at step {done})" if done else ""
        trained = f"{_count(args.steps, 'step')}{resumed} in {seconds:.1f} s (after {proposal_seconds:.1f} s of proposals)"
    print(
        f"{args.model}: {len(dataset.images)} images, {len(dataset.classes)} classes{left_out}; {trained}; "
        f"{loss_summary(history)}; weights {args.out}"
    )
    return 0
