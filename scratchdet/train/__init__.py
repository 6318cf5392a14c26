"""Training: proposal labelling by IoU, foreground/background RoI sampling and box-regression targets
(`targets`, after R-CNN and Fast R-CNN section 2.3), mini-batches as a function of the step
(`batches`), and the training loop with its exactly resumable checkpoints (`loop`: `fit`).
"""

from scratchdet.train.batches import RoIBatch, array_batches, dataset_proposals, epoch_order, roi_batches
from scratchdet.train.loop import History, fit, load_checkpoint, model_generators, save_checkpoint
from scratchdet.train.targets import (
    FAST_RCNN_WEIGHTS,
    Matches,
    match_proposals,
    regression_targets,
    sample_rois,
    with_gt_boxes,
)

__all__ = [
    "FAST_RCNN_WEIGHTS",
    "History",
    "Matches",
    "RoIBatch",
    "array_batches",
    "dataset_proposals",
    "epoch_order",
    "fit",
    "load_checkpoint",
    "match_proposals",
    "model_generators",
    "regression_targets",
    "roi_batches",
    "sample_rois",
    "save_checkpoint",
    "with_gt_boxes",
]
