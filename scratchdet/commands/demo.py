"""`scratchdet demo`: the whole pipeline in one command, on the synthetic shapes.

    scratchdet demo [--out DIR] [--steps 1200] [--seed 0] [--device cpu|cuda] [--no-progress]

1. draws a training set (64 images) and a test set (24 images) of 96 x 96 shapes (`scratchdet data shapes`),
2. proposes regions with Selective Search (Uijlings et al. 2013),
3. trains Fast R-CNN (Girshick 2015) with SGD, as `scratchdet train`,
4. detects on the test set, as `scratchdet detect`,
5. prints VOC mAP (IoU 0.5, all-point) and COCO AP (IoU 0.50:0.95), as `scratchdet evaluate`,

and writes to DIR the weights, the test ground truth and detections (COCO JSON), the losses, a picture
of test images with their detections and a picture of the loss curves (other files in DIR are left
alone). The default run takes about 10 s on two CPU cores, plus a minute or two the first time, while
Numba compiles the kernels (it caches them on disk). ``--device cuda`` trains and runs the network on an
NVIDIA GPU.
"""

import os

from scratchdet.commands.train import add_device_option

TRAIN_IMAGES = 64
TEST_IMAGES = 24
IMAGE_SIZE = (96, 96)
DEFAULT_STEPS = 1200
LR = 0.01
MAX_PROPOSALS = 2000
PICTURED = 8  # test images in the detections picture
PICTURE_SCORE = 0.5  # detections drawn: those scoring at least this

# the files written to DIR
FILES = {
    "weights": "weights.npz",
    "ground_truth": "ground_truth.json",
    "detections": "detections.json",
    "losses": "losses.json",
    "detections_picture": "detections.png",
    "losses_picture": "losses.png",
}


def register(subparsers):
    """Add the `demo` subcommand."""
    parser = subparsers.add_parser(
        "demo",
        help="the whole pipeline on synthetic shapes: data, proposals, Fast R-CNN, detection, mAP",
        description="Train Fast R-CNN on synthetic shapes, detect on held-out images and print VOC mAP and COCO AP.",
        epilog=f"Writes {', '.join(FILES.values())} to DIR (replacing files of those names, leaving other files alone).",
    )
    parser.add_argument("--out", default="scratchdet-demo", metavar="DIR", help="directory to write into (default scratchdet-demo)")
    parser.add_argument(
        "--steps", type=int, default=DEFAULT_STEPS, metavar="N",
        help=f"training steps (default {DEFAULT_STEPS}: about 10 s on 2 cores once Numba's kernels are compiled)",
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the data, the weights and the batches (default 0)")
    add_device_option(parser)
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.set_defaults(run=run)


def run(args):
    """Run the pipeline, print the results, write the files; returns 0."""
    import json
    import time

    import numpy as np

    from scratchdet import backend
    from scratchdet.commands.detect import scoring_at_least
    from scratchdet.commands.outputs import check_output_directory, check_output_files, reporting_write_errors, written_together
    from scratchdet.commands.train import build_model, check_training_options, loss_summary, save_detector, train_detector
    from scratchdet.data.coco import write_detections, write_ground_truth
    from scratchdet.data.shapes import shapes_dataset
    from scratchdet.eval import evaluate_coco, evaluate_voc
    from scratchdet.train import dataset_proposals
    from scratchdet.viz import plot_detections, plot_training_curves

    # 1. the options and the outputs, before any work
    check_training_options(steps=args.steps, seed=args.seed)
    backend.require(args.device)
    check_output_directory("--out", args.out)
    paths = {key: os.path.join(args.out, name) for key, name in FILES.items()}
    check_output_files("--out", list(paths.values()))
    progress = not args.no_progress
    start = time.perf_counter()

    # 2. data: two independent draws, so that no test image is seen in training
    train = shapes_dataset(TRAIN_IMAGES, image_size=IMAGE_SIZE, seed=np.random.default_rng([args.seed, 0]))
    test = shapes_dataset(TEST_IMAGES, image_size=IMAGE_SIZE, seed=np.random.default_rng([args.seed, 1]))
    print(f"data: {len(train)} training and {len(test)} test images of {IMAGE_SIZE[1]}x{IMAGE_SIZE[0]}, classes {', '.join(train.classes)}")

    # 3. proposals, then training
    proposals = dataset_proposals(train.images + test.images, mode="fast", max_boxes=MAX_PROPOSALS, progress=progress)
    train_proposals, test_proposals = proposals[: len(train)], proposals[len(train) :]
    print(f"proposals: {np.mean([len(p) for p in proposals]):.0f} per image (Selective Search, fast)")
    model = build_model("fast-rcnn", train.classes, args.seed, args.device)
    history = train_detector(
        model, train.images, train.boxes, train.labels, train_proposals, steps=args.steps, lr=LR, seed=args.seed, progress=progress
    )
    print(f"training: {args.steps} steps of Fast R-CNN; {loss_summary(history)}")

    # 4. detect on the test set: image ids 1..n and category ids 1..K, as in test.to_coco()
    found = [model.predict(image, boxes) for image, boxes in zip(test.images, test_proposals)]
    detections = [record for i, dets in enumerate(found) for record in dets.to_coco(i + 1)]
    ground_truth = test.to_coco()

    # 5. evaluate
    voc = evaluate_voc(ground_truth, detections, iou_threshold=0.5, method="all")
    coco = evaluate_coco(ground_truth, detections)
    per_class = ", ".join(f"{name} {ap:.3f}" for name, ap in voc["per_class"].items())
    print(f"VOC mAP @[IoU=0.5, all-point] = {voc['mAP']:.3f}  ({per_class})")
    print(f"COCO AP @[IoU=0.50:0.95] = {coco['AP']:.3f}  (AP50 {coco['AP50']:.3f}, AP75 {coco['AP75']:.3f})")

    # 6. the files, all six or none: each is written to a temporary file, and they are renamed together
    with reporting_write_errors(args.out), written_together(paths) as tmp:
        shown = [scoring_at_least(d, PICTURE_SCORE) for d in found[:PICTURED]]
        plot_detections(
            test.images[:PICTURED], shown, tmp["detections_picture"], classes=model.classes,
            ground_truth=test.boxes[:PICTURED], titles=[f"test image {i + 1}" for i in range(len(shown))],
        )
        plot_training_curves(history, tmp["losses_picture"], title=f"Fast R-CNN on shapes, {args.steps} steps")
        write_ground_truth(tmp["ground_truth"], ground_truth)
        write_detections(tmp["detections"], detections)
        with open(tmp["losses"], "w") as f:
            json.dump(history.as_dict(), f)
        save_detector(
            tmp["weights"], model, [c["id"] for c in ground_truth["categories"]], model="fast-rcnn", steps=args.steps,
            lr=LR, seed=args.seed, proposals="fast", max_proposals=MAX_PROPOSALS,
        )
    print(f"wrote {', '.join(FILES.values())} to {args.out} in {time.perf_counter() - start:.0f} s")
    print(f"next: scratchdet evaluate --gt {paths['ground_truth']} --dets {paths['detections']}")
    return 0
