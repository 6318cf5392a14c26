"""`scratchdet data shapes`: the synthetic shapes dataset written as PNG images and COCO ground truth.

    scratchdet data shapes OUT_DIR --images N [--seed 0] [--size H W] [--force] [--no-progress]

Writes ``OUT_DIR/shapes_000001.png``, ... and ``OUT_DIR/annotations.json``, a COCO dataset whose
``file_name`` fields name the PNG files (so ``scratchdet train --gt OUT_DIR/annotations.json --images
OUT_DIR`` reads it). The images are written first, to temporary files that replace their names only
once all are written, and the annotations last: a directory with an ``annotations.json`` holds the
whole dataset, and a run that fails or is interrupted while drawing leaves OUT_DIR as it was. A
non-empty OUT_DIR is refused unless ``--force``. See `scratchdet.data.shapes.shapes_dataset` for what
the images show.

The images are drawn and written one at a time (the same images as ``shapes_dataset(N, seed=...)``
draws all at once), so a large dataset never has to fit in memory.
"""

import contextlib
import os

from scratchdet.errors import InvalidArgumentError

ANNOTATIONS = "annotations.json"
MIN_SIDE = 16  # pixels, as `shapes_dataset` requires


def register(subparsers):
    """Add the `data` subcommand, with one sub-subcommand per dataset (`shapes`)."""
    parser = subparsers.add_parser(
        "data",
        help="write a synthetic detection dataset (PNG images + COCO JSON)",
        description="Write a synthetic detection dataset as PNG images and a COCO ground-truth file.",
    )
    datasets = parser.add_subparsers(title="datasets", metavar="DATASET", dest="dataset", required=True)
    shapes = datasets.add_parser(
        "shapes",
        help="flat-coloured rectangles, ellipses and triangles on cluttered backgrounds",
        description="Rectangles, ellipses and triangles on cluttered backgrounds, 1-3 per image, with exact boxes.",
        epilog=f"Writes OUT_DIR/shapes_000001.png, ... then OUT_DIR/{ANNOTATIONS} (COCO ground truth).",
    )
    shapes.add_argument("out_dir", metavar="OUT_DIR", help="directory to write into (made if missing)")
    shapes.add_argument("--images", type=int, required=True, metavar="N", help="number of images")
    shapes.add_argument("--seed", type=int, default=0, help="random seed: the same seed writes the same dataset (default 0)")
    shapes.add_argument("--size", type=int, nargs=2, default=(96, 96), metavar=("H", "W"), help="image height and width (default 96 96)")
    shapes.add_argument("--force", action="store_true", help="write into a non-empty OUT_DIR (files of the same names are replaced)")
    shapes.add_argument("--no-progress", action="store_true", help="no progress bar")
    shapes.set_defaults(run=run_shapes)


def object_sizes(height, width):
    """The (min, max) box side of the objects in an image of (height, width): 1/6 to 5/12 of the
    shorter side, (16, 40) for the default 96 x 96, and at least 4 pixels."""
    side = min(height, width)
    return max(4, side // 6), max(4, side * 5 // 12)


def run_shapes(args):
    """Draw and write the images one at a time, then the annotations; returns 0."""
    import numpy as np
    from tqdm import tqdm

    from scratchdet._files import publish, staged_path, writing
    from scratchdet.commands.outputs import check_output_directory, check_output_files, reporting_write_errors
    from scratchdet.data.coco import write_ground_truth
    from scratchdet.data.shapes import ShapesDataset, file_name, shapes_dataset

    # 1. the options, and OUT_DIR: a directory (or nothing yet), empty unless --force, writable
    if args.images < 1:
        raise InvalidArgumentError(f"--images must be a positive number of images, got {args.images}")
    if args.seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {args.seed}")
    height, width = args.size
    if height < MIN_SIDE or width < MIN_SIDE:
        raise InvalidArgumentError(f"--size must be H W with each >= {MIN_SIDE}, got {height} {width}")
    out_dir = args.out_dir
    if not out_dir:  # "" would write into the current directory, past the emptiness check below
        raise InvalidArgumentError("OUT_DIR must name a directory, got ''")
    check_output_directory("OUT_DIR", out_dir)
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not args.force:
        raise InvalidArgumentError(
            f"OUT_DIR {out_dir!r} is not empty ({len(os.listdir(out_dir))} entries); choose another or add --force"
        )
    image_paths = [os.path.join(out_dir, file_name(i)) for i in range(1, args.images + 1)]  # the names to_coco gives
    annotations_path = os.path.join(out_dir, ANNOTATIONS)
    check_output_files("OUT_DIR", image_paths + [annotations_path])

    # 2. the images one at a time from one generator (the draws of `shapes_dataset(N, seed=seed)`),
    #    each into a temporary file beside its name; 3. once all are written, the images into place
    #    and then the annotations that name them. On a failure or Ctrl-C in 2 nothing of OUT_DIR has
    #    changed (the temporary files, and the directories this run made, go); an earlier dataset's
    #    annotations go before any of its images is replaced, so they never describe this run's images
    rng = np.random.default_rng(args.seed)
    boxes, labels = [], []
    made = _missing_directories(out_dir)  # directories the first write makes, then the new images
    staged = []  # (temporary file, image path) of every image drawn
    try:
        import imageio.v3 as iio

        with reporting_write_errors(out_dir):
            for path in tqdm(image_paths, desc="data shapes", unit="image", disable=args.no_progress):
                one = shapes_dataset(1, image_size=(height, width), size=object_sizes(height, width), seed=rng)
                tmp = staged_path(path)
                staged.append((tmp, path))
                with writing(path, tmp):
                    iio.imwrite(tmp, one.images[0], extension=".png")
                boxes.append(one.boxes[0])
                labels.append(one.labels[0])
                classes = one.classes
            # the ground truth needs only each image's shape: a read-only (H, W, 3) view of one zero
            shape_only = np.broadcast_to(np.zeros((), np.uint8), (height, width, 3))
            gt = ShapesDataset(images=[shape_only] * len(boxes), boxes=boxes, labels=labels, classes=classes).to_coco()
            with contextlib.suppress(FileNotFoundError):
                os.remove(annotations_path)  # --force over an earlier dataset
            while staged:  # (from the last: a published file leaves the list, so a failure removes the rest)
                tmp, path = staged[-1]
                existed = os.path.lexists(path)
                publish(tmp, path)
                staged.pop()
                if not existed:
                    made.append(path)
            write_ground_truth(annotations_path, gt)
    except BaseException as error:
        _remove(made + [tmp for tmp, _ in staged])  # the temporary files, the new images, then the directories
        if isinstance(error, MemoryError):  # e.g. --size 100000 100000: gigabytes per image
            raise InvalidArgumentError(
                f"not enough memory to draw and write {args.images} images of --size {height} {width}"
            ) from None
        raise
    print(
        f"wrote {len(boxes)} images of {width}x{height} with {len(gt['annotations'])} objects "
        f"({', '.join(classes)}) to {out_dir}; ground truth {annotations_path}"
    )
    return 0


def _missing_directories(directory):
    """The directories on the way to `directory` (itself included) that do not exist yet, outermost
    first: writing into `directory` will make them."""
    missing = []
    directory = os.path.abspath(directory)
    while not os.path.lexists(directory):
        missing.insert(0, directory)
        directory = os.path.dirname(directory)
    return missing


def _remove(paths):
    """Remove files and (empty) directories, the last named first."""
    for path in reversed(paths):
        with contextlib.suppress(OSError):
            if os.path.isdir(path) and not os.path.islink(path):
                os.rmdir(path)
            else:
                os.remove(path)
