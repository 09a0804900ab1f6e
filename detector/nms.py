"""Non-maximum suppression and box overlap, vectorised with NumPy."""
import numpy as np


def iou(box, boxes):
    """Intersection over union of one box (4,) with each of boxes (N, 4), as (x0, y0, x1, y1)."""
    x0 = np.maximum(box[0], boxes[:, 0])
    y0 = np.maximum(box[1], boxes[:, 1])
    x1 = np.minimum(box[2], boxes[:, 2])
    y1 = np.minimum(box[3], boxes[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = (box[2] - box[0]) * (box[3] - box[1])
    areas = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    return inter / np.maximum(area + areas - inter, 1e-12)


def nms(boxes, scores, iou_threshold, labels=None, max_detections=None, check=None, check_every=256):
    """Indices of the boxes kept by greedy NMS, best first. ``check()``, if given, runs
    every ``check_every`` kept boxes: the pass is quadratic in the boxes, and a deadline
    may stop it there.

    With ``labels``, boxes of different labels never suppress each other (per-class NMS):
    each label's boxes are shifted to a region of their own, so one pass does every class.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    scores = np.asarray(scores, np.float64)
    if labels is not None and len(boxes):
        span = boxes.max() - boxes.min() + 1
        boxes = boxes + (np.asarray(labels, np.float64) * span)[:, None]
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size and (max_detections is None or len(keep) < max_detections):
        if check is not None and len(keep) % check_every == check_every - 1:
            check()
        best, rest = order[0], order[1:]
        keep.append(int(best))
        order = rest[iou(boxes[best], boxes[rest]) <= iou_threshold]
    return np.array(keep, np.int64)
