"""`scratchdet detect`: run a trained detector on images and write COCO detections.

    scratchdet detect WEIGHTS.npz IMAGE... --out dets.json [--score 0.05] [--nms 0.3] [--max 100]
                      [--gt GT.json] [--plot DIR] [--plot-score 0.5] [--proposals fast|quality]
                      [--max-proposals N] [--device cpu|cuda] [--no-progress]

The weights are those `scratchdet train` writes (a Fast R-CNN or R-CNN). Each image gets Selective
Search proposals (the mode the detector was trained with, unless ``--proposals``), then `predict`:
class scores and boxes per proposal, per-class NMS, the best ``--max``. Detections carry the COCO
category ids the detector was trained on; the image id is that of the image's entry in ``--gt`` (matched
by file name, and of the size the entry declares), or 1, 2, ... in the order of the arguments. ``--gt``
must name the detector's categories with the ids and names it was trained on (weights saved by
`nn.save` without ``extra={"category_ids": [...]}`` take the ids of ``--gt``'s categories of their
classes' names, or 1..K without ``--gt``, with a warning). ``--plot DIR`` draws each
image's detections to ``DIR/<image name>.png``, over its ground-truth boxes (dashed) with ``--gt``.
``--device cuda`` runs the network on an NVIDIA GPU. The detections and the pictures are written
together at the end: a failure or Ctrl-C writes none of them.
"""

import os
import sys

from scratchdet.commands.train import add_device_option
from scratchdet.errors import DataFormatError, InvalidArgumentError


def register(subparsers):
    """Add the `detect` subcommand."""
    parser = subparsers.add_parser(
        "detect",
        help="detect objects with trained weights; write COCO detections",
        description="Run a trained Fast R-CNN or R-CNN on images and write the detections as a COCO result list.",
        epilog="Image ids: from the entry of --gt with the image's file name, else 1, 2, ... in argument order.",
    )
    parser.add_argument("weights", metavar="WEIGHTS.npz", help="weights written by `scratchdet train`")
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--out", required=True, metavar="DETS.json", help="write the detections here (COCO result list)")
    parser.add_argument("--score", type=float, default=0.05, metavar="S", help="keep detections scoring above this (default 0.05)")
    parser.add_argument("--nms", type=float, default=0.3, metavar="IOU", help="per-class NMS IoU threshold (default 0.3)")
    parser.add_argument("--max", type=int, default=100, metavar="N", help="at most N detections per image (default 100)")
    parser.add_argument("--gt", metavar="GT.json", help="COCO ground truth whose image ids the detections take, and --plot draws")
    parser.add_argument("--plot", metavar="DIR", help="draw each image's detections (and --gt boxes) to DIR/<image>.png")
    parser.add_argument("--plot-score", type=float, default=0.5, metavar="S", help="--plot draws detections scoring at least this (default 0.5)")
    parser.add_argument("--proposals", choices=("fast", "quality"), metavar="MODE", help="Selective Search mode, fast or quality (default: as trained)")
    parser.add_argument("--max-proposals", type=int, metavar="N", help="proposals per image (default: as trained)")
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.set_defaults(run=run)


def load_detector(path):
    """A detector saved with `nn.save`, and the COCO category id of each of its classes.

    Returns (model, category_ids, extra): category_ids a list of K ints (label u -> category_ids[u - 1]),
    None when the weights do not say (weights saved by `nn.save` without them); extra the metadata's
    "extra" dict ({} when absent).
    Raises FileMissingError / DataFormatError naming the file when it is missing, not a weights file,
    or not a detector's.
    """
    from scratchdet import nn
    from scratchdet.commands.train import CATEGORY_IDS
    from scratchdet.models.detections import Detector

    try:
        model, metadata = nn.load(path, with_metadata=True)
    except DataFormatError as error:
        if str(error).startswith(os.fspath(path)):
            raise
        raise DataFormatError(f"{path}: {error}") from error
    if not isinstance(model, Detector):
        raise DataFormatError(f"{path}: holds a {type(model).__name__}, not a detector (Fast R-CNN or R-CNN weights from `scratchdet train`)")
    extra = metadata.get("extra") if isinstance(metadata.get("extra"), dict) else {}
    n_classes = len(model.classes)
    ids = extra.get(CATEGORY_IDS)
    if ids is not None and (
        not isinstance(ids, list) or len(ids) != n_classes or len(set(ids)) != n_classes
        or any(isinstance(i, bool) or not isinstance(i, int) for i in ids)
    ):
        raise DataFormatError(f"{path}: metadata extra.{CATEGORY_IDS} must be {n_classes} distinct integers, got {ids!r}")
    return model, ids, extra


