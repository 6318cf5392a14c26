"""Datasets and files: COCO JSON ground truth and detections (`coco`), Pascal VOC XML (`voc`).

Kept light on purpose: importing `scratchdet.data` loads only NumPy and the standard library.
"""

from scratchdet.data.coco import (
    Detections,
    GroundTruth,
    parse_detections,
    parse_ground_truth,
    read_detections,
    read_ground_truth,
    write_detections,
    write_ground_truth,
)
from scratchdet.data.voc import VOC_CLASSES, read_voc_xml, voc_to_coco

__all__ = [
    "Detections",
    "GroundTruth",
    "VOC_CLASSES",
    "parse_detections",
    "parse_ground_truth",
    "read_detections",
    "read_ground_truth",
    "read_voc_xml",
    "voc_to_coco",
    "write_detections",
    "write_ground_truth",
]
