"""A detector's output for one image, and how R-CNN and Fast R-CNN turn per-proposal class scores
and box deltas into it: decode each class's box, clip, drop low scores, per-class NMS, keep the best.
"""

import dataclasses

import numpy as np

from scratchdet import boxes as B
from scratchdet.backend import to_host
from scratchdet.errors import InvalidArgumentError
from scratchdet.models.base import Model, check_channels, check_classes, check_image, softmax
from scratchdet.nn import functional as F
from scratchdet.nn.layers import check_size
from scratchdet.nn.losses import _check_non_negative, multitask_loss


@dataclasses.dataclass(frozen=True)
class Detections:
    """Detections in one image, best score first; `len` is the number of detections.

    boxes: (N, 4) float32 xyxy in the image's continuous pixel coordinates.
    scores: (N,) float32 class probabilities.
    labels: (N,) int64 classes 1..K (index into the model's `classes` as labels - 1).
    """

    boxes: np.ndarray
    scores: np.ndarray
    labels: np.ndarray

    def __len__(self):
        return len(self.scores)

    def to_coco(self, image_id, category_ids=None):
        """COCO detection records [{"image_id", "category_id", "bbox": [x, y, w, h], "score"}].

        category_ids: optional sequence mapping label u to category_ids[u - 1] (default: the label)."""
        records = []
        for (x1, y1, x2, y2), score, label in zip(self.boxes.tolist(), self.scores.tolist(), self.labels.tolist()):
            if category_ids is not None and not 1 <= label <= len(category_ids):
                raise InvalidArgumentError(f"label {label} has no category id: category_ids holds {len(category_ids)}")
            category = int(label) if category_ids is None else int(category_ids[label - 1])
            records.append(
                {"image_id": image_id, "category_id": category, "bbox": [x1, y1, x2 - x1, y2 - y1], "score": score}
            )
        return records


def empty_detections():
    return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64))


def detections_from_scores(
    proposals, probs, deltas, image_shape, *, box_weights, score_threshold=0.05, nms_threshold=0.3, max_detections=100
):
    """Fast R-CNN's test-time detection (Girshick 2015, section 3), used by R-CNN too.

    Args:
        proposals: (R, 4) float xyxy boxes the scores belong to.
        probs: (R, K1) class probabilities, column 0 the background.
        deltas: (R, 4 * K1) class-specific box deltas (columns 4u..4u+3 for class u), encoded with `box_weights`.
        image_shape: (H, W) to clip the boxes to.
        score_threshold: keep (proposal, class) pairs with probability above this.
        nms_threshold: per-class NMS IoU threshold (Fast R-CNN uses 0.3).
        max_detections: keep at most this many, best first.

    Returns:
        `Detections`.
    """
    proposals = np.asarray(proposals, dtype=np.float64).reshape(-1, 4)
    n_rois, n_classes1 = probs.shape
    if deltas.shape != (n_rois, 4 * n_classes1) or proposals.shape[0] != n_rois:
        raise InvalidArgumentError(
            f"need (R, 4) proposals, (R, K1) probs and (R, 4 * K1) deltas, got {proposals.shape}, {probs.shape}, {deltas.shape}"
        )
    if n_rois == 0 or n_classes1 < 2:
        return empty_detections()
    n_classes = n_classes1 - 1
    # 1. every proposal's box for every object class (the background's column is not a box)
    class_deltas = np.asarray(deltas, dtype=np.float64)[:, 4:].reshape(n_rois * n_classes, 4)
    boxes = B.decode(np.repeat(proposals, n_classes, axis=0), class_deltas, weights=box_weights)
    boxes = B.clip(boxes, image_shape).reshape(n_rois, n_classes, 4)
    scores = np.asarray(probs, dtype=np.float64)[:, 1:]  # (R, K)
    # 2. the (proposal, class) pairs that score above the threshold and have an area after clipping
    area = (boxes[..., 2] - boxes[..., 0]) * (boxes[..., 3] - boxes[..., 1])
    rows, cols = np.nonzero((scores > score_threshold) & (area > 0))
    boxes, scores, labels = boxes[rows, cols], scores[rows, cols], cols.astype(np.int64) + 1
    # 3. per-class greedy NMS, then the best `max_detections`
    keep = B.batched_nms(boxes, scores, labels, nms_threshold)[:max_detections]
    return Detections(boxes[keep].astype(np.float32), scores[keep].astype(np.float32), labels[keep])