def _parts(path):
    """A path's components, normalised: "./data/a.png" -> ("data", "a.png")."""
    return tuple(part for part in os.path.normpath(path).replace("\\", "/").split("/") if part not in ("", "."))


def match_image_ids(paths, gt, gt_path):
    """The id of each image path's entry in a `GroundTruth`: the entry whose ``file_name`` the path ends
    with (compared by path components, the longest such name winning). A DataFormatError names an
    image no entry, or two entries equally, match."""
    names = [(_parts(name), image_id) for name, image_id in zip(gt.image_names, gt.image_ids.tolist()) if name]
    ids = []
    for path in paths:
        parts = _parts(os.path.abspath(path))
        found = [(len(name), image_id) for name, image_id in names if len(name) <= len(parts) and parts[len(parts) - len(name) :] == name]
        if not found:
            raise DataFormatError(f"{path}: no image of {gt_path} has this file name")
        found.sort(reverse=True)
        if len(found) > 1 and found[0][0] == found[1][0]:
            raise DataFormatError(f"{path}: several images of {gt_path} have this file name (ids {found[0][1]} and {found[1][1]})")
        ids.append(found[0][1])
    repeat = _first_repeat(ids)  # two files of one entry: its detections would count twice
    if repeat:
        earlier, later = repeat
        raise DataFormatError(f"{paths[earlier]} and {paths[later]} are both image {ids[later]} of {gt_path}; give each image once")
    return ids


def _first_repeat(keys):
    """(i, j), i < j, the first two positions of the first key that comes again in `keys`; None if none does."""
    first = {}
    for j, key in enumerate(keys):
        i = first.setdefault(key, j)
        if i != j:
            return i, j
    return None


def _plot_paths(plot_dir, images):
    """DIR/<image name>.png for each image; two images of one name would draw over each other."""
    paths = [os.path.join(plot_dir, os.path.splitext(os.path.basename(image))[0] + ".png") for image in images]
    repeat = _first_repeat(paths)
    if repeat:
        earlier, later = repeat
        raise InvalidArgumentError(
            f"--plot: {images[earlier]} and {images[later]} would both be drawn to {paths[later]} (same file name)"
        )
    return paths


def scoring_at_least(detections, score):
    """The `Detections` whose score is at least `score` (what a picture shows)."""
    keep = detections.scores >= score
    return type(detections)(detections.boxes[keep], detections.scores[keep], detections.labels[keep])


def check_detection_options(args):
    """--score, --nms, --max (InvalidArgumentError naming the bad one)."""
    for option, value in (("--score", args.score), ("--nms", args.nms)):
        if not 0 <= value <= 1:
            raise InvalidArgumentError(f"{option} must be in [0, 1], got {value}")
    if args.max < 1:
        raise InvalidArgumentError(f"--max must be a positive number of detections, got {args.max}")


def category_ids_by_name(gt, gt_path, classes, weights_path):
    """The id of the `GroundTruth` category of each class's name, for weights that carry no ids; a
    DataFormatError for a class the ground truth does not name."""
    id_of = dict(zip(gt.category_names, gt.category_ids.tolist()))  # (names are unique: parse_ground_truth)
    missing = [name for name in classes if name not in id_of]
    if missing:
        raise DataFormatError(
            f"{weights_path} holds no COCO category ids, and {gt_path} has no categories named {missing} to take them from"
        )
    return [id_of[name] for name in classes]


def check_categories(gt, gt_path, category_ids, classes, weights_path):
    """Fail unless the `GroundTruth` has every category the detector was trained on, under the same
    name: labels are written as category ids, and an id that names another object (ids 1, 2, 3 of a
    synthetic dataset are "person", "bicycle", "car" in COCO) would score detections of the wrong thing."""
    name_of = dict(zip(gt.category_ids.tolist(), gt.category_names))
    missing = sorted(set(category_ids) - set(name_of))
    if missing:
        raise DataFormatError(f"{gt_path}: has no categories with the ids {missing} that {weights_path} detects")
    for category_id, name in zip(category_ids, classes):
        if name_of[category_id] != name:
            raise DataFormatError(
                f"{gt_path}: category {category_id} is {name_of[category_id]!r}, {weights_path} was trained on it as {name!r}"
            )


