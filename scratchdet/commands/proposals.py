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
    """Run Selective Search on every image; returns 0."""
    import json

    from tqdm import tqdm

    from scratchdet._files import atomic_write
    from scratchdet.data.images import load_image
    from scratchdet.proposals import selective_search
    from scratchdet.proposals.selective_search import check_rgb_image

    if args.max is not None and args.max < 1:
        raise InvalidArgumentError(f"--max must be a positive number of boxes, got {args.max}")
    if args.plot_boxes < 1:
        raise InvalidArgumentError(f"--plot-boxes must be positive, got {args.plot_boxes}")
    # 1. read every image first, so that a bad file stops the run before any work
    images = [check_rgb_image(load_image(path), name=path) for path in args.images]
    several = len(images) > 1
    results = []
    for path, image in tqdm(list(zip(args.images, images)), desc="proposals", unit="image", disable=not several):
        # 2. the boxes of one image
        boxes = selective_search(image, mode=args.mode, max_boxes=args.max, seed=args.seed)
        tqdm.write(f"{path}: {image.shape[1]}x{image.shape[0]}, {len(boxes)} boxes ({args.mode})")
        results.append({
            "file": path,
            "width": int(image.shape[1]),
            "height": int(image.shape[0]),
            "boxes": boxes.tolist(),
        })
        if args.plot:
            from scratchdet.viz import plot_proposals

            plot_proposals(image, boxes, _plot_path(args.plot, path, several), max_boxes=args.plot_boxes, title=path)
    # 3. one JSON file for all images
    if args.out:
        with atomic_write(args.out) as f:
            json.dump({"mode": args.mode, "seed": args.seed, "box_format": "xyxy", "images": results}, f)
    return 0
