"""`scratchdet proposals`: Selective Search boxes for one or more images.

    scratchdet proposals IMAGE... [--mode single|fast|quality] [--max N] [--seed 0]
                                  [--out proposals.json] [--plot top.png] [--plot-boxes 20]

Prints the number of boxes per image. ``--out`` writes one JSON file with, per image, its file name,
size and boxes ``[x1, y1, x2, y2]`` best first. ``--plot`` draws the first boxes on the image; with
several images each gets its own picture, named after the image (``top_<image>.png``).
"""

import os

from scratchdet.errors import InvalidArgumentError


def register(subparsers):
    """Add the `proposals` subcommand."""
    parser = subparsers.add_parser(
        "proposals",
        help="Selective Search region proposals (Uijlings et al. 2013)",
        description="Selective Search region proposals for one or more images.",
    )
    parser.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    parser.add_argument("--mode", choices=("single", "fast", "quality"), default="fast", help="strategy set (default fast)")
    parser.add_argument("--max", type=int, default=None, metavar="N", help="keep at most N boxes per image")
    parser.add_argument("--seed", type=int, default=0, help="seed of the ranking's random numbers (default 0)")
    parser.add_argument("--out", metavar="JSON", help="write the boxes of every image to this JSON file")
    parser.add_argument("--plot", metavar="PNG", help="draw the first boxes on the image(s)")
    parser.add_argument("--plot-boxes", type=int, default=20, metavar="K", help="how many boxes --plot draws (default 20)")
    parser.set_defaults(run=run)


def _plot_path(plot, image_path, several):
    if not several:
        return plot
    stem, ext = os.path.splitext(plot)
    return f"{stem}_{os.path.splitext(os.path.basename(image_path))[0]}{ext or '.png'}"


def run(args):
    """Run Selective Search on every image, then write the outputs; returns 0.

    Arguments and output paths are checked (each can be written, none overwrites another or an
    image), then every image is read, before any work: a bad one (e.g. the second of three images is
    corrupt) stops the run with nothing written.
    """
    import json

    from tqdm import tqdm

    from scratchdet.commands.outputs import (
        check_distinct,
        check_output_file,
        check_output_files,
        reporting_write_errors,
        written_together,
    )
    from scratchdet.data.images import load_image
    from scratchdet.proposals import selective_search
    from scratchdet.proposals.selective_search import check_rgb_image
    from scratchdet.viz import figure_format

    # 1. the options and the outputs
    if args.max is not None and args.max < 1:
        raise InvalidArgumentError(f"--max must be a positive number of boxes, got {args.max}")
    if args.plot_boxes < 1:
        raise InvalidArgumentError(f"--plot-boxes must be positive, got {args.plot_boxes}")
    if args.seed < 0:
        raise InvalidArgumentError(f"--seed must be >= 0, got {args.seed}")
    check_output_file("--out", args.out)
    several = len(args.images) > 1
    plot_paths = []
    if args.plot:
        figure_format(args.plot, option="--plot")
        plot_paths = [_plot_path(args.plot, path, several) for path in args.images]
        drawn = set()
        for plot_path in plot_paths:
            if plot_path in drawn:
                raise InvalidArgumentError(f"--plot: two images would both be drawn to {plot_path} (same file name)")
            drawn.add(plot_path)
        check_output_files("--plot", plot_paths)
    check_distinct([("--out", args.out)] + [("--plot", path) for path in plot_paths], args.images)
    # 2. read every image once, so that a bad file stops the run before any work; only the sizes are
    #    kept (a long list of photographs need not fit in memory at once)
    def read(path):
        return check_rgb_image(load_image(path), name=path)

    sizes = [read(path).shape[:2] for path in args.images]  # [(H, W)]
    # 3. the boxes of every image
    all_boxes = []
    for path in tqdm(args.images, desc="proposals", unit="image", disable=not several):
        image = read(path)
        boxes = selective_search(image, mode=args.mode, max_boxes=args.max, seed=args.seed)
        tqdm.write(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(boxes)} boxes ({args.mode})")
        all_boxes.append(boxes)
    # 4. the pictures, then one JSON file for all images, to temporary files renamed together at the
    #    end: a failure or Ctrl-C while drawing (minutes, for many images) writes none of them
    outputs = {"out": args.out, **{("plot", index): plot_path for index, plot_path in enumerate(plot_paths)}}
    with reporting_write_errors(args.out), written_together(outputs) as tmp:
        if args.plot:
            from scratchdet.viz import plot_proposals

            for index, (path, boxes, plot_path) in enumerate(zip(args.images, all_boxes, plot_paths)):
                plot_proposals(read(path), boxes, tmp[("plot", index)], max_boxes=args.plot_boxes, title=path,
                               fmt=figure_format(plot_path))
        if args.out:
            results = [
                {"file": path, "width": int(width), "height": int(height), "boxes": boxes.tolist()}
                for path, (height, width), boxes in zip(args.images, sizes, all_boxes)
            ]
            with open(tmp["out"], "w") as f:
                json.dump({"mode": args.mode, "seed": args.seed, "box_format": "xyxy", "images": results}, f)
    return 0
