"""`scratchdet segment`: Felzenszwalb-Huttenlocher segmentation of one image.

    scratchdet segment IMAGE [--scale 100] [--sigma 0.8] [--min-size 50] [--plot seg.png] [--out labels.npy]

Prints the number of segments; ``--plot`` writes the image beside its segments, ``--out`` the
(H, W) int32 labels as a .npy file.
"""

from scratchdet.errors import InvalidArgumentError


def register(subparsers):
    """Add the `segment` subcommand."""
    parser = subparsers.add_parser(
        "segment",
        help="graph-based segmentation of an image (Felzenszwalb and Huttenlocher 2004)",
        description="Segment an image with the Felzenszwalb-Huttenlocher algorithm.",
    )
    parser.add_argument("image", metavar="IMAGE", help="image file (JPEG, PNG, ...; greyscale and RGBA are converted)")
    parser.add_argument("--scale", type=float, default=100.0, help="k of the threshold k/|C|: larger, larger segments (default 100)")
    parser.add_argument("--sigma", type=float, default=0.8, help="Gaussian smoothing before segmenting (default 0.8)")
    parser.add_argument("--min-size", type=int, default=50, help="merge segments smaller than this (default 50)")
    parser.add_argument("--plot", metavar="PNG", help="write the image and its segments to this picture")
    parser.add_argument("--out", metavar="NPY", help="write the (H, W) int32 labels to this .npy file")
    parser.set_defaults(run=run)


def run(args):
    """Segment, print the count, write the optional outputs; returns 0.

    Every argument and output path is checked before the image is read, so a bad one writes nothing.
    A greyscale file is segmented on its one channel, as `felzenszwalb` segments a 2-D array (three
    copies of it would give edges sqrt(3) times heavier: more, smaller segments).
    """
    import numpy as np

    from scratchdet.commands.outputs import check_distinct, check_output_file, reporting_write_errors, written_together
    from scratchdet.data.images import load_image
    from scratchdet.proposals import felzenszwalb
    from scratchdet.viz import figure_format

    # 1. the outputs can be written, and overwrite neither each other nor the image
    if args.out is not None and not args.out.lower().endswith(".npy"):
        raise InvalidArgumentError(f"--out must name a .npy file, got {args.out!r}")
    check_output_file("--out", args.out)
    if args.plot is not None:
        figure_format(args.plot, option="--plot")
        check_output_file("--plot", args.plot)
    check_distinct([("--out", args.out), ("--plot", args.plot)], [args.image])
    # 2. read and segment
    image = load_image(args.image, keep_grey=True)  # (H, W, 3) or, from a greyscale file, (H, W) uint8
    if image.shape[0] * image.shape[1] < 2:
        raise InvalidArgumentError(f"{args.image} must have at least 2 pixels to segment, got a {image.shape[0]}x{image.shape[1]} image")
    labels = felzenszwalb(image, scale=args.scale, sigma=args.sigma, min_size=args.min_size)
    n_segments = int(labels.max()) + 1
    kind = "" if image.ndim == 3 else " greyscale"
    print(f"{args.image}: {image.shape[1]}x{image.shape[0]}{kind}, {n_segments} segments "
          f"(scale={args.scale:g}, sigma={args.sigma:g}, min_size={args.min_size})")
    # 3. write both files to temporary ones, renamed together at the end: a failure or Ctrl-C on the
    #    way writes neither (nor leaves one of this run beside one of an earlier run)
    with reporting_write_errors(args.out), written_together({"plot": args.plot, "out": args.out}) as tmp:
        if args.plot:
            from scratchdet.viz import plot_segments

            shown = image if image.ndim == 3 else np.repeat(image[:, :, None], 3, axis=2)
            plot_segments(shown, labels, tmp["plot"], title=args.image, fmt=figure_format(args.plot))
        if args.out:
            with open(tmp["out"], "wb") as f:
                np.save(f, labels)
    return 0
