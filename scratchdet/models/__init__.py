"""Detectors and the models of the single-object tasks, built of `scratchdet.nn` layers.

Read `base` (what every model shares), `localizer` (classification + localisation of one object and
14-joint pose regression), `detections` (a detector's output and test-time post-processing), `rcnn`
(every region through the whole net) and `fast_rcnn` (one backbone pass shared by all regions).
"""

from scratchdet.models.base import images_to_input
from scratchdet.models.detections import Detections, detections_from_scores
from scratchdet.models.fast_rcnn import FastRCNN
from scratchdet.models.localizer import Localizer, PoseRegressor, percent_detected_joints
from scratchdet.models.rcnn import RCNN, warp_regions

__all__ = [
    "RCNN", "Detections", "FastRCNN", "Localizer", "PoseRegressor", "detections_from_scores", "images_to_input",
    "percent_detected_joints", "warp_regions",
]