def check_detection_settings(score_threshold, nms_threshold, max_detections):
    """The three post-processing settings, checked (InvalidArgumentError naming the bad one)."""
    B._check_threshold("score_threshold", score_threshold)
    B._check_threshold("nms_threshold", nms_threshold)
    check_size("max_detections", max_detections)


class Detector(Model):
    """What R-CNN and Fast R-CNN share: the training step on a `scratchdet.train.RoIBatch` and test-time
    detection. A subclass gives `batch_outputs(batch)` and `score_proposals(image, proposals)`, and has
    `classes`, `box_weights`, `lam` and `beta`."""

    def keep_settings(self, classes, channels, hidden, dropout, box_weights, lam, beta):
        """Check and keep the settings R-CNN and Fast R-CNN share (InvalidArgumentError naming a bad one)."""
        self.classes = check_classes(classes)
        self.channels = check_channels(channels)
        self.hidden = check_size("hidden", hidden)
        self.dropout = F.check_probability(dropout)
        self.box_weights = tuple(float(w) for w in B._check_weights(box_weights))
        self.lam = _check_non_negative("lam", lam)
        self.beta = _check_non_negative("beta", beta)

    def training_step(self, batch):
        """One step's forward, multi-task loss (Fast R-CNN, eq. 1: softmax cross-entropy + lam x smooth
        L1 on the true class's box) and backward. Returns the components {"total", "cls", "loc"}."""
        scores, deltas = self.batch_outputs(batch)
        loss, (dscores, ddeltas) = multitask_loss(
            scores, self._on_device(batch.labels), deltas, self._on_device(batch.bbox_targets.astype(self.dtype)),
            lam=self.lam, loc_loss="smooth_l1", beta=self.beta,
        )
        self.backward(dscores, ddeltas)
        return {"total": loss.total, "cls": loss.cls, "loc": loss.loc}

    def score_in_chunks(self, n_regions, chunk, outputs):
        """Run `outputs(start, stop)` -> (scores (r, K + 1), deltas (r, 4 (K + 1))) of regions start..stop-1
        on `chunk` regions at a time (bounding the memory) and gather the results on the host:
        (probabilities (R, K + 1), deltas (R, 4 (K + 1))), float64."""
        n_classes1 = len(self.classes) + 1
        probs, deltas = [np.zeros((0, n_classes1))], [np.zeros((0, 4 * n_classes1))]
        for start in range(0, n_regions, chunk):
            scores, chunk_deltas = outputs(start, min(start + chunk, n_regions))
            probs.append(softmax(scores))
            deltas.append(np.asarray(to_host(chunk_deltas), dtype=np.float64))
        return np.concatenate(probs), np.concatenate(deltas)

    def predict(self, image, proposals=None, *, score_threshold=0.05, nms_threshold=0.3, max_detections=100, max_proposals=2000):
        """Detect objects in one image.

        Args:
            image: (H, W, 3) uint8 RGB.
            proposals: (R, 4) xyxy boxes; by default Selective Search's best `max_proposals` ("fast" mode).
            score_threshold, nms_threshold, max_detections: see `detections_from_scores`.

        Returns:
            `Detections` (boxes, scores, labels 1..K), best first.
        """
        check_detection_settings(score_threshold, nms_threshold, max_detections)
        image = check_image(image)
        if proposals is None:
            from scratchdet.proposals import selective_search

            check_size("max_proposals", max_proposals)
            proposals = selective_search(image, mode="fast", max_boxes=max_proposals)
        proposals = B._check_boxes("proposals", proposals).astype(np.float64).reshape(-1, 4)
        if len(proposals) == 0:
            return empty_detections()
        probs, deltas = self.score_proposals(image, proposals)
        return detections_from_scores(
            proposals, probs, deltas, image.shape[:2], box_weights=self.box_weights,
            score_threshold=score_threshold, nms_threshold=nms_threshold, max_detections=max_detections,
        )
