"""BlazeFace post-processing on the host: SSD anchors, box decoding, sigmoid scores and weighted NMS, as MediaPipe's
face_detection_short_range graph does it (SsdAnchorsCalculator, TensorsToDetectionsCalculator,
NonMaxSuppressionCalculator)."""

from dataclasses import dataclass

import numpy as np

from .ref import dequantize

__all__ = ["Detection", "ssd_anchors", "SHORT_RANGE_ANCHORS", "decode_boxes", "scores",
           "weighted_nms", "detect_faces", "iou"]


def ssd_anchors(input_size=(128, 128), strides=(8, 16, 16, 16), min_scale=0.1484375, max_scale=0.75,
                offset=(0.5, 0.5), aspect_ratios=(1.0,), interpolated_scale_aspect_ratio=1.0):
    """Anchor centers [N, 2] as (x, y) in [0, 1] by MediaPipe's SsdAnchorsCalculator with fixed_anchor_size.

    Layers with the same stride share one feature map; each layer adds one anchor per aspect ratio plus one
    for the interpolated scale, so BlazeFace short-range has 2 anchors per cell on its 16x16 map (stride 8) and
    6 on its 8x8 map (three stride-16 layers): 512 + 384 = 896. With fixed_anchor_size every anchor is 1 x 1,
    so the scales do not reach the output; they only decide the count.
    """
    del min_scale, max_scale  # only the per-layer anchor count matters when anchor sizes are fixed
    h, w = input_size
    centers = []
    layer = 0
    while layer < len(strides):
        last = layer
        per_cell = 0
        while last < len(strides) and strides[last] == strides[layer]:
            per_cell += len(aspect_ratios) + (1 if interpolated_scale_aspect_ratio > 0 else 0)
            last += 1
        fh = int(np.ceil(h / strides[layer]))
        fw = int(np.ceil(w / strides[layer]))
        ys, xs = np.meshgrid((np.arange(fh) + offset[1]) / fh, (np.arange(fw) + offset[0]) / fw, indexing="ij")
        cells = np.stack([xs.ravel(), ys.ravel()], axis=1)
        centers.append(np.repeat(cells, per_cell, axis=0))     # order: y, x, anchor within the cell
        layer = last
    return np.concatenate(centers).astype(np.float32)


SHORT_RANGE_ANCHORS = ssd_anchors()


@dataclass(frozen=True)
class Detection:
    """One face: score in [0, 1]; box (xmin, ymin, xmax, ymax) and six keypoints (x, y) in image pixels."""

    score: float
    box: tuple
    keypoints: tuple

    @property
    def width(self):
        return self.box[2] - self.box[0]

    @property
    def height(self):
        return self.box[3] - self.box[1]


def decode_boxes(raw, anchors=SHORT_RANGE_ANCHORS, scale=128.0):
    """[N, 16] regressor values to boxes [N, 4] (xmin, ymin, xmax, ymax) and keypoints [N, 6, 2], normalized.

    reverse_output_order: each row is x_center, y_center, w, h, then (x, y) per keypoint, in input pixels
    relative to the anchor center (x/y/w/h scale 128); anchors are 1 x 1.
    """
    raw = np.asarray(raw, np.float32).reshape(len(anchors), -1)
    xc = raw[:, 0] / scale + anchors[:, 0]
    yc = raw[:, 1] / scale + anchors[:, 1]
    w = raw[:, 2] / scale
    h = raw[:, 3] / scale
    boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1)
    kp = raw[:, 4:16].reshape(-1, 6, 2) / scale + anchors[:, None, :]
    return boxes, kp


def scores(raw, clip=100.0):
    """Face probability per anchor: sigmoid of the raw score clipped to [-clip, clip]."""
    x = np.clip(np.asarray(raw, np.float64).reshape(-1), -clip, clip)
    return 1.0 / (1.0 + np.exp(-x))


def iou(a, b):
    """Intersection over union of two (xmin, ymin, xmax, ymax) boxes (0 when they do not intersect)."""
    ix = min(a[2], b[2]) - max(a[0], b[0])
    iy = min(a[3], b[3]) - max(a[1], b[1])
    if ix <= 0 or iy <= 0:
        return 0.0
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def _ious(box, boxes):
    ix = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    iy = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    inter = np.where((ix > 0) & (iy > 0), ix * iy, 0.0)
    union = (box[2] - box[0]) * (box[3] - box[1]) + (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]) - inter
    return np.where(union > 0, inter / np.where(union > 0, union, 1.0), 0.0)


def weighted_nms(boxes, keypoints, score, threshold=0.3):
    """MediaPipe's WEIGHTED non-max suppression: take the best remaining box, average every remaining box that
    overlaps it by IoU > threshold (itself included) weighted by score; the result keeps the best score.
    Returns [(score, box[4], keypoints[6, 2])], best first."""
    order = np.argsort(-score, kind="stable")
    out = []
    while order.size:
        top = order[0]
        overlap = _ious(boxes[top], boxes[order]) > threshold
        overlap[0] = True                 # a degenerate (empty) top box still stands for itself
        cand, order = order[overlap], order[~overlap]
        w = score[cand][:, None]
        box = (boxes[cand] * w).sum(0) / w.sum()
        kp = (keypoints[cand] * w[:, :, None]).sum(0) / w.sum()
        out.append((float(score[top]), box, kp))
    return out


def detect_faces(regressors, classificators, image_size=(128, 128), min_score=0.5, nms_threshold=0.3,
                 quant=None):
    """Faces found by BlazeFace short-range, best first.

    regressors [1, 896, 16] and classificators [1, 896, 1]: float outputs, or the die's int8 outputs with `quant`
    = ((regressor_scale, regressor_zero_point), (classificator_scale, classificator_zero_point)) to dequantize
    them. image_size (height, width) of the image the 128x128 input was resized from: boxes come back in its
    pixels. min_score None keeps every anchor (useful to read the best score of an image without a face).
    """
    if quant is not None:
        (rs, rz), (cs, cz) = quant
        regressors = dequantize(regressors, rs, rz)
        classificators = dequantize(classificators, cs, cz)
    boxes, kps = decode_boxes(regressors)
    s = scores(classificators)
    keep = np.arange(len(s)) if min_score is None else np.nonzero(s >= min_score)[0]
    h, w = image_size
    scale = np.array([w, h, w, h], np.float64)
    found = []
    for score, box, kp in weighted_nms(boxes[keep].astype(np.float64), kps[keep].astype(np.float64), s[keep],
                                       nms_threshold):
        found.append(Detection(score, tuple(float(v) for v in box * scale),
                               tuple((float(x * w), float(y * h)) for x, y in kp)))
    return found
