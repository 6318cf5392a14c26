"""`scratchdet evaluate`: COCO mAP or Pascal VOC AP of a detection file against a ground-truth file.

    scratchdet evaluate --gt GT.json --dets DETS.json [--metric coco|voc|voc07] [--iou 0.5]
                        [--legacy-voc-pixels] [--json]

Both files are COCO JSON (a dataset and a detection list). ``--metric coco`` (default) prints the 12
COCOeval numbers and per-class AP; ``voc`` is all-point VOC AP (2010+), ``voc07`` the 11-point AP
(2007). ``--iou`` and ``--legacy-voc-pixels`` apply to the VOC metrics only: COCO's IoU thresholds
0.50:0.05:0.95 and pixel convention are fixed, so giving them with ``--metric coco`` is an error.
"""

import json

from scratchdet.errors import InvalidArgumentError

METRICS = ("coco", "voc", "voc07")


def register(subparsers):
    """Add the `evaluate` subcommand."""
    parser = subparsers.add_parser(
        "evaluate",
        help="COCO mAP or Pascal VOC AP of detections against ground truth (COCO JSON files)",
        description="COCO mAP or Pascal VOC AP of a detection list against a ground-truth dataset (both COCO JSON).",
        epilog="--iou and --legacy-voc-pixels apply to voc / voc07 only; COCO's thresholds 0.50:0.05:0.95 are fixed.",
    )
    parser.add_argument("--gt", required=True, metavar="GT.json", help="ground truth, a COCO dataset JSON file")
    parser.add_argument("--dets", required=True, metavar="DETS.json", help="detections, a COCO result list JSON file")
    parser.add_argument("--metric", choices=METRICS, default="coco", help="coco (default), voc (all-point) or voc07 (11-point)")
    parser.add_argument("--iou", type=float, default=None, help="IoU threshold for voc / voc07 (default 0.5)")
    parser.add_argument(
        "--legacy-voc-pixels", action="store_true", help="voc / voc07: count pixels inclusively (width = x2 - x1 + 1) as the devkit"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")
    parser.set_defaults(run=run)


def run(args):
    """Evaluate and print; returns the exit status (bad input raises ScratchdetError -> exit 2)."""
    from scratchdet.data.coco import load_json, parse_detections, parse_ground_truth
    from scratchdet.eval.coco import evaluate_coco
    from scratchdet.eval.voc import evaluate_voc

    # 1. arguments that do not fit the metric
    if args.metric == "coco":
        if args.iou is not None:
            raise InvalidArgumentError("--iou applies to --metric voc / voc07 only; COCO uses the IoU thresholds 0.50:0.05:0.95")
        if args.legacy_voc_pixels:
            raise InvalidArgumentError("--legacy-voc-pixels applies to --metric voc / voc07 only")
    iou = 0.5 if args.iou is None else args.iou
    if not 0 < iou <= 1:
        raise InvalidArgumentError(f"--iou must be in (0, 1], got {args.iou}")

    # 2. read and check both files, naming the file in any error
    gt = parse_ground_truth(load_json(args.gt), source=args.gt)
    dets = parse_detections(load_json(args.dets), gt, source=args.dets)

    # 3. evaluate and print
    if args.metric == "coco":
        result = evaluate_coco(gt, dets)
    else:
        method = "all" if args.metric == "voc" else "11point"
        result = evaluate_voc(gt, dets, iou_threshold=iou, method=method, legacy_voc_pixels=args.legacy_voc_pixels)
    if args.json:
        print(json.dumps(result))
    else:
        print(_table(result, args.metric, iou))
    return 0


def _table(result, metric, iou):
    """A readable table of the summary numbers and per-class AP."""
    lines = []
    if metric == "coco":
        labels = {
            "AP": "AP @[IoU=0.50:0.95 | area=   all | maxDets=100]",
            "AP50": "AP @[IoU=0.50      | area=   all | maxDets=100]",
            "AP75": "AP @[IoU=0.75      | area=   all | maxDets=100]",
            "APs": "AP @[IoU=0.50:0.95 | area= small | maxDets=100]",
            "APm": "AP @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "APl": "AP @[IoU=0.50:0.95 | area= large | maxDets=100]",
            "AR1": "AR @[IoU=0.50:0.95 | area=   all | maxDets=  1]",
            "AR10": "AR @[IoU=0.50:0.95 | area=   all | maxDets= 10]",
            "AR100": "AR @[IoU=0.50:0.95 | area=   all | maxDets=100]",
            "ARs": "AR @[IoU=0.50:0.95 | area= small | maxDets=100]",
            "ARm": "AR @[IoU=0.50:0.95 | area=medium | maxDets=100]",
            "ARl": "AR @[IoU=0.50:0.95 | area= large | maxDets=100]",
        }
        for key, label in labels.items():
            lines.append(f"{key:<6} {label} = {result[key]:6.3f}")
        heading = "per-class AP @[IoU=0.50:0.95]"
    else:
        kind = "all-point" if metric == "voc" else "11-point"
        lines.append(f"mAP @[IoU={iou:g}, {kind}] = {result['mAP']:6.3f}")
        heading = f"per-class AP @[IoU={iou:g}]"
    lines.append("")
    lines.append(heading + " (-1: no ground truth)")
    width = max((len(name) for name in result["per_class"]), default=0)
    for name, ap in result["per_class"].items():
        lines.append(f"  {name:<{width}}  {ap:6.3f}")
    return "\n".join(lines)