def run(args):
    """Load the detector, check every input and output, detect, write; returns 0."""
    import numpy as np
    from tqdm import tqdm

    from scratchdet import backend
    from scratchdet import boxes as B
    from scratchdet.commands.outputs import (
        check_distinct, check_output_directory, check_output_file, check_output_files, reporting_write_errors,
        written_together,
    )
    from scratchdet.commands.train import read_checked_image
    from scratchdet.data.coco import load_json, parse_ground_truth, write_detections
    from scratchdet.proposals import selective_search

    # 1. the options and the outputs
    check_detection_options(args)
    backend.require(args.device)
    if not 0 <= args.plot_score <= 1:
        raise InvalidArgumentError(f"--plot-score must be in [0, 1], got {args.plot_score}")
    if args.max_proposals is not None and args.max_proposals < 1:
        raise InvalidArgumentError(f"--max-proposals must be positive, got {args.max_proposals}")
    repeat = _first_repeat([os.path.realpath(path) for path in args.images])  # (its detections would come twice)
    if repeat:
        earlier, later = repeat
        raise InvalidArgumentError(f"{args.images[earlier]} and {args.images[later]} are the same image; give each image once")
    check_output_file("--out", args.out)
    plot_paths = []
    if args.plot:
        check_output_directory("--plot", args.plot)
        plot_paths = _plot_paths(args.plot, args.images)
        check_output_files("--plot", plot_paths)
    inputs = [args.weights, *args.images] + ([args.gt] if args.gt else [])
    check_distinct([("--out", args.out)] + [("--plot", path) for path in plot_paths], inputs)

    # 2. the detector, the image ids (and entries of --gt), and every image read once (a bad one stops
    #    the run before any work)
    model, category_ids, extra = load_detector(args.weights)
    model.to(args.device)
    entries = [None] * len(args.images)
    if args.gt:
        gt_dict = load_json(args.gt)
        gt = parse_ground_truth(gt_dict, source=args.gt)  # checks every field, naming the file
        if category_ids is None:
            category_ids = category_ids_by_name(gt, args.gt, model.classes, args.weights)
        check_categories(gt, args.gt, category_ids, model.classes, args.weights)
        image_ids = match_image_ids(args.images, gt, args.gt)
        entry_of = {entry["id"]: entry for entry in gt_dict["images"]}
        entries = [entry_of[image_id] for image_id in image_ids]
    else:
        image_ids = list(range(1, len(args.images) + 1))
        if category_ids is None:
            category_ids = list(range(1, len(model.classes) + 1))
            print(
                f"{args.weights} holds no COCO category ids: labels 1..{len(category_ids)} are written as category ids "
                "(give --gt to take them from its categories of the classes' names)",
                file=sys.stderr,
            )
    for path, entry in zip(args.images, entries):
        read_checked_image(path, entry, args.gt)
    mode = args.proposals or extra.get("proposals", "fast")
    max_proposals = args.max_proposals or extra.get("max_proposals", 2000)

    # 3. detect, image by image
    records, kept = [], []
    several = len(args.images) > 1
    for path, image_id in tqdm(list(zip(args.images, image_ids)), desc="detect", unit="image", disable=args.no_progress or not several):
        image = read_checked_image(path)
        proposals = selective_search(image, mode=mode, max_boxes=max_proposals)
        found = model.predict(image, proposals, score_threshold=args.score, nms_threshold=args.nms, max_detections=args.max)
        records += found.to_coco(image_id, category_ids)
        if args.plot:
            kept.append(found)
        tqdm.write(f"{path}: {len(found)} detections (image id {image_id})")

    # 4. the pictures (over the ground truth's boxes with --gt), then the detections, to temporary files
    #    renamed together at the end: a failure or Ctrl-C while drawing writes none of them
    outputs = {"out": args.out, **{("plot", index): plot_path for index, plot_path in enumerate(plot_paths)}}
    with reporting_write_errors(args.out), written_together(outputs) as tmp:
        if args.plot:
            from scratchdet.viz import plot_detections

            for index, (path, image_id, found) in enumerate(zip(args.images, image_ids, kept)):
                shown = scoring_at_least(found, args.plot_score)
                title = f"{path}: {len(shown)} detections (score >= {args.plot_score:g})"
                truth = None
                if args.gt:
                    rank = int(np.searchsorted(gt.image_ids, image_id))  # image_ids are sorted
                    truth = B.convert(gt.boxes[gt.image == rank], "xywh", "xyxy")  # (G, 4)
                    title += f", {len(truth)} ground-truth boxes (dashed)"
                plot_detections(
                    read_checked_image(path), shown, tmp[("plot", index)], classes=model.classes, ground_truth=truth,
                    titles=title,
                )
        write_detections(tmp["out"], records)
    print(f"{len(records)} detections in {len(args.images)} image(s) written to {args.out}")
    return 0
