"""Detection evaluation: COCO mAP (`evaluate_coco`), Pascal VOC AP (`evaluate_voc`), proposal recall.

Both metrics read the same inputs: a COCO-style ground-truth dict and a COCO detection list
(see `scratchdet.data.coco`). Read `voc.py` first (one IoU threshold, one curve per class), then
`coco.py` (ten thresholds, three detection limits, four area ranges, crowds).
"""

from scratchdet.eval.coco import CocoEvaluation, coco_evaluation, evaluate_coco
from scratchdet.eval.recall import best_overlaps, mabo, proposal_recall, recall_curve
from scratchdet.eval.voc import VocEvaluation, evaluate_voc, voc_ap, voc_evaluation

__all__ = [
    "CocoEvaluation",
    "VocEvaluation",
    "best_overlaps",
    "coco_evaluation",
    "evaluate_coco",
    "evaluate_voc",
    "mabo",
    "proposal_recall",
    "recall_curve",
    "voc_ap",
    "voc_evaluation",
]

